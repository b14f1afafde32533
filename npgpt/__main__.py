"""`python -m npgpt`: the command line (npgpt.cli)."""

from npgpt.cli import main

raise SystemExit(main())

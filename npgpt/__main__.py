from npgpt.cli import main

raise SystemExit(main())

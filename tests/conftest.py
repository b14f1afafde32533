import os

# Tests must be reproducible and must not depend on how many cores the machine has.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hypothesis import settings  # noqa: E402

settings.register_profile("npgpt", deadline=None, max_examples=25, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "npgpt"))

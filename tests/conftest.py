import os

# CI has no GPU: numba.cuda's simulator runs the CUDA kernels on the CPU (tests/kernels/
# test_cuda_kernels.py). Set before numba is imported. On a GPU machine set NUMBA_ENABLE_CUDASIM=0
# to test the real device.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# Tests must be reproducible and must not depend on how many cores the machine has.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hypothesis import settings  # noqa: E402

settings.register_profile("npgpt", deadline=None, max_examples=25, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "npgpt"))

"""Every layer test runs once per available CPU backend: the layers must agree on all of them."""

import pytest

from npgpt import kernels

CPU_BACKENDS = [b for b in kernels.available_backends() if b != "cuda"]


@pytest.fixture(params=CPU_BACKENDS, autouse=True)
def backend(request):
    with kernels.backend(request.param):
        yield request.param

"""Shared test fixtures: devices to run on, and a guard for torch's global thread count."""
import pytest
import torch

import fastlif.backends

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
needs_cpp = pytest.mark.skipif("cpp" not in fastlif.backends.available("cpu"),
                               reason="the C++ extension fastlif._C is not built")

# parametrize(..., DEVICES): CPU always; CUDA where there is one, else skipped with the reason.
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.fixture
def restore_threads():
    """Lets a test call torch.set_num_threads freely; the previous count is put back after."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)

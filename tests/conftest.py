"""Shared test fixtures: devices to run on, a guard for torch's global thread count, child test
runs, and whether torch.sigmoid's bits are the kernels' here."""
import os

import pytest
import torch

import fastlif.backends

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
needs_cpp = pytest.mark.skipif("cpp" not in fastlif.backends.available("cpu"),
                               reason="the C++ extension fastlif._C is not built")

# parametrize(..., DEVICES): CPU always; CUDA where there is one, else skipped with the reason.
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def sigmoid_not_vectorised():
    """Why torch.sigmoid's bits may not be exp_sleef's here, or None: they are where torch's CPU
    kernels run Sleef's vector exp (AVX2, AVX-512) and fastlif's build fuses multiply-adds."""
    if "cpp" not in fastlif.backends.available("cpu"):
        return "no C++ extension"
    if not fastlif.backends.cpp_module().fma:
        return "this build has no FMA (FASTLIF_NATIVE=0 or a sanitizer build)"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        return f"torch's CPU kernels run {capability}, not its Sleef vector exp"
    return None


@pytest.fixture
def restore_threads():
    """Lets a test call torch.set_num_threads freely; the previous count is put back after."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def own_instances():
    """An empty snnTorch instance registry for one test: the class-wide helpers (reset_hidden,
    detach_hidden, utils.reset) walk all of it, and snnTorch registers a neuron before checking
    its arguments, so one whose constructor raised stays there, half built."""
    snn = pytest.importorskip("snntorch")
    saved = snn.SpikingNeuron.instances
    snn.SpikingNeuron.instances = []
    yield
    snn.SpikingNeuron.instances = saved


def run_child_suite(test_file, env, what, *args, timeout=900):
    """Run ``test_file`` in a child ``python -m pytest`` with ``env`` added to this environment
    (for settings a process cannot change once it has imported Triton: the interpreter, another
    Triton); fails with the child's output unless it passed. Returns its output."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    child_env.update(env)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root),
           str(test_file), *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=child_env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, (f"{what} failed (exit {proc.returncode}, "
                                  f"{time.monotonic() - start:.0f} s):\n{out[-6000:]}")
    assert " passed" in out, out[-3000:]
    return out

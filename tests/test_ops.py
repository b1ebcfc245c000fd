"""The custom ops themselves: fp64 gradcheck, torch.library.opcheck, bytes kept for backward."""
import pytest
import torch

import fastlif
from fastlif.ops import RESET_CODES
from fastlif import surrogate as sg

pytestmark = pytest.mark.skipif("cpp" not in fastlif.backends.available("cpu"),
                                reason="the C++ extension fastlif._C is not built")


def op_args(T=5, R=2, L=3, reset="subtract", delay=True, per_neuron=True, with_mem0=True,
            dtype=torch.float64, requires_grad=False, surrogate=sg.atan()):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, R, L, generator=g, dtype=dtype) + 0.4
    mem0 = torch.randn(R * L, generator=g, dtype=dtype) if with_mem0 else None
    n = L if per_neuron else 1
    beta = torch.rand(n, generator=g, dtype=dtype) * 0.9
    thr = torch.rand(n, generator=g, dtype=dtype) * 0.4 + 0.8
    graded = torch.rand(n, generator=g, dtype=dtype) + 0.5
    tensors = [x, mem0, beta, thr, graded]
    if requires_grad:
        tensors = [t.requires_grad_() if t is not None else None for t in tensors]
    return (*tensors, RESET_CODES[reset], delay, surrogate.kind, surrogate.param, False, "cpp")


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
@pytest.mark.parametrize("per_neuron", [True, False])
def test_gradcheck_fp64(reset, delay, per_neuron):
    """Analytic gradients against finite differences. A surrogate is by design not the
    derivative of the Heaviside forward, so finite differences can only check the exact
    part: spikes carrying no gradient (surrogate disabled), where the op's backward is the
    true derivative away from threshold crossings. The surrogate terms are checked against
    the reference's autograd in fp64 (test_cpp.py)."""
    args = op_args(reset=reset, delay=delay, per_neuron=per_neuron, requires_grad=True,
                   surrogate=sg.no_grad())
    tensors, options = args[:5], args[5:]

    def f(x, mem0, beta, thr, graded):
        spk, mem, _, _ = torch.ops.fastlif.lif_fwd(x, mem0, beta, thr, graded, *options)
        return spk, mem

    assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("reset,delay", [("subtract", True), ("zero", False), ("none", True)])
@pytest.mark.parametrize("with_mem0", [True, False])
def test_opcheck(reset, delay, with_mem0):
    args = op_args(reset=reset, delay=delay, with_mem0=with_mem0, dtype=torch.float32,
                   requires_grad=True)
    torch.library.opcheck(torch.ops.fastlif.lif_fwd.default, args)
    spk, mem, state, flags = torch.ops.fastlif.lif_fwd(*[a.detach() if isinstance(a, torch.Tensor)
                                                        else a for a in args])
    x, mem0, beta, thr, graded = (a.detach() if a is not None else None for a in args[:5])
    bwd_args = (torch.randn_like(spk), torch.randn_like(mem), mem, state, flags, mem0, beta, thr,
                graded, RESET_CODES[reset], delay, sg.ATAN, 2.0, "cpp")
    torch.library.opcheck(torch.ops.fastlif.lif_bwd.default, bwd_args)


def saved_bytes_per_neuron_step(fn, x):
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(saved.values()) / x.numel()


@pytest.mark.parametrize("delay,expected", [(True, 4.0), (False, 5.0)])
def test_bytes_kept_for_backward(delay, expected):
    """fp32, learnable beta: the default keeps the membrane only (4 B per neuron-step); the
    immediate reset also keeps the pre-reset membrane's place and a reset flag byte."""
    T, B, N = 50, 16, 128
    x = torch.randn(T, B, N, requires_grad=True)
    beta = torch.full((N,), 0.9, requires_grad=True)
    per_step = saved_bytes_per_neuron_step(
        lambda x: fastlif.lif_sequence(x, beta, reset_delay=delay, backend="cpp"), x)
    # plus a constant few hundred bytes (the parameter vectors), nothing else per step
    assert expected <= per_step <= expected + 0.02


def test_forward_only_keeps_nothing():
    x = torch.randn(10, 4, 8)
    with torch.no_grad():
        spk, mem = fastlif.lif_sequence(x, 0.9, backend="cpp")
    assert spk.grad_fn is None

"""The custom ops and the autograd Function: fp64 gradcheck, torch.library.opcheck, the named op
boundary, bytes kept for backward."""
import pytest
import torch

import fastlif
from fastlif import surrogate as sg
from fastlif.codes import RESET_CODES
from fastlif.ops.lif import LifFunction
from conftest import needs_cpp

pytestmark = needs_cpp


def op_inputs(T=5, R=2, L=3, per_neuron=True, with_mem0=True, dtype=torch.float64, requires_grad=False):
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
    return tensors


def fwd_options(reset="subtract", delay=True, steps=5):
    return dict(steps=steps, reset_mode=RESET_CODES[reset], reset_delay=delay, low_memory=False,
                mem_fp32=False, backend="cpp")


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
@pytest.mark.parametrize("per_neuron", [True, False])
def test_gradcheck_fp64(reset, delay, per_neuron):
    """Analytic gradients against finite differences, through the one autograd path. A
    surrogate is by design not the derivative of the Heaviside forward, so finite differences
    can only check the exact part: spikes carrying no gradient (surrogate disabled), where the
    backward is the true derivative away from threshold crossings. The surrogate terms are
    checked against the reference's autograd in fp64 (test_cpp.py)."""
    tensors = op_inputs(per_neuron=per_neuron, requires_grad=True)
    off = sg.no_grad()

    def f(x, mem0, beta, thr, graded):
        return LifFunction.apply(x, mem0, beta, thr, graded, 5, RESET_CODES[reset], delay,
                                 False, False, off.kind, off.param, "cpp")

    assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("reset,delay", [("subtract", True), ("zero", False), ("none", True)])
@pytest.mark.parametrize("with_mem0", [True, False])
def test_opcheck(reset, delay, with_mem0):
    """Schema, fake (meta) implementation and AOT dispatch of both ops. The ops carry no
    autograd of their own (LifFunction is the one autograd path, traced by torch.compile), so
    they are checked on inputs that do not require grad."""
    x, mem0, beta, thr, graded = op_inputs(with_mem0=with_mem0, dtype=torch.float32)
    opts = fwd_options(reset, delay)
    torch.library.opcheck(torch.ops.fastlif.lif_fwd.default, (x, mem0, beta, thr, graded),
                          kwargs=opts)
    spk, mem, state, flags = torch.ops.fastlif.lif_fwd(x, mem0, beta, thr, graded, **opts)
    keep_mem = None if state.numel() else mem
    bwd_kwargs = dict(steps=5, reset_mode=RESET_CODES[reset], reset_delay=delay,
                      surrogate_kind=sg.ATAN, surrogate_param=2.0, x_dtype=torch.float32, backend="cpp")
    for g_spk, g_mem in ((torch.randn_like(spk), torch.randn_like(mem)), (torch.randn_like(spk), None)):
        torch.library.opcheck(torch.ops.fastlif.lif_bwd.default,
                              (g_spk, g_mem, keep_mem, state, flags, mem0, beta, thr, graded),
                              kwargs=bwd_kwargs)


def test_ops_take_named_arguments():
    """The op boundary is named: options by keyword, and no backward-only option (the
    surrogate) passes through the forward op."""
    schema = str(torch.ops.fastlif.lif_fwd.default._schema)
    assert "surrogate" not in schema
    for name in ("steps", "reset_mode", "reset_delay", "low_memory", "mem_fp32", "backend"):
        assert name in schema
    x, mem0, beta, thr, graded = op_inputs(dtype=torch.float32)
    spk, mem, _, _ = torch.ops.fastlif.lif_fwd(x, mem0, beta, thr, graded, **fwd_options())
    ref_spk, ref_mem = fastlif.lif_sequence(x, beta, thr, mem=mem0.view(2, 3), graded_spikes_factor=graded,
                                            backend="reference")
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)


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


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
@pytest.mark.parametrize("surrogate", [sg.atan(), sg.fast_sigmoid(), sg.triangular()], ids=str)
def test_fixed_parameters_give_the_same_input_gradients(reset, delay, surrogate):
    """A backward computes only the parameter gradients a call wants (csrc/static_switch.h,
    grads_switch; Leaky's kernel is compiled for none, beta alone and all three): with every
    parameter fixed, and with each one learnable alone, x's and mem's gradients are the same
    bits as with every parameter learnable, and so is the learnable one's."""
    x, mem0, _, _, _ = op_inputs(T=7, R=3, L=5, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    ups = [torch.randn(x.shape, generator=g) for _ in range(2)]
    values = (0.85, 1.05, 1.25)

    def grads(learn):
        xl, ml = x.clone().requires_grad_(), mem0.view(3, 5).clone().requires_grad_()
        beta, thr, graded = (torch.tensor(v, requires_grad=True) if k in learn else v for k, v in enumerate(values))
        outs = fastlif.lif_sequence(xl, beta, thr, mem=ml, reset_mechanism=reset, reset_delay=delay,
                                    surrogate=surrogate, graded_spikes_factor=graded, backend="cpp")
        leaves = [xl, ml] + [p for p in (beta, thr, graded) if isinstance(p, torch.Tensor)]
        return torch.autograd.grad(outs, leaves, ups)

    every = grads(range(3))
    for learn in ((), (0,), (1,), (2,)):
        got = grads(learn)
        assert torch.equal(got[0], every[0]) and torch.equal(got[1], every[1]), f"learn {learn}"
        for k, grad in zip(learn, got[2:]):
            assert torch.equal(grad, every[2 + k]), f"parameter {k}'s gradient, learn {learn}"


def test_forward_only_keeps_nothing():
    x = torch.randn(10, 4, 8)
    with torch.no_grad():
        spk, mem = fastlif.lif_sequence(x, 0.9, backend="cpp")
    assert spk.grad_fn is None

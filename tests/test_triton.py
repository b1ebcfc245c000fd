"""The Triton kernels (kernels/lif.py) against the reference loop, on small shapes.

Where it runs:
  * on a CUDA GPU (``TRITON_INTERPRET`` unset): directly, on CUDA tensors;
  * without one: through Triton's interpreter on CPU tensors. The interpreter is chosen when
    a ``@triton.jit`` kernel is *defined* (Triton reads ``TRITON_INTERPRET`` in the decorator),
    so it must be set before ``fastlif.kernels.lif`` is first imported in the process. Other
    test modules may import it first, and setting the variable here would leak into them, so
    ``test_interpreter_suite`` reruns this file in a child ``python -m pytest`` with
    ``TRITON_INTERPRET=1``; in the parent process the suite's tests are skipped with that
    reason. test_kernels_compile_for_sm90_without_fma needs no GPU either: it compiles the real
    kernels for sm_90 (Triton ships ptxas) and checks their PTX, outside the interpreter.

Oracles: fp32 spikes must equal the fp32 reference's bit for bit and the membrane be within
1e-6. Gradients are compared with the reference run in fp64 on the same inputs: the fp32
reference itself is off by up to ~1e-3 (normwise) on the graded-factor gradient with an
immediate reset, where autograd sums two terms that cancel exactly, while the kernels use the
simplified derivative (as csrc/lif_kernel.h does). Tolerance: max|a-b| <= 1e-5 * max|b| for
every gradient (normwise; elementwise relative error means nothing where cancellation makes a
gradient element tiny), with random upstream gradients on spikes and membrane.
"""
import os
import zlib
from pathlib import Path

import pytest
import torch

from conftest import run_child_suite

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cpu" if INTERPRET else ("cuda" if HAS_CUDA else None)

needs_device = pytest.mark.skipif(
    DEVICE is None, reason="no CUDA GPU: this suite runs on CPU through Triton's interpreter in a "
                           "child process (see test_interpreter_suite)")


@pytest.mark.skipif(DEVICE is not None, reason="the suite runs directly in this process")
def test_interpreter_suite():
    pytest.importorskip("triton")
    run_child_suite(Path(__file__), {"TRITON_INTERPRET": "1"}, "interpreter suite")


if DEVICE is not None:
    import fastlif
    from fastlif import surrogate as S, testing
    from fastlif.codes import RESET_CODES
    from fastlif.ops.lif import saved_layout
    from fastlif.kernels import common as KC, lif as K

    SURROGATES = {
        "atan": S.atan(), "fast_sigmoid": S.fast_sigmoid(),
        # slope 5: snnTorch's sigmoid formula overflows (inf/inf = nan) for z < -88/slope, and
        # with slope 25 random test membranes get there; the formula is the same.
        "sigmoid": S.sigmoid(5), "triangular": S.triangular(),
        "straight_through": S.straight_through_estimator(), "disabled": S.no_grad(),
    }
else:  # the names the parametrisations below use, so that collection works
    SURROGATES = {k: None for k in ("atan", "fast_sigmoid", "sigmoid", "triangular",
                                    "straight_through", "disabled")}

PARAMS = ("beta", "threshold", "graded")
RTOL = 1e-5


@pytest.fixture(autouse=True)
def _nan_filled_outputs(monkeypatch):
    """Every buffer the launchers allocate starts as NaN (0xFF for bytes), so an element a
    kernel forgot to write shows up (fla's tests/conftest.py does the same)."""
    if DEVICE is None:
        yield
        return
    original = KC.new

    def nan_new(shape, dtype, device):
        t = original(shape, dtype, device)
        return t.fill_(255) if dtype == torch.uint8 else t.fill_(float("nan"))

    monkeypatch.setattr(KC, "new", nan_new)
    yield


# ------------------------------------------------------------------------------------------
# helpers: fastlif.testing's, with this suite's input scales and device


def make_case(T, shape, *, per_neuron=(True, True, True), mem0=True, seed=0, scale=1.5):
    return testing.make_case(T, shape, per_neuron=per_neuron, mem0=mem0, seed=seed, scale=scale,
                             beta_range=(0.0, 1.0), threshold_range=(0.5, 1.5))


def run(backend, case, dtype, *, reset="subtract", delay=True, sg="atan", learn=PARAMS,
        low_memory=False, upstream=("spk", "mem")):
    """Forward and backward; returns (spk, mem, {name: grad}) with missing grads as zeros."""
    return testing.run(case, backend, dtype=dtype, device=DEVICE, learn=learn, upstream=upstream,
                       reset_mechanism=reset, reset_delay=delay, surrogate=SURROGATES[sg],
                       low_memory=low_memory)


def normwise(a, b, floor=1e-6):
    return testing.normwise(a, b, floor)


def assert_grads_close(got, want, rtol=RTOL, what=""):
    testing.assert_grads_close(got, want, rtol, floor=1e-6, what=what)


def fwd(x, mem0, beta, thr, graded, reset_mode=0, reset_delay=True, low_memory=False):
    return K.lif_fwd(x, mem0, beta, thr, graded, steps=x.shape[0], reset_mode=reset_mode,
                     reset_delay=reset_delay, low_memory=low_memory, mem_fp32=False)


def check_against_reference(case, **kw):
    """fp32 triton vs fp32 reference (forward, exact) and fp64 reference (gradients)."""
    spk, mem, grads = run("triton", case, torch.float32, **kw)
    spk32, mem32, _ = run("reference", case, torch.float32, **kw)
    spk64, _, grads64 = run("reference", case, torch.float64, **kw)
    assert spk.dtype == mem.dtype == torch.float32
    assert torch.equal(spk, spk32), f"fp32 spikes differ at {(spk != spk32).sum().item()} places"
    torch.testing.assert_close(mem, mem32, rtol=0, atol=1e-6)
    assert torch.equal(spk32.double(), spk64), "fp64 reference flips a spike: pick another seed"
    assert_grads_close(grads, grads64, what=str(kw))
    return spk, mem, grads


# ------------------------------------------------------------------------------------------
# equivalence with the reference


@needs_device
@pytest.mark.parametrize("sg", list(SURROGATES))
@pytest.mark.parametrize("delay", [True, False], ids=["delay", "immediate"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_matches_reference(reset, delay, sg):
    """Every reset mode x reset_delay x surrogate, per-neuron learnable parameters, mem0."""
    case = make_case(9, (3, 7), seed=zlib.crc32(f"{reset}{delay}{sg}".encode()))
    check_against_reference(case, reset=reset, delay=delay, sg=sg)


PARAM_VARIANTS = {
    # name: (per_neuron (beta, threshold, graded), mem0, reset, delay, surrogate, learn)
    "all-scalar-no-mem0": ((False, False, False), False, "subtract", True, "atan", PARAMS),
    "mixed-zero-immediate": ((True, False, True), True, "zero", False, "fast_sigmoid", PARAMS),
    "mixed-none": ((False, True, False), True, "none", True, "triangular", PARAMS),
    "scalar-subtract-immediate": ((False, False, False), True, "subtract", False, "atan", PARAMS),
    "not-learnable": ((True, True, True), True, "subtract", True, "atan", ()),
    "learn-beta-only": ((True, False, False), False, "zero", True, "sigmoid", ("beta",)),
}


@needs_device
@pytest.mark.parametrize("variant", list(PARAM_VARIANTS))
def test_parameter_variants(variant):
    per_neuron, mem0, reset, delay, sg, learn = PARAM_VARIANTS[variant]
    case = make_case(8, (4, 5), per_neuron=per_neuron, mem0=mem0, seed=len(variant))
    _, _, grads = check_against_reference(case, reset=reset, delay=delay, sg=sg, learn=learn)
    assert set(grads) == {"x", *learn} | ({"mem0"} if mem0 else set())


@needs_device
def test_beta_outside_unit_interval_is_clamped():
    case = make_case(7, (2, 6), seed=3)
    case.params["beta"] = torch.tensor([-0.3, 0.0, 0.5, 1.0, 1.2, 0.9])
    _, _, grads = check_against_reference(case, reset="subtract", delay=True)
    assert grads["beta"][0] == 0 and grads["beta"][4] == 0  # clamp: no gradient outside [0, 1]


@needs_device
@pytest.mark.parametrize("T, shape", [
    (1, (4, 7)),       # one step
    (13, (3, 5, 9)),   # more than one batch dimension
    (5, (2, 301)),     # 602 neurons: several programs, the last one partly masked
    (6, (1,)),         # a single neuron (L = 1)
], ids=["T1", "4d", "multi-block", "one-neuron"])
def test_shapes(T, shape):
    case = make_case(T, shape, seed=T)
    check_against_reference(case, reset="subtract", delay=False, sg="fast_sigmoid")


@needs_device
def test_upstream_gradient_on_one_output_only():
    case = make_case(6, (3, 5), seed=11)
    for upstream in (("spk",), ("mem",)):
        spk, mem, grads = run("triton", case, torch.float32, upstream=upstream, delay=False)
        _, _, want = run("reference", case, torch.float64, upstream=upstream, delay=False)
        assert_grads_close(grads, want, what=str(upstream))


@needs_device
def test_empty_upstream_gradient_means_zeros():
    """The launcher reads a missing (None) grad_spk / grad_mem as zeros without loading it."""
    case = make_case(5, (2, 9), seed=5)
    dev = lambda t: t.to(DEVICE, torch.float32)  # noqa: E731
    x3 = dev(case.x)
    beta, thr, g = (dev(case.params[k]).reshape(-1) for k in PARAMS)
    mem0 = dev(case.mem0).reshape(-1)
    for reset_delay in (True, False):
        spk, mem, state, flags = fwd(x3, mem0, beta, thr, g, 0, reset_delay)
        args = (None if state.numel() else mem, state, flags, mem0, beta, thr, g)
        kw = dict(steps=x3.shape[0], reset_mode=0, reset_delay=reset_delay, surrogate_kind=1,
                  surrogate_param=25.0, x_dtype=torch.float32)
        full = K.lif_bwd(dev(case.grad_spk), torch.zeros_like(x3), *args, **kw)
        empty = K.lif_bwd(dev(case.grad_spk), None, *args, **kw)
        for a, b in zip(full, empty):
            assert torch.equal(a, b)


@needs_device
def test_matches_cpp_backend():
    """Same formulas as csrc/lif.cpp: forward bit for bit, gradients to rounding."""
    from fastlif.backends import why_unavailable
    if why_unavailable("cpp", "cpu"):
        pytest.skip(f"cpp backend unavailable: {why_unavailable('cpp', 'cpu')}")
    case = make_case(10, (3, 11), seed=21)
    for reset, delay in (("subtract", False), ("zero", True)):
        spk, mem, grads = run("triton", case, torch.float32, reset=reset, delay=delay)
        cpp = testing.run(case, "cpp", reset_mechanism=reset, reset_delay=delay,
                          surrogate=SURROGATES["atan"])
        assert torch.equal(spk.cpu(), cpp.spk) and torch.equal(mem.cpu(), cpp.mem)
        assert_grads_close({k: v.cpu() for k, v in grads.items()}, cpp.grads, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# dtypes


@needs_device
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_input(dtype):
    """fp16/bf16 input computes in fp32: its spikes are exactly those of the fp32 reference
    run on the same rounded input, its membrane that reference's membrane rounded once."""
    case = make_case(9, (3, 7), seed=7)
    r = lambda t: t.to(dtype).float()  # noqa: E731 - the same inputs, rounded to dtype
    rounded = testing.Case(r(case.x), r(case.mem0), case.params, r(case.grad_spk), r(case.grad_mem))
    for reset, delay in (("subtract", True), ("zero", False)):
        spk, mem, grads = run("triton", case, dtype, reset=reset, delay=delay)
        spk32, mem32, _ = run("reference", rounded, torch.float32, reset=reset, delay=delay)
        _, _, want = run("reference", rounded, torch.float64, reset=reset, delay=delay)
        assert spk.dtype == mem.dtype == dtype
        assert torch.equal(spk, spk32.to(dtype))
        assert torch.equal(mem, mem32.to(dtype))
        # parameter gradients are fp32 sums: tight; x/mem0 gradients are rounded once to dtype
        assert_grads_close({k: grads[k] for k in PARAMS}, {k: want[k] for k in PARAMS})
        eps = torch.finfo(dtype).eps
        for k in ("x", "mem0"):
            assert grads[k].dtype == dtype
            assert normwise(grads[k], want[k]) <= eps, k


@needs_device
def test_fp64():
    case = make_case(9, (3, 7), seed=8)
    for reset, delay, sg in (("subtract", False, "atan"), ("zero", True, "sigmoid")):
        spk, mem, grads = run("triton", case, torch.float64, reset=reset, delay=delay, sg=sg)
        spk64, mem64, want = run("reference", case, torch.float64, reset=reset, delay=delay, sg=sg)
        assert spk.dtype == torch.float64
        assert torch.equal(spk, spk64)
        torch.testing.assert_close(mem, mem64, rtol=0, atol=1e-12)
        assert_grads_close(grads, want, rtol=1e-10)


@needs_device
def test_unsupported_dtype_raises():
    x = torch.zeros(2, 1, 3, dtype=torch.int32, device=DEVICE)
    p = torch.ones(1, device=DEVICE)
    with pytest.raises(TypeError, match="float32, bfloat16, float16 or float64"):
        fwd(x, None, p, p, p, 0, True)


@needs_device
def test_saved_layout_is_followed():
    """What forward returns for backward has the shapes/dtypes fastlif.ops.saved_layout says
    (the fake implementation used by torch.compile relies on it)."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        x = torch.randn(3, 2, 5, device=DEVICE).to(dtype)
        p = torch.full((1,), 0.5, dtype=compute, device=DEVICE)
        for reset in RESET_CODES.values():
            for delay in (True, False):
                for low_memory in (False, True):
                    spk, mem, state, flags = torch.ops.fastlif.lif_fwd(
                        x, None, p, p, p, steps=3, reset_mode=reset, reset_delay=delay,
                        low_memory=low_memory, mem_fp32=False, backend="triton")
                    shape, sdtype, fshape = saved_layout(x.shape, dtype, reset, delay, low_memory)
                    what = (dtype, reset, delay, low_memory)
                    assert spk.dtype == mem.dtype == dtype, what
                    assert tuple(state.shape) == tuple(shape) and state.dtype == sdtype, what
                    assert tuple(flags.shape) == tuple(fshape) and flags.dtype == torch.uint8, what


# ------------------------------------------------------------------------------------------
# low_memory, determinism, strides


@needs_device
@pytest.mark.parametrize("dtype, reset, delay", [
    (torch.float32, "subtract", True), (torch.float32, "zero", False),
    (torch.bfloat16, "subtract", True)], ids=["fp32-delay", "fp32-immediate", "bf16-delay"])
def test_low_memory(dtype, reset, delay):
    """Forward unchanged; backward from a bf16 state. fp32/fp16 input saves z = u - threshold
    (exact spikes and reset flags: the graded-factor gradient is exact, the others within
    ~1e-3); bf16 input with a delayed reset may have no state (fastlif.ops.saved_layout
    decides) and then reuses its bf16 mem output."""
    case = make_case(12, (4, 16), seed=13, scale=0.7)
    spk, mem, grads = run("triton", case, dtype, reset=reset, delay=delay)
    spk_lm, mem_lm, grads_lm = run("triton", case, dtype, reset=reset, delay=delay,
                                   low_memory=True)
    assert torch.equal(spk, spk_lm) and torch.equal(mem, mem_lm)
    bound = 1e-2 if dtype == torch.float32 else 0.1
    for k in grads:
        assert normwise(grads_lm[k], grads[k]) < bound, k
    if dtype == torch.float32:
        assert normwise(grads_lm["graded"], grads["graded"]) <= 1e-6
    x = case.x.to(DEVICE, dtype)
    p = torch.full((1,), 0.5, device=DEVICE)
    _, _, state, flags = torch.ops.fastlif.lif_fwd(x, None, p, p, p, steps=x.shape[0],
                                                   reset_mode=RESET_CODES[reset], reset_delay=delay,
                                                   low_memory=True, mem_fp32=False, backend="triton")
    assert state.dtype == torch.bfloat16
    if delay:  # at most 2 bytes per neuron-step kept for backward
        assert state.numel() * state.element_size() + flags.numel() <= 2 * x.numel()


@needs_device
def test_every_config_gives_identical_results(monkeypatch):
    """Block size, warps and prefetching (the autotuned meta-parameters) change nothing in
    the results: each config, forced as the only one, gives the same bits."""
    case = make_case(7, (5, 61), seed=19)  # 305 neurons: several blocks of 128 or 256
    want = run("triton", case, torch.float32, delay=False, sg="fast_sigmoid")
    for kernel in (K.LIF_FWD, K.LIF_BWD):
        monkeypatch.setattr(kernel, "tuned", None)  # always launch KC.FIXED_CONFIG
    for cfg in KC.AUTOTUNE_CONFIGS:
        monkeypatch.setattr(KC, "FIXED_CONFIG", cfg)
        got = run("triton", case, torch.float32, delay=False, sg="fast_sigmoid")
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), cfg
        for k in want[2]:
            assert torch.equal(got[2][k], want[2][k]), (cfg, k)


@needs_device
def test_deterministic():
    case = make_case(10, (5, 33), seed=17)
    _, _, g1 = run("triton", case, torch.float32, delay=False, sg="sigmoid")
    _, _, g2 = run("triton", case, torch.float32, delay=False, sg="sigmoid")
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k


@needs_device
def test_strided_input():
    """The launcher takes x with any strides (the op passes contiguous x; direct callers may not)."""
    T, R, L = 6, 3, 10
    base = torch.randn(T, L, 2 * R, device=DEVICE) + 0.5
    x = base[:, :, ::2].transpose(1, 2)  # [T, R, L], neither dimension contiguous
    assert not x.is_contiguous()
    p = torch.rand(L, device=DEVICE)
    thr = torch.full((1,), 0.8, device=DEVICE)
    for delay in (True, False):
        got = fwd(x, None, p, thr, thr, 0, delay)
        want = fwd(x.contiguous(), None, p, thr, thr, 0, delay)
        for a, b in zip(got, want):
            assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# integration: module, torch.library checks, torch.compile


@needs_device
def test_leaky_module_matches_snntorch():
    snn = pytest.importorskip("snntorch")
    from snntorch import surrogate as ssg
    torch.manual_seed(0)
    x = (torch.randn(10, 4, 12) + 0.4).to(DEVICE)
    ref = snn.Leaky(beta=0.85, threshold=0.9, spike_grad=ssg.fast_sigmoid(slope=25),
                    learn_beta=True, reset_mechanism="subtract").to(DEVICE)
    fast = fastlif.Leaky(beta=0.85, threshold=0.9, spike_grad=ssg.fast_sigmoid(slope=25),
                         learn_beta=True, reset_mechanism="subtract", backend="triton").to(DEVICE)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    spk_r, mem_r = testing.run_per_step(ref, xr)
    spk_f, mem_f = fast.sequence(xf)
    assert torch.equal(spk_f, spk_r)
    torch.testing.assert_close(mem_f, mem_r, rtol=0, atol=1e-6)
    g = torch.randn_like(x)
    (spk_r * g).sum().backward()
    (spk_f * g).sum().backward()
    assert normwise(xf.grad, xr.grad) <= 1e-5
    assert normwise(fast.beta.grad, ref.beta.grad) <= 1e-5


@needs_device
def test_opcheck():
    x = (torch.randn(4, 2, 6, device=DEVICE) + 0.5)
    beta = torch.rand(6, device=DEVICE)
    p = torch.ones(1, device=DEVICE)
    mem0 = torch.randn(12, device=DEVICE)
    for reset, delay in ((0, True), (1, False)):
        torch.library.opcheck(torch.ops.fastlif.lif_fwd.default, (x, mem0, beta, p, p),
                              kwargs=dict(steps=4, reset_mode=reset, reset_delay=delay,
                                          low_memory=False, mem_fp32=False, backend="triton"),
                              test_utils=("test_schema", "test_faketensor"))


@needs_device
def test_torch_compile_fullgraph():
    backend = "inductor" if DEVICE == "cuda" else "aot_eager"  # no C++ compile on the CPU path
    torch._dynamo.reset()

    def f(x, beta):
        spk, mem = fastlif.lif_sequence(x * 1.5, beta, 1.0, backend="triton",
                                        surrogate=fastlif.surrogate.fast_sigmoid())
        return spk.sum() + (mem * mem).mean()

    x = torch.randn(6, 3, 8, device=DEVICE)
    beta = torch.rand(8, device=DEVICE)
    xe, be = x.clone().requires_grad_(), beta.clone().requires_grad_()
    xc, bc = x.clone().requires_grad_(), beta.clone().requires_grad_()
    f(xe, be).backward()
    out = torch.compile(f, fullgraph=True, backend=backend)(xc, bc)
    out.backward()
    torch.testing.assert_close(out.detach(), f(x, beta).detach(), rtol=1e-6, atol=1e-6)
    assert normwise(xc.grad, xe.grad) <= 1e-6 and normwise(bc.grad, be.grad) <= 1e-6


# ------------------------------------------------------------------------------------------
# the other families: Synaptic


def synaptic_case(T, neurons, per_neuron=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = neurons[-1]
    rand = lambda lo, hi: torch.rand(L if per_neuron else (), generator=g) * (hi - lo) + lo  # noqa: E731
    tensors = {"x": torch.randn(T, *neurons, generator=g) * 0.8 + 0.3,
               "syn": torch.randn(*neurons, generator=g) * 0.5, "mem": torch.randn(*neurons, generator=g),
               "alpha": rand(0.0, 1.0), "beta": rand(0.0, 1.0), "threshold": rand(0.75, 1.25),
               "graded": rand(0.5, 1.5)}
    return tensors, [torch.randn(T, *neurons, generator=g) for _ in range(3)]


def run_synaptic(backend, tensors, upstream, dtype, sg, **options):
    from fastlif.reference import synaptic_sequence_reference
    leaves = testing.leaves_of(tensors, dtype, DEVICE, learn=("alpha", "beta", "threshold", "graded"))
    if backend == "reference":
        fn = lambda x, syn, mem, alpha, beta, threshold, graded: synaptic_sequence_reference(  # noqa: E731
            x, alpha, beta, threshold, syn=syn, mem=mem, spike_fn=SURROGATES[sg], graded_spikes_factor=graded,
            **options)
    else:
        fn = lambda x, syn, mem, alpha, beta, threshold, graded: fastlif.synaptic_sequence(  # noqa: E731
            x, alpha, beta, threshold, syn=syn, mem=mem, surrogate=SURROGATES[sg], graded_spikes_factor=graded,
            backend=backend, **options)
    return testing.forward_backward(fn, leaves, upstream)


@needs_device
@pytest.mark.parametrize("sg", ["atan", "fast_sigmoid", "sigmoid", "triangular"])
@pytest.mark.parametrize("delay", [True, False], ids=["delay", "immediate"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_synaptic_matches_reference(reset, delay, sg):
    tensors, upstream = synaptic_case(9, (3, 7), seed=zlib.crc32(f"{reset}{delay}{sg}".encode()))
    options = dict(reset_mechanism=reset, reset_delay=delay)
    outs, grads = run_synaptic("triton", tensors, upstream, torch.float32, sg, **options)
    want32, _ = run_synaptic("reference", tensors, upstream, torch.float32, sg, **options)
    want64, grads64 = run_synaptic("reference", tensors, upstream, torch.float64, sg, **options)
    assert torch.equal(outs[0], want32[0]), "fp32 spikes differ from the fp32 reference"
    for a, b in zip(outs[1:], want32[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert torch.equal(want32[0].double(), want64[0]), "fp64 reference flips a spike: pick another seed"
    assert_grads_close(grads, grads64)


@needs_device
def test_synaptic_matches_cpp_and_half_input():
    from fastlif.backends import why_unavailable
    tensors, upstream = synaptic_case(8, (2, 13), seed=3)
    outs, grads = run_synaptic("triton", tensors, upstream, torch.float32, "atan", reset_delay=False)
    if not why_unavailable("cpp", "cpu"):
        cpp, cpp_grads = run_synaptic("cpp", {k: v for k, v in tensors.items()}, upstream, torch.float32, "atan",
                                      reset_delay=False) if DEVICE == "cpu" else (None, None)
        if cpp is not None:
            assert all(torch.equal(a, b) for a, b in zip(outs, cpp))
            assert_grads_close(grads, cpp_grads, rtol=1e-6)
    rounded = dict(tensors, x=tensors["x"].to(torch.bfloat16).float())
    half, _ = run_synaptic("triton", rounded, upstream, torch.bfloat16, "atan")
    want, _ = run_synaptic("reference", rounded, upstream, torch.float32, "atan")
    assert half[0].dtype == torch.bfloat16 and half[1].dtype == half[2].dtype == torch.float32
    assert torch.equal(half[0], want[0].to(torch.bfloat16))  # the graded spike value, rounded once


# ------------------------------------------------------------------------------------------
# the other families: RLeaky with one-to-one feedback


def run_rleaky(backend, tensors, upstream, dtype, sg, reset="subtract", delay=True):
    from fastlif.codes import reset_code
    from fastlif.ops import rleaky
    from fastlif.reference import rleaky_sequence_reference
    leaves = testing.leaves_of(tensors, dtype, DEVICE, learn=("beta", "V", "threshold", "graded"))
    if backend == "reference":
        fn = lambda x, spk, mem, beta, V, threshold, graded: rleaky_sequence_reference(  # noqa: E731
            x, beta, lambda s: s * V, threshold, spk=spk, mem=mem, spike_fn=SURROGATES[sg],
            graded_spikes_factor=graded, reset_mechanism=reset, reset_delay=delay)
    else:
        fn = lambda x, spk, mem, beta, V, threshold, graded: rleaky.run_rleaky(  # noqa: E731
            x, spk, mem, beta, V, threshold, graded, single_step=False, reset_mode=reset_code(reset),
            reset_delay=delay, spike_fn=SURROGATES[sg], surrogate=SURROGATES[sg], backend=backend)
    return testing.forward_backward(fn, leaves, upstream)


def rleaky_case(T, neurons, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = neurons[-1]
    tensors = {"x": torch.randn(T, *neurons, generator=g) * 0.8 + 0.3,
               "spk": (torch.rand(*neurons, generator=g) < 0.3).float(), "mem": torch.randn(*neurons, generator=g),
               "beta": torch.rand(L, generator=g), "V": torch.rand(L, generator=g) - 0.5,
               "threshold": torch.rand(L, generator=g) * 0.5 + 0.75, "graded": torch.rand(L, generator=g) + 0.5}
    return tensors, [torch.randn(T, *neurons, generator=g) for _ in range(2)]


@needs_device
@pytest.mark.parametrize("sg", ["atan", "fast_sigmoid", "sigmoid", "straight_through"])
@pytest.mark.parametrize("delay", [True, False], ids=["delay", "immediate"])
@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_rleaky_matches_reference(reset, delay, sg):
    tensors, upstream = rleaky_case(9, (3, 7), seed=zlib.crc32(f"r{reset}{delay}{sg}".encode()))
    outs, grads = run_rleaky("triton", tensors, upstream, torch.float32, sg, reset, delay)
    want32, _ = run_rleaky("reference", tensors, upstream, torch.float32, sg, reset, delay)
    want64, grads64 = run_rleaky("reference", tensors, upstream, torch.float64, sg, reset, delay)
    assert torch.equal(outs[0], want32[0]), "fp32 spikes differ from the fp32 reference"
    torch.testing.assert_close(outs[1], want32[1], rtol=0, atol=1e-6)
    assert torch.equal(want32[0].double(), want64[0]), "fp64 reference flips a spike: pick another seed"
    assert_grads_close(grads, grads64)


@needs_device
def test_rleaky_dense_layer_is_refused_by_triton():
    from fastlif.ops import rleaky
    x = torch.rand(3, 2, 4, device=DEVICE)
    with pytest.raises(fastlif.backends.BackendUnavailable, match="dense recurrent layer|cannot run"):
        rleaky.run_rleaky(x, None, None, 0.9, torch.nn.Linear(4, 4).to(DEVICE), 1.0, 1.0, single_step=False, reset_mode=0,
                   reset_delay=True, spike_fn=S.atan(), surrogate=S.atan(), backend="triton")

"""Property-based tests (hypothesis): the C++ kernels against the reference loop, over shapes
and every option.

What must hold, for any shape and options, on CPU:
  * spikes and membranes are identical (fp32 and fp64: same operations in the same order);
  * gradients of x and of the initial membrane agree elementwise to rtol 1e-5 (plus an atol of
    1e-6 of the largest gradient, for entries that cancel to nearly zero);
  * parameter gradients, sums of n terms over batch and time, agree normwise to 1e-4:
    max|a - b| / max(max|b|, sqrt(n) * rms(grad x)). The floor is for sums that cancel: n terms
    the size of one gradient of x carry an fp32 rounding error of about eps * sqrt(n) * rms
    in the reference itself (the C++ kernels accumulate in double and are the closer of the two
    to an fp64 computation), however small the sum.
NaNs (e.g. snnTorch's sigmoid surrogate overflowing far below threshold) must sit in the
same places.
"""
import math

import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import fastlif
from fastlif import surrogate as sg
from conftest import needs_cpp

pytestmark = needs_cpp

SURROGATE_MAKERS = {
    "atan": lambda p: sg.atan(p), "fast_sigmoid": lambda p: sg.fast_sigmoid(p * 10),
    "sigmoid": lambda p: sg.sigmoid(p * 10), "triangular": lambda p: sg.triangular(p),
    "straight_through_estimator": lambda p: sg.straight_through_estimator(),
    "disabled": lambda p: sg.no_grad(),
}


def _as_float(x):
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _grads(leaves):
    return [t.grad if isinstance(t, torch.Tensor) and t.requires_grad else None for t in leaves]


def _run(fn, x, mem, params, upstream):
    for t in (x, mem, *params):
        if isinstance(t, torch.Tensor) and t.requires_grad:
            t.grad = None
    spk, mem_seq = fn()
    pairs = [(out, up) for out, up in zip((spk, mem_seq), upstream) if out.requires_grad]
    if pairs:
        torch.autograd.backward(*zip(*pairs))
    return spk.detach(), mem_seq.detach(), _grads([x, mem, *params])


def assert_same(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert torch.equal(a.isnan(), b.isnan()), f"{what}: NaNs in different places"
    assert torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)), (
        f"{what} differs (max {(a - b).abs().nan_to_num(0.0).max():.3g})")


def _finite_max(t):
    t = t[t.isfinite()]
    return t.abs().max().item() if t.numel() else 0.0


def assert_grad_close(a, b, what, rtol=1e-5, floor=0.0, normwise=False):
    """None is autograd's zero: it equals a gradient of zeros (as for an empty batch)."""
    if a is None or b is None:
        other = b if a is None else a
        assert other is None or not other.any(), f"{what}: gradient missing where it is not zero"
        return
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert torch.equal(a.isnan(), b.isnan()), f"{what}: NaNs in different places"
    ok = b.isfinite() & a.isfinite()
    assert torch.equal(ok, b.isfinite()), f"{what}: infinities in different places"
    a, b = a[ok].double(), b[ok].double()
    if not b.numel():
        return
    scale = max(b.abs().max().item(), floor)
    if normwise:
        err = (a - b).abs().max().item() / (scale or 1.0)
        assert err <= rtol, f"{what}: normwise error {err:.2e} > {rtol:.0e}"
    else:
        bad = (a - b).abs() > rtol * b.abs() + 1e-6 * scale
        assert not bad.any(), (f"{what}: {int(bad.sum())} elements off, worst "
                               f"{((a - b).abs() / b.abs().clamp_min(1e-30)).max():.2e} relative")


def check_against_reference(x, beta=0.9, threshold=1.0, *, mem=None, graded=1.0,
                            surrogate=None, reset_mechanism="subtract", reset_delay=True,
                            seed=0, param_rtol=1e-4):
    """Run ``lif_sequence(backend="cpp")`` and the reference loop on the same tensors (as given:
    non-contiguous stays non-contiguous) with the same random upstream gradients, and assert
    they agree (see the module docstring). Tensors that require grad get compared gradients.
    Returns the cpp spikes and membrane."""
    surrogate = surrogate or sg.atan()
    params = [beta, threshold, graded]
    options = dict(reset_mechanism=reset_mechanism, reset_delay=reset_delay)
    g = torch.Generator().manual_seed(seed)
    fdtype = _as_float(x).dtype
    upstream = tuple(torch.randn(x.shape, generator=g, dtype=torch.float64).to(fdtype)
                     for _ in range(2))

    def fast():
        return fastlif.lif_sequence(x, beta, threshold, mem=mem, surrogate=surrogate,
                                    graded_spikes_factor=graded, backend="cpp", **options)

    # The reference also differentiates x when the caller does not: the size of grad x sets
    # the floor for the parameter gradients (see the module docstring).
    x_ref = x if x.requires_grad else _as_float(x).detach().clone().requires_grad_()

    def ref():
        return fastlif.lif_sequence_reference(x_ref, beta, threshold, mem=mem,
                                              spike_fn=surrogate, graded_spikes_factor=graded,
                                              **options)

    spk_f, mem_f, grads_f = _run(fast, x, mem, params, upstream)
    spk_r, mem_r, grads_r = _run(ref, x, mem, params, upstream)
    assert_same(spk_f, spk_r, "spikes")
    assert_same(mem_f, mem_r, "membrane")
    grad_x = x_ref.grad if x_ref.grad is not None else torch.zeros(0)
    rms = grad_x.double().nan_to_num(0.0).pow(2).mean().sqrt().item() if grad_x.numel() else 0.0
    for i, name in enumerate(("x", "mem", "beta", "threshold", "graded_spikes_factor")):
        if i < 2:
            assert_grad_close(grads_f[i], grads_r[i], f"grad {name}")
        else:
            n_terms = x.numel() / max(grads_r[i].numel(), 1) if grads_r[i] is not None else 1
            assert_grad_close(grads_f[i], grads_r[i], f"grad {name}", rtol=param_rtol,
                              floor=rms * math.sqrt(n_terms), normwise=True)
    return spk_f, mem_f


# --- strategies -------------------------------------------------------------------------------

neurons = st.sampled_from([1, 2, 3, 5, 8, 17, 64, 257])
batch_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple)


@st.composite
def cases(draw):
    T = draw(st.integers(1, 12))
    n = draw(neurons)
    batch = draw(batch_shapes)
    x_kind = draw(st.sampled_from(["plain", "requires_grad", "bool"]))
    # a bool spike train runs in the default dtype, so its parameters are fp32 too
    dtype = torch.float32 if x_kind == "bool" else draw(st.sampled_from([torch.float32,
                                                                          torch.float64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def uniform(shape, lo, hi):
        return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype)

    def param(lo, hi):
        kind = draw(st.sampled_from(["number", "scalar_tensor", "per_neuron"]))
        learn = kind != "number" and draw(st.booleans())
        if kind == "number":
            return float(uniform((), lo, hi))
        p = uniform(() if kind == "scalar_tensor" else (n,), lo, hi)
        return p.requires_grad_(learn)

    shape = (T, *batch, n)
    scale = draw(st.sampled_from([0.3, 1.0, 2.5]))
    x = uniform(shape, -0.3 * scale, scale)
    if x_kind != "plain":
        x = x > 0.5 * scale if x_kind == "bool" else x.requires_grad_()
    mem = uniform(shape[1:], -1.0, 1.5).requires_grad_(draw(st.booleans())) \
        if draw(st.booleans()) else None
    sg_name = draw(st.sampled_from(sorted(SURROGATE_MAKERS)))
    return dict(
        x=x, mem=mem,
        beta=param(0.0, 1.2),          # some above 1: clamped, as snnTorch does
        threshold=param(0.2, 2.0),
        graded=param(0.25, 2.0),
        surrogate=SURROGATE_MAKERS[sg_name](draw(st.floats(0.5, 4.0))),
        reset_mechanism=draw(st.sampled_from(["subtract", "zero", "none"])),
        reset_delay=draw(st.booleans()),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_cpp_equals_reference(case):
    check_against_reference(**case)


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 6), n=neurons, seed=st.integers(0, 1000),
       reset_delay=st.booleans(), reset_mechanism=st.sampled_from(["subtract", "zero", "none"]))
def test_chunks_equal_whole_sequence(T, n, seed, reset_delay, reset_mechanism):
    """Running a sequence in two chunks, the second from the first's final membrane, is the
    same as running it whole (the state is all there is)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2 * T, 3, n, generator=g) * 1.5
    beta = torch.rand(n, generator=g)
    opts = dict(reset_mechanism=reset_mechanism, reset_delay=reset_delay)
    spk, mem = fastlif.lif_sequence(x, beta, 0.7, **opts)
    spk1, mem1 = fastlif.lif_sequence(x[:T], beta, 0.7, **opts)
    spk2, mem2 = fastlif.lif_sequence(x[T:], beta, 0.7, mem=mem1[-1], **opts)
    assert torch.equal(torch.cat([spk1, spk2]), spk)
    assert torch.equal(torch.cat([mem1, mem2]), mem)

"""Hostile and unusual input.

Rejected, with an exception that names the problem; accepted, and equal to the reference
loop; and a module that rejected a call keeps working, its state untouched by the failure.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

import fastlif
from fastlif.backends import BackendUnavailable
from conftest import needs_cpp
from test_properties import check_against_reference

ALL_PARAMS = ("beta", "threshold", "graded_spikes_factor")


def rand(*shape, lo=0.0, hi=1.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


# --- rejected ---------------------------------------------------------------------------------

def test_one_dimensional_sequence():
    x = torch.randn(5)
    for call in (lambda: fastlif.Leaky(0.9).sequence(x),
                 lambda: fastlif.Leaky(0.9, step_mode="multi")(x),
                 lambda: fastlif.Leaky(0.9, step_mode="multi", init_hidden=True)(x),
                 lambda: fastlif.lif_sequence(x, 0.9)):
        with pytest.raises(ValueError, match=r"x_seq must be \[T, \.\.\.neurons\].*shape \(5,\)"):
            call()


def test_initial_membrane_of_wrong_shape():
    x = torch.randn(4, 3, 5)
    match = r"mem \(the initial membrane\) must have shape \(3, 5\).*got \(5, 3\)"
    for call in (lambda: fastlif.Leaky(0.9).sequence(x, torch.zeros(5, 3)),
                 lambda: fastlif.Leaky(0.9, step_mode="multi")(x, torch.zeros(5, 3)),
                 lambda: fastlif.lif_sequence(x, 0.9, mem=torch.zeros(5, 3))):
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=needs_cpp), "reference"])
@pytest.mark.parametrize("name", ALL_PARAMS)
def test_per_neuron_parameter_of_wrong_length(name, backend):
    """Named, whichever backend runs the call (the reference path must check too)."""
    x = torch.randn(4, 3, 5)
    kwargs = dict(beta=0.9, threshold=1.0, graded_spikes_factor=1.0)
    kwargs[name] = torch.rand(4)
    match = fr"{name} must be a scalar or hold one value per neuron along the last dimension \(5\)"
    with pytest.raises(ValueError, match=match):
        fastlif.lif_sequence(x, kwargs.pop("beta"), kwargs.pop("threshold"), backend=backend,
                             **kwargs)
    learn = {"beta": "learn_beta", "threshold": "learn_threshold",
             "graded_spikes_factor": "learn_graded_spikes_factor"}[name]
    lif = fastlif.Leaky(torch.rand(4) if name == "beta" else 0.9, backend=backend,
                        **({name: torch.rand(4)} if name != "beta" else {}), **{learn: True})
    with pytest.raises(ValueError, match=match):
        lif.sequence(x)


def test_unknown_reset_mechanism():
    match = r"unknown reset_mechanism 'soft'; expected one of 'subtract', 'zero', 'none'"
    with pytest.raises(ValueError, match=match):
        fastlif.Leaky(0.9, reset_mechanism="soft")
    with pytest.raises(ValueError, match=match):
        fastlif.lif_sequence(torch.randn(3, 2), 0.9, reset_mechanism="soft")
    lif = fastlif.Leaky(0.9)
    with pytest.raises(ValueError, match=match):
        lif.reset_mechanism = "soft"
    assert lif.reset_mechanism == "subtract" and int(lif.reset_mechanism_val) == 0


@pytest.mark.parametrize("bad", ["atan", 42, torch.tensor(2.0)])
def test_unknown_surrogate(bad):
    match = r"spike_grad must be a fastlif.surrogate or snnTorch surrogate, or a callable; got"
    with pytest.raises(TypeError, match=match):
        fastlif.Leaky(0.9, spike_grad=bad)
    with pytest.raises(TypeError, match=match):
        fastlif.lif_sequence(torch.randn(3, 2), 0.9, surrogate=bad)


def test_unknown_backend():
    match = r"unknown backend 'gpu'; expected one of auto, cpp, triton, reference"
    with pytest.raises(ValueError, match=match):
        fastlif.Leaky(0.9, backend="gpu")
    with pytest.raises(ValueError, match=match):
        fastlif.lif_sequence(torch.randn(3, 2), 0.9, backend="gpu")


def test_triton_backend_for_cpu_tensors_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    match = r"triton backend needs CUDA tensors; for CPU tensors set TRITON_INTERPRET=1"
    with pytest.raises(BackendUnavailable, match=match):
        fastlif.lif_sequence(torch.randn(3, 2), 0.9, backend="triton")
    with pytest.raises(BackendUnavailable, match=match):
        fastlif.Leaky(0.9, backend="triton", step_mode="multi")(torch.randn(3, 2, 2))
    assert issubclass(BackendUnavailable, RuntimeError)


@pytest.mark.parametrize("kwargs,match", [
    (dict(dt=0.0), r"dt must be > 0, got 0"),
    (dict(dt=-1e-3), r"dt must be > 0, got -0.001"),
    (dict(tau_m=0.0), r"tau_m must be > 0, got 0"),
    (dict(tau_m=-0.02), r"tau_m must be > 0, got -0.02"),
    (dict(method="rk4"), r"unknown method 'rk4'"),
    (dict(I=np.zeros((10, 2, 3))), r"I must be \[T\] or \[T, N\], got a 3-D array"),
    (dict(spikes_in=np.zeros((10, 4), bool), weights=np.zeros((3, 2))),
     r"weights must be \[N_in, N\] with N_in = 4"),
    (dict(spikes_in=np.zeros((10, 4), bool), weights=np.zeros((4, 5))),
     r"the number of neurons N disagrees between I \(N=2\), weights \(N=5\)"),
    (dict(spikes_in=np.zeros((7, 4), bool), weights=np.zeros((4, 2))),
     r"spikes_in has 7 time steps but I has 10"),
    (dict(spikes_in=np.zeros((10, 4), bool)), r"spikes_in and weights go together"),
])
def test_simulator_rejects(kwargs, match):
    from fastlif import sim
    args = dict(I=np.zeros((10, 2)), dt=1e-3, tau_m=0.02)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sim.simulate_lif(args.pop("I"), args.pop("dt"), args.pop("tau_m"), **args)


def test_encoder_rejects_negative_steps():
    from fastlif import encode
    with pytest.raises(ValueError, match=r"num_steps must be >= 0, got -1"):
        encode.poisson(torch.rand(2, 1, 4, 4), -1)
    assert encode.poisson(torch.rand(2, 1, 4, 4), 0).shape == (0, 2, 16)


# --- accepted, and equal to the reference ---------------------------------------------------

@needs_cpp
def test_beta_above_one_is_clamped_as_in_snntorch():
    x = rand(20, 3, 4, lo=-0.2, hi=0.8, seed=1)
    beta = torch.tensor([0.5, 1.0, 1.2, 3.0], requires_grad=True)
    spk, mem = check_against_reference(x, beta, 1.0)
    check_against_reference(x, torch.tensor(1.5, requires_grad=True), 1.0, reset_delay=False)
    spk_1, mem_1 = fastlif.lif_sequence(x, torch.tensor([0.5, 1.0, 1.0, 1.0]), 1.0)
    assert torch.equal(spk, spk_1) and torch.equal(mem, mem_1)
    # no gradient through the clamp, as snnTorch's beta.clamp(0, 1)
    _, m = fastlif.lif_sequence(x, beta, 1.0)
    m.sum().backward()
    assert beta.grad[2:].eq(0).all() and beta.grad[0] != 0

    snntorch = pytest.importorskip("snntorch")
    lif = snntorch.Leaky(beta=beta.detach())
    mem_s, spikes = lif.init_leaky(), []
    for x_t in x:
        s_t, mem_s = lif(x_t, mem_s)
        spikes.append(s_t)
    assert torch.equal(torch.stack(spikes), spk) and torch.equal(mem_s, mem[-1])


def _beta_call(family, x, beta, backend):
    """(spk, mem) of Leaky's, one-to-one RLeaky's or Synaptic's op with ``beta`` (its clamp is the
    op's own)."""
    if family == "leaky":
        return fastlif.lif_sequence(x, beta, 1.0, backend=backend)
    spike_fn, sg = fastlif.surrogate.resolve(None)
    if family == "synaptic":  # a spec'd family: FamilyFunction's clamp of a learnable parameter
        from fastlif.family import run_family
        from fastlif.families.synaptic import SYNAPTIC
        spk, _, mem = run_family(SYNAPTIC, x, (None, None), (0.9, beta, 1.0, 1.0), single_step=False,
                                 options=dict(reset_mode=0, immediate=0), spike_fn=spike_fn, surrogate=sg,
                                 backend=backend)
        return spk, mem
    from fastlif.ops.rleaky import run_rleaky
    return run_rleaky(x, None, None, beta, 0.5, 1.0, 1.0, single_step=False, reset_mode=0, reset_delay=True,
                      spike_fn=spike_fn, surrogate=sg, backend=backend)


@needs_cpp
@pytest.mark.parametrize("family", ["leaky", "rleaky", "synaptic"])
@pytest.mark.parametrize("value", [1.5, -0.2, 1.0, 0.0, -0.0, 0.7, float("nan")])
def test_one_value_learnable_beta_clamped_on_the_host(value, family, monkeypatch):
    """A one-value learnable beta on the C++ backend is clamped as a Python float (no clamp op):
    the same bits as torch's clamp forward, NaN and -0.0 included, and its gradient passed or
    zeroed exactly as torch's clamp backward does, at the bounds too."""
    from fastlif.ops import common
    from fastlif.ops.common import clamp_host
    ran = []
    monkeypatch.setattr(common, "clamp_host", lambda b: ran.append(b) or clamp_host(b))
    x = rand(9, 3, 5, lo=-0.5, hi=1.5, seed=11)
    g_spk, g_mem = rand(9, 3, 5, lo=-1, hi=1, seed=12), rand(9, 3, 5, lo=-1, hi=1, seed=13)
    outs = {}
    for backend in ("cpp", "reference"):
        beta = torch.tensor(value, requires_grad=True)
        xx = x.clone().requires_grad_()
        spk, mem = _beta_call(family, xx, beta, backend)
        torch.autograd.backward([spk, mem], [g_spk, g_mem])
        outs[backend] = (spk, mem, xx.grad, beta.grad)
    assert len(ran) == 1  # the C++ call took the host clamp; the reference loop clamps with torch
    (spk, mem, gx, gb), (r_spk, r_mem, r_gx, r_gb) = outs["cpp"], outs["reference"]
    torch.testing.assert_close(spk, r_spk, rtol=0, atol=0, equal_nan=True)  # bit-identical
    torch.testing.assert_close(mem, r_mem, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(gx, r_gx, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(gb, r_gb, rtol=1e-5, atol=1e-5, equal_nan=True)
    # the gradient passes exactly where torch's clamp backward passes it (this torch's bounds rule)
    raw = torch.tensor(value, requires_grad=True)
    (passes,) = torch.autograd.grad(raw.clamp(0, 1), raw)
    assert clamp_host(value)[1] == bool(passes != 0)
    assert (gb == 0).item() == (passes == 0).item()
    as_fp32 = torch.tensor(value)  # what the kernels read: the parameter's own value
    clamped, host = as_fp32.clamp(0, 1).item(), clamp_host(as_fp32.item())[0]
    assert (math.isnan(clamped) and math.isnan(host)) or (
        host == clamped and math.copysign(1.0, host) == math.copysign(1.0, clamped))


@needs_cpp
def test_non_contiguous_input():
    big = rand(14, 6, 40, lo=-0.3, hi=1.2, seed=2)
    x = big[::2, 1:, 3:33:2].transpose(0, 1).transpose(0, 1)  # strided in time, batch, neurons
    mem = rand(40, 5, seed=3).t()[:, 3:33:2]
    beta = rand(30, seed=4)[::2]
    assert not (x.is_contiguous() or mem.is_contiguous() or beta.is_contiguous())
    x.requires_grad_(), mem.requires_grad_(), beta.requires_grad_()
    check_against_reference(x, beta, 0.8, mem=mem)
    check_against_reference(x, beta, 0.8, mem=mem, reset_mechanism="zero", reset_delay=False)
    channels_last = rand(3, 2, 4, 5, 6, seed=5).permute(0, 1, 3, 4, 2)  # [T, B, H, W, C]
    check_against_reference(channels_last.requires_grad_(), rand(4, seed=6).requires_grad_())


@needs_cpp
def test_one_time_step():
    x = rand(1, 4, 7, lo=0, hi=2, seed=7).requires_grad_()
    spk, _ = check_against_reference(x, 0.9, 1.0, mem=rand(4, 7, seed=8).requires_grad_())
    assert spk.shape == (1, 4, 7) and spk.any()
    lif = fastlif.Leaky(0.9, step_mode="multi", init_hidden=True)
    assert lif(x.detach()).shape == (1, 4, 7) and lif.mem.shape == (4, 7)


@needs_cpp
def test_empty_batch():
    x = torch.zeros(6, 0, 5, requires_grad=True)
    beta = torch.full((5,), 0.9, requires_grad=True)
    spk, mem = check_against_reference(x, beta, 1.0, mem=torch.zeros(0, 5, requires_grad=True))
    assert spk.shape == mem.shape == (6, 0, 5)
    lif = fastlif.Leaky(0.9, step_mode="multi", init_hidden=True)
    assert lif(x.detach()).shape == (6, 0, 5)
    assert fastlif.Leaky(0.9)(torch.zeros(0, 5))[0].shape == (0, 5)


@needs_cpp
def test_fp64():
    x = rand(15, 3, 9, lo=-0.3, hi=1.3, seed=9, dtype=torch.float64).requires_grad_()
    params = [rand(9, lo=lo, hi=hi, seed=10 + i, dtype=torch.float64).requires_grad_()
              for i, (lo, hi) in enumerate([(0.5, 1.0), (0.5, 1.5), (0.5, 2.0)])]
    mem0 = rand(3, 9, seed=13, dtype=torch.float64).requires_grad_()
    for reset_delay in (True, False):
        spk, mem = check_against_reference(x, *params[:2], graded=params[2], mem=mem0,
                                           reset_delay=reset_delay, param_rtol=1e-10)
        assert spk.dtype == mem.dtype == torch.float64


@needs_cpp
def test_bool_spike_train():
    x = rand(25, 4, 6, seed=14) < 0.4
    beta = torch.full((6,), 0.8, requires_grad=True)
    thr = torch.tensor(1.5, requires_grad=True)
    spk, mem = check_against_reference(x, beta, thr)
    assert spk.dtype == mem.dtype == torch.get_default_dtype() and spk.any()
    lif = fastlif.Leaky(0.8, threshold=1.5, step_mode="multi")
    spk_m, _ = lif(x)
    assert torch.equal(spk_m, spk)


def test_very_long_sequence():
    """T = 50000: forward equal to the reference over the whole sequence; backward checked
    against the reference on the final window (upstream gradients only in its last 300 steps;
    with beta <= 0.9 what reaches further back than the window is below 0.9**700 ~ 1e-32)."""
    T, W = 50_000, 1000
    x = rand(T, 2, 3, lo=-0.2, hi=0.5, seed=15)
    beta = torch.tensor([0.6, 0.8, 0.9])
    spk, mem = fastlif.lif_sequence(x, beta, 1.0)
    with torch.no_grad():
        ref_spk, ref_mem = fastlif.lif_sequence_reference(x, beta, 1.0)
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)
    assert spk[-W:].any() and spk.sum() > 1000

    g = torch.Generator().manual_seed(16)
    g_spk, g_mem = torch.zeros(T, 2, 3), torch.zeros(T, 2, 3)
    g_spk[-300:] = torch.randn(300, 2, 3, generator=g)
    g_mem[-300:] = torch.randn(300, 2, 3, generator=g)
    x_full, beta_full = x.clone().requires_grad_(), beta.clone().requires_grad_()
    torch.autograd.backward(fastlif.lif_sequence(x_full, beta_full, 1.0), (g_spk, g_mem))
    x_win, beta_win = x[-W:].clone().requires_grad_(), beta.clone().requires_grad_()
    torch.autograd.backward(
        fastlif.lif_sequence_reference(x_win, beta_win, 1.0, mem=mem[-W - 1]),
        (g_spk[-W:], g_mem[-W:]))
    torch.testing.assert_close(x_full.grad[-W:], x_win.grad, rtol=1e-5, atol=1e-7)
    assert x_full.grad[:-W].abs().max() < 1e-20
    torch.testing.assert_close(beta_full.grad, beta_win.grad, rtol=1e-4, atol=1e-6)


@needs_cpp
@pytest.mark.parametrize("reset_delay", [True, False])
def test_nan_stays_in_its_neuron(reset_delay):
    x = rand(30, 4, 6, lo=-0.2, hi=1.0, seed=17)
    x[10, 2, 3] = float("nan")
    x.requires_grad_()
    beta = rand(6, lo=0.5, hi=1.0, seed=18).requires_grad_()
    thr = rand(6, lo=0.5, hi=1.5, seed=19).requires_grad_()
    spk, mem = check_against_reference(x, beta, thr, reset_delay=reset_delay)
    poisoned = torch.zeros_like(mem, dtype=torch.bool)
    poisoned[10:, 2, 3] = True
    assert mem[poisoned].isnan().all() and not mem[~poisoned].isnan().any()
    assert not spk.isnan().any() and spk[poisoned].eq(0).all()  # NaN > threshold is False

    _, mem_grad_run = fastlif.lif_sequence(x, beta, thr, reset_delay=reset_delay)
    mem_grad_run.sum().backward()
    others = torch.ones_like(x, dtype=torch.bool)
    others[:, 2, 3] = False
    assert x.grad[others].isfinite().all()
    clean = [0, 1, 2, 4, 5]
    assert beta.grad[clean].isfinite().all() and thr.grad[clean].isfinite().all()
    assert beta.grad[3].isnan() and thr.grad[3].isnan()


# --- a module that rejected a call keeps working -----------------------------------------------

def test_multi_step_module_keeps_working_after_rejected_calls():
    x = rand(12, 3, 5, lo=0, hi=1.2, seed=20)
    beta = torch.linspace(0.6, 0.95, 5)
    lif = fastlif.Leaky(beta, learn_beta=True, step_mode="multi", init_hidden=True)
    net = nn.Sequential(lif)
    first = net(x[:6])
    state = lif.mem.detach().clone()
    bad_calls = [(torch.randn(5), ValueError, "at least 2 dimensions"),
                 (torch.randn(6, 3, 4), ValueError, "beta must be a scalar or hold one value"),
                 ("not a tensor", TypeError, "must be a torch.Tensor")]
    for bad, error, match in bad_calls:
        with pytest.raises(error, match=match):
            net(bad)
        assert torch.equal(lif.mem, state), "a rejected call must leave the state alone"
    with pytest.raises(TypeError, match="`mem` should not be passed"):
        lif(x[6:], torch.zeros(3, 5))
    second = net(x[6:])
    ref_spk, ref_mem = fastlif.lif_sequence_reference(x, beta, 1.0)
    assert torch.equal(torch.cat([first, second]), ref_spk)
    assert torch.equal(lif.mem, ref_mem[-1])


def test_single_step_module_keeps_working_after_rejected_calls():
    x = rand(8, 2, 4, lo=0, hi=1.2, seed=21)
    lif = fastlif.Leaky(torch.tensor([0.7, 0.8, 0.9, 0.95]), init_hidden=True)
    spikes = [lif(x[t]) for t in range(4)]
    state = lif.mem.clone()
    for bad, error, match in [("not a tensor", TypeError, "must be a torch.Tensor"),
                              (torch.randn(2, 3), ValueError, "beta must be a scalar or hold one")]:
        with pytest.raises(error, match=match):
            lif(bad)
        assert torch.equal(lif.mem, state), "a rejected call must leave the state alone"
    spikes += [lif(x[t]) for t in range(4, 8)]
    ref_spk, ref_mem = fastlif.lif_sequence_reference(x, lif.beta, 1.0)
    assert torch.equal(torch.stack(spikes), ref_spk) and torch.equal(lif.mem, ref_mem[-1])

    plain = fastlif.Leaky(0.9, reset_mechanism="zero")
    with pytest.raises(ValueError, match="unknown reset_mechanism"):
        plain.reset_mechanism = "soft"
    spk, mem = plain.sequence(x)
    ref = fastlif.lif_sequence_reference(x, 0.9, 1.0, reset_mechanism="zero")
    assert torch.equal(spk, ref[0]) and torch.equal(mem, ref[1])


def test_detach_hidden_after_multi_and_single_step_calls():
    """Truncated BPTT as in snnTorch: Leaky.detach_hidden() between chunks of a sequence."""
    x = rand(8, 2, 4, lo=0, hi=1.2, seed=22).requires_grad_()
    multi = fastlif.Leaky(0.9, init_hidden=True, step_mode="multi", learn_beta=True)
    single = fastlif.Leaky(0.9, init_hidden=True, learn_beta=True)
    (multi(x[:4]).sum() + sum(single(x_t).sum() for x_t in x[:4])).backward()
    fastlif.Leaky.detach_hidden()
    assert not multi.mem.requires_grad and not single.mem.requires_grad
    (multi(x[4:]).sum() + sum(single(x_t).sum() for x_t in x[4:])).backward()  # no 2nd backward
    ref = fastlif.lif_sequence_reference(x.detach(), 0.9, 1.0)[1][-1]
    assert torch.equal(multi.mem, ref) and torch.equal(single.mem, ref)


def test_no_time_steps():
    """T = 0: every reference loop and the fused ops return empty sequences of x's shape (the
    reference loops used to index x_seq[0] for their zero state)."""
    from fastlif import reference
    x = torch.zeros(0, 3, 4)
    outs = [reference.lif_sequence_reference(x, 0.9), reference.synaptic_sequence_reference(x, 0.8, 0.9),
            reference.rleaky_sequence_reference(x, 0.9, lambda s: s * 0.5),
            fastlif.lif_sequence(x, 0.9, 1.0), fastlif.Synaptic(0.8, 0.9).sequence(x),
            fastlif.RLeaky(0.9, all_to_all=False, V=0.5).sequence(x)]
    for out in outs:
        assert all(o.shape == (0, 3, 4) for o in out)

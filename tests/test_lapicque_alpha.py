"""fastlif.Lapicque and fastlif.Alpha (the spec'd families of fastlif/families/, C++ steps in
csrc/families/) against snnTorch's own Lapicque and Alpha and against the families' reference
steps: bit-identical fp32 spikes and states per step and over a sequence, gradients of the input
and of every learnable parameter with random upstream gradients on every output, every reset
mechanism, fp64 gradcheck of the fused op, awkward shapes, snnTorch's helpers and errors."""
import itertools

import pytest
import torch
from torch import nn

import fastlif
from fastlif import surrogate as sg
from fastlif.family import FamilyFunction, run_family
from fastlif.families.alpha import ALPHA, tau_alpha
from fastlif.families.lapicque import LAPICQUE
from fastlif.testing import normwise, sum_floor
from conftest import needs_cpp
from lif_cases import SURROGATES

snntorch = pytest.importorskip("snntorch")
from snntorch.functional import quant  # noqa: E402
import snntorch.utils  # noqa: E402
pytestmark = needs_cpp
RESETS = ("subtract", "zero", "none")
RESET_CODE = {"subtract": 0, "zero": 1, "none": 2}
N = 13  # odd


def assert_close(got, want, what, rtol=2e-5, floor=0.0):
    err = normwise(got, want, floor)
    assert err <= rtol, f"{what}: normwise error {err:.2e} > {rtol:.0e}"


# --- the modules against snnTorch's ------------------------------------------------------------

LAPICQUE_CASES = {
    "beta": dict(beta=0.8),
    "beta_R": dict(beta=0.9, R=2),
    "beta_C": dict(beta=0.85, C=3.0),
    "R_C": dict(R=2, C=5),
    "R_C_time_step": dict(R=0.9, C=2.3, time_step=1.1),
    "time_step": dict(beta=0.7, time_step=0.5, threshold=0.8),
    "per_neuron_threshold": dict(beta=0.9, threshold=torch.linspace(0.6, 1.4, N), learn_threshold=True),
    "learn_beta": dict(beta=0.8, learn_beta=True),
}
ALPHA_CASES = {
    "scalar": dict(alpha=0.9, beta=0.8),
    "per_neuron": dict(alpha=torch.linspace(0.9, 0.99, N), beta=torch.linspace(0.5, 0.85, N),
                       threshold=torch.linspace(0.5, 1.5, N)),
    "learn_all": dict(alpha=torch.linspace(0.9, 0.99, N), beta=0.7, learn_beta=True, learn_threshold=True,
                      threshold=0.9),
    "learn_alpha": dict(alpha=0.95, beta=0.6, learn_alpha=True),
}


def clone_kwargs(kwargs):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def snntorch_layer(name, kwargs):
    kwargs = clone_kwargs(kwargs)
    learn_alpha = kwargs.pop("learn_alpha", False)  # snnTorch raises there: learnable by hand
    layer = getattr(snntorch, name)(**kwargs)
    if learn_alpha:
        alpha = layer.alpha
        del layer._buffers["alpha"]
        layer.alpha = nn.Parameter(alpha.clone())
    return layer


def make_x(T, shape=(4, N), seed=0, scale=1.5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, *shape, generator=g) * scale + 0.3).to(dtype)


def per_step(layer, x):
    outs = [layer(x_t) for x_t in x]
    return [torch.stack(o) for o in zip(*outs)]


def grads_of(layer, x, outs, upstream):
    names = [n for n, p in layer.named_parameters()]
    grads = torch.autograd.grad(outs, [x, *layer.parameters()], upstream, allow_unused=True)
    return dict(zip(["x", *names], grads))


def run_and_compare(name, kwargs, reset, T=17, spike_grad=None, seed=0):
    x = make_x(T, seed=seed)
    ours_kw = dict(clone_kwargs(kwargs), reset_mechanism=reset)
    theirs = snntorch_layer(name, dict(kwargs, reset_mechanism=reset, spike_grad=spike_grad))
    results = {}
    for how in ("snntorch", "per_step", "sequence"):
        layer = theirs if how == "snntorch" else getattr(fastlif, name)(**ours_kw, spike_grad=spike_grad)
        xl = x.clone().requires_grad_()
        outs = per_step(layer, xl) if how != "sequence" else list(layer.sequence(xl))
        if how == "snntorch":
            g = torch.Generator().manual_seed(seed + 1)
            upstream = [torch.randn(o.shape, generator=g) for o in outs]
        results[how] = (outs, grads_of(layer, xl, outs, upstream))
    want_outs, want_grads = results["snntorch"]
    assert 0 < want_outs[0].count_nonzero() < want_outs[0].numel()
    for how in ("per_step", "sequence"):
        outs, grads = results[how]
        for k, (a, b) in enumerate(zip(outs, want_outs)):
            assert torch.equal(a, b), f"{how}: output {k} differs from snnTorch's (max {(a - b).abs().max():.3g})"
        assert set(grads) == set(want_grads)
        for k in want_grads:
            assert_close(grads[k], want_grads[k], f"{how} grad {k}")
            assert grads[k].abs().sum() > 0, f"{how}: no gradient reached {k}"
    return results


@pytest.mark.parametrize("case,reset", list(itertools.product(LAPICQUE_CASES, RESETS)))
def test_lapicque_equals_snntorch(case, reset):
    run_and_compare("Lapicque", LAPICQUE_CASES[case], reset)


@pytest.mark.parametrize("case,reset", list(itertools.product(ALPHA_CASES, RESETS)))
def test_alpha_equals_snntorch(case, reset):
    run_and_compare("Alpha", ALPHA_CASES[case], reset)


@pytest.mark.parametrize("name,case", [("Lapicque", "beta_R"), ("Alpha", "learn_all")])
@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "sigmoid", "triangular"])
def test_snntorch_surrogates(name, case, surrogate):
    fn = {"fast_sigmoid": snntorch.surrogate.fast_sigmoid(slope=10), "sigmoid": snntorch.surrogate.sigmoid(slope=5),
          "triangular": snntorch.surrogate.triangular()}[surrogate]
    kwargs = (LAPICQUE_CASES if name == "Lapicque" else ALPHA_CASES)[case]
    run_and_compare(name, kwargs, "subtract", spike_grad=fn, seed=3)


@pytest.mark.parametrize("name,kwargs", [("Lapicque", dict(beta=0.9, state_quant=None)),
                                         ("Alpha", dict(alpha=0.9, beta=0.7, state_quant=None)),
                                         ("Lapicque", dict(beta=0.9, inhibition=True)),
                                         ("Alpha", dict(alpha=0.9, beta=0.7, inhibition=True))])
@pytest.mark.filterwarnings("ignore:Inhibition")
@pytest.mark.filterwarnings("ignore:fastlif")
def test_reference_options_equal_snntorch(name, kwargs):
    """state_quant and inhibition run the families' reference steps, as snnTorch computes them."""
    if "state_quant" in kwargs:
        kwargs = dict(kwargs, state_quant=quant.state_quant(num_bits=4, uniform=True, threshold=1.0))
    x = make_x(9, seed=5)
    theirs = getattr(snntorch, name)(**kwargs)
    ours = getattr(fastlif, name)(**kwargs)
    want = per_step(theirs, x)
    for got in (per_step(ours, x), ours.sequence(x)):
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    with pytest.raises(fastlif.backends.BackendUnavailable, match="reference"):
        getattr(fastlif, name)(**kwargs, backend="cpp")(x[0])


def test_lapicque_learn_beta_drives_c_every_call():
    """snnTorch computes C from a learnable beta once, inside beta's graph: its second backward
    fails and a loaded beta leaves C as it was. Here C follows beta at every call."""
    layer = fastlif.Lapicque(beta=0.8, learn_beta=True)
    x = make_x(6, seed=2)
    for _ in range(2):
        spk, mem = layer.sequence(x)
        mem.sum().backward()
        assert layer.beta.grad is not None and layer.beta.grad != 0
        layer.beta.grad = None
    other = fastlif.Lapicque(beta=0.8, learn_beta=True)
    state = layer.state_dict()
    state["beta"] = torch.tensor(0.5)
    other.load_state_dict(state)
    _, mem = other.sequence(x)
    want = snntorch.Lapicque(beta=0.5)
    assert torch.equal(mem, per_step(want, x)[1])
    assert torch.equal(other.C, want.C)  # the buffer follows too (what a saved state_dict holds)


def test_state_dict_names_and_from_snntorch():
    for name, kwargs in [("Lapicque", dict(beta=0.8)), ("Lapicque", dict(R=2, C=3)),
                         ("Lapicque", dict(beta=0.9, C=2.0)), ("Lapicque", dict(beta=0.9, learn_beta=True)),
                         ("Alpha", dict(alpha=0.9, beta=0.8)), ("Alpha", dict(alpha=1.4, beta=0.8, learn_beta=True)),
                         ("Alpha", dict(alpha=torch.full((N,), 0.95), beta=torch.full((N,), 0.5)))]:
        theirs = getattr(snntorch, name)(**clone_kwargs(kwargs), reset_mechanism="subtract")
        ours = getattr(fastlif, name)(**clone_kwargs(kwargs), reset_mechanism="subtract")
        want = theirs.state_dict()
        got = ours.state_dict()
        assert set(got) == set(want), (name, kwargs)
        for k in want:
            assert torch.equal(got[k], want[k]) and got[k].dtype == want[k].dtype, (name, kwargs, k)
        assert {n for n, _ in ours.named_parameters()} == {n for n, _ in theirs.named_parameters()}
        x = make_x(5, seed=4)
        per_step(theirs, x)  # leaves a hidden state, which the conversion carries over
        converted = fastlif.from_snntorch(theirs)
        assert type(converted) is getattr(fastlif, name)
        assert isinstance(converted, getattr(snntorch, name))
        for a, b in zip(per_step(converted, x), per_step(theirs, x)):
            assert torch.equal(a, b)


def test_namespace_and_helpers():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no longer snnTorch's unfused classes (which warn)
        assert fastlif.Lapicque is fastlif.neurons.Lapicque and fastlif.Alpha is fastlif.neurons.Alpha
    assert {"Lapicque", "Alpha"} <= set(fastlif.__all__)
    lap = fastlif.Lapicque(beta=0.9, init_hidden=True)
    alpha = fastlif.Alpha(alpha=0.9, beta=0.8, init_hidden=True, output=True)
    x = make_x(3, seed=6)
    spk = lap(x[0])
    assert isinstance(spk, torch.Tensor) and lap.mem.shape == x[0].shape
    out = alpha(x[0])
    assert len(out) == 4 and torch.equal(out[3], alpha.mem)
    snntorch.utils.reset(nn.Sequential(lap, alpha))
    assert not lap.mem.any() and not alpha.syn_exc.any() and not alpha.syn_inh.any() and not alpha.mem.any()
    with pytest.raises(TypeError, match="Alpha expects 1 input argument"):
        alpha(x[0], mem=x[0])
    plain = fastlif.Alpha(alpha=0.9, beta=0.8)
    plain(x[0])
    assert all(s.shape == x[0].shape for s in plain.init_alpha())
    assert not plain.mem.any()
    assert fastlif.Lapicque(beta=0.9).init_lapicque().shape == (0,)


@pytest.mark.parametrize("name,kwargs", [("Lapicque", dict(beta=0.85, R=1.5)), ("Alpha", dict(alpha=0.9, beta=0.6))])
def test_step_mode_multi_and_init_hidden(name, kwargs):
    x = make_x(8, seed=7)
    want = per_step(getattr(snntorch, name)(**kwargs), x)
    got = getattr(fastlif, name)(**kwargs, step_mode="multi")(x)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    layer = getattr(fastlif, name)(**kwargs, step_mode="multi", init_hidden=True)
    spk = layer(x[:5])
    spk2 = layer(x[5:])  # continues from the kept states
    assert torch.equal(torch.cat([spk, spk2]), want[0])
    assert torch.equal(layer.mem, want[-1][-1])


# --- awkward shapes -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs", [("Lapicque", dict(beta=0.8, threshold=0.5)),
                                         ("Alpha", dict(alpha=0.95, beta=0.5, threshold=0.3))])
@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (2, 7), (5, 2, 3), (1, 301)])
@pytest.mark.parametrize("T", [1, 6])
def test_shapes_and_non_contiguous(name, kwargs, shape, T):
    x = make_x(T, shape=shape[::-1], seed=T).transpose(-1, -2)  # non-contiguous (when not 1-wide)
    theirs, ours = getattr(snntorch, name)(**kwargs), getattr(fastlif, name)(**kwargs)
    want = per_step(theirs, x)
    for got in (per_step(ours, x), ours.sequence(x)):
        for a, b in zip(got, want):
            assert torch.equal(a, b)


# --- the family ops: C++ against the reference steps ----------------------------------------------

def family_inputs(family, per_neuron, seed, dtype=torch.float32, T=11, shape=(3, N)):
    g = torch.Generator().manual_seed(seed)
    L = shape[-1]
    rand = lambda lo, hi: (torch.rand(L if per_neuron else (), generator=g, dtype=dtype) * (hi - lo) + lo)  # noqa: E731
    x = torch.randn(T, *shape, generator=g, dtype=dtype) * 1.5 + 0.3
    states = [torch.randn(*shape, generator=g, dtype=dtype) for _ in family.states]
    if family is LAPICQUE:
        R, C, ts = rand(0.5, 2.0), rand(1.0, 4.0), rand(0.5, 1.5)
        params = [R, 1 / (R * C), ts, 1 - (ts / (R * C)), rand(0.6, 1.4), rand(0.5, 1.5)]
    else:  # alpha, beta a little outside [0, 1] too: clamped, with no gradient there
        params = [rand(0.85, 1.05), rand(-0.05, 0.8), None, rand(0.6, 1.4), rand(0.5, 1.5)]
    return x, states, params


def run_op(family, x, states, params, reset, backend, surrogate, single_step=False):
    if family is ALPHA:
        params = list(params)
        params[2] = tau_alpha(params[0], params[1])
    spike_fn = surrogate
    return run_family(family, x, states, params, single_step=single_step, options=dict(reset_mode=RESET_CODE[reset]),
                      spike_fn=spike_fn, surrogate=sg.resolve(surrogate)[1], backend=backend)


def op_grads(family, inputs, reset, backend, surrogate, seed, single_step=False):
    x, states, params = [t.clone().requires_grad_() if t is not None else None for t in (inputs[0],)][0], \
        [s.clone().requires_grad_() for s in inputs[1]], \
        [p.clone().requires_grad_() if p is not None else None for p in inputs[2]]
    outs = run_op(family, x, states, params, reset, backend, surrogate, single_step)
    g = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    leaves = [x, *states, *(p for p in params if p is not None)]
    grads = torch.autograd.grad(outs, leaves, upstream, allow_unused=True)
    return [o.detach() for o in outs], [torch.zeros_like(l) if gr is None else gr for gr, l in zip(grads, leaves)]


@pytest.mark.parametrize("family,reset,sg_name,per_neuron", list(itertools.product(
    (LAPICQUE, ALPHA), RESETS, SURROGATES, (True, False))))
def test_family_cpp_equals_reference(family, reset, sg_name, per_neuron):
    inputs = family_inputs(family, per_neuron, seed=len(reset) + 3 * per_neuron)
    got, got_g = op_grads(family, inputs, reset, "cpp", SURROGATES[sg_name], 9)
    want, want_g = op_grads(family, inputs, reset, "reference", SURROGATES[sg_name], 9)
    assert 0 < want[0].count_nonzero() < want[0].numel()
    for k, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"output {k} differs (max {(a - b).abs().max():.3g})"
    n_states = 1 + len(family.states)
    for k, (a, b) in enumerate(zip(got_g, want_g)):  # a parameter's: a sum, off by fp32 summation
        floor = 0.0 if k < n_states else sum_floor({"x": want_g[0], "p": b}, "p")
        assert_close(a, b, f"grad {k}", rtol=1e-5, floor=floor)


@pytest.mark.parametrize("family", (LAPICQUE, ALPHA))
@pytest.mark.parametrize("reset", RESETS)
def test_family_fp64_and_single_step(family, reset):
    inputs = family_inputs(family, True, seed=11, dtype=torch.float64, T=7)
    got, got_g = op_grads(family, inputs, reset, "cpp", sg.atan(), 2)
    want, want_g = op_grads(family, inputs, reset, "reference", sg.atan(), 2)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    for k, (a, b) in enumerate(zip(got_g, want_g)):
        assert_close(a, b, f"fp64 grad {k}", rtol=1e-12)
    one = (inputs[0][0], inputs[1], inputs[2])
    got, got_g = op_grads(family, one, reset, "cpp", sg.atan(), 3, single_step=True)
    want, want_g = op_grads(family, one, reset, "reference", sg.atan(), 3, single_step=True)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    for k, (a, b) in enumerate(zip(got_g, want_g)):
        assert_close(a, b, f"single-step grad {k}", rtol=1e-12)


@pytest.mark.parametrize("family", (LAPICQUE, ALPHA))
@pytest.mark.parametrize("reset", RESETS)
def test_gradcheck_fp64(family, reset):
    """Finite differences check the exact part: spikes carrying no gradient (surrogate
    disabled), where the backward is the true derivative away from threshold crossings (the
    surrogate terms are checked against the reference above)."""
    x, states, params = family_inputs(family, True, seed=5, dtype=torch.float64, T=4, shape=(2, 3))
    if family is ALPHA:
        params[0], params[1] = params[0].clamp(0.86, 0.99), params[1].clamp(0.05, 0.8)  # inside: differentiable
        params[2] = tau_alpha(params[0], params[1])
    off = sg.no_grad()
    n = len(family.states)

    def f(x, *rest):
        return FamilyFunction.apply(family, x.shape[0], (RESET_CODE[reset],), off.kind, off.param, "cpp", (), x,
                                    *rest[:n], *rest[n:])

    leaves = [t.detach().clone().requires_grad_() for t in (x, *states, *params)]
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6)


# --- errors ------------------------------------------------------------------------------------

def test_lapicque_errors():
    msg = "Either beta or 2 of beta, R and C must be specified"
    for kwargs in (dict(), dict(R=2), dict(C=2), dict(beta=0.0, R=1)):
        with pytest.raises(ValueError, match=msg):
            fastlif.Lapicque(**kwargs)
        with pytest.raises(ValueError, match=msg):
            snntorch.Lapicque(**kwargs)
    with pytest.raises(ValueError, match="not all three"):
        fastlif.Lapicque(beta=0.5, R=1, C=2)
    with pytest.raises(ValueError, match="beta must be a single value"):
        fastlif.Lapicque(beta=torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="R must be a single value"):
        fastlif.Lapicque(R=torch.tensor([1.0, 2.0]), C=3)
    with pytest.raises(ValueError, match="learn_beta=True needs beta"):
        fastlif.Lapicque(R=2, C=3, learn_beta=True)
    with pytest.raises(ValueError, match="reset_delay=False"):
        fastlif.Lapicque(beta=0.5, reset_delay=False)
    with pytest.raises(ValueError, match="reset_mechanism"):
        fastlif.Lapicque(beta=0.5, reset_mechanism="bogus")
    layer = fastlif.Lapicque(beta=0.5, threshold=torch.ones(5))
    with pytest.raises(ValueError, match="threshold must be a scalar or hold one value per neuron"):
        layer(torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"mem \(the initial membrane\) must have shape"):
        fastlif.Lapicque(beta=0.5).sequence(torch.ones(3, 2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fastlif.Lapicque(beta=0.5).sequence(torch.ones(4))


def test_alpha_errors():
    for alpha, beta in ((0.8, 0.9), (0.9, 0.9), (torch.tensor([0.9, 0.5]), torch.tensor([0.8, 0.6])), (0.9, 1.0)):
        with pytest.raises(ValueError, match="alpha must be greater than beta"):
            fastlif.Alpha(alpha, beta)
        with pytest.raises(ValueError, match="alpha must be greater than beta"):
            snntorch.Alpha(alpha, beta)
    with pytest.raises(ValueError, match="reset_delay=False"):
        fastlif.Alpha(0.9, 0.8, reset_delay=False)
    layer = fastlif.Alpha(0.9, 0.8)
    with pytest.raises(ValueError, match=r"syn_inh \(the initial syn_inh\) must have shape"):
        layer.sequence(torch.ones(3, 2, 4), None, torch.zeros(2, 3))
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        layer([1.0, 2.0])
    with pytest.raises(ValueError, match="alpha must be a scalar or hold one value per neuron"):
        fastlif.Alpha(torch.full((3,), 0.9), 0.5)(torch.ones(2, 4))

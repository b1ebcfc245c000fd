"""fastlif.Synaptic and the Synaptic family (fastlif/families/synaptic.py, csrc/families/synaptic.cpp) against the reference loop
and against snnTorch's Synaptic: every option, awkward shapes, gradients of every input with
random upstream gradients on every output (spikes, current, membrane)."""
import copy
import itertools

import pytest
import torch

import fastlif
from fastlif.family import FamilyFunction
from fastlif.families.synaptic import SYNAPTIC
from fastlif.reference import synaptic_sequence_reference
from fastlif.testing import assert_grads_close, forward_backward, leaves_of, normwise, sum_floor
from conftest import needs_cpp
from lif_cases import SURROGATES

pytestmark = needs_cpp
PARAMS = ("alpha", "beta", "threshold", "graded")


def make(T, neurons, per_neuron=True, seed=0, scale=0.8):
    g = torch.Generator().manual_seed(seed)
    L = neurons[-1]
    rand = lambda lo, hi: (torch.rand(L if per_neuron else (), generator=g) * (hi - lo) + lo)  # noqa: E731
    tensors = {"x": torch.randn(T, *neurons, generator=g) * scale + 0.3,
               "syn": torch.randn(*neurons, generator=g) * 0.5, "mem": torch.randn(*neurons, generator=g),
               "alpha": rand(-0.05, 1.1), "beta": rand(-0.05, 1.1), "threshold": rand(0.75, 1.25),
               "graded": rand(0.5, 1.5)}
    upstream = [torch.randn(T, *neurons, generator=g) for _ in range(3)]
    return tensors, upstream


def fused(backend, **options):
    def call(x, syn, mem, alpha, beta, threshold, graded):
        return fastlif.synaptic_sequence(x, alpha, beta, threshold, syn=syn, mem=mem, graded_spikes_factor=graded,
                                         backend=backend, **options)
    return call


def reference(spike_fn, **options):
    def call(x, syn, mem, alpha, beta, threshold, graded):
        return synaptic_sequence_reference(x, alpha, beta, threshold, syn=syn, mem=mem, spike_fn=spike_fn,
                                           graded_spikes_factor=graded, **options)
    return call


def compare(tensors, upstream, reset, delay, sg_name, dtype=torch.float32, learn=PARAMS, tol=1e-5, x=None):
    sg = SURROGATES[sg_name]
    options = dict(reset_mechanism=reset, reset_delay=delay)
    leaves = leaves_of(tensors, dtype, learn=learn)
    if x is not None:
        leaves["x"] = x.to(dtype).detach().requires_grad_()
    outs, grads = forward_backward(fused("cpp", surrogate=sg, **options), leaves, upstream)
    leaves = leaves_of(tensors, dtype, learn=learn)
    if x is not None:
        leaves["x"] = x.to(dtype).detach().requires_grad_()
    want, want_grads = forward_backward(reference(sg, **options), leaves, upstream)
    for name, a, b in zip(("spikes", "syn", "mem"), outs, want):
        assert torch.equal(a, b), f"{name} differ (max {(a - b).abs().max():.3g})"
    assert_grads_close(grads, want_grads, tol, floor=0.0, param_floor="sum")
    return outs


@pytest.mark.parametrize("reset,delay,sg_name,per_neuron", list(itertools.product(
    ("subtract", "zero", "none"), (True, False), SURROGATES, (True, False))))
def test_every_option_fp32(reset, delay, sg_name, per_neuron):
    tensors, upstream = make(11, (3, 21), per_neuron, seed=len(reset) + 7 * delay)
    spk = compare(tensors, upstream, reset, delay, sg_name)[0]
    assert 0 < spk.count_nonzero() < spk.numel()


@pytest.mark.parametrize("reset,delay", [("subtract", True), ("zero", False), ("none", True)])
def test_fp64(reset, delay):
    tensors, upstream = make(9, (2, 13), seed=3)
    compare(tensors, upstream, reset, delay, "atan", dtype=torch.float64, tol=1e-10)


@pytest.mark.parametrize("neurons,T", [((4, 5), 1), ((2, 7), 63), ((300,), 5), ((2, 513), 4), ((3, 2, 5), 6)])
def test_shapes(neurons, T):
    tensors, upstream = make(T, neurons, seed=T)
    compare(tensors, upstream, "subtract", False, "fast_sigmoid")


@pytest.mark.parametrize("learn", [(), ("alpha",), ("beta", "threshold")], ids=["none", "alpha", "beta-threshold"])
def test_learnable_subsets(learn):
    """Alpha's gradient needs forward's current kept; without it, nothing of syn is kept."""
    tensors, upstream = make(8, (3, 9), seed=5)
    compare(tensors, upstream, "zero", True, "atan", learn=learn)


@pytest.mark.parametrize("learn,delay,kept", [
    ((), True, ("mem",)), (("beta", "threshold"), True, ("mem",)), (("alpha",), True, ("syn", "mem")),
    ((), False, ("syn", "mem")), (("beta",), False, ("syn", "mem"))])
def test_saved_for_backward(learn, delay, kept):
    """Forward keeps the current's sequence only where backward reads it (alpha's gradient, an
    immediate reset's rebuild): 4 bytes per neuron-step in fp32 otherwise, as the hand-written
    kernel before the family spec did; and the results stay equal to the reference's."""
    tensors, upstream = make(7, (3, 9), seed=11)
    compare(tensors, upstream, "subtract", delay, "atan", learn=learn)
    leaves = leaves_of(tensors, torch.float32, learn=learn)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        outs = fused("cpp", reset_delay=delay)(**leaves)
    sequences = [t for t in saved if t.shape == outs[0].shape]
    expect = {"syn": outs[1], "mem": outs[2]}
    assert len(sequences) == len(kept)
    for name in kept:
        assert any(t.data_ptr() == expect[name].data_ptr() for t in sequences), f"{name} not kept"


def test_backward_refuses_a_missing_current_it_needs():
    """The C++ binding checks the spec's rule: a backward that reads the current's sequence
    (here alpha's gradient) cannot be handed none."""
    C = fastlif.backends.cpp_module()
    T, R, L = 3, 2, 4
    f = lambda: torch.zeros(T, R, L)  # noqa: E731
    mem, gx, galpha = f(), f(), torch.zeros(1)
    params = [(0, 1, 0.8), (0, 1, 0.9), (0, 1, 1.0), (0, 1, 1.0)]
    with pytest.raises(ValueError, match=r"saved sequence of state 0 is required"):
        C.family_bwd("synaptic", 0, T, R, L, f().data_ptr(), [0, 0], 0, [0, 0], [0, mem.data_ptr()], params,
                     gx.data_ptr(), [0, 0], [galpha.data_ptr(), 0, 0, 0], [0, 0], 0, 2.0, 1)
    with pytest.raises(ValueError, match=r"saved sequence of state 0 is required"):  # immediate reset
        C.family_bwd("synaptic", 0, T, R, L, f().data_ptr(), [0, 0], 0, [0, 0], [0, mem.data_ptr()], params,
                     gx.data_ptr(), [0, 0], [0, 0, 0, 0], [0, 1], 0, 2.0, 1)
    with pytest.raises(ValueError, match=r"saved sequence of state 1 is required"):  # the membrane, always
        C.family_bwd("synaptic", 0, T, R, L, f().data_ptr(), [0, 0], 0, [0, 0], [mem.data_ptr(), 0], params,
                     gx.data_ptr(), [0, 0], [0, 0, 0, 0], [0, 0], 0, 2.0, 1)


def test_non_contiguous_input_and_missing_states():
    tensors, upstream = make(6, (4, 10), seed=9)
    big = torch.randn(12, 4, 30)
    x = big[::2, :, 5:25:2]
    assert not x.is_contiguous()
    tensors["syn"] = tensors["mem"] = None
    compare(tensors, upstream, "subtract", True, "sigmoid", x=x)


def test_gradcheck_fp64():
    g = torch.Generator().manual_seed(1)
    T, R, L = 5, 2, 3
    x = (torch.randn(T, R, L, generator=g, dtype=torch.float64) + 0.4).requires_grad_()
    syn0, mem0 = (torch.randn(R * L, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    params = [(torch.rand(L, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_() for _ in range(2)]
    thr = (torch.rand(L, generator=g, dtype=torch.float64) * 0.4 + 0.8).requires_grad_()
    graded = (torch.rand(L, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    off = fastlif.surrogate.no_grad()
    for reset, delay in itertools.product((0, 1, 2), (True, False)):
        immediate = int(not delay and reset != 2)

        def f(x, syn0, mem0, a, b, thr, graded):
            return FamilyFunction.apply(SYNAPTIC, T, (reset, immediate), off.kind, off.param, "cpp", (), x, syn0, mem0,
                                        a, b, thr, graded)
        assert torch.autograd.gradcheck(f, (x, syn0, mem0, *params, thr, graded), eps=1e-6, atol=1e-6)


def test_opcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, 6, generator=g) + 0.5
    syn0, mem0 = torch.randn(12, generator=g), torch.randn(12, generator=g)
    p = [torch.rand(6, generator=g) for _ in range(4)]
    for reset, delay in ((0, True), (1, False)):
        options = [reset, int(not delay and reset != 2)]
        args = ("synaptic", x, [syn0, mem0], p, 4, options, "cpp")
        torch.library.opcheck(torch.ops.fastlif.family_fwd.default, args)
        spk, syn, mem = torch.ops.fastlif.family_fwd(*args)
        bwd_args = ("synaptic", torch.randn_like(spk), [None, torch.randn_like(mem)], x, [syn0, mem0], [syn, mem], p,
                    4, options, 0, 2.0, torch.float32, "cpp")
        torch.library.opcheck(torch.ops.fastlif.family_bwd.default, bwd_args)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    lin = torch.nn.Linear(6, 8)
    lif = fastlif.Synaptic(alpha=0.8, beta=torch.full((8,), 0.9), learn_beta=True, step_mode="multi")

    def f(x):
        spk, syn, mem = lif(lin(x))
        return spk.sum() + (mem * syn).mean()

    x = torch.rand(5, 3, 6) * 2
    eager = f(x)
    eager.backward()
    want = [lin.weight.grad.clone(), lif.beta.grad.clone()]
    lin.weight.grad = lif.beta.grad = None
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    out.backward()
    torch.testing.assert_close(out, eager)
    assert normwise(lin.weight.grad, want[0]) <= 1e-6 and normwise(lif.beta.grad, want[1]) <= 1e-6


# --- the module, against snnTorch -----------------------------------------------------------------

snn = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_surrogate  # noqa: E402

CONFIGS = {
    "default": dict(alpha=0.8, beta=0.9),
    "zero-learn": dict(alpha=0.7, beta=0.8, reset_mechanism="zero", learn_alpha=True, learn_beta=True,
                       learn_threshold=True),
    "none-per-neuron": dict(alpha="per-neuron", beta="per-neuron", reset_mechanism="none", learn_beta=True),
    "immediate-subtract": dict(alpha=0.6, beta=0.7, reset_delay=False, learn_threshold=True,
                               spike_grad=snn_surrogate.fast_sigmoid()),
    "immediate-zero": dict(alpha=0.9, beta=0.95, threshold=0.8, reset_mechanism="zero", reset_delay=False,
                           spike_grad=snn_surrogate.sigmoid(slope=2), learn_alpha=True),
    "disabled": dict(alpha=0.8, beta=0.9, surrogate_disable=True),
}


def pair(name, n=13):
    kw = dict(CONFIGS[name])
    for key in ("alpha", "beta"):
        if kw.get(key) == "per-neuron":
            kw[key] = torch.linspace(0.3, 0.95, n)
    ref = snn.Synaptic(**kw)
    return ref, fastlif.from_snntorch(copy.deepcopy(ref))


def step(layer, x):
    syn, mem = layer.init_synaptic()
    outs = [], [], []
    for xt in x:
        spk, syn, mem = layer(xt, syn, mem)
        for seq, v in zip(outs, (spk, syn, mem)):
            seq.append(v)
    return tuple(torch.stack(seq) for seq in outs)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("via_sequence", [False, True], ids=["per-step", "sequence"])
def test_matches_snntorch(name, via_sequence):
    ref, ours = pair(name)
    assert set(ours.state_dict()) == set(ref.state_dict())
    x = torch.randn(20, 4, 13, generator=torch.Generator().manual_seed(4)) * 0.7 + 0.3
    ups = [torch.randn_like(x) for _ in range(3)]
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = step(ref, xr)
    got = ours.sequence(xo) if via_sequence else step(ours, xo)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    for outs, xx in ((want, xr), (got, xo)):
        pairs = [(o, u) for o, u in zip(outs, ups) if o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    close(xo.grad, xr.grad, "x")
    ours_params = dict(ours.named_parameters())
    for pname, p in ref.named_parameters():  # sums over batch and time: floored as sum_floor does
        floor = sum_floor({"x": xr.grad.nan_to_num(0.0), pname: p.grad}, pname)
        close(ours_params[pname].grad, p.grad, pname, floor=floor)


def close(a, b, what, tol=1e-5, floor=1e-6):
    """Normwise within tol, NaNs in the same places (snnTorch's sigmoid surrogate overflows to
    inf/inf far below the threshold, in fastlif's kernels as in snnTorch)."""
    assert torch.equal(a.isnan(), b.isnan()), f"{what}: NaNs in different places"
    assert normwise(a.nan_to_num(0.0), b.nan_to_num(0.0), floor=floor) <= tol, what


def test_state_dict_names_and_snntorch_surface():
    ref, ours = pair("zero-learn")
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    missing = {n for n in dir(ref) if not n.startswith("_")} - set(dir(ours))
    assert not missing, sorted(missing)
    assert isinstance(ours, snn.Synaptic) and any(layer is ours for layer in snn.SpikingNeuron.instances)


def test_init_hidden_output_and_multi_step():
    x = torch.rand(8, 3, 5) * 1.5
    for output in (False, True):
        ref = snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, output=output)
        ours = fastlif.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, output=output)
        for xt in x:
            a, b = ours(xt), ref(xt)
            if output:
                assert all(torch.equal(p, q) for p, q in zip(a, b))
            else:
                assert torch.equal(a, b)
        with pytest.raises(TypeError, match="should not be passed"):
            ours(x[0], torch.zeros(3, 5), torch.zeros(3, 5))
    multi = fastlif.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, step_mode="multi")
    spk = torch.cat([multi(x[:4]), multi(x[4:])])  # the state carries over between calls
    assert torch.equal(spk, fastlif.synaptic_sequence(x, 0.8, 0.9)[0])
    from snntorch import utils
    net = torch.nn.Sequential(multi)
    utils.reset(net)
    assert not multi.mem.abs().sum() and not multi.syn.abs().sum()


def test_errors():
    x = torch.randn(4, 3, 5)
    with pytest.raises(ValueError, match=r"alpha must be a scalar or hold one value per neuron"):
        fastlif.synaptic_sequence(x, torch.rand(4), 0.9)
    with pytest.raises(ValueError, match=r"syn \(the initial syn\) must have shape \(3, 5\)"):
        fastlif.synaptic_sequence(x, 0.8, 0.9, syn=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="x_seq must be"):
        fastlif.synaptic_sequence(torch.randn(5), 0.8, 0.9)
    with pytest.raises(ValueError, match="unknown reset_mechanism"):
        fastlif.Synaptic(0.8, 0.9, reset_mechanism="hard")

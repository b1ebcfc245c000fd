"""fastlif.RSynaptic and its family (fastlif/families/rsynaptic.py, csrc/families/rsynaptic.cpp):
the fused op against the reference loop (every reset, immediate or delayed, every surrogate,
scalar and per-neuron parameters, awkward shapes, fp64 gradcheck), and the module against
snnTorch's RSynaptic itself: one-to-one feedback (fused over T) and the dense Linear (torch's
Linear per step, then the fused step), bit-identical fp32 spikes, currents and membranes per step,
gradients of the input and every learnable parameter with random upstream gradients."""
import copy
import itertools
import warnings

import pytest
import torch

import fastlif
from fastlif.family import FamilyFunction, run_family
from fastlif.families.rsynaptic import RSYNAPTIC
from fastlif.testing import forward_backward, leaves_of, normwise, sum_floor
from conftest import needs_cpp
from lif_cases import SURROGATES

pytestmark = needs_cpp
PARAMS = ("alpha", "beta", "V", "threshold", "graded")
RESETS = {"subtract": 0, "zero": 1, "none": 2}


def make(T, neurons, per_neuron=True, seed=0, scale=0.8):
    g = torch.Generator().manual_seed(seed)
    L = neurons[-1]
    rand = lambda lo, hi: torch.rand(L if per_neuron else (), generator=g) * (hi - lo) + lo  # noqa: E731
    tensors = {"x": torch.randn(T, *neurons, generator=g) * scale + 0.3,
               "spk": (torch.rand(*neurons, generator=g) < 0.3).float(),
               "syn": torch.randn(*neurons, generator=g) * 0.5,
               "mem": torch.randn(*neurons, generator=g), "alpha": rand(-0.05, 1.1), "beta": rand(-0.05, 1.1),
               "V": rand(-0.6, 0.6), "threshold": rand(0.75, 1.25), "graded": rand(0.5, 1.5)}
    return tensors, [torch.randn(T, *neurons, generator=g) for _ in range(3)]


def family(backend, sg, reset, immediate):
    def call(x, spk, syn, mem, alpha, beta, V, threshold, graded):
        return run_family(RSYNAPTIC, x, (spk, syn, mem), (alpha, beta, V, threshold, graded), single_step=False,
                          options=dict(reset_mode=RESETS[reset], immediate=int(immediate)), spike_fn=sg,
                          surrogate=sg, backend=backend)
    return call


def compare(tensors, upstream, reset, immediate, sg_name, dtype=torch.float32, tol=1e-5, x=None):
    sg = SURROGATES[sg_name]
    results = []
    for backend in ("cpp", "reference"):
        leaves = leaves_of(tensors, dtype, learn=PARAMS)
        if x is not None:  # a given (non-contiguous) input
            leaves["x"] = x.to(dtype).detach().requires_grad_()
        results.append(forward_backward(family(backend, sg, reset, immediate), leaves, upstream))
    (outs, grads), (want, want_grads) = results
    for name, a, b in zip(("spikes", "syn", "mem"), outs, want):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{name} differ (max {(a - b).abs().max():.3g})"
    assert set(grads) == set(want_grads)
    for name, b in want_grads.items():
        floor = sum_floor(want_grads, name) if name in PARAMS else 0.0
        err = normwise(grads[name], b, floor)
        assert err <= tol, f"grad {name}: normwise error {err:.2e}"
    return outs


@pytest.mark.parametrize("reset,immediate,sg_name,per_neuron", list(itertools.product(
    RESETS, (False, True), SURROGATES, (True, False))))
def test_family_every_option(reset, immediate, sg_name, per_neuron):
    tensors, upstream = make(11, (3, 21), per_neuron, seed=len(reset) + 7 * immediate)
    spk = compare(tensors, upstream, reset, immediate, sg_name)[0]
    assert 0 < spk.count_nonzero() < spk.numel()


@pytest.mark.parametrize("neurons,T", [((4, 5), 1), ((2, 7), 63), ((300,), 5), ((2, 513), 4), ((3, 2, 5), 6),
                                       ((1, 1), 3)])
def test_family_shapes(neurons, T):
    tensors, upstream = make(T, neurons, seed=T)
    compare(tensors, upstream, "subtract", True, "fast_sigmoid")
    compare(tensors, upstream, "zero", False, "atan")


def test_family_non_contiguous_input():
    tensors, upstream = make(7, (5, 13), seed=5)
    x = tensors["x"].transpose(0, 1).contiguous().transpose(0, 1)  # [T, B, N] with T not outermost in memory
    assert not x.is_contiguous()
    compare(tensors, upstream, "zero", True, "atan", x=x)
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1])
    wide[..., ::2] = tensors["x"]
    assert not wide[..., ::2].is_contiguous()
    compare(tensors, upstream, "subtract", False, "sigmoid", x=wide[..., ::2])


def test_family_fp64_and_missing_states():
    tensors, upstream = make(9, (2, 13), seed=3)
    compare(tensors, upstream, "zero", True, "atan", dtype=torch.float64, tol=1e-10)
    compare(tensors, upstream, "subtract", False, "triangular", dtype=torch.float64, tol=1e-10)
    tensors["spk"] = tensors["syn"] = tensors["mem"] = None
    compare(tensors, upstream, "subtract", False, "sigmoid")


def test_family_upstream_on_one_output_only():
    tensors, upstream = make(6, (3, 9), seed=8)
    for k in range(3):
        only = [u if i == k else None for i, u in enumerate(upstream)]
        compare(tensors, only, "subtract", True, "atan")


def test_gradcheck_fp64():
    """Every path but the Heaviside's own (whose numerical derivative is 0: the surrogate off)."""
    g = torch.Generator().manual_seed(1)
    T, R, L = 5, 2, 3
    dt = torch.float64
    x = (torch.randn(T, R, L, generator=g, dtype=dt) + 0.4).requires_grad_()
    spk0 = (torch.rand(R, L, generator=g, dtype=dt) < 0.5).to(dt).requires_grad_()
    syn0, mem0 = (torch.randn(R, L, generator=g, dtype=dt).requires_grad_() for _ in range(2))
    alpha, beta = ((torch.rand(L, generator=g, dtype=dt) * 0.8 + 0.1).requires_grad_() for _ in range(2))
    V = (torch.rand(L, generator=g, dtype=dt) - 0.5).requires_grad_()
    thr = (torch.rand(L, generator=g, dtype=dt) * 0.4 + 0.8).requires_grad_()
    graded = (torch.rand(L, generator=g, dtype=dt) + 0.5).requires_grad_()
    off = fastlif.surrogate.no_grad()
    for reset, immediate in itertools.product((0, 1, 2), (0, 1)):
        def f(*args):
            return FamilyFunction.apply(RSYNAPTIC, T, (reset, immediate), off.kind, off.param, "cpp", (), *args)
        assert torch.autograd.gradcheck(f, (x, spk0, syn0, mem0, alpha, beta, V, thr, graded), eps=1e-6, atol=1e-6)


def test_opcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, 6, generator=g) + 0.5
    states = [(torch.rand(2, 6, generator=g) < 0.5).float(), torch.randn(2, 6, generator=g),
              torch.randn(2, 6, generator=g)]
    params = [torch.rand(6, generator=g) for _ in range(5)]
    args = ("rsynaptic", x, states, params, 4, [0, 1], "cpp")
    torch.library.opcheck(torch.ops.fastlif.family_fwd.default, args)
    spk, syn, mem = torch.ops.fastlif.family_fwd(*args)
    torch.library.opcheck(torch.ops.fastlif.family_bwd.default,
                          ("rsynaptic", torch.randn_like(spk), [None, torch.randn_like(syn), None], x, states,
                           [spk, syn, mem], params, 4, [0, 1], 1, 25.0, torch.float32, "cpp"))


def test_family_errors():
    x = torch.rand(4, 2, 5)
    call = (lambda *states, alpha=0.9, V=0.5, backend="cpp": run_family(  # noqa: E731
        RSYNAPTIC, x, states, (alpha, 0.8, V, 1.0, 1.0), single_step=False, options=dict(reset_mode=0, immediate=0),
        spike_fn=SURROGATES["atan"], surrogate=SURROGATES["atan"], backend=backend))
    with pytest.raises(ValueError, match="syn"):
        call(None, torch.zeros(2, 4), None)
    with pytest.raises(ValueError, match="alpha must be a scalar or hold one value per neuron"):
        call(None, None, None, alpha=torch.rand(4))
    with pytest.raises(ValueError, match=r"V must be a scalar .* \(5\)"):
        call(None, None, None, V=torch.rand(2, 5))
    with pytest.raises(ValueError, match="x_seq must be"):
        run_family(RSYNAPTIC, torch.rand(5), (None,) * 3, (0.9, 0.8, 0.5, 1.0, 1.0), single_step=False,
                   options=dict(reset_mode=0, immediate=0), spike_fn=SURROGATES["atan"],
                   surrogate=SURROGATES["atan"], backend="cpp")


# --- the module, against snnTorch -----------------------------------------------------------------

snn = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_surrogate  # noqa: E402

CONFIGS = {
    "V-scalar": dict(all_to_all=False, V=0.5),
    "V-per-neuron-zero": dict(all_to_all=False, V="per-neuron", reset_mechanism="zero", learn_beta=True),
    "V-learn-all": dict(all_to_all=False, V=-0.3, learn_alpha=True, learn_beta=True, learn_threshold=True,
                        spike_grad=snn_surrogate.fast_sigmoid()),
    "V-per-neuron-params": dict(all_to_all=False, V="per-neuron", alpha="per-neuron", beta="per-neuron",
                                threshold="per-neuron", learn_alpha=True, learn_beta=True, learn_threshold=True),
    "V-fixed-none": dict(all_to_all=False, V=0.7, learn_recurrent=False, reset_mechanism="none"),
    "dense": dict(linear_features=13),
    "dense-zero-learn": dict(linear_features=13, reset_mechanism="zero", learn_alpha=True, learn_beta=True,
                             learn_threshold=True),
    "dense-fixed": dict(linear_features=13, learn_recurrent=False, spike_grad=snn_surrogate.sigmoid(slope=5)),
}


def settings(name, n=13):
    kw = dict(alpha=0.9, beta=0.8)
    kw.update(CONFIGS[name])
    per = dict(V=(-0.8, 0.8), alpha=(0.5, 1.05), beta=(0.6, 0.95), threshold=(0.8, 1.2))
    for key, (lo, hi) in per.items():
        if kw.get(key) == "per-neuron":
            kw[key] = torch.linspace(lo, hi, n)
    return kw


def pair(name, n=13):
    torch.manual_seed(len(name))
    ref = snn.RSynaptic(**settings(name, n))
    return ref, fastlif.from_snntorch(copy.deepcopy(ref)), fastlif.from_snntorch(copy.deepcopy(ref))


def step(layer, x):
    spk, syn, mem = layer.init_rsynaptic()
    outs = [], [], []
    for xt in x:
        spk, syn, mem = layer(xt, spk, syn, mem)
        for seq, v in zip(outs, (spk, syn, mem)):
            seq.append(v)
    return tuple(torch.stack(seq) for seq in outs)


def check_grads(ref, x_ref, layers_and_x):
    for layer, xx in layers_and_x:
        assert normwise(xx.grad, x_ref.grad) <= 1e-5
        mine = dict(layer.named_parameters())
        for pname, p in ref.named_parameters():
            if p.requires_grad:
                assert mine[pname].grad is not None, pname
                floor = sum_floor({"x": x_ref.grad, pname: p.grad}, pname)
                assert normwise(mine[pname].grad, p.grad, floor) <= 1e-5, pname


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_snntorch(name):
    ref, ours, ours_seq = pair(name)
    assert type(ours) is fastlif.RSynaptic
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(20, 4, 13, generator=torch.Generator().manual_seed(4)) * 0.7 + 0.3
    ups = [torch.randn_like(x) for _ in range(3)]
    xs = [x.clone().requires_grad_() for _ in range(3)]
    want = step(ref, xs[0])
    got = [step(ours, xs[1]), ours_seq.sequence(xs[2])]
    assert 0 < want[0].count_nonzero() < want[0].numel()
    for outs in got:
        for what, a, b in zip(("spk", "syn", "mem"), outs, want):
            assert torch.equal(a, b), (what, (a - b).abs().max())
    for outs, xx in ((want, xs[0]), *zip(got, xs[1:])):
        torch.autograd.backward(list(outs), ups)
    check_grads(ref, xs[0], ((ours, xs[1]), (ours_seq, xs[2])))


@pytest.mark.parametrize("name", ["V-scalar", "dense"])
def test_step_mode_multi_and_reference_backend(name):
    ref, ours, _ = pair(name)
    multi = fastlif.RSynaptic(**settings(name), step_mode="multi")
    slow = fastlif.RSynaptic(**settings(name), backend="reference")
    for layer in (multi, slow):
        layer.load_state_dict(ref.state_dict())
    x = torch.randn(9, 3, 13, generator=torch.Generator().manual_seed(6)) + 0.4
    want = step(ref, x)
    for outs in (multi(x), step(slow, x)):
        for a, b in zip(outs, want):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="takes a sequence"):
        multi(x[0])


def test_initial_states_and_graded_factor():
    ref, ours, _ = pair("V-per-neuron-zero")
    for layer in (ref, ours):
        layer.graded_spikes_factor.fill_(1.5)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(8, 2, 13, generator=g) + 0.3
    spk0 = (torch.rand(2, 13, generator=g) < 0.5).float() * 1.5
    syn0, mem0 = torch.randn(2, 13, generator=g), torch.randn(2, 13, generator=g)
    leaves = [[t.clone().requires_grad_() for t in (x, spk0, syn0, mem0)] for _ in range(2)]
    outs = []
    for layer, (xx, s, y, m) in zip((ref, ours), leaves):
        seq = [], [], []
        for xt in xx:
            s, y, m = layer(xt, s, y, m)
            for q, v in zip(seq, (s, y, m)):
                q.append(v)
        outs.append([torch.stack(q) for q in seq])
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    assert (outs[0][0] == 1.5).any()
    ups = [torch.randn_like(x) for _ in range(3)]
    for o in outs:
        torch.autograd.backward(o, ups)
    for a, b in zip(*leaves):
        assert normwise(b.grad, a.grad) <= 1e-5


def test_t1_odd_and_non_contiguous_module():
    for name in ("V-learn-all", "dense"):
        ref, ours, _ = pair(name, n=13)
        base = torch.randn(13, 3, 1, generator=torch.Generator().manual_seed(1)) + 0.8
        x = base.permute(2, 1, 0)  # [1, 3, 13], non-contiguous
        assert not x.is_contiguous()
        want, got = step(ref, x), ours.sequence(x)
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def test_immediate_reset():
    """snnTorch 1.0's RSynaptic(reset_delay=False) raises on an init_rsynaptic loop's first step
    (it reads the previous spikes from its `spk` argument) and otherwise assigns the reset to a
    local; fastlif resets as RLeaky does: the module (fused and reference) against the reference
    step, and the reset visibly acting."""
    ref = snn.RSynaptic(alpha=0.9, beta=0.8, all_to_all=False, V=0.5, reset_delay=False)
    x = torch.rand(6, 2, 7, generator=torch.Generator().manual_seed(2)) * 2
    spk, syn, mem = ref.init_rsynaptic()
    with pytest.raises(RuntimeError):  # its empty spk from init_rsynaptic
        ref(x[0], spk, syn, mem)
    with pytest.raises(TypeError):  # no spk given: None / g
        ref(x[0])
    for reset in ("subtract", "zero"):
        kw = dict(alpha=0.9, beta=0.8, all_to_all=False, V=0.5, reset_mechanism=reset)
        fused, slow = (fastlif.RSynaptic(**kw, reset_delay=False, backend=b) for b in ("cpp", "reference"))
        delayed = fastlif.RSynaptic(**kw)
        a, b, c = step(fused, x), step(slow, x), step(delayed, x)
        for p, q in zip(a, b):
            assert torch.equal(p, q)
        assert torch.equal(a[0][0], c[0][0]) and not torch.equal(a[2], c[2])
        fired = a[0][0] > 0
        assert fired.any()
        want = c[2][0] - (c[2][0] if reset == "zero" else 1.0) * fired.float()
        assert torch.equal(a[2][0], want)


def test_dense_gradient_to_recurrent_weights_vs_snntorch_with_initial_spikes():
    ref, ours, _ = pair("dense-zero-learn")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, 13, generator=g) * 0.6 + 0.3
    spk0 = (torch.rand(3, 13, generator=g) < 0.5).float()
    outs = []
    for layer in (ref, ours):
        s, y, m = spk0.clone().requires_grad_(), None, None
        s_init = s
        y, m = torch.zeros(3, 13), torch.zeros(3, 13)
        seq = []
        for xt in x:
            s, y, m = layer(xt, s, y, m)
            seq.append(s + 0.5 * m)
        torch.stack(seq).mul(torch.linspace(-1, 1, 13)).sum().backward()
        outs.append(s_init.grad)
    assert normwise(outs[1], outs[0]) <= 1e-5
    for pname in ("recurrent.weight", "recurrent.bias", "alpha", "beta", "threshold"):
        p, q = dict(ref.named_parameters())[pname], dict(ours.named_parameters())[pname]
        assert normwise(q.grad, p.grad, 1e-3) <= 1e-5, pname


def test_state_dict_names_and_surface():
    for name in ("V-scalar", "V-fixed-none", "V-learn-all", "dense", "dense-fixed"):
        ref, ours, _ = pair(name)
        assert list(ours.state_dict()) == list(ref.state_dict()), name
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()], name
        ours.load_state_dict(ref.state_dict())
        missing = {n for n in dir(ref) if not n.startswith("_")} - set(dir(ours))
        assert not missing, (name, sorted(missing))
        assert isinstance(ours, snn.RSynaptic)
    assert list(fastlif.RSynaptic(0.9, 0.8, linear_features=5).state_dict()) == \
        list(snn.RSynaptic(0.9, 0.8, linear_features=5).state_dict())


def test_export_and_resolution():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fastlif.RSynaptic is fastlif.neurons.RSynaptic
    assert "RSynaptic" in fastlif.__all__
    net = torch.nn.Sequential(torch.nn.Linear(4, 13), snn.RSynaptic(0.9, 0.8, linear_features=13))
    net = fastlif.from_snntorch(net)
    assert type(net[1]) is fastlif.RSynaptic


def test_from_snntorch_keeps_state():
    ref, _, _ = pair("V-scalar")
    ref.init_hidden = True
    x = torch.rand(3, 2, 13) * 2
    for xt in x:
        ref(xt)
    ours = fastlif.from_snntorch(ref)
    for name in ("spk", "syn", "mem"):
        assert torch.equal(getattr(ours, name), getattr(ref, name)), name
    assert torch.equal(ours(x[0]), ref(x[0]))


def test_conv2d_runs_the_reference_loop_with_one_warning():
    from fastlif.ops import common
    common._warned.discard(("RSynaptic", "conv2d"))
    with pytest.warns(UserWarning, match="Conv2d recurrent layer is not fused"):
        ours = fastlif.RSynaptic(0.9, 0.8, conv2d_channels=2, kernel_size=3)
    ref = snn.RSynaptic(0.9, 0.8, conv2d_channels=2, kernel_size=3)
    ours.load_state_dict(ref.state_dict())
    x = torch.rand(5, 1, 2, 6, 6) * 1.5
    want, got = step(ref, x), step(ours, x)
    for a, b in zip(want, got):
        assert torch.equal(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlif.RSynaptic(0.9, 0.8, conv2d_channels=2, kernel_size=3)


def test_inhibition_runs_the_reference_loop(own_instances):
    with pytest.warns(UserWarning):
        ref = snn.RSynaptic(0.9, 0.8, all_to_all=False, V=0.4, inhibition=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fastlif.from_snntorch(ref)
        x = torch.rand(6, 3, 7, generator=torch.Generator().manual_seed(5)) * 2
        want, got = step(ref, x), step(ours, x)
        for a, b in zip(want, got):
            assert torch.equal(a, b)
        with pytest.raises(fastlif.backends.BackendUnavailable, match="inhibition"):
            fastlif.RSynaptic(0.9, 0.8, all_to_all=False, V=0.4, inhibition=True, backend="cpp")(x[0])


def test_argument_checks(own_instances):
    for kw in (dict(), dict(all_to_all=False, linear_features=4), dict(conv2d_channels=2),
               dict(linear_features=4, kernel_size=3)):
        with pytest.raises(TypeError):
            snn.RSynaptic(0.9, 0.8, **kw)
        with pytest.raises(TypeError, match="RSynaptic|conv2d|linear_features"):
            fastlif.RSynaptic(0.9, 0.8, **kw)
    with pytest.raises(ValueError, match="must map the 5 neurons to themselves"):
        fastlif.RSynaptic(0.9, 0.8, linear_features=4).sequence(torch.rand(3, 2, 5))
    lif = fastlif.RSynaptic(0.9, 0.8, all_to_all=False)
    with pytest.raises(ValueError, match="syn"):
        lif.sequence(torch.rand(3, 2, 5), syn=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown reset_mechanism"):
        fastlif.RSynaptic(0.9, 0.8, all_to_all=False, reset_mechanism="half")
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        lif([1.0, 2.0])


def test_init_hidden_and_helpers(own_instances):
    """snnTorch's utils.reset zeroes syn and mem (RSynaptic.reset_hidden) but keeps spk and its
    graph; fastlif's RSynaptic then starts from zero spikes, so a second batch trains."""
    from snntorch import utils
    for name in ("V-scalar", "dense"):
        ref, ours, _ = pair(name)
        ref.init_hidden = ours.init_hidden = True
        x = torch.rand(6, 3, 13) * 1.5
        for xt in x:
            a, b = ref(xt), ours(xt)
            assert torch.equal(a, b)
        assert torch.equal(ref.mem, ours.mem) and torch.equal(ref.syn, ours.syn) and torch.equal(ref.spk, ours.spk)
        with pytest.raises(TypeError, match="RSynaptic expects 1 input argument"):
            ours(x[0], ours.spk, ours.syn, ours.mem)
        net = torch.nn.Sequential(ours)
        for _ in range(2):  # the second batch would backward through the first's freed graph
            utils.reset(net)
            assert not ours.mem.abs().sum() and not ours.syn.abs().sum()
            out = torch.stack([net(xt.requires_grad_()) for xt in x.clone()])
            assert out.count_nonzero()
            out.sum().backward()
        assert out.requires_grad
        fresh = fastlif.RSynaptic(**settings(name))
        fresh.load_state_dict(ours.state_dict())
        assert torch.equal(step(fresh, x)[0], out.detach())
        fastlif.RSynaptic.reset_hidden()
        assert not ours.spk.abs().sum()


def test_fastlif_sequence_and_utils_reset(own_instances):
    """fastlif.sequence(net, x) runs the neuron from zero states and leaves its final states; a
    utils.reset after it (or after from_snntorch of a running layer) starts the next per-step
    run from zero spikes too."""
    from snntorch import utils
    for kw in (dict(all_to_all=False, V=0.5), dict(linear_features=7)):
        torch.manual_seed(3)
        ref = snn.RSynaptic(0.9, 0.8, init_hidden=True, **kw)
        net = torch.nn.Sequential(torch.nn.Linear(5, 7), ref)
        x = torch.rand(10, 3, 5) * 2
        utils.reset(net)
        want = torch.stack([net(xt) for xt in x])
        net = fastlif.from_snntorch(net)  # mid-run: ref's last spikes come along
        assert net[1].spk.count_nonzero()
        utils.reset(net)
        assert torch.equal(torch.stack([net(xt) for xt in x]), want)
        a = fastlif.sequence(net, x)
        assert torch.equal(a, want)
        utils.reset(net)
        assert torch.equal(torch.stack([net(xt) for xt in x]), want)

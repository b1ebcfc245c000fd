"""fastlif.spikingjelly: SpikingJelly 2.0's LIFNode and ParametricLIFNode on the sj_lif family.

Against SpikingJelly itself (fp32 spikes and voltages bit for bit, gradients to rounding, with
random upstream gradients), against the family's reference step, fp64 gradcheck of the C++
backward, single-step vs multi-step, the module surface and the errors."""
import itertools
import math
import warnings

import pytest
import torch

import fastlif.spikingjelly as fsj
from fastlif import surrogate as fsg
from fastlif.backends import BackendUnavailable
from fastlif.codes import SJ_ATAN, SJ_SIGMOID
from fastlif.families.sj_lif import LEAK_DIVIDE, LEAK_MULTIPLY, SJ_LIF
from fastlif.family import FamilyFunction, run_family

from conftest import needs_cpp, sigmoid_not_vectorised

try:
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import neuron as sj_neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate
except ImportError:
    sj_neuron = None
needs_sj = pytest.mark.skipif(sj_neuron is None, reason="SpikingJelly is not installed (pip install spikingjelly)")

OPTIONS = list(itertools.product((True, False), (0.0, None, -0.25), (False, True)))  # decay, v_reset, detach
SURROGATES = ("Sigmoid", "ATan")


def make(cls, lib, surrogate, decay, v_reset, detach, **kw):
    kw = dict(decay_input=decay, v_reset=v_reset, detach_reset=detach, v_threshold=0.75, **kw)
    if lib == "sj":
        sg = getattr(sj_surrogate, surrogate)()
        return getattr(sj_neuron, cls)(surrogate_function=sg, **kw)
    return getattr(fsj, cls)(surrogate_function=getattr(fsj.surrogate, surrogate)(), **kw)


def tau_kw(cls, tau=2.7):
    return dict(tau=tau) if cls == "LIFNode" else dict(init_tau=tau)


def inputs(shape, seed=0, scale=1.2, shift=0.4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale + shift


def run_module(node, x, v0, upstream, step_mode="m"):
    """Run ``node`` on ``x`` from membrane ``v0`` (both leaves) and backpropagate ``upstream``
    into (spikes, final v, v_seq if stored). Returns (spikes, v, v_seq, grads)."""
    x = x.detach().clone().requires_grad_()
    v0 = v0.detach().clone().requires_grad_()
    node.v = v0
    if step_mode == "m":
        spikes = node(x)
    else:
        spikes = torch.stack([node(x_t) for x_t in x])
    outs = [spikes, node.v] + ([node.v_seq] if node.store_v_seq else [])
    torch.autograd.backward(outs, list(upstream[:len(outs)]))
    grads = {"x": x.grad, "v0": v0.grad}
    if hasattr(node, "w"):
        grads["w"] = node.w.grad
    return spikes.detach(), node.v.detach(), node.v_seq.detach() if node.store_v_seq else None, grads


def upstream_for(x, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(x.shape, generator=g), torch.randn(x.shape[1:], generator=g),
            torch.randn(x.shape, generator=g))


def assert_grads(got, want, what):
    for name in want:
        a, b = got[name], want[name]
        scale = max(1.0, b.abs().max().item())
        if name == "w":  # a sum over batch, neurons and time, in another order
            scale = max(scale, math.sqrt(got["x"].numel()) * got["x"].abs().max().item())
        err = (a - b).abs().max().item()
        assert err <= 1e-5 * scale, f"{what}: grad {name} off by {err:.2e} (scale {scale:.2e})"


# --- against SpikingJelly ------------------------------------------------------------------------------

@needs_sj
@needs_cpp
@pytest.mark.parametrize("cls", ["LIFNode", "ParametricLIFNode"])
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("decay,v_reset,detach", OPTIONS)
def test_equals_spikingjelly(cls, surrogate, decay, v_reset, detach):
    x = inputs((6, 3, 67))
    v0 = inputs((3, 67), seed=2, scale=0.5, shift=0.0)
    up = upstream_for(x)
    for store in (False, True):
        theirs = make(cls, "sj", surrogate, decay, v_reset, detach, step_mode="m", store_v_seq=store,
                      **tau_kw(cls))
        ours = make(cls, "fastlif", surrogate, decay, v_reset, detach, step_mode="m", store_v_seq=store,
                    backend="cpp", **tau_kw(cls))
        s1, v1, seq1, g1 = run_module(theirs, x, v0, up)
        s2, v2, seq2, g2 = run_module(ours, x, v0, up)
        what = f"{cls} {surrogate} decay={decay} v_reset={v_reset} detach={detach} store={store}"
        assert 0 < s1.mean() < 1, "the case must spike, and not everywhere"
        assert torch.equal(s1, s2), f"{what}: spikes"
        assert torch.equal(v1, v2), f"{what}: v"
        if store:
            assert torch.equal(seq1, seq2), f"{what}: v_seq"
        assert_grads(g2, g1, what)
        if surrogate == "ATan" and not store:  # no exp: autograd's order through SpikingJelly's step,
            # bit for bit (a gradient on v_seq joins the carried one in another order: rounding)
            assert torch.equal(g1["x"], g2["x"]) and torch.equal(g1["v0"], g2["v0"]), what


@needs_sj
@needs_cpp
@pytest.mark.parametrize("cls", ["LIFNode", "ParametricLIFNode"])
@pytest.mark.parametrize("decay,v_reset,detach", OPTIONS)
def test_sigmoid_gradients_bit_identical_to_spikingjelly(cls, decay, v_reset, detach):
    """With SpikingJelly's default Sigmoid the kernels' sigmoid is torch.sigmoid's vectorised
    path bit for bit (csrc/common.h, exp_sleef), so x's and v0's gradients equal SpikingJelly's
    as with ATan. 256 neurons a step: torch's vector loop covers every element (a step whose size
    is not a multiple of 32 sends its last elements through std::exp, other bits: rounding)."""
    reason = sigmoid_not_vectorised()
    if reason:
        pytest.skip(f"no bit-identity expected: {reason}")
    x = inputs((6, 4, 64))
    v0 = inputs((4, 64), seed=2, scale=0.5, shift=0.0)
    up = upstream_for(x)
    theirs = make(cls, "sj", "Sigmoid", decay, v_reset, detach, step_mode="m", **tau_kw(cls))
    ours = make(cls, "fastlif", "Sigmoid", decay, v_reset, detach, step_mode="m", backend="cpp", **tau_kw(cls))
    s1, v1, _, g1 = run_module(theirs, x, v0, up)
    s2, v2, _, g2 = run_module(ours, x, v0, up)
    what = f"{cls} decay={decay} v_reset={v_reset} detach={detach}"
    assert 0 < s1.mean() < 1 and torch.equal(s1, s2) and torch.equal(v1, v2), what
    assert torch.equal(g1["x"], g2["x"]) and torch.equal(g1["v0"], g2["v0"]), what


@needs_sj
@needs_cpp
@pytest.mark.parametrize("cls", ["LIFNode", "ParametricLIFNode"])
@pytest.mark.parametrize("shape,layout", [((1, 4, 5), "contiguous"), ((5, 3, 7), "transposed"),
                                          ((4, 9), "contiguous"), ((3, 2, 4, 5), "strided")])
def test_awkward_shapes_equal_spikingjelly(cls, shape, layout):
    """T=1, odd neuron counts, 2-D input, non-contiguous input (a transpose, a strided slice)."""
    if layout == "transposed":
        x = inputs((shape[0], shape[2], shape[1]), seed=3).transpose(1, 2)
    elif layout == "strided":
        x = inputs(shape[:-1] + (2 * shape[-1],), seed=3)[..., ::2]
    else:
        x = inputs(shape, seed=3)
    assert x.shape == shape and x.is_contiguous() == (layout == "contiguous")
    v0 = inputs(shape[1:], seed=4, scale=0.5, shift=0.0)
    up = upstream_for(x, seed=5)
    for surrogate, (decay, v_reset, detach) in [("Sigmoid", OPTIONS[0]), ("ATan", OPTIONS[-1])]:
        s1, v1, _, g1 = run_module(make(cls, "sj", surrogate, decay, v_reset, detach, step_mode="m",
                                        **tau_kw(cls)), x, v0, up)
        s2, v2, _, g2 = run_module(make(cls, "fastlif", surrogate, decay, v_reset, detach, step_mode="m",
                                        backend="cpp", **tau_kw(cls)), x, v0, up)
        assert torch.equal(s1, s2) and torch.equal(v1, v2), (shape, layout, surrogate)
        assert_grads(g2, g1, f"{shape} {layout} {surrogate}")


@needs_sj
@needs_cpp
@pytest.mark.parametrize("cls", ["LIFNode", "ParametricLIFNode"])
def test_single_step_module_equals_spikingjelly(cls):
    """step_mode='s', from the float initial v, with store_v_seq appending each step's v."""
    x = inputs((5, 2, 9), seed=6)
    nodes = [make(cls, lib, "ATan", True, 0.0, False, step_mode="s", store_v_seq=True, **tau_kw(cls, 3.1))
             for lib in ("sj", "fastlif")]
    outs = []
    for node in nodes:
        assert node.v == 0.0 and node.v_seq is None
        spikes = torch.stack([node(x_t) for x_t in x])
        outs.append((spikes, node.v, node.v_seq))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    assert outs[1][2].shape == x.shape


@needs_sj
@needs_cpp
def test_spikingjelly_surrogate_objects_map_to_fused_kinds():
    sig = fsg.resolve_spikingjelly(sj_surrogate.Sigmoid(alpha=3.0))[1]
    atan = fsg.resolve_spikingjelly(sj_surrogate.ATan(alpha=1.5))[1]
    assert (sig.kind, sig.param) == (SJ_SIGMOID, 3.0) and (atan.kind, atan.param) == (SJ_ATAN, 1.5)
    assert fsj.surrogate.Sigmoid(3.0) == sig and fsj.surrogate.ATan(1.5) == atan
    # the C++ codes: a fused run with each kind equals SpikingJelly (so the kinds agree)
    x, v0 = inputs((4, 2, 5), seed=7), inputs((2, 5), seed=8, scale=0.5, shift=0)
    up = upstream_for(x, seed=9)
    for name, alpha in (("Sigmoid", 3.0), ("ATan", 1.5)):
        theirs = sj_neuron.LIFNode(surrogate_function=getattr(sj_surrogate, name)(alpha=alpha), step_mode="m")
        ours = fsj.LIFNode(surrogate_function=getattr(fsj.surrogate, name)(alpha), step_mode="m", backend="cpp")
        g1, g2 = run_module(theirs, x, v0, up)[3], run_module(ours, x, v0, up)[3]
        assert_grads(g2, g1, name)


@needs_sj
def test_reset_net_and_isinstance():
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), fsj.LIFNode(step_mode="m"),
                              fsj.ParametricLIFNode(v_reset=None, step_mode="m"))
    assert isinstance(net[1], sj_neuron.LIFNode) and isinstance(net[2], sj_neuron.ParametricLIFNode)
    net(torch.randn(3, 2, 4) * 3)
    assert isinstance(net[1].v, torch.Tensor) and isinstance(net[2].v, torch.Tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a MemoryModule: reset_net does not warn about it
        sj_functional.reset_net(net)
    assert net[1].v == 0.0 and not isinstance(net[1].v, torch.Tensor)
    assert net[2].v == 0.0 and not isinstance(net[2].v, torch.Tensor)
    sj_functional.set_step_mode(net, "s")
    assert net[1].step_mode == "s"


@needs_sj
def test_unknown_surrogate_runs_reference_loop():
    pq = sj_surrogate.PiecewiseQuadratic()
    with pytest.warns(UserWarning, match="reference"):
        node = fsj.LIFNode(surrogate_function=pq, step_mode="m")
    x = inputs((4, 2, 5), seed=10)
    theirs = sj_neuron.LIFNode(surrogate_function=pq, step_mode="m")
    assert torch.equal(node(x), theirs(x)) and torch.equal(node.v, theirs.v)
    with pytest.raises(BackendUnavailable, match="reference"):
        fsj.LIFNode(surrogate_function=pq, step_mode="m", backend="cpp")(x)


# --- against the family's reference step -----------------------------------------------------------------

def family_run(leak, decay, hard, detach, sg, backend, x, v0, k, thr, v_reset):
    opts = dict(leak=leak, decay_input=int(decay), hard_reset=int(hard), detach_reset=int(detach))
    return run_family(SJ_LIF, x, (v0,), (k, thr, v_reset), single_step=False, options=opts, spike_fn=sg,
                      surrogate=sg, backend=backend)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("leak", [LEAK_DIVIDE, LEAK_MULTIPLY])
@pytest.mark.parametrize("sg", [fsj.surrogate.Sigmoid(), fsj.surrogate.ATan()], ids=["Sigmoid", "ATan"])
def test_cpp_equals_reference_step(dtype, leak, sg):
    g = torch.Generator().manual_seed(11)
    T, B, L = 5, 3, 11
    for decay, hard, detach in itertools.product((True, False), repeat=3):
        x = (torch.randn(T, B, L, generator=g, dtype=dtype) + 0.5)
        v0 = torch.randn(B, L, generator=g, dtype=dtype) * 0.5
        k = (torch.rand(L, generator=g, dtype=dtype) + 1.5) if leak == LEAK_DIVIDE else \
            torch.rand(L, generator=g, dtype=dtype) * 0.8 + 0.1
        thr = torch.rand(L, generator=g, dtype=dtype) * 0.5 + 0.5
        vr = torch.rand(L, generator=g, dtype=dtype) * 0.4 - 0.2
        up = [torch.randn(T, B, L, generator=g, dtype=dtype) for _ in range(2)]
        results = []
        for backend in ("cpp", "reference"):
            leaves = [t.clone().requires_grad_() for t in (x, v0, k, thr, vr)]
            outs = family_run(leak, decay, hard, detach, sg, backend, *leaves)
            torch.autograd.backward(outs, up)
            results.append((outs, [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]))
        (o1, g1), (o2, g2) = results
        what = f"decay={decay} hard={hard} detach={detach}"
        assert all(torch.equal(a.detach(), b.detach()) for a, b in zip(o1, o2)), what
        assert 0 < o1[0].mean() < 1, what
        for name, a, b in zip(("x", "v0", "k", "thr", "v_reset"), g1, g2):
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            scale = max(1.0, b.abs().max().item(), g2[0].abs().max().item() * (T * B) ** 0.5 * (name in ("k", "thr", "v_reset")))
            assert (a - b).abs().max().item() <= tol * scale, f"{what}: grad {name}"
        if not hard:
            assert torch.equal(g1[4], torch.zeros_like(g1[4])), "a soft reset does not use v_reset"


@needs_cpp
@pytest.mark.parametrize("leak", [LEAK_DIVIDE, LEAK_MULTIPLY])
def test_gradcheck_fp64(leak):
    """The C++ backward against finite differences, surrogate off (spikes piecewise constant),
    every option: the charge, the leak parameter, the threshold and v_reset paths."""
    g = torch.Generator().manual_seed(12)
    T, B, L = 4, 2, 3
    dt = torch.float64
    x = (torch.randn(T, B, L, generator=g, dtype=dt) + 0.6).requires_grad_()
    v0 = (torch.randn(B, L, generator=g, dtype=dt) * 0.5).requires_grad_()
    k = ((torch.rand(L, generator=g, dtype=dt) + 1.5) if leak == LEAK_DIVIDE else
         (torch.rand(L, generator=g, dtype=dt) * 0.8 + 0.1)).requires_grad_()
    thr = (torch.rand(L, generator=g, dtype=dt) * 0.4 + 0.6).requires_grad_()
    vr = (torch.rand(L, generator=g, dtype=dt) * 0.4 - 0.2).requires_grad_()
    off = fsg.no_grad()
    for decay, hard, detach in itertools.product((0, 1), repeat=3):
        def f(x, v0, k, thr, vr):
            return FamilyFunction.apply(SJ_LIF, T, (leak, decay, hard, detach), off.kind, off.param, "cpp", (),
                                        x, v0, k, thr, vr)
        assert torch.autograd.gradcheck(f, (x, v0, k, thr, vr), eps=1e-6, atol=1e-6), (decay, hard, detach)


@needs_cpp
@pytest.mark.parametrize("cls", ["LIFNode", "ParametricLIFNode"])
def test_single_step_equals_multi_step(cls):
    x = inputs((6, 3, 13), seed=13)
    up = upstream_for(x, seed=14)
    v0 = inputs((3, 13), seed=15, scale=0.5, shift=0)
    res = []
    for mode in ("m", "s"):
        node = make(cls, "fastlif", "Sigmoid", False, None, False, step_mode=mode, backend="cpp",
                    **tau_kw(cls))
        res.append(run_module(node, x, v0, up, step_mode=mode))
    (s1, v1, _, g1), (s2, v2, _, g2) = res
    assert torch.equal(s1, s2) and torch.equal(v1, v2)
    assert_grads(g2, g1, "single vs multi")
    assert torch.equal(g1["x"], g2["x"]) and torch.equal(g1["v0"], g2["v0"])


@needs_sj
@needs_cpp
@pytest.mark.parametrize("tau", [2.0, 4.0, 1024.0, 3.0])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.25])
@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_fresh_state_and_power_of_two_tau_equal_spikingjelly(tau, v_reset, step_mode, monkeypatch):
    """From SpikingJelly's own float start (v = v_reset, or 0. for a soft reset: the kernels'
    zero start, no tensor) and with tau a power of two (run as a multiply by 1/tau, the same
    bits): spikes, v and v_seq bit for bit, x's gradient too (ATan, no v_seq gradient)."""
    x = inputs((7, 3, 37), seed=21) * (tau / 2)  # decay_input: h moves by x / tau a step
    g = torch.Generator().manual_seed(22)
    up_s, up_v = torch.randn(x.shape, generator=g), torch.randn(x.shape[1:], generator=g)
    seen = []
    real = fsj.run_family
    monkeypatch.setattr(fsj, "run_family", lambda *a, **k: seen.append((a[2], k["options"]["leak"])) or real(*a, **k))
    res = []
    for lib in ("sj", "fastlif"):
        kw = dict(backend="cpp") if lib == "fastlif" else {}
        node = make("LIFNode", lib, "ATan", True, v_reset, False, step_mode=step_mode, store_v_seq=True, tau=tau, **kw)
        xx = x.detach().clone().requires_grad_()
        spikes = node(xx) if step_mode == "m" else torch.stack([node(x_t) for x_t in xx])
        torch.autograd.backward([spikes, node.v], [up_s, up_v])
        res.append((spikes.detach(), node.v.detach(), node.v_seq.detach(), xx.grad))
    (s1, v1, q1, g1), (s2, v2, q2, g2) = res
    assert 0 < s1.mean() < 1
    assert torch.equal(s1, s2) and torch.equal(v1, v2) and torch.equal(q1, q2), (tau, v_reset, step_mode)
    assert torch.equal(g1, g2), (tau, v_reset, step_mode)
    power = math.frexp(tau)[0] == 0.5
    assert all(leak == (LEAK_MULTIPLY if power else LEAK_DIVIDE) for _, leak in seen), seen
    assert (seen[0][0][0] is None) == (v_reset in (0.0, None)), "a float 0. start runs as the kernels' zeros"


def test_fires_at_the_threshold():
    """SpikingJelly's Heaviside is h >= threshold (snnTorch's is >): h exactly 1.0 fires."""
    x = torch.tensor([[2.0, 1.5]])  # tau 2, v 0: h = x / 2
    for backend in ("cpp", "reference") if "cpp" in fastlif_backends() else ("reference",):
        node = fsj.LIFNode(step_mode="m", backend=backend)
        assert node(x).tolist() == [[1.0, 0.0]]
        assert node.v.tolist() == [0.0, 0.75]


def fastlif_backends():
    from fastlif.backends import available
    return available("cpu")


# --- the module surface and errors --------------------------------------------------------------------

def test_state_and_reset():
    node = fsj.LIFNode(v_reset=-0.5, step_mode="m", store_v_seq=True)
    assert node.v == -0.5 and node.v_seq is None
    x = inputs((3, 2, 4), seed=16)
    node(x)
    assert node.v.shape == (2, 4) and node.v_seq.shape == (3, 2, 4)
    assert torch.equal(node.v, node.v_seq[-1])
    node.reset()
    assert node.v == -0.5 and not isinstance(node.v, torch.Tensor) and node.v_seq is None
    node(x[:, :1])  # a new shape starts from v_reset
    assert node.v.shape == (1, 4)
    node.step_mode = "s"
    assert node(x[0]).shape == (2, 4)  # v of another shape restarts at v_reset
    plif = fsj.ParametricLIFNode(init_tau=3.0)
    assert isinstance(plif.w, torch.nn.Parameter) and plif.w.shape == ()
    assert plif.w.item() == pytest.approx(-math.log(2.0))
    assert "w" in dict(plif.named_parameters())


def test_v_after_a_multi_step_call_is_copied_when_first_read():
    """v after a multi-step call is v_seq[-1], copied only when something reads it (.v, the
    memories, the next call, a copy of the module), in the grad mode of the call that made it:
    a reset right after the call never copies; a read under no_grad or inference_mode still
    gives a v that gradients flow through, as SpikingJelly's own does."""
    import copy
    import pickle
    from fastlif.spikingjelly import _PendingLastStep
    node = fsj.LIFNode(tau=3.0, step_mode="m")
    x = inputs((4, 2, 5), seed=21).requires_grad_()
    node(x)
    assert type(dict.__getitem__(node._memories, "v")) is _PendingLastStep
    node.reset()  # no copy made: the pending one is dropped
    assert node.v == 0.0
    spikes = node(x)
    with torch.no_grad(), torch.inference_mode():
        v = node.v  # first read, in a mode that would otherwise detach it
    assert v.requires_grad and not v.is_inference() and v._base is None
    assert type(dict.__getitem__(node._memories, "v")) is torch.Tensor and node.v is v
    (g,) = torch.autograd.grad(v.sum(), x, retain_graph=True)
    assert g[-1].abs().sum() > 0  # v depends on the last step's input
    # every read path gives the tensor, never the pending copy
    for read in (lambda n: list(n.memories())[0], lambda n: dict(n.named_memories())["v"],
                 lambda n: n._memories.get("v"), lambda n: n._memories.values()[0],
                 lambda n: n._memories.copy()["v"], lambda n: copy.deepcopy(n).v,
                 lambda n: pickle.loads(pickle.dumps(n)).v):
        node.reset()  # (a v in a graph cannot be deep-copied, SpikingJelly's own neither)
        node(x.detach())
        got = read(node)
        assert isinstance(got, torch.Tensor) and got.shape == (2, 5) and not got.requires_grad
    # two calls chained through v: the same spikes and gradient as SpikingJelly
    if sj_neuron is not None:
        peer = sj_neuron.LIFNode(tau=3.0, step_mode="m", surrogate_function=sj_surrogate.Sigmoid())
        for mod in (node, peer):
            mod.reset()
        xs = [inputs((4, 2, 5), seed=s).requires_grad_() for s in (22, 23)]
        outs = [torch.cat([mod(xs[0]), mod(xs[1])]) for mod in (node, peer)]
        assert torch.equal(outs[0], outs[1])
        grads = [torch.autograd.grad(o.sum() + mod.v.sum(), xs[0]) for o, mod in zip(outs, (node, peer))]
        torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad,match", [(dict(tau=1.0), "tau must be greater than 1"),
                                       (dict(tau=0.5), "tau must be greater than 1"),
                                       (dict(tau=float("nan")), "tau must be finite"),
                                       (dict(tau="2"), "tau must be a real number"),
                                       (dict(step_mode="x"), "step_mode can only be"),
                                       (dict(v_threshold=None), "v_threshold must be a real number"),
                                       (dict(detach_reset=1), "detach_reset must be a bool"),
                                       (dict(surrogate_function=3), "surrogate_function must be"),
                                       (dict(backend="gpu"), "backend")])
def test_bad_arguments(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fsj.LIFNode(**bad)


def test_bad_plif_and_input():
    with pytest.raises(ValueError, match="init_tau must be greater than 1"):
        fsj.ParametricLIFNode(init_tau=1.0)
    with pytest.raises(ValueError, match=r"step_mode='m' takes x_seq of shape \[T, N, ...\]"):
        fsj.LIFNode(step_mode="m")(torch.randn(5))
    with pytest.raises(ValueError, match="no time steps"):
        fsj.LIFNode(step_mode="m")(torch.randn(0, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fsj.LIFNode()([1.0, 2.0])
    with pytest.raises(ValueError, match="spiking only"):
        fsj.surrogate.ATan(spiking=False)
    node = fsj.LIFNode(step_mode="m")
    node.tau = 0.9
    with pytest.raises(ValueError, match="tau must be greater than 1"):
        node(torch.randn(2, 3))


def test_runs_without_spikingjelly():
    """Without SpikingJelly the neurons are plain nn.Modules with the same behaviour."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['spikingjelly'] = None\n"
            "import torch, fastlif.spikingjelly as fsj\n"
            "n = fsj.ParametricLIFNode(step_mode='m', v_reset=None)\n"
            "s = n(torch.full((3, 2, 5), 0.8)); n.w.grad is None\n"
            "s.sum().backward(); assert n.w.grad is not None and n.v.shape == (2, 5)\n"
            "assert [c.__module__ for c in type(n).__mro__][:3] == ['fastlif.spikingjelly'] * 2 + ['torch.nn.modules.module']\n"
            "n.reset(); assert n.v == 0.0\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr

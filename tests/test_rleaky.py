"""fastlif.RLeaky and the RLeaky op family (csrc/rleaky.cpp) against the reference loop and
against snnTorch's RLeaky: one-to-one feedback (spk * V: bit-identical forward), the dense
recurrent layer (event-driven: its sums run in another order than snnTorch's GEMM, so the
membrane agrees to rounding and spikes may flip where a membrane sits within rounding of the
threshold: the bound is tested), and the Conv2d layer (the reference loop)."""
import copy
import itertools
import warnings

import pytest
import torch

import fastlif
from fastlif.ops.rleaky import RLeakyFunction
from fastlif.reference import rleaky_sequence_reference
from fastlif.testing import assert_grads_close, forward_backward, leaves_of, normwise, sum_floor
from conftest import needs_cpp
from lif_cases import SURROGATES

pytestmark = needs_cpp


def make(T, neurons, per_neuron=True, seed=0, scale=0.8):
    g = torch.Generator().manual_seed(seed)
    L = neurons[-1]
    rand = lambda lo, hi: torch.rand(L if per_neuron else (), generator=g) * (hi - lo) + lo  # noqa: E731
    tensors = {"x": torch.randn(T, *neurons, generator=g) * scale + 0.3,
               "spk": (torch.rand(*neurons, generator=g) < 0.3).float(), "mem": torch.randn(*neurons, generator=g),
               "beta": rand(-0.05, 1.1), "V": rand(-0.6, 0.6), "threshold": rand(0.75, 1.25),
               "graded": rand(0.5, 1.5)}
    return tensors, [torch.randn(T, *neurons, generator=g) for _ in range(2)]


def one_to_one(backend, sg, **options):
    if backend == "reference":
        def call(x, spk, mem, beta, V, threshold, graded):
            return rleaky_sequence_reference(x, beta, lambda s: s * V, threshold, spk=spk, mem=mem, spike_fn=sg,
                                             graded_spikes_factor=graded, **options)
        return call

    def call(x, spk, mem, beta, V, threshold, graded):
        return fastlif.ops.rleaky.run_rleaky(x, spk, mem, beta, V, threshold, graded, single_step=False,
                                      reset_mode=fastlif.codes.reset_code(options["reset_mechanism"]),
                                      reset_delay=options["reset_delay"], spike_fn=sg, surrogate=sg, backend=backend)
    return call


def compare(tensors, upstream, reset, delay, sg_name, dtype=torch.float32, tol=1e-5,
            learn=("beta", "V", "threshold", "graded")):
    sg = SURROGATES[sg_name]
    options = dict(reset_mechanism=reset, reset_delay=delay)
    outs, grads = forward_backward(one_to_one("cpp", sg, **options), leaves_of(tensors, dtype, learn=learn), upstream)
    want, want_grads = forward_backward(one_to_one("reference", sg, **options), leaves_of(tensors, dtype, learn=learn),
                                        upstream)
    for name, a, b in zip(("spikes", "mem"), outs, want):
        assert torch.equal(a, b), f"{name} differ (max {(a - b).abs().max():.3g})"
    assert_grads_close(grads, want_grads, tol, floor=0.0, param_floor="sum")
    return outs


@pytest.mark.parametrize("reset,delay,sg_name,per_neuron", list(itertools.product(
    ("subtract", "zero", "none"), (True, False), SURROGATES, (True, False))))
def test_one_to_one_every_option(reset, delay, sg_name, per_neuron):
    tensors, upstream = make(11, (3, 21), per_neuron, seed=len(reset) + 7 * delay)
    spk = compare(tensors, upstream, reset, delay, sg_name)[0]
    assert 0 < spk.count_nonzero() < spk.numel()


@pytest.mark.parametrize("neurons,T", [((4, 5), 1), ((2, 7), 63), ((300,), 5), ((2, 513), 4), ((3, 2, 5), 6)])
def test_one_to_one_shapes(neurons, T):
    tensors, upstream = make(T, neurons, seed=T)
    compare(tensors, upstream, "subtract", False, "fast_sigmoid")


def test_one_to_one_fp64_and_missing_states():
    tensors, upstream = make(9, (2, 13), seed=3)
    compare(tensors, upstream, "zero", False, "atan", dtype=torch.float64, tol=1e-10)
    tensors["spk"] = tensors["mem"] = None
    compare(tensors, upstream, "subtract", True, "sigmoid")


def test_gradcheck_fp64():
    g = torch.Generator().manual_seed(1)
    T, R, L = 5, 2, 3
    x = (torch.randn(T, R, L, generator=g, dtype=torch.float64) + 0.4).requires_grad_()
    spk0, mem0 = (torch.randn(R * L, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    beta = (torch.rand(L, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    V = (torch.rand(L, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    thr = (torch.rand(L, generator=g, dtype=torch.float64) * 0.4 + 0.8).requires_grad_()
    graded = (torch.rand(L, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    off = fastlif.surrogate.no_grad()
    for reset, delay in itertools.product((0, 1, 2), (True, False)):
        def f(x, spk0, mem0, beta, V, thr, graded):
            return RLeakyFunction.apply(x, spk0, mem0, beta, V, thr, graded, None, None, T, reset, delay, off.kind,
                                        off.param, "cpp")
        assert torch.autograd.gradcheck(f, (x, spk0, mem0, beta, V, thr, graded), eps=1e-6, atol=1e-6)


def test_gradcheck_dense_fp64():
    g = torch.Generator().manual_seed(2)
    T, B, N = 4, 2, 5
    x = (torch.randn(T, B, N, generator=g, dtype=torch.float64) + 0.6).requires_grad_()
    off = fastlif.surrogate.no_grad()

    def f(x, weight, bias):
        return RLeakyFunction.apply(x, None, None, 0.8, 1.0, 1.0, 1.0, weight, bias, T, 0, True, off.kind,
                                    off.param, "cpp")
    w = (torch.randn(N, N, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    b = (torch.randn(N, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    assert torch.autograd.gradcheck(f, (x, w, b), eps=1e-6, atol=1e-6)


def test_opcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 2, 6, generator=g) + 0.5
    spk0, mem0 = torch.rand(12, generator=g), torch.randn(12, generator=g)
    p = [torch.rand(6, generator=g) for _ in range(4)]
    for weight in (None, torch.randn(6, 6, generator=g)):
        bias = None if weight is None else torch.randn(6, generator=g)
        kw = dict(steps=4, reset_mode=0, reset_delay=False, backend="cpp")
        torch.library.opcheck(torch.ops.fastlif.rleaky_fwd.default, (x, spk0, mem0, *p, weight, bias), kwargs=kw)
        spk, mem, state, flags = torch.ops.fastlif.rleaky_fwd(x, spk0, mem0, *p, weight, bias, **kw)
        bwd_kw = dict(steps=4, reset_mode=0, reset_delay=False, surrogate_kind=1, surrogate_param=25.0,
                      x_dtype=torch.float32, backend="cpp")
        torch.library.opcheck(torch.ops.fastlif.rleaky_bwd.default,
                              (torch.randn_like(spk), None, None, state, flags, spk0, mem0, *p, weight), kwargs=bwd_kw)


# --- the module, against snnTorch -----------------------------------------------------------------

snn = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_surrogate  # noqa: E402

CONFIGS = {
    "V-scalar": dict(all_to_all=False, V=0.5),
    "V-per-neuron-zero": dict(all_to_all=False, V="per-neuron", reset_mechanism="zero", learn_beta=True),
    "V-immediate": dict(all_to_all=False, V=-0.3, reset_delay=False, learn_threshold=True,
                        spike_grad=snn_surrogate.fast_sigmoid()),
    "V-fixed": dict(all_to_all=False, V=0.7, learn_recurrent=False, reset_mechanism="none"),
    "dense": dict(linear_features=13),
    "dense-zero-immediate": dict(linear_features=13, reset_mechanism="zero", reset_delay=False, learn_beta=True),
}


def pair(name, n=13):
    kw = dict(CONFIGS[name])
    if kw.get("V") == "per-neuron":
        kw["V"] = torch.linspace(-0.8, 0.8, n)
    torch.manual_seed(len(name))
    ref = snn.RLeaky(beta=0.8, **kw)
    return ref, fastlif.from_snntorch(copy.deepcopy(ref)), fastlif.from_snntorch(copy.deepcopy(ref))


def step(layer, x):
    spk, mem = layer.init_rleaky()
    outs = [], []
    for xt in x:
        spk, mem = layer(xt, spk, mem)
        outs[0].append(spk)
        outs[1].append(mem)
    return tuple(torch.stack(seq) for seq in outs)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_snntorch(name):
    ref, ours, ours_seq = pair(name)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(20, 4, 13, generator=torch.Generator().manual_seed(4)) * 0.7 + 0.3
    ups = [torch.randn_like(x) for _ in range(2)]
    xs = [x.clone().requires_grad_() for _ in range(3)]
    want = step(ref, xs[0])
    got = [step(ours, xs[1]), ours_seq.sequence(xs[2])]
    dense = "dense" in name
    for outs in got:
        if dense:  # another summation order: the bound, and spikes flipped only near the threshold
            torch.testing.assert_close(outs[1], want[1], rtol=0, atol=1e-5)
            assert (outs[0] != want[0]).float().mean() <= 1e-3
        else:
            assert torch.equal(outs[0], want[0]) and torch.equal(outs[1], want[1])
    for outs, xx in ((want, xs[0]), *zip(got, xs[1:])):
        torch.autograd.backward(list(outs), ups)
    for layer, xx in ((ours, xs[1]), (ours_seq, xs[2])):
        assert normwise(xx.grad, xs[0].grad) <= 1e-5
        mine = dict(layer.named_parameters())
        for pname, p in ref.named_parameters():
            if p.requires_grad:
                floor = sum_floor({"x": xs[0].grad, pname: p.grad}, pname)
                assert normwise(mine[pname].grad, p.grad, floor) <= 1e-5, pname


def test_state_dict_names_and_surface():
    for name in ("V-scalar", "V-fixed", "dense"):
        ref, ours, _ = pair(name)
        assert list(ours.state_dict()) == list(ref.state_dict()), name
        ours.load_state_dict(ref.state_dict())
        missing = {n for n in dir(ref) if not n.startswith("_")} - set(dir(ours))
        assert not missing, (name, sorted(missing))
        assert isinstance(ours, snn.RLeaky)


def test_conv2d_runs_the_reference_loop_with_one_warning():
    from fastlif.ops import common
    common._warned.discard(("RLeaky", "conv2d"))
    with pytest.warns(UserWarning, match="Conv2d recurrent layer is not fused"):
        ours = fastlif.RLeaky(beta=0.9, conv2d_channels=2, kernel_size=3)
    ref = snn.RLeaky(beta=0.9, conv2d_channels=2, kernel_size=3)
    ours.load_state_dict(ref.state_dict())
    x = torch.rand(5, 1, 2, 6, 6) * 1.5
    want, got = step(ref, x), step(ours, x)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlif.RLeaky(beta=0.9, conv2d_channels=2, kernel_size=3)


def test_argument_checks_as_snntorch(own_instances):
    for kw in (dict(), dict(all_to_all=False, linear_features=4), dict(conv2d_channels=2),
               dict(linear_features=4, kernel_size=3)):
        with pytest.raises(TypeError):
            snn.RLeaky(beta=0.9, **kw)
        with pytest.raises(TypeError):
            fastlif.RLeaky(beta=0.9, **kw)
    with pytest.raises(ValueError, match="must map the 5 neurons to themselves"):
        fastlif.RLeaky(beta=0.9, linear_features=4).sequence(torch.rand(3, 2, 5))


def test_init_hidden_and_helpers(own_instances):
    from snntorch import utils
    for name in ("V-scalar", "dense"):
        ref, ours, _ = pair(name)
        ref.init_hidden = ours.init_hidden = True
        x = torch.rand(6, 3, 13) * 1.5
        for xt in x:
            a, b = ref(xt), ours(xt)
        assert torch.allclose(ref.mem, ours.mem, atol=1e-5) and torch.equal(ref.spk, ours.spk)
        with pytest.raises(TypeError, match="RLeaky expects 1 input argument"):
            ours(x[0], ours.spk, ours.mem)
        utils.reset(torch.nn.Sequential(ours))
        assert not ours.mem.abs().sum() and not ours.spk.abs().sum()

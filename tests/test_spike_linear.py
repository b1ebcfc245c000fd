"""fastlif.SpikeLinear (the event-driven linear layer) against nn.Linear with the same weights:
outputs and every gradient at several densities and input kinds, bitwise reproducibility
across thread counts, SpikeEvents input, state_dict and from_linear, the custom ops
(opcheck, torch.compile) and the errors."""
import copy

import pytest
import torch
from torch import nn

import fastlif
from fastlif import SpikeLinear, backends
from fastlif.events import SpikeEvents, from_dense
from fastlif.ops import spike_linear as ops
from fastlif.testing import normwise
from conftest import needs_cpp
from event_cases import KINDS, TOL, make_input

pytestmark = needs_cpp


def layers(K, N, bias=True, dtype=torch.float32, backend="cpp", seed=0):
    """An nn.Linear and a SpikeLinear holding the same (independent) weights."""
    torch.manual_seed(seed)
    lin = nn.Linear(K, N, bias=bias, dtype=dtype)
    spk = SpikeLinear(K, N, bias=bias, dtype=dtype, backend=backend)
    spk.load_state_dict(lin.state_dict())
    return lin, spk


def forward_backward(layer, x, upstream, input_grad):
    """Output and the gradients of weight, bias and (if ``input_grad``) the input."""
    layer.zero_grad(set_to_none=True)
    if isinstance(x, SpikeEvents):
        leaf = x.dense.detach().requires_grad_(input_grad)
        inp = x._replace(dense=leaf)
    else:
        leaf = inp = x.detach().requires_grad_(input_grad)
    out = layer(inp if isinstance(layer, SpikeLinear) else leaf.to(layer.weight.dtype))
    out.backward(upstream)
    grads = {name: p.grad for name, p in layer.named_parameters()}
    if input_grad:
        grads["input"] = leaf.grad
    return out.detach(), grads


def compare(x, K, N, *, dtype=torch.float32, input_grad=False, bias=True, backend="cpp", seed=0):
    lin, spk = layers(K, N, bias=bias, dtype=dtype, backend=backend, seed=seed)
    dense = x.dense if isinstance(x, SpikeEvents) else x
    upstream = torch.randn(*dense.shape[:-1], N, generator=torch.Generator().manual_seed(seed + 1),
                           dtype=torch.float64).to(dtype)
    want, want_g = forward_backward(lin, dense, upstream, input_grad)
    got, got_g = forward_backward(spk, x, upstream, input_grad)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert normwise(got, want) <= TOL[dtype], f"output: normwise error {normwise(got, want):.2e}"
    assert set(got_g) == set(want_g)
    for name in want_g:
        assert got_g[name].shape == want_g[name].shape, name
        err = normwise(got_g[name], want_g[name])
        assert err <= TOL[dtype], f"grad {name}: normwise error {err:.2e}"
    return got, got_g


@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("kind,input_grad", [(k, g) for k in KINDS for g in (False, True)
                                             if not (k == "bool" and g)])  # bool cannot require grad
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_matches_nn_linear(density, kind, dtype, input_grad):
    x = make_input((4, 8, 75), density, kind, dtype)  # M = 32 rows, K = 75, N = 33: odd sizes
    compare(x, 75, 33, dtype=dtype, input_grad=input_grad)


@pytest.mark.parametrize("density", [0.01, 0.3])
@pytest.mark.parametrize("kind", ["bool", "graded"])
def test_auto_backend_matches(density, kind):
    """backend='auto' (event kernels below the crossover, the GEMM above it)."""
    compare(make_input((5, 6, 40), density, kind), 40, 21, backend="auto", input_grad=kind != "bool")


@pytest.mark.parametrize("shape,N", [((1, 3, 70), 130),   # T=1; N past one 64-output bias block
                                     ((70,), 5),           # one row, 1-D
                                     ((2, 3, 2, 17), 1),   # 4-D, one output
                                     ((0, 4, 9), 6),       # no rows
                                     ((300, 1), 3),        # K = 1
                                     ((2, 40, 300), 17)])  # K across several cache lines
def test_shapes(shape, N):
    for kind in ("bool", "real"):
        compare(make_input(shape, 0.2, kind, seed=3), shape[-1], N, input_grad=kind == "real")


@pytest.mark.parametrize("kind", ["bool", "graded"])
def test_weight_gradient_in_output_slices(kind):
    """An upstream gradient too large for the cache (M * N * 4 > 4 MiB) is read a slice of
    outputs at a time by the weight-gradient kernel: the slices, and a short last one, tile N."""
    x = make_input((3, 700, 70), 0.1, kind, seed=13)  # M = 2100 rows, N = 600: slices of 448 + 152
    compare(x, 70, 600)
    compare(from_dense(x), 70, 600)


def test_no_bias():
    compare(make_input((3, 4, 20), 0.2, "graded"), 20, 9, bias=False, input_grad=True)


def test_non_contiguous_input():
    big = make_input((6, 5, 60), 0.2, "real", seed=4)
    x = big[::2, :, 7:47]  # strided in time and features
    assert not x.is_contiguous()
    compare(x, 40, 11, input_grad=True)
    compare(big.transpose(0, 1), 60, 11, input_grad=False)


@pytest.mark.parametrize("kind", ["bool", "binary", "graded"])
def test_events_equal_dense(kind):
    """A SpikeEvents input gives bitwise the dense input's output and gradients."""
    x = make_input((3, 7, 50), 0.1, kind, seed=5)
    _, spk = layers(50, 13)
    upstream = torch.randn(3, 7, 13)
    from_x = forward_backward(spk, x, upstream, False)
    from_events = forward_backward(spk, from_dense(x), upstream, False)
    assert from_dense(x).values is None or kind == "graded"
    assert torch.equal(from_x[0], from_events[0])
    for name in from_x[1]:
        assert torch.equal(from_x[1][name], from_events[1][name]), name
    compare(from_dense(x), 50, 13, input_grad=kind != "bool")  # the input gradient reaches dense


def test_dense_events_take_the_gemm():
    """auto: events denser than the crossover run the dense GEMM on events.dense."""
    x = make_input((2, 5, 30), 0.9, "graded", seed=6)
    compare(from_dense(x), 30, 8, backend="auto", input_grad=True)


def test_crossover_choice():
    """auto picks the path by density: a zero input never meets the weight on the event path,
    so an infinite weight over an always-zero input column tells the two paths apart. (A layer
    as wide as NARROW_OUT: a narrower one runs the GEMM for a dense float input, next test.
    Dense enough for either threshold: see test_one_thread_gemm_threshold.)"""
    lin = SpikeLinear(32, ops.NARROW_OUT, backend="auto")
    with torch.no_grad():
        lin.weight[:, 0] = float("inf")
    for density, finite in ((0.05, True), (0.8, False)):
        x = make_input((40, 32), density, "binary", seed=7)
        x[:, 0] = 0
        assert ops.estimated_density(x) == pytest.approx(density, abs=0.05)
        assert bool(lin(x).isfinite().all()) == finite, density
    assert ops.DENSE_ABOVE > 0.05
    lin.backend = "cpp"  # forced: the event kernels whatever the density
    assert bool(lin(x).isfinite().all())


@pytest.mark.parametrize("threads", [1, 2])
def test_one_thread_gemm_threshold(threads, restore_threads):
    """Where the dense GEMM would run on one thread (its work under 64 MiB) while the event
    kernels may take two, auto keeps the event kernels up to DENSE_ABOVE_BESIDE_ONE_THREAD_GEMM
    for an input that needs no gradient; on one thread in all, or for an input that needs its
    gradient, the GEMM from DENSE_ABOVE (the paths told apart as above)."""
    torch.set_num_threads(threads)
    assert ops.DENSE_ABOVE < 0.33 < ops.DENSE_ABOVE_BESIDE_ONE_THREAD_GEMM
    lin = SpikeLinear(32, ops.NARROW_OUT, backend="auto")
    with torch.no_grad():
        lin.weight[:, 0] = float("inf")
    x = make_input((40, 32), 0.33, "binary", seed=7)
    x[:, 0] = 0
    assert ops.DENSE_ABOVE < ops.estimated_density(x) < ops.DENSE_ABOVE_BESIDE_ONE_THREAD_GEMM
    assert ops.gemm_alone(40, 32, ops.NARROW_OUT, torch.float32) == (threads == 2)
    assert bool(lin(x).isfinite().all()) == (threads == 2)
    assert bool(lin(from_dense(x)).isfinite().all()) == (threads == 2)
    # an input that wants its gradient keeps DENSE_ABOVE: grad @ W is a GEMM on either path
    assert not bool(lin(x.clone().requires_grad_()).isfinite().all())


@pytest.mark.parametrize("N", [1, 10, 63, 64])
def test_narrow_layer_choice(N):
    """auto runs the dense GEMM for a dense floating-point input into fewer than NARROW_OUT
    outputs at any density; bool spikes and SpikeEvents keep the event kernels (the infinite
    weight over a zero column tells the paths apart, as above)."""
    assert ops.NARROW_OUT == 64
    lin = SpikeLinear(32, N, backend="auto")
    with torch.no_grad():
        lin.weight[:, 0] = float("inf")
    x = make_input((40, 32), 0.05, "binary", seed=7)
    x[:, 0] = 0
    assert bool(lin(x).isfinite().all()) == (N >= ops.NARROW_OUT)
    assert bool(lin(x > 0).isfinite().all())          # bool: the event kernels
    assert bool(lin(from_dense(x)).isfinite().all())  # SpikeEvents: the event kernels
    lin.backend = "cpp"
    assert bool(lin(x).isfinite().all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("source", ["dense", "events"])
def test_bitwise_across_threads(dtype, source, restore_threads):
    """Big enough that both threads get work; the same bits with one thread and with two."""
    x = make_input((4, 128, 300), 0.3, "graded", dtype, seed=8)
    upstream = torch.randn(4, 128, 200, dtype=dtype)
    _, spk = layers(300, 200, dtype=dtype)
    results = []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        results.append(forward_backward(spk, from_dense(x) if source == "events" else x, upstream, True))
    for other in results[1:]:
        assert torch.equal(results[0][0], other[0]), "output"
        for name in results[0][1]:
            assert torch.equal(results[0][1][name], other[1][name]), name


def test_state_dict_round_trip():
    lin, _ = layers(12, 5)
    spk = SpikeLinear(12, 5)
    assert spk.state_dict().keys() == lin.state_dict().keys()
    spk.load_state_dict(lin.state_dict())
    back = nn.Linear(12, 5)
    back.load_state_dict(spk.state_dict())
    for name, p in lin.state_dict().items():
        assert torch.equal(spk.state_dict()[name], p) and torch.equal(back.state_dict()[name], p)
    no_bias = SpikeLinear(12, 5, bias=False)
    assert list(no_bias.state_dict()) == ["weight"]
    nn.Linear(12, 5, bias=False).load_state_dict(no_bias.state_dict())


def test_initialisation_is_nn_linear():
    torch.manual_seed(1)
    lin = nn.Linear(20, 7)
    torch.manual_seed(1)
    spk = SpikeLinear(20, 7)
    assert torch.equal(lin.weight, spk.weight) and torch.equal(lin.bias, spk.bias)
    assert isinstance(spk, nn.Linear) and "backend='auto'" in repr(spk)


@pytest.mark.parametrize("bias", [True, False])
def test_from_linear_shares_parameters(bias):
    lin = nn.Linear(15, 6, bias=bias, dtype=torch.float64)
    spk = SpikeLinear.from_linear(lin, backend="cpp")
    assert spk.weight is lin.weight and spk.bias is lin.bias and spk.backend == "cpp"
    assert spk.weight.dtype == torch.float64 and spk.weight.device.type == "cpu"
    x = make_input((9, 15), 0.2, "real", torch.float64)
    assert normwise(spk(x), lin(x)) <= 1e-12
    copied = SpikeLinear.from_linear(copy.deepcopy(lin))
    assert copied.weight is not lin.weight and torch.equal(copied.weight, lin.weight)


def test_in_sequential_with_leaky():
    """[T, B, N] spikes through SpikeLinear -> Leaky -> SpikeLinear, as nn.Linear would."""
    torch.manual_seed(2)
    net = nn.Sequential(SpikeLinear(30, 16), fastlif.Leaky(0.9, init_hidden=True, step_mode="multi"),
                        SpikeLinear(16, 4))
    ref = copy.deepcopy(net)
    ref[0] = nn.Linear(30, 16)
    ref[2] = nn.Linear(16, 4)
    ref.load_state_dict(net.state_dict())
    x = make_input((6, 3, 30), 0.2, "bool", seed=9)
    out, want = net(x), ref(x.float())
    assert normwise(out, want) <= 1e-5 and out.shape == (6, 3, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_the_gemm(dtype):
    lin, spk = layers(10, 3, dtype=dtype, backend="auto")
    x = make_input((4, 10), 0.3, "binary", dtype)
    assert torch.equal(spk(x), lin(x))
    with pytest.raises(backends.BackendUnavailable, match="float32 or float64"):
        SpikeLinear(10, 3, dtype=dtype, backend="cpp")(x)


def test_reference_backend_is_f_linear():
    lin, spk = layers(10, 3, backend="reference")
    x = make_input((4, 10), 0.3, "real")
    assert torch.equal(spk(x), lin(x))
    assert torch.equal(spk(x > 0), lin((x > 0).float()))


# --- the custom ops -----------------------------------------------------------------------------

def op_cases():
    x = make_input((12, 20), 0.3, "graded", seed=10)
    ev = from_dense(x)
    evb = from_dense(x > 0)
    w, b = torch.randn(7, 20), torch.randn(7)
    return [("dense", (x, None, None, None, w, b)),
            ("bool", (x > 0, None, None, None, w, None)),
            ("events", (x, ev.indptr, ev.indices, ev.values, w, b)),
            ("binary_events", (x > 0, evb.indptr, evb.indices, None, w, b))]


@pytest.mark.parametrize("dense_above", [float("inf"), 0.1])
def test_opcheck(dense_above):
    """Schema, fake implementation and AOT dispatch of both ops (both paths: the event kernels,
    and with dense_above=0.1 the GEMM for the dense inputs, which are 30 % non-zero)."""
    for name, args in op_cases():
        kwargs = dict(dense_above=dense_above, backend="cpp")
        torch.library.opcheck(torch.ops.fastlif.spike_linear_fwd.default, args, kwargs=kwargs)
        x, indptr, indices, values, w, _ = args
        grad = torch.randn(12, 7)
        saved_x = None if indptr is not None else x
        for need in ((True, True, True), (False, True, False), (True, False, False)):
            torch.library.opcheck(torch.ops.fastlif.spike_linear_bwd.default,
                                  (grad, saved_x, indptr, indices, values, w, *need), kwargs=kwargs)


@pytest.mark.parametrize("events", [False, True], ids=["dense", "events"])
def test_compile_fullgraph_equals_eager(events):
    torch.manual_seed(3)
    net = nn.Sequential(SpikeLinear(24, 12), nn.Tanh(), SpikeLinear(12, 5, backend="cpp"))
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x = make_input((3, 4, 24), 0.1, "bool", seed=11)
    x = from_dense(x) if events else x
    results = []
    for fn in (net, compiled):
        net.zero_grad(set_to_none=True)
        out = fn(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# --- errors -------------------------------------------------------------------------------------

def test_errors():
    layer = SpikeLinear(8, 3)
    x = make_input((2, 8), 0.5, "binary")
    with pytest.raises(ValueError, match=r"in_features=8.*\(2, 9\)"):
        layer(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="in_features=8"):
        layer(torch.tensor(1.0))
    with pytest.raises(TypeError, match="bool .* or torch.float32.*torch.int64"):
        layer(torch.zeros(2, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.float64"):
        layer(x.double())
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        layer([[0.0] * 8])
    with pytest.raises(ValueError, match="no triton kernels"):
        SpikeLinear(8, 3, backend="triton")
    with pytest.raises(ValueError, match="unknown backend"):
        SpikeLinear(8, 3, backend="fast")
    with pytest.raises(TypeError, match="nn.Linear"):
        SpikeLinear.from_linear(nn.Conv1d(1, 1, 1))


def test_event_errors():
    layer = SpikeLinear(8, 3, backend="cpp")
    x = make_input((4, 8), 0.3, "bool", seed=12)
    x[0, :3] = True
    ev = from_dense(x)
    with pytest.raises(ValueError, match="indptr has 5 entries.*3 rows"):
        layer(ev._replace(dense=x[:3]))
    with pytest.raises(ValueError, match=r"in_features=8"):
        layer(ev._replace(dense=torch.zeros(4, 9, dtype=torch.bool)))
    with pytest.raises(ValueError, match="indices must be a 1-D torch.int32"):
        layer(ev._replace(indices=ev.indices.long()))
    with pytest.raises(ValueError, match="values must be None .* one value per index"):
        layer(ev._replace(values=torch.ones(ev.nnz + 1)))
    bad = ev.indices.clone()
    bad[0] = 8
    with pytest.raises(ValueError, match="row 0 .* outside \\[0, 8\\)"):
        layer(ev._replace(indices=bad))
    swapped = ev.indices.clone()
    swapped[0], swapped[1] = ev.indices[1], ev.indices[0]
    with pytest.raises(ValueError, match="not strictly ascending"):
        layer(ev._replace(indices=swapped))
    indptr = ev.indptr.clone()
    indptr[-1] += 1
    with pytest.raises(ValueError, match="end at nnz"):
        layer(ev._replace(indptr=indptr))
    with pytest.raises(TypeError, match="SpikeEvents.dense must be a torch.Tensor"):
        layer(ev._replace(dense=None))


def test_ops_check_the_layout_they_rely_on():
    """The custom ops can be called directly: what the kernels would read out of bounds is
    checked before they run."""
    w = torch.randn(4, 6)
    fwd = torch.ops.fastlif.spike_linear_fwd
    with pytest.raises(TypeError, match="bool or torch.float32"):
        fwd(torch.ones(3, 6, dtype=torch.int8), None, None, None, w, None, dense_above=2.0, backend="cpp")
    ev = from_dense(torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="int64 indptr \\[4\\]"):
        fwd(ev.dense, ev.indptr[:-1], ev.indices, None, w, None, dense_above=2.0, backend="cpp")

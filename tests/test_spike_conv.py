"""fastlif.SpikeConv2d (the event-driven convolution) against nn.Conv2d with the same weights:
outputs and every gradient at several densities, input kinds and geometries (stride, padding,
dilation, groups, odd sizes), bitwise reproducibility across thread counts, SpikeEvents input,
state_dict and from_conv, the custom ops (opcheck, torch.compile) and the errors."""
import copy

import pytest
import torch
from torch import nn

import fastlif
from fastlif import SpikeConv2d, backends
from fastlif.events import SpikeEvents, from_dense
from fastlif.ops import spike_conv as ops
from fastlif.testing import normwise
from conftest import needs_cpp
from event_cases import KINDS, TOL, make_input

pytestmark = needs_cpp


def layers(C, O, k, dtype=torch.float32, backend="cpp", seed=0, **kw):
    """An nn.Conv2d and a SpikeConv2d holding the same (independent) weights."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(C, O, k, dtype=dtype, **kw)
    spk = SpikeConv2d(C, O, k, dtype=dtype, backend=backend, **kw)
    spk.load_state_dict(conv.state_dict())
    return conv, spk


def forward_backward(layer, x, upstream, input_grad):
    """Output and the gradients of weight, bias and (if ``input_grad``) the input. nn.Conv2d
    gets the images as [N, C, H, W] in its dtype."""
    layer.zero_grad(set_to_none=True)
    if isinstance(x, SpikeEvents):
        leaf = x.dense.detach().requires_grad_(input_grad)
        inp = x._replace(dense=leaf)
    else:
        leaf = inp = x.detach().requires_grad_(input_grad)
    if isinstance(layer, SpikeConv2d):
        out = layer(inp)
    else:
        flat = leaf.to(layer.weight.dtype).reshape(-1, *leaf.shape[-3:])
        out = layer(flat)
        out = out.reshape(*leaf.shape[:-3], *out.shape[1:])
    out.backward(upstream)
    grads = {name: p.grad for name, p in layer.named_parameters()}
    if input_grad:
        grads["input"] = leaf.grad
    return out.detach(), grads


def compare(x, C, O, k, *, dtype=torch.float32, input_grad=False, backend="cpp", seed=0, **kw):
    conv, spk = layers(C, O, k, dtype=dtype, backend=backend, seed=seed, **kw)
    dense = x.dense if isinstance(x, SpikeEvents) else x
    with torch.no_grad():
        shape = conv(dense.to(dtype).reshape(-1, *dense.shape[-3:])).shape[1:]
    upstream = torch.randn(*dense.shape[:-3], *shape, generator=torch.Generator().manual_seed(seed + 1),
                           dtype=torch.float64).to(dtype)
    want, want_g = forward_backward(conv, dense, upstream, input_grad)
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
def test_matches_nn_conv2d(density, kind, dtype, input_grad):
    x = make_input((2, 3, 4, 9, 11), density, kind, dtype)  # [T, B, C, H, W], odd sizes
    compare(x, 4, 5, 3, dtype=dtype, input_grad=input_grad, padding=1)


GEOMETRIES = [
    dict(stride=2),
    dict(stride=2, padding=2),
    dict(padding=2),
    dict(stride=(1, 2), padding=(2, 0)),
    dict(dilation=2, padding=1),
    dict(dilation=(2, 3), stride=2, padding=(3, 1)),
    dict(groups=2, padding=1),
    dict(groups=4, stride=2),                     # depthwise: a channel per group
    dict(bias=False, padding=1),
    dict(padding="same"),
    dict(padding="valid"),
]


@pytest.mark.parametrize("kw", GEOMETRIES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("kind", ["bool", "real"])
def test_geometries(kw, kind):
    x = make_input((5, 4, 10, 9), 0.2, kind, seed=1)
    O = 8 if kw.get("groups", 1) > 1 else 6
    compare(x, 4, O, 3, input_grad=kind == "real", **kw)


@pytest.mark.parametrize("kernel", [2, (4, 3)])
def test_same_padding_even_kernel(kernel):
    """'same' with an even kernel pads one more at the bottom and right, as torch does."""
    compare(make_input((3, 2, 7, 8), 0.3, "real", seed=2), 2, 3, kernel, input_grad=True, padding="same")
    compare(make_input((3, 2, 7, 8), 0.3, "bool", seed=2), 2, 3, kernel, padding="same", dilation=2)


@pytest.mark.parametrize("shape,k,kw", [
    ((4, 3, 1, 1), 1, {}),                     # 1x1 images, 1x1 kernel
    ((4, 3, 1, 1), 3, dict(padding=1)),        # 1x1 images, a larger kernel with padding
    ((2, 3, 3, 3), 5, dict(padding=2)),        # kernel larger than the input
    ((2, 3, 2, 4), (5, 7), dict(padding=(2, 3), stride=3)),
    ((0, 3, 6, 6), 3, {}),                     # no images
    ((3, 6, 6), 3, {}),                        # one image, unbatched [C, H, W]
    ((2, 2, 2, 3, 5, 5), 3, {}),               # more leading dimensions
    ((3, 1, 40, 37), 3, dict(padding=1)),      # one channel, a wide row (several 64-masks)
])
def test_shapes(shape, k, kw):
    C = shape[-3]
    for kind in ("bool", "real"):
        compare(make_input(shape, 0.3, kind, seed=3), C, 4, k, input_grad=kind == "real", **kw)


def test_non_contiguous_and_channels_last():
    big = make_input((6, 3, 5, 12, 12), 0.2, "real", seed=4)
    x = big[::2, :, 1:4, 2:11, ::2]  # strided in time, channels and space
    assert not x.is_contiguous()
    compare(x, 3, 4, 3, input_grad=True, padding=1)
    cl = make_input((4, 5, 9, 9), 0.2, "real", seed=4).to(memory_format=torch.channels_last)
    assert not cl.is_contiguous()
    compare(cl, 5, 6, 3, input_grad=True)
    compare(cl > 0, 5, 6, 3, stride=2)


@pytest.mark.parametrize("kind", ["bool", "binary", "graded"])
def test_events_equal_dense(kind):
    """A SpikeEvents input gives bitwise the dense input's output and gradients."""
    x = make_input((3, 2, 4, 8, 7), 0.1, kind, seed=5)
    _, spk = layers(4, 5, 3, padding=1)
    upstream = torch.randn(3, 2, 5, 8, 7)
    ev = from_dense(x, item_dims=3)
    assert ev.rows == 6 and (ev.values is None or kind == "graded")
    from_x = forward_backward(spk, x, upstream, False)
    from_events = forward_backward(spk, ev, upstream, False)
    assert torch.equal(from_x[0], from_events[0])
    for name in from_x[1]:
        assert torch.equal(from_x[1][name], from_events[1][name]), name
    compare(ev, 4, 5, 3, padding=1, input_grad=kind != "bool")  # the input gradient reaches dense


def test_dense_events_take_the_dense_path():
    x = make_input((2, 5, 3, 6, 6), 0.9, "graded", seed=6)
    compare(from_dense(x, item_dims=3), 3, 4, 3, backend="auto", input_grad=True)


@pytest.mark.parametrize("density", [0.02, 0.5])
@pytest.mark.parametrize("kind", ["bool", "graded"])
def test_auto_backend_matches(density, kind):
    compare(make_input((4, 3, 3, 10, 10), density, kind, seed=7), 3, 5, 3, backend="auto",
            input_grad=kind != "bool", padding=1)


def test_crossover_choice():
    """auto picks the path by density: a zero input never meets the weight on the event path,
    so an infinite weight over an always-zero input channel tells the two paths apart."""
    conv = SpikeConv2d(2, 3, 3, backend="auto")
    with torch.no_grad():
        conv.weight[:, 0] = float("inf")
    for density, finite in ((0.02, True), (0.6, False)):
        x = make_input((80, 2, 8, 8), density, "binary", seed=7)
        x[:, 0] = 0
        assert bool(conv(x).isfinite().all()) == finite, density
    assert ops.DENSE_ABOVE >= 0.02
    conv.backend = "cpp"  # forced: the event kernels whatever the density
    assert bool(conv(x).isfinite().all())


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_run_dense(mode):
    x = make_input((2, 3, 3, 7, 6), 0.2, "real", seed=8)
    compare(x, 3, 4, 3, backend="auto", input_grad=True, padding=2, padding_mode=mode)
    compare(x > 0, 3, 4, 3, backend="auto", padding=(1, 2), padding_mode=mode, stride=2)
    with pytest.raises(ValueError, match="zeros only"):
        SpikeConv2d(3, 4, 3, padding=1, padding_mode=mode, backend="cpp")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("source", ["dense", "events"])
def test_bitwise_across_threads(dtype, source, restore_threads):
    """Big enough that both threads get work (forward: images; weight gradient: channels);
    the same bits with one thread and with two."""
    x = make_input((2, 64, 6, 14, 14), 0.3, "graded", dtype, seed=9)
    upstream = torch.randn(2, 64, 16, 12, 12, dtype=dtype)
    _, spk = layers(6, 16, 3, dtype=dtype)
    results = []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        results.append(forward_backward(spk, from_dense(x, 3) if source == "events" else x, upstream, True))
    for other in results[1:]:
        assert torch.equal(results[0][0], other[0]), "output"
        for name in results[0][1]:
            assert torch.equal(results[0][1][name], other[1][name]), name


def test_state_dict_round_trip():
    conv, _ = layers(3, 5, 3)
    spk = SpikeConv2d(3, 5, 3)
    assert spk.state_dict().keys() == conv.state_dict().keys()
    spk.load_state_dict(conv.state_dict())
    back = nn.Conv2d(3, 5, 3)
    back.load_state_dict(spk.state_dict())
    for name, p in conv.state_dict().items():
        assert torch.equal(spk.state_dict()[name], p) and torch.equal(back.state_dict()[name], p)
    no_bias = SpikeConv2d(3, 5, 3, bias=False)
    assert list(no_bias.state_dict()) == ["weight"]
    nn.Conv2d(3, 5, 3, bias=False).load_state_dict(no_bias.state_dict())


def test_initialisation_is_nn_conv2d():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, groups=2)
    torch.manual_seed(1)
    spk = SpikeConv2d(4, 6, 3, groups=2)
    assert torch.equal(conv.weight, spk.weight) and torch.equal(conv.bias, spk.bias)
    assert isinstance(spk, nn.Conv2d) and "backend='auto'" in repr(spk)


@pytest.mark.parametrize("bias", [True, False])
def test_from_conv_shares_parameters(bias):
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2, bias=bias, dtype=torch.float64)
    spk = SpikeConv2d.from_conv(conv, backend="cpp")
    assert spk.weight is conv.weight and spk.bias is conv.bias and spk.backend == "cpp"
    assert spk.weight.device.type == "cpu" and (spk.stride, spk.padding, spk.groups) == ((2, 2), (1, 1), 2)
    x = make_input((3, 4, 9, 9), 0.2, "real", torch.float64)
    assert normwise(spk(x), conv(x)) <= 1e-12
    copied = SpikeConv2d.from_conv(copy.deepcopy(conv))
    assert copied.weight is not conv.weight and torch.equal(copied.weight, conv.weight)


def test_in_sequential_with_leaky():
    """[T, B, C, H, W] spikes through SpikeConv2d -> Leaky -> SpikeConv2d, as nn.Conv2d would
    (nn.Conv2d itself takes [N, C, H, W]: the reference flattens T and B)."""
    torch.manual_seed(2)
    net = nn.Sequential(SpikeConv2d(2, 4, 3), fastlif.Leaky(0.9, init_hidden=True, step_mode="multi"),
                        SpikeConv2d(4, 3, 3, stride=2))
    ref = [nn.Conv2d(2, 4, 3), copy.deepcopy(net[1]), nn.Conv2d(4, 3, 3, stride=2)]
    ref[0].load_state_dict(net[0].state_dict())
    ref[2].load_state_dict(net[2].state_dict())
    x = make_input((5, 3, 2, 11, 11), 0.2, "bool", seed=9)
    out = net(x)
    h = ref[0](x.float().reshape(15, 2, 11, 11)).reshape(5, 3, 4, 9, 9)
    want = ref[2](ref[1](h).reshape(15, 4, 9, 9)).reshape(5, 3, 3, 4, 4)
    assert out.shape == (5, 3, 3, 4, 4) and normwise(out, want) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_dense(dtype):
    conv, spk = layers(3, 4, 3, dtype=dtype, backend="auto")
    x = make_input((2, 3, 6, 6), 0.3, "binary", dtype)
    assert torch.equal(spk(x), conv(x))
    with pytest.raises(backends.BackendUnavailable, match="float32 or float64"):
        SpikeConv2d(3, 4, 3, dtype=dtype, backend="cpp")(x)


def test_reference_backend_is_f_conv2d():
    conv, spk = layers(3, 4, 3, backend="reference", padding=1)
    x = make_input((2, 3, 6, 6), 0.3, "real")
    assert torch.equal(spk(x), conv(x))
    assert torch.equal(spk(x > 0), conv((x > 0).float()))


# --- the custom ops -----------------------------------------------------------------------------

def op_cases():
    x = make_input((5, 4, 7, 6), 0.3, "graded", seed=10)
    ev, evb = from_dense(x, 3), from_dense(x > 0, 3)
    w, b = torch.randn(6, 2, 3, 3), torch.randn(6)
    geo = dict(stride=[2, 1], padding=[1, 2, 0, 1], dilation=[1, 2], groups=2)
    return [("dense", (x, None, None, None, w, b), geo),
            ("bool", (x > 0, None, None, None, w, None), geo),
            ("events", (x, ev.indptr, ev.indices, ev.values, w, b), geo),
            ("binary_events", (x > 0, evb.indptr, evb.indices, None, w, b), geo)]


@pytest.mark.parametrize("dense_above", [float("inf"), 0.1])
def test_opcheck(dense_above):
    """Schema, fake implementation and AOT dispatch of both ops (both paths: the event kernels,
    and with dense_above=0.1 the dense convolution for the dense inputs, 30 % non-zero)."""
    for name, args, geo in op_cases():
        kwargs = dict(dense_above=dense_above, backend="cpp")
        torch.library.opcheck(torch.ops.fastlif.spike_conv2d_fwd.default, (*args, *geo.values()), kwargs=kwargs)
        x, indptr, indices, values, w, _ = args
        out = torch.ops.fastlif.spike_conv2d_fwd(*args, *geo.values(), **kwargs)
        grad = torch.randn_like(out)
        saved_x = None if indptr is not None else x
        for need in ((True, True, True), (False, True, False), (True, False, False)):
            torch.library.opcheck(torch.ops.fastlif.spike_conv2d_bwd.default,
                                  (grad, saved_x, indptr, indices, values, w, list(x.shape), *geo.values(), *need),
                                  kwargs=kwargs)


@pytest.mark.parametrize("events", [False, True], ids=["dense", "events"])
def test_compile_fullgraph_equals_eager(events):
    torch.manual_seed(3)
    net = nn.Sequential(SpikeConv2d(2, 4, 3, padding=1), nn.Tanh(), SpikeConv2d(4, 3, 3, stride=2, backend="cpp"))
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x = make_input((6, 2, 9, 9), 0.1, "bool", seed=11)
    x = from_dense(x, 3) if events else x
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
    layer = SpikeConv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"C=3, H, W.*\(2, 4, 5, 5\)"):
        layer(torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"C=3, H, W"):
        layer(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer(torch.zeros(2, 3, 2, 5))
    with pytest.raises(TypeError, match="bool .* or torch.float32.*torch.int64"):
        layer(torch.zeros(2, 3, 5, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.float64"):
        layer(torch.zeros(2, 3, 5, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        layer([[0.0] * 5])
    with pytest.raises(ValueError, match="no triton kernels"):
        SpikeConv2d(3, 4, 3, backend="triton")
    with pytest.raises(ValueError, match="unknown backend"):
        SpikeConv2d(3, 4, 3, backend="fast")
    with pytest.raises(TypeError, match="nn.Conv2d"):
        SpikeConv2d.from_conv(nn.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match="weight must be"):
        ops.spike_conv2d(torch.zeros(1, 3, 5, 5), torch.zeros(4, 3, 3))
    with pytest.raises(ValueError, match="groups"):
        ops.spike_conv2d(torch.zeros(1, 3, 5, 5), torch.zeros(4, 1, 3, 3), groups=3)


def test_event_errors():
    layer = SpikeConv2d(2, 3, 3, backend="cpp")
    x = make_input((4, 2, 5, 5), 0.3, "bool", seed=12)
    x[0, 0, 0, :3] = True
    ev = from_dense(x, item_dims=3)
    with pytest.raises(ValueError, match="item_dims=3"):
        layer(from_dense(x))
    with pytest.raises(ValueError, match="indptr has 5 entries.*3 rows"):
        layer(ev._replace(dense=x[:3]))
    bad = ev.indices.clone()
    bad[0] = 2 * 5 * 5
    with pytest.raises(ValueError, match="row 0 .* outside \\[0, 50\\)"):
        layer(ev._replace(indices=bad))
    swapped = ev.indices.clone()
    swapped[0], swapped[1] = ev.indices[1], ev.indices[0]
    with pytest.raises(ValueError, match="not strictly ascending"):
        layer(ev._replace(indices=swapped))
    with pytest.raises(ValueError, match="values must be None .* one value per index"):
        layer(ev._replace(values=torch.ones(ev.nnz + 1)))
    with pytest.raises(ValueError, match="item_dims=1"):  # a convolution's events into a linear layer
        fastlif.SpikeLinear(5, 2)(ev)


def test_ops_check_the_layout_they_rely_on():
    """The custom ops can be called directly: what the kernels would read out of bounds is
    checked before they run."""
    w = torch.randn(4, 2, 3, 3)
    fwd = torch.ops.fastlif.spike_conv2d_fwd
    geo = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(TypeError, match="bool or torch.float32"):
        fwd(torch.ones(3, 2, 5, 5, dtype=torch.int8), None, None, None, w, None, *geo, dense_above=2.0,
            backend="cpp")
    ev = from_dense(torch.ones(3, 2, 5, 5, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match="int64 indptr \\[4\\]"):
        fwd(ev.dense, ev.indptr[:-1], ev.indices, None, w, None, *geo, dense_above=2.0, backend="cpp")

"""The C++ autograd Function (csrc/autograd.cpp), which eager calls with a graph on the C++
backend record, against the Python autograd Functions it stands in for (LifFunction,
RLeakyFunction with one-to-one feedback, FamilyFunction), which serve every other call: the same outputs and every gradient, bit for bit,
for every option, with random upstream gradients. The suite's other tests of these neurons (the
reference loops, snnTorch, SpikingJelly, errors, threads, the pool) run through them too."""
import itertools

import pytest
import torch

import fastlif
from fastlif.family import FAMILIES, run_family
from fastlif.ops import common, lif
from conftest import needs_cpp
from test_family import SURROGATES, option_sets

pytestmark = needs_cpp

CPP_NODE = "CppNode<fastlif::FusedFunction>"  # every kind records this one node


def _has_cpp_functions():
    return hasattr(fastlif.backends.cpp_module(), "fused_train")


def _node(t):
    return type(t.grad_fn).__name__ + str(t.grad_fn.name())


needs_cpp_function = pytest.mark.skipif(
    "cpp" not in fastlif.backends.available("cpu") or not _has_cpp_functions(),
    reason="the C++ extension was built without torch's headers (pip's isolated build): "
           "the Python autograd Functions serve every call")


def assert_same_bits(fast, slow, names):
    for name, a, b in zip(names, fast, slow):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape, name
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=f"{name} differs")


def _call(cpp_function, x, mem0, beta, threshold, graded, learn, reset, delay, surrogate, monkeypatch, seed):
    """Outputs, gradients (random upstream ones) and the spike output's grad_fn of one call."""
    monkeypatch.setattr(common, "CPP_AUTOGRAD", cpp_function)
    xx = x.detach().requires_grad_()
    m0 = None if mem0 is None else mem0.detach().requires_grad_()
    b = torch.tensor(beta, dtype=x.dtype, requires_grad=True) if learn else beta
    th = threshold.detach().requires_grad_() if isinstance(threshold, torch.Tensor) else threshold
    spk, mem = fastlif.lif_sequence(xx, b, th, mem=m0, reset_mechanism=reset, reset_delay=delay,
                                    surrogate=surrogate, graded_spikes_factor=graded, backend="cpp")
    gen = torch.Generator().manual_seed(seed)
    grads = [torch.randn(spk.shape, generator=gen, dtype=spk.dtype), torch.randn(mem.shape, generator=gen, dtype=mem.dtype)]
    torch.autograd.backward([spk, mem], grads)
    got = [spk, mem, xx.grad, None if m0 is None else m0.grad, b.grad if learn else None,
           th.grad if isinstance(th, torch.Tensor) else None]
    return got, _node(spk)


CASES = list(itertools.product(
    (torch.float32, torch.float64), ("subtract", "zero", "none"), (True, False),
    (0.9, 1.3, -0.0, float("nan")),                  # beta: inside, above, the -0.0 bound, NaN
    ((1, 4, 5), (7, 2, 3, 33))))                     # T=1; an odd neuron count


@needs_cpp_function
@pytest.mark.parametrize("dtype,reset,delay,beta,shape", CASES)
@pytest.mark.parametrize("learn", [False, True])
def test_same_bits_as_lif_function(dtype, reset, delay, beta, shape, learn, monkeypatch):
    gen = torch.Generator().manual_seed(len(reset) + 7 * shape[0] + int(delay))
    x = torch.randn(shape, generator=gen, dtype=dtype)
    mem0 = torch.randn(shape[1:], generator=gen, dtype=dtype) if shape[0] > 1 else None
    # learnable: a per-neuron threshold and a graded factor tensor too; else all floats
    threshold = torch.rand(shape[-1], generator=gen, dtype=dtype) + 0.5 if learn else 1.0
    graded = torch.tensor(1.5, dtype=dtype) if learn else 1.0
    surrogate = fastlif.surrogate.fast_sigmoid(slope=7.0) if learn else fastlif.surrogate.atan()
    args = (x, mem0, beta, threshold, graded, learn, reset, delay, surrogate, monkeypatch, 3)
    fast, fast_node = _call(True, *args)
    slow, slow_node = _call(False, *args)
    assert CPP_NODE in fast_node and "LifFunction" in slow_node, (fast_node, slow_node)
    assert_same_bits(fast, slow, ("spk", "mem", "grad x", "grad mem0", "grad beta", "grad threshold"))


@needs_cpp_function
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_per_neuron_learnable_beta_clamped_by_value(reset, monkeypatch):
    """A learnable beta of one value per neuron, below, at and above the bounds and NaN: the C++
    Function clamps the tensor and masks its gradient by value as torch's clamp backward does."""
    L = 9
    beta = torch.tensor([-0.3, -0.0, 0.0, 0.4, 0.95, 1.0, 1.2, float("nan"), 0.7])
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, L, generator=gen)
    g_mem = torch.randn(8, 3, L, generator=gen)
    got = []
    for cpp_function in (True, False):
        monkeypatch.setattr(common, "CPP_AUTOGRAD", cpp_function)
        b = beta.clone().requires_grad_()
        xx = x.clone().requires_grad_()
        spk, mem = fastlif.lif_sequence(xx, b, 1.0, reset_mechanism=reset, backend="cpp")
        assert (CPP_NODE in _node(spk)) == cpp_function
        torch.autograd.backward([spk, mem], [torch.ones_like(spk), g_mem])
        got.append((spk, mem, xx.grad, b.grad))
    for a, b in zip(*got):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@needs_cpp_function
def test_module_call_records_the_cpp_node_and_backward_of_one_output(monkeypatch):
    """A module's eager call records the C++ node; a backward that reaches only one output (the
    other's gradient absent, not materialised) gives LifFunction's gradients; a non-contiguous
    input is read as its values."""
    layer = fastlif.Leaky(beta=0.8, learn_beta=True)
    base = torch.randn(6, 4, 10)
    for cpp_function in (True, False):
        monkeypatch.setattr(common, "CPP_AUTOGRAD", cpp_function)
        x = base.transpose(1, 2).detach().requires_grad_()  # non-contiguous
        spk, mem = layer.sequence(x)
        assert (CPP_NODE in _node(spk)) == cpp_function
        mem.sum().backward()
        grads = (x.grad.clone(), layer.beta.grad.clone())
        layer.beta.grad = None
        if cpp_function:
            fast = (spk, mem, *grads)
        else:
            for a, b in zip(fast, (spk, mem, *grads)):
                assert torch.equal(a, b)


@needs_cpp_function
def test_compile_and_no_grad_do_not_record_it(monkeypatch):
    """Under torch.compile the custom ops serve (LifFunction traces them); without a graph the
    launcher runs alone."""
    x = torch.randn(5, 3, 8)
    with torch.no_grad():
        spk, _ = fastlif.lif_sequence(x, 0.9, backend="cpp")
    assert spk.grad_fn is None
    calls = []
    real = lif.cpp_autograd

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append(out is not None)
        return out
    monkeypatch.setattr(lif, "cpp_autograd", spy)
    fn = torch.compile(lambda t: fastlif.lif_sequence(t, 0.9, backend="cpp")[0].sum(), backend="eager")
    xx = x.clone().requires_grad_()
    fn(xx).backward()
    assert calls and not any(calls)  # asked, and declined while tracing
    ref = x.clone().requires_grad_()
    fastlif.lif_sequence(ref, 0.9, backend="reference")[0].sum().backward()
    torch.testing.assert_close(xx.grad, ref.grad, rtol=1e-5, atol=1e-6)


# --- the spec'd families -------------------------------------------------------------------------

def _family_cases():
    out = []
    for name in sorted(FAMILIES):
        spec = FAMILIES[name]
        for options in option_sets(spec):
            tag = "-".join(f"{k}{v}" for k, v in options.items())
            out.append(pytest.param(name, options, id=f"{name}-{tag}"))
    return out


def _family_call(cpp_function, spec, x, states, params, learn, options, sg, monkeypatch):
    """Outputs, the gradients torch.autograd.grad gives for every leaf (random upstream
    gradients on every output) and the spike output's node."""
    monkeypatch.setattr(common, "CPP_AUTOGRAD", cpp_function)
    xl = x.detach().requires_grad_()
    sl = [None if s is None else s.detach().requires_grad_() for s in states]
    pl = [p.detach().requires_grad_() if want else p for p, want in zip(params, learn)]
    outs = run_family(spec, xl, sl, pl, single_step=False, options=options, spike_fn=SURROGATES[sg],
                      surrogate=SURROGATES[sg], backend="cpp")
    gen = torch.Generator().manual_seed(5)
    ups = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
    leaves = [t for t in (xl, *sl, *pl) if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(outs, leaves, ups, allow_unused=True)
    return list(outs) + list(grads), _node(outs[0])


@needs_cpp_function
@pytest.mark.parametrize("name,options", _family_cases())
@pytest.mark.parametrize("shape", [(1, 2, 5), (6, 3, 7)], ids=["T1", "T6-odd"])
@pytest.mark.parametrize("params_kind", ["per-neuron-learnable", "one-value-learnable", "some-fixed"])
def test_family_same_bits_as_family_function(name, options, shape, params_kind, monkeypatch):
    """Every family, every option, its first surrogate: per-neuron learnable parameters; one-value
    learnable ones (the clamped ones clamped on the host, values outside [0, 1] included); and
    the first parameter fixed (a state the backward then does not read is not kept)."""
    spec = FAMILIES[name]
    gen = torch.Generator().manual_seed(len(name) + shape[0])
    L = shape[-1]
    params = list(spec.example(L, gen, torch.float32))
    if params_kind == "one-value-learnable":
        params = [p.reshape(-1)[:1].reshape(()) * (1.3 if k % 2 else 1.0) for k, p in enumerate(params)]
    learn = [not (params_kind == "some-fixed" and k == 0) for k in range(len(params))]
    x = torch.randn(shape, generator=gen) * 1.2
    states = [torch.randn(shape[1:], generator=gen) * 0.5 if shape[0] > 1 else None for _ in spec.states]
    sg = spec.surrogates[0]
    fast, fast_node = _family_call(True, spec, x, states, params, learn, options, sg, monkeypatch)
    slow, slow_node = _family_call(False, spec, x, states, params, learn, options, sg, monkeypatch)
    assert CPP_NODE in fast_node and "FamilyFunction" in slow_node, (fast_node, slow_node)
    assert len(fast) == len(slow)
    assert_same_bits(fast, slow, [f"output or gradient {i}" for i in range(len(fast))])


@needs_cpp_function
@pytest.mark.parametrize("sg", ["sj_sigmoid", "sj_atan"])
def test_spikingjelly_nodes_record_the_cpp_node(sg, monkeypatch):
    """fastlif.spikingjelly's nodes reach the family's C++ Function, fp64 too, with the same
    gradients as FamilyFunction."""
    import fastlif.spikingjelly as fsj
    surrogate = {"sj_sigmoid": fsj.surrogate.Sigmoid(), "sj_atan": fsj.surrogate.ATan()}[sg]
    x = torch.randn(5, 2, 9, dtype=torch.float64)
    got = {}
    for cpp_function in (True, False):
        monkeypatch.setattr(common, "CPP_AUTOGRAD", cpp_function)
        node = fsj.ParametricLIFNode(init_tau=2.0, surrogate_function=surrogate, step_mode="m",
                                     store_v_seq=True).to(torch.float64)
        xx = x.clone().requires_grad_()
        spk = node(xx)
        assert (CPP_NODE in _node(spk)) == cpp_function
        (spk.sum() + node.v_seq.square().sum()).backward()
        got[cpp_function] = (spk, node.v_seq, xx.grad, node.w.grad)
    for a, b in zip(got[True], got[False]):
        assert torch.equal(a, b)


# --- RLeaky, one-to-one ------------------------------------------------------------------------------

@needs_cpp_function
@pytest.mark.parametrize("reset,delay", [("subtract", True), ("zero", True), ("none", True),
                                         ("subtract", False), ("zero", False)])
@pytest.mark.parametrize("layout", ["floats", "one-value-learnable", "per-neuron-learnable"])
@pytest.mark.parametrize("T", [1, 6])
def test_rleaky_same_bits_as_rleaky_function(reset, delay, layout, T, monkeypatch):
    """One-to-one RLeaky (the dense layer keeps RLeakyFunction): initial spikes and membrane,
    learnable beta (clamped: values outside [0, 1]), V, threshold, random upstream gradients."""
    from fastlif.ops.rleaky import run_rleaky
    gen = torch.Generator().manual_seed(T + len(reset))
    L = 7
    x = torch.randn(T, 3, L, generator=gen)
    spk0 = (torch.rand(3, L, generator=gen) > 0.5).float() if T > 1 else None
    mem0 = torch.randn(3, L, generator=gen) if T > 1 else None
    if layout == "floats":
        values = (0.9, 0.5, 1.0, 1.0)
    elif layout == "one-value-learnable":
        values = (torch.tensor(1.2), torch.tensor(-0.4), torch.tensor(0.8), torch.tensor(1.3))
    else:
        values = (torch.rand(L, generator=gen) * 1.4 - 0.2, torch.randn(L, generator=gen),
                  torch.rand(L, generator=gen) + 0.5, torch.tensor(1.0))
    g_spk, g_mem = torch.randn(T, 3, L, generator=gen), torch.randn(T, 3, L, generator=gen)
    spike_fn, sg = fastlif.surrogate.resolve(None)
    got, nodes = [], []
    for cpp_function in (True, False):
        monkeypatch.setattr(common, "CPP_AUTOGRAD", cpp_function)
        leaves = [x.clone().requires_grad_(), *(None if s is None else s.clone().requires_grad_() for s in (spk0, mem0))]
        params = [v.clone().requires_grad_() if isinstance(v, torch.Tensor) else v for v in values]
        spk, mem = run_rleaky(leaves[0], leaves[1], leaves[2], params[0], params[1], params[2], params[3],
                              single_step=False, reset_mode=fastlif.codes.reset_code(reset), reset_delay=delay,
                              spike_fn=spike_fn, surrogate=sg, backend="cpp")
        nodes.append(_node(spk))
        torch.autograd.backward([spk, mem], [g_spk, g_mem])
        got.append([spk, mem] + [None if t is None else t.grad for t in leaves]
                   + [p.grad if isinstance(p, torch.Tensor) else None for p in params])
    assert CPP_NODE in nodes[0] and "RLeakyFunction" in nodes[1], nodes
    assert_same_bits(got[0], got[1], ["spk", "mem", "grad x", "grad spk0", "grad mem0", "grad beta", "grad V",
                                      "grad threshold", "grad graded"])


@needs_cpp_function
@pytest.mark.parametrize("what", ["leaky", "leaky-immediate", "rleaky", "synaptic", "sj_lif"])
def test_a_graph_frees_what_its_node_holds(what):
    """The C++ node releases its saved tensors and outputs with its graph, after a backward and
    when the graph is dropped without one: the pool's bytes in use come back to where they were
    (a node that outlived its graph would keep its saved membrane). The pool is on for this test
    whatever FASTLIF_CPU_CACHE_MB says (the sanitizer run sets it to 0)."""
    import gc
    import fastlif.spikingjelly as fsj
    from fastlif.ops.rleaky import run_rleaky
    spike_fn, sg = fastlif.surrogate.resolve(None)
    layers = {
        "leaky": lambda x: fastlif.Leaky(beta=0.9, learn_beta=True).sequence(x),
        "leaky-immediate": lambda x: fastlif.Leaky(beta=0.9, learn_threshold=True, reset_delay=False).sequence(x),
        "rleaky": lambda x: run_rleaky(x, None, None, torch.tensor(0.9, requires_grad=True), 0.5, 1.0, 1.0,
                                       single_step=False, reset_mode=0, reset_delay=True, spike_fn=spike_fn,
                                       surrogate=sg, backend="cpp"),
        "synaptic": lambda x: fastlif.Synaptic(alpha=0.8, beta=0.9, learn_alpha=True).sequence(x),
        "sj_lif": lambda x: (fsj.ParametricLIFNode(step_mode="m", store_v_seq=True)(x),),
    }
    common.set_cpu_cache_limit(1 << 30)
    try:
        x0 = torch.randn(20, 16, 256)  # 320 KiB per output: from the pool
        stats = fastlif.backends.cpp_module()._pool
        gc.collect()
        before = stats()["in_use_bytes"]
        for i in range(6):
            x = x0.clone().requires_grad_()
            outs = layers[what](x)
            assert CPP_NODE in _node(outs[0])
            if i % 2:
                sum(o.sum() for o in outs).backward()
            del outs, x
        gc.collect()
        assert stats()["in_use_bytes"] == before
    finally:
        common.set_cpu_cache_limit(common._env_cache_limit())

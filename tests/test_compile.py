"""torch.compile(fullgraph=True) of networks built on fastlif: no graph breaks, and the same
spikes, loss and gradients as eager.

The fused ops are ``torch.library`` custom ops (opaque to Dynamo, with fake implementations
and a registered autograd), so a whole network compiles into one graph. One end-to-end test
runs the default Inductor backend (the first Inductor compile on a machine costs ~30 s of
C++ building, hence one small model); the option sweeps use ``aot_eager``, which traces the
same graph through AOTAutograd (fake tensors, the registered backward) without generating code.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.utils import counters

import fastlif
from conftest import DEVICES

pytestmark = [
    pytest.mark.xdist_group("compile"),
    # fastlif's backend choice goes through functools.lru_cache; Dynamo traces it, and says so
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`"),
]

SURROGATES = {"atan": fastlif.surrogate.atan(), "fast_sigmoid": fastlif.surrogate.fast_sigmoid(),
              "triangular": fastlif.surrogate.triangular()}


class Net(nn.Module):
    """Two multi-step ``fastlif.Leaky`` layers in ``nn.Sequential`` (learnable per-neuron beta and
    threshold in the first), then a ``fastlif.lif_sequence`` read-out with its own parameters."""

    def __init__(self, n_in=12, hidden=16, n_out=10, reset_mechanism="subtract", reset_delay=True,
                 surrogate="fast_sigmoid"):
        super().__init__()
        sg = SURROGATES[surrogate]
        self.body = nn.Sequential(
            nn.Linear(n_in, hidden),
            fastlif.Leaky(torch.full((hidden,), 0.9), threshold=torch.ones(hidden), learn_beta=True,
                          learn_threshold=True, spike_grad=sg, init_hidden=True, step_mode="multi",
                          reset_mechanism=reset_mechanism, reset_delay=reset_delay),
            nn.Linear(hidden, hidden),
            fastlif.Leaky(0.8, spike_grad=sg, init_hidden=True, step_mode="multi",
                          reset_mechanism=reset_mechanism, reset_delay=reset_delay),
            nn.Linear(hidden, n_out),
        )
        self.beta_out = nn.Parameter(torch.linspace(0.5, 0.95, n_out))
        self.thr_out = nn.Parameter(torch.tensor(0.7))

    def forward(self, x_seq, mem0):
        spk, mem = fastlif.lif_sequence(self.body(x_seq), self.beta_out, self.thr_out, mem=mem0,
                                        reset_mechanism=self.body[1].reset_mechanism,
                                        reset_delay=self.body[1].reset_delay,
                                        surrogate=self.body[1].spike_grad, graded_spikes_factor=0.5)
        return spk, mem


def make_net(device, **options):
    torch.manual_seed(0)
    return Net(**options).to(device)


def make_batch(device, T=7, B=3, n_in=12, n_out=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, n_in, generator=g) * 2).to(device)
    mem0 = torch.randn(B, n_out, generator=g).to(device)
    y = torch.randint(n_out, (B,), generator=g).to(device)
    return x, mem0, y


def reset_state(net):
    for m in net.modules():
        if isinstance(m, fastlif.Leaky):
            m.mem = torch.zeros(0, device=m.mem.device)


def detach_state(net):
    """Truncated BPTT: keep each layer's membrane, cut its graph."""
    for m in net.modules():
        if isinstance(m, fastlif.Leaky):
            m.mem = m.mem.detach()


def step(net, x, mem0, y):
    """Forward and backward; returns spikes, membrane, loss, and every gradient by name."""
    x = x.clone().requires_grad_()
    mem0 = mem0.clone().requires_grad_()
    spk, mem = net(x, mem0)
    loss = F.cross_entropy(spk.sum(0), y) + 0.01 * mem.square().mean()
    net.zero_grad(set_to_none=True)
    loss.backward()
    grads = {name.removeprefix("_orig_mod."): p.grad for name, p in net.named_parameters()}
    grads.update(x=x.grad, mem0=mem0.grad)
    return spk.detach(), mem.detach(), loss.detach(), grads


def assert_same_as_eager(eager, compiled):
    spk_e, mem_e, loss_e, grads_e = eager
    spk_c, mem_c, loss_c, grads_c = compiled
    assert spk_e.any() and not spk_e.all(), "the test input should give some spikes, not all"
    assert torch.equal(spk_c, spk_e)
    torch.testing.assert_close(mem_c, mem_e, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=1e-7)
    assert grads_c.keys() == grads_e.keys()
    for name, g_e in grads_e.items():
        g_c = grads_c[name]
        assert g_e is not None and g_c is not None, name
        scale = g_e.abs().max().clamp_min(1e-12)
        assert (g_c - g_e).abs().max() / scale <= 1e-5, name


def compile_and_count(fn, backend):
    counters.clear()
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=backend)


@pytest.mark.parametrize("device", DEVICES)
def test_one_graph_no_breaks(device):
    net = make_net(device)
    x, mem0, _ = make_batch(device)
    explanation = torch._dynamo.explain(net)(x, mem0)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    if not fastlif.backends.why_unavailable("cpp" if device == "cpu" else "triton", device):
        # each fused call is one autograd.Function (a higher-order op in the graph) whose
        # forward subgraph calls the custom op once
        ops = [str(node.target) for graph in explanation.graphs
               for module in graph.modules() for node in module.graph.nodes
               if node.op == "call_function"]
        assert sum("fastlif.lif_fwd" in op for op in ops) == 3, ops  # 2 Leaky + lif_sequence


@pytest.mark.parametrize("device", DEVICES)
def test_inductor_fullgraph_equals_eager(device):
    """The default backend end to end: forward and backward compiled, same numbers as eager."""
    x, mem0, y = make_batch(device)
    eager = step(make_net(device), x, mem0, y)
    net = make_net(device)
    compiled_net = compile_and_count(net, "inductor")
    compiled = step(compiled_net, x, mem0, y)
    assert not counters["graph_break"]
    assert_same_as_eager(eager, compiled)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reset_mechanism,reset_delay,surrogate", [
    ("subtract", True, "fast_sigmoid"), ("subtract", False, "atan"),
    ("zero", True, "triangular"), ("zero", False, "fast_sigmoid"), ("none", True, "atan")])
def test_aot_fullgraph_equals_eager(device, reset_mechanism, reset_delay, surrogate):
    options = dict(reset_mechanism=reset_mechanism, reset_delay=reset_delay, surrogate=surrogate)
    x, mem0, y = make_batch(device)
    eager = step(make_net(device, **options), x, mem0, y)
    compiled = step(compile_and_count(make_net(device, **options), "aot_eager"), x, mem0, y)
    assert not counters["graph_break"]
    assert_same_as_eager(eager, compiled)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_state_and_new_batch_size(device):
    """Hidden state carried from call to call (init_hidden), and a smaller last batch: the
    compiled network keeps agreeing with eager (recompiling for the new shapes, no breaks)."""
    eager_net, net = make_net(device), make_net(device)
    compiled_net = compile_and_count(net, "aot_eager")
    for B, seed in ((3, 1), (3, 2), (2, 3)):  # the 2nd call starts from the 1st call's state
        for n in (eager_net, net):
            if B == 3:
                detach_state(n)   # keep the membrane, drop its graph (truncated BPTT)
            else:
                reset_state(n)    # a new batch size starts from rest
        x, mem0, y = make_batch(device, B=B, seed=seed)
        assert_same_as_eager(step(eager_net, x, mem0, y), step(compiled_net, x, mem0, y))
    assert not counters["graph_break"]


@pytest.mark.parametrize("device", DEVICES)
def test_functional_fullgraph_fp64_per_neuron(device):
    """lif_sequence alone in a compiled function, fp64, per-neuron graded spikes, no mem0."""
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(9, 4, 6, generator=g, dtype=torch.float64) * 1.5).to(device)
    params = [torch.rand(6, generator=g, dtype=torch.float64).to(device) + off
              for off in (0.2, 0.5, 0.5)]

    def fn(x, beta, thr, graded):
        spk, mem = fastlif.lif_sequence(x, beta, thr, graded_spikes_factor=graded,
                                        reset_delay=False)
        return (spk * torch.arange(1, 7, device=x.device)).sum() + mem.sin().sum()

    def run(f):
        leaves = [t.clone().requires_grad_() for t in (x, *params)]
        out = f(*leaves)
        out.backward()
        return out.detach(), [t.grad for t in leaves]

    out_e, grads_e = run(fn)
    out_c, grads_c = run(compile_and_count(fn, "aot_eager"))
    assert not counters["graph_break"]
    torch.testing.assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
    for g_c, g_e in zip(grads_c, grads_e):
        torch.testing.assert_close(g_c, g_e, rtol=1e-10, atol=1e-12)

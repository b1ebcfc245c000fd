"""fastlif.sequence against the per-step loop it replaces (snnTorch's and fastlif's own), and
``import fastlif as snn`` on snnTorch's tutorial code.

Exactness: neurons run their fused op, bit-identical to the per-step calls; the stateless layers
run once over the folded [T*B, ...] batch, and a convolution or GEMM over T*B rows may sum in
another order than over B rows (oneDNN picks its blocking by batch size): the membranes agree to
fp32 summation error (1e-5), and the spikes are compared exactly (a flip needs a membrane within
that error of the threshold; none occurs in these cases). Parameter gradients sum over T*B at
once instead of over T per-step calls: compared to 1e-5 relative (normwise), the issue's bound.
"""
import copy
import warnings

import pytest
import torch
from torch import nn

import fastlif
from fastlif.network import SequenceError

snn = pytest.importorskip("snntorch")
from snntorch import surrogate as ss  # noqa: E402
from snntorch import utils  # noqa: E402


def loop(net, x, num_steps=None):
    """snnTorch's idiomatic loop: reset, then one call per step, stacked."""
    utils.reset(net)
    steps = range(num_steps) if num_steps is not None else range(x.shape[0])
    outs = [net(x) if num_steps is not None else net(x[t]) for t in steps]
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(o) for o in zip(*outs))
    return torch.stack(outs)


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def normwise(a, b):
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def compare(make, x, num_steps=None, seed=0, grads=True, per_step_stats=False, event_driven=False,
            against_snntorch=True, gain=4.0):
    """Build the network twice from one seed (fastlif's neurons; snnTorch's too when asked), run
    the loop and fastlif.sequence, and compare outputs, final states and every gradient."""
    torch.manual_seed(seed)
    ours = make(fastlif)
    with torch.no_grad():  # stronger weights than the default init, so that every layer spikes
        for m in ours.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    ref = copy.deepcopy(ours)
    refs = [ref]
    if against_snntorch:
        theirs = make(snn)
        theirs.load_state_dict(ours.state_dict())
        refs.append(theirs)
    x_ours = x.clone().requires_grad_(x.is_floating_point())
    out = as_tuple(fastlif.sequence(ours, x_ours, num_steps, per_step_stats=per_step_stats,
                                    event_driven=event_driven))
    # snnTorch's utils.reset (in the loops below) clears every registered neuron, ours too
    final = [getattr(m, name).clone() for m in ours.modules() for name in getattr(m, "_state_names", ())]
    upstream = [torch.randn_like(o) for o in out]
    if grads:
        torch.autograd.backward(list(out), upstream)
    for reference in refs:
        x_ref = x.clone().requires_grad_(x.is_floating_point())
        expect = as_tuple(loop(reference, x_ref, num_steps))
        assert len(expect) == len(out)
        for i, (a, b) in enumerate(zip(out, expect)):
            assert a.shape == b.shape
            if i == 0 and not event_driven:  # the spikes
                assert torch.equal(a.detach(), b.detach()), "spikes differ"
            else:
                torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-5)
        ref_final = [getattr(m_ref, name).detach() for m_ours, m_ref in zip(ours.modules(), reference.modules())
                     for name in getattr(m_ours, "_state_names", ())]
        assert len(ref_final) == len(final)
        for a, b in zip(final, ref_final):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg="final state")
        if grads:
            torch.autograd.backward(list(expect), upstream)
            for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
                assert p.grad is not None and q.grad is not None, name
                assert normwise(p.grad, q.grad) <= 1e-5, (name, normwise(p.grad, q.grad))
            if x.is_floating_point():
                assert normwise(x_ours.grad, x_ref.grad) <= 1e-5
    return ours, out


# --- the networks of snnTorch's tutorials, as they write them ----------------------------------

def tutorial6_conv(m, beta=0.5):
    sg = ss.fast_sigmoid(slope=25)
    return nn.Sequential(nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), m.Leaky(beta=beta, spike_grad=sg, init_hidden=True),
                         nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), m.Leaky(beta=beta, spike_grad=sg, init_hidden=True),
                         nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
                         m.Leaky(beta=beta, spike_grad=sg, init_hidden=True, output=True))


def nmnist_conv(m):
    sg = ss.atan()
    return nn.Sequential(nn.Conv2d(2, 12, 5), nn.MaxPool2d(2), m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                         nn.Conv2d(12, 32, 5), nn.MaxPool2d(2), m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                         nn.Flatten(), nn.Linear(32 * 5 * 5, 10),
                         m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True, output=True))


def tutorial5_fc(m, hidden=100):
    return nn.Sequential(nn.Linear(784, hidden), m.Leaky(beta=0.95, init_hidden=True),
                         nn.Linear(hidden, 10), m.Leaky(beta=0.95, init_hidden=True, output=True))


def test_tutorial6_conv_net_static_input():
    x = torch.rand(6, 1, 28, 28) * 3
    ours, (spk, mem) = compare(tutorial6_conv, x, num_steps=7)
    assert spk.shape == (7, 6, 10) and spk.sum() > 0 and mem.shape == (7, 6, 10)


def test_nmnist_conv_net_time_varying_events():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(5, 3, 2, 34, 34, generator=g) < 0.15).float() * 2
    _, (spk, _) = compare(nmnist_conv, x)
    assert spk.sum() > 0


def test_tutorial5_fc_net_and_T1():
    x = torch.rand(4, 8, 784) * 0.3
    _, (spk, _) = compare(tutorial5_fc, x)
    assert spk.sum() > 0
    compare(tutorial5_fc, x[:1])  # T = 1


def test_bool_input_and_spikes_only_output():
    x = torch.rand(6, 5, 20) < 0.3
    make = lambda m: nn.Sequential(nn.Linear(20, 80), m.Leaky(beta=0.9, init_hidden=True))  # noqa: E731
    torch.manual_seed(0)
    net = make(fastlif)
    ref = copy.deepcopy(net)
    expect = loop(ref, x.float())
    assert torch.equal(fastlif.sequence(net, x.float()), expect)
    # bool spikes reach a (wide) nn.Linear only as its event-driven twin (nn.Linear itself
    # refuses bool, in the loop as here)
    out = fastlif.sequence(net, x, event_driven=True)
    assert out.shape == expect.shape and (out == expect).float().mean() > 0.99


def test_synaptic_and_rleaky_inside_nested_sequentials():
    def make(m):
        return nn.Sequential(
            nn.Sequential(nn.Linear(12, 16), m.Synaptic(alpha=0.8, beta=0.9, init_hidden=True)),
            nn.Sequential(nn.Linear(16, 16), m.RLeaky(beta=0.9, V=0.7, all_to_all=False, init_hidden=True)),
            nn.Linear(16, 9), m.RLeaky(beta=0.85, linear_features=9, init_hidden=True, output=True))
    x = torch.rand(8, 4, 12) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        net = make(fastlif)
    ref = copy.deepcopy(net)
    spk, mem = fastlif.sequence(net, x)
    spk_r, mem_r = loop(ref, x)
    # the dense RLeaky sums its recurrent input in event order (api.md): fp32 rounding
    assert (spk == spk_r).float().mean() >= 0.995
    torch.testing.assert_close(mem, mem_r, rtol=1e-4, atol=1e-4)
    # one-to-one families are exact
    compare(lambda m: nn.Sequential(nn.Linear(12, 16), m.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
                                    nn.Sequential(nn.Linear(16, 7),
                                                  m.RLeaky(beta=0.9, V=0.5, all_to_all=False, init_hidden=True,
                                                           output=True))), x)


def test_synaptic_output_returns_three_traces():
    x = torch.rand(5, 3, 6) * 2
    _, out = compare(lambda m: nn.Sequential(nn.Linear(6, 4), m.Synaptic(alpha=0.7, beta=0.8, init_hidden=True,
                                                                          output=True)), x)
    assert len(out) == 3


def test_last_neuron_without_init_hidden_returns_its_tuple():
    x = torch.rand(5, 3, 6) * 2
    _, out = compare(lambda m: nn.Sequential(nn.Linear(6, 4), m.Leaky(beta=0.8)), x)
    assert len(out) == 2


@pytest.mark.parametrize("train", [False, True])
def test_dropout_and_batchnorm(train):
    def make(m):
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), m.Leaky(beta=0.8, init_hidden=True),
                             nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 6 * 6, 5),
                             m.Leaky(beta=0.8, init_hidden=True, output=True))
    x = torch.rand(5, 3, 1, 8, 8) * 2
    torch.manual_seed(0)
    net = make(fastlif).train(train)
    if not train:  # eval: deterministic per-sample layers, exact
        compare(lambda m: make(m).eval(), x)
        return
    ref = copy.deepcopy(net)
    # per_step_stats: BatchNorm's statistics per step and T updates of its running statistics,
    # exactly as the loop; Dropout draws a mask per step (other draws than the loop's)
    net[4].p = ref[4].p = 0.0
    out = fastlif.sequence(net, x, per_step_stats=True)
    expect = loop(ref, x)
    torch.testing.assert_close(out[1], expect[1], rtol=1e-5, atol=1e-5)
    assert torch.equal(net[1].running_mean, ref[1].running_mean)
    assert int(net[1].num_batches_tracked) == int(ref[1].num_batches_tracked) == 5
    # folded (default): statistics pool all T steps, running statistics update once
    folded = make(fastlif).train()
    folded.load_state_dict(ref.state_dict())
    before = int(folded[1].num_batches_tracked)
    fastlif.sequence(folded, x)
    assert int(folded[1].num_batches_tracked) == before + 1


def test_dropout_on_a_static_input_draws_a_mask_per_step():
    net = nn.Sequential(nn.Dropout(0.5), nn.Linear(40, 8), fastlif.Leaky(beta=0.9, init_hidden=True)).train()
    x = torch.ones(2, 40)
    spk = fastlif.sequence(nn.Sequential(net[0]), x, num_steps=6)
    assert spk.shape == (6, 2, 40)
    assert not all(torch.equal(spk[0], spk[t]) for t in range(1, 6)), "one mask reused for every step"


def test_no_grad_keeps_nothing_and_static_prefix_runs_once():
    torch.manual_seed(0)
    net = tutorial6_conv(fastlif)
    calls = []
    net[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    with torch.no_grad():
        spk, mem = fastlif.sequence(net, torch.rand(3, 1, 28, 28), num_steps=9)
    assert spk.grad_fn is None and mem.grad_fn is None and not spk.requires_grad
    assert calls == [torch.Size([3, 1, 28, 28])], "the static prefix should run once"


def test_state_left_as_the_loop_leaves_it_and_helpers_still_work():
    torch.manual_seed(0)
    net = tutorial5_fc(fastlif)
    x = torch.rand(3, 2, 784)
    fastlif.sequence(net, x)
    assert net[1].mem.shape == (2, 100)
    utils.reset(net)  # snnTorch's helper on the network afterwards
    assert float(net[1].mem.abs().sum()) == 0
    # and the per-step network still runs per step
    spk, mem = net(x[0])
    assert spk.shape == (2, 10)


def test_event_driven_twins():
    """event_driven=True: convolutions and Linears of 64 outputs or more run as their twins
    (values within fp32 summation order); the narrow output Linear stays dense."""
    x = (torch.rand(6, 4, 784) < 0.05).float()
    ours, out = compare(tutorial5_fc, x, event_driven=True, against_snntorch=False)
    from fastlif.network import _twins
    assert isinstance(_twins.get(ours[0]), fastlif.SpikeLinear) and ours[2] not in _twins
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(4, 3, 2, 34, 34, generator=g) < 0.05).float()
    ours, _ = compare(nmnist_conv, x, event_driven=True, against_snntorch=False)
    assert isinstance(_twins.get(ours[0]), fastlif.SpikeConv2d) and isinstance(_twins.get(ours[3]), fastlif.SpikeConv2d)


# --- what it refuses ------------------------------------------------------------------------

def test_snntorch_neurons_are_refused_with_the_fix():
    net = nn.Sequential(nn.Linear(4, 4), snn.Leaky(beta=0.9, init_hidden=True))
    with pytest.raises(SequenceError, match=r"net\.1 .*snnTorch neuron.*from_snntorch"):
        fastlif.sequence(net, torch.rand(3, 2, 4))
    spk = fastlif.sequence(fastlif.from_snntorch(net), torch.rand(3, 2, 4))
    assert spk.shape == (3, 2, 4)


def test_custom_forward_with_neurons_is_refused():
    class Net(nn.Module):  # tutorial 5's class: its own loop over time
        def __init__(self):
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(4, 4), fastlif.Leaky(beta=0.9)

        def forward(self, x):
            mem = self.lif1.init_leaky()
            return torch.stack([self.lif1(self.fc1(x[t]), mem)[0] for t in range(x.shape[0])])

    with pytest.raises(SequenceError, match=r"net\.0 \(.*Net\) has its own forward"):
        fastlif.sequence(nn.Sequential(Net()), torch.rand(3, 2, 4))


@pytest.mark.parametrize("module,match", [
    (nn.LSTM(4, 4), r"net\.0 .*LSTM.* not a layer"),
    (nn.Flatten(start_dim=0), r"net\.0 .*Flatten.*dimension 0"),
])
def test_layers_that_cannot_be_folded_are_refused(module, match):
    with pytest.raises(SequenceError, match=match):
        fastlif.sequence(nn.Sequential(module, fastlif.Leaky(0.9, init_hidden=True)), torch.rand(3, 2, 4))


def test_custom_module_with_buffers_is_refused_and_nothing_runs():
    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))

        def forward(self, x):
            self.count += 1
            return x

    lif = fastlif.Leaky(0.9, init_hidden=True)
    net = nn.Sequential(lif, Counter())
    with pytest.raises(SequenceError, match=r"net\.1 .*Counter.*buffers"):
        fastlif.sequence(net, torch.rand(3, 2, 4))
    assert lif.mem.numel() == 0, "a refused network must not have run"


def test_tuple_in_the_middle_is_refused():
    net = nn.Sequential(fastlif.Leaky(0.9, init_hidden=True, output=True), nn.Linear(4, 4))
    with pytest.raises(SequenceError, match=r"net\.0 .*returns a tuple.*output=True"):
        fastlif.sequence(net, torch.rand(3, 2, 4))


def test_bad_arguments():
    net = nn.Sequential(fastlif.Leaky(0.9, init_hidden=True))
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        fastlif.sequence(net, torch.rand(2, 4), num_steps=0)
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\]"):
        fastlif.sequence(net, torch.rand(4))
    with pytest.raises(TypeError, match="must be an nn.Module"):
        fastlif.sequence(lambda x: x, torch.rand(3, 2, 4))


def test_multi_step_neuron_on_a_single_step_input_says_so():
    with pytest.raises(ValueError, match=r"step_mode='multi'.*\[T, B, \.\.\.\].*shape \(128, 10\)"):
        fastlif.Leaky(0.9, step_mode="multi")(torch.rand(128, 10))


# --- import fastlif as snn ----------------------------------------------------------------------

def test_import_fastlif_as_snn_runs_snntorch_tutorial_code():
    import fastlif as snn_

    beta, num_steps = 0.5, 5
    spike_grad = snn_.surrogate.fast_sigmoid(slope=25)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2),
                        snn_.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
                        nn.Flatten(), nn.Linear(4 * 12 * 12, 10),
                        snn_.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, output=True))
    data, targets = torch.rand(8, 1, 28, 28) * 2, torch.randint(0, 10, (8,))
    loss_fn = snn_.functional.ce_rate_loss()
    snn_.utils.reset(net)
    spk_rec = torch.stack([net(data)[0] for _ in range(num_steps)])
    loss = loss_fn(spk_rec, targets)
    loss.backward()
    acc = snn_.functional.accuracy_rate(spk_rec, targets)
    assert torch.isfinite(loss) and 0 <= acc <= 1
    for name in ("utils", "functional", "spikegen", "backprop", "export_to_nir", "surrogate"):
        assert getattr(snn_, name) is not None
    try:  # snnTorch's spikeplot imports pandas (an optional dependency of snnTorch's)
        import snntorch.spikeplot as theirs_spikeplot
    except ImportError:
        theirs_spikeplot = None
    if theirs_spikeplot is not None:
        assert snn_.spikeplot is theirs_spikeplot
    assert isinstance(net[2], snn_.SpikingNeuron)
    with pytest.warns(UserWarning, match="does not fuse it"):
        unfused_cls = snn_.__getattr__("SLSTM")
    assert unfused_cls is snn.SLSTM
    assert snn_.surrogate.LSO is ss.LSO


def test_snntorch_names_without_snntorch_say_how(monkeypatch):
    import builtins
    import sys

    import fastlif as snn_
    real_import = builtins.__import__

    def no_snntorch(name, *args, **kwargs):
        if name == "snntorch" or name.startswith("snntorch."):
            raise ImportError("No module named 'snntorch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_snntorch)
    for key in [k for k in sys.modules if k == "snntorch" or k.startswith("snntorch.")]:
        monkeypatch.delitem(sys.modules, key)
    for name in ("utils", "SLSTM"):
        monkeypatch.delitem(snn_.__dict__, name, raising=False)
        with pytest.raises(AttributeError, match=r"pip install snntorch"):
            snn_.__getattr__(name)


def test_a_copied_network_is_reset_by_snntorch_helpers():
    """snnTorch's utils.reset walks the neuron registry: a deepcopy (a best-model snapshot, an EMA
    copy) must be in it, or its state leaks from one batch into the next (and backward fails)."""
    net = nn.Sequential(nn.Linear(5, 4), fastlif.Leaky(0.9, init_hidden=True))
    copied = copy.deepcopy(net)
    for _ in range(2):  # two training steps of a per-step loop
        out = loop(copied, torch.rand(3, 2, 5))
        out.sum().backward()
    assert any(layer is copied[1] for layer in snn.SpikingNeuron.instances)


def test_torch_compile_fullgraph_of_sequence():
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 16), fastlif.Leaky(0.9, init_hidden=True), nn.Linear(16, 4),
                        fastlif.Leaky(0.9, init_hidden=True, output=True))
    x = torch.rand(6, 3, 20) * 2
    expect = fastlif.sequence(net, x)
    out = torch.compile(lambda x: fastlif.sequence(net, x), fullgraph=True)(x)
    assert all(torch.equal(a, b) for a, b in zip(out, expect))
    out[0].sum().backward()
    assert net[0].weight.grad is not None

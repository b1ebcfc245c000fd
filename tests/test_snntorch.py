"""fastlif.Leaky against snntorch.Leaky itself: per step, through sequence(), in a network."""
import copy
import itertools

import pytest
import torch
from torch import nn

import fastlif
from fastlif.testing import run_per_step
from fastlif.tutorial.model import TinySNN

snn = pytest.importorskip("snntorch", reason="snntorch (a dev dependency) is not installed")
from snntorch import surrogate as snn_surrogate  # noqa: E402

SNN_SURROGATES = {
    "default": lambda: None,
    "atan": lambda: snn_surrogate.atan(alpha=3.0),
    "fast_sigmoid": lambda: snn_surrogate.fast_sigmoid(slope=25),
    "sigmoid": lambda: snn_surrogate.sigmoid(slope=10),
    "triangular": lambda: snn_surrogate.triangular(),
    "ste": lambda: snn_surrogate.straight_through_estimator(),
}
OPTIONS = list(itertools.product(("subtract", "zero", "none"), (True, False), SNN_SURROGATES,
                                 (False, True)))


def make_pair(reset, delay, sg_name, per_neuron, learn=True, surrogate_disable=False, n=13):
    g = torch.Generator().manual_seed(1)
    beta = torch.rand(n, generator=g) * 1.1 if per_neuron else 0.9
    thr = torch.rand(n, generator=g) * 0.5 + 0.75 if per_neuron else 1.0
    kw = dict(beta=beta, threshold=thr, reset_mechanism=reset, reset_delay=delay,
              learn_beta=learn, learn_threshold=learn, graded_spikes_factor=1.25,
              learn_graded_spikes_factor=learn, surrogate_disable=surrogate_disable)
    ours = fastlif.Leaky(spike_grad=SNN_SURROGATES[sg_name](), **kw)
    theirs = snn.Leaky(spike_grad=SNN_SURROGATES[sg_name](), **kw)
    return ours, theirs


def grads_of(layer, x, outputs, upstream):
    params = [p for p in layer.parameters()]
    loss = sum((o * u).sum() for o, u in zip(outputs, upstream))
    grads = torch.autograd.grad(loss, [x] + params, allow_unused=True)
    # snnTorch leaves a parameter out of the graph where it gets no gradient (e.g. the
    # threshold with surrogate_disable and reset to zero); fastlif returns zeros there.
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, [x] + params)]


def check(ours, theirs, via_sequence, T=20, B=4, n=13):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(T, B, n, generator=g) * 0.8 + 0.3).requires_grad_()
    upstream = (torch.randn(T, B, n, generator=g), torch.randn(T, B, n, generator=g))
    ref = run_per_step(theirs, x)
    got = ours.sequence(x) if via_sequence else run_per_step(ours, x)
    assert torch.equal(got[0], ref[0]), "spikes differ from snnTorch"
    assert torch.equal(got[1], ref[1]), "membrane differs from snnTorch"
    for a, b in zip(grads_of(ours, x, got, upstream), grads_of(theirs, x, ref, upstream)):
        scale = max(b.abs().max().item(), 1.0)
        assert (a - b).abs().max().item() <= 1e-5 * scale * max(1.0, (x.numel() / b.numel()) ** 0.5)


@pytest.mark.parametrize("reset,delay,sg_name,per_neuron", OPTIONS)
def test_sequence_equals_snntorch(reset, delay, sg_name, per_neuron):
    check(*make_pair(reset, delay, sg_name, per_neuron), via_sequence=True)


@pytest.mark.parametrize("reset,delay,sg_name,per_neuron", OPTIONS[::3])
def test_per_step_equals_snntorch(reset, delay, sg_name, per_neuron):
    check(*make_pair(reset, delay, sg_name, per_neuron), via_sequence=False)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_surrogate_disable(reset):
    check(*make_pair(reset, True, "default", True, surrogate_disable=True), via_sequence=True)


def test_not_learnable_has_buffers_like_snntorch():
    ours, theirs = make_pair("subtract", True, "default", False, learn=False)
    assert dict(ours.named_parameters()).keys() == dict(theirs.named_parameters()).keys() == set()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    check(ours, theirs, via_sequence=True)


def test_loads_snntorch_state_dict():
    _, theirs = make_pair("zero", True, "atan", True)
    with torch.no_grad():
        theirs.beta.mul_(0.5)
        theirs.threshold.add_(0.1)
    ours = fastlif.Leaky(beta=torch.zeros(13), threshold=torch.zeros(13), reset_mechanism="zero",
                         learn_beta=True, learn_threshold=True, learn_graded_spikes_factor=True)
    ours.load_state_dict(theirs.state_dict())  # strict: same names, same shapes
    ours.spike_grad = snn_surrogate.atan(alpha=3.0)  # assignable after construction, as in snnTorch
    check(ours, theirs, via_sequence=True)


def test_init_hidden_and_output_behave_like_snntorch():
    x = torch.randn(6, 3, 5)
    for output in (False, True):
        ours = fastlif.Leaky(0.8, init_hidden=True, output=output)
        theirs = snn.Leaky(0.8, init_hidden=True, output=output)
        for xt in x:
            a, b = ours(xt), theirs(xt)
            if output:
                assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            else:
                assert isinstance(a, torch.Tensor) and torch.equal(a, b)
        with pytest.raises(TypeError, match="init_hidden"):
            ours(x[0], torch.zeros(3, 5))


def test_init_leaky_takes_shape_from_first_input():
    ours = fastlif.Leaky(0.9)
    mem = ours.init_leaky()
    assert mem.shape == snn.Leaky(0.9).init_leaky().shape  # empty until the first input
    spk, mem = ours(torch.ones(2, 3) * 1.5, mem)
    assert mem.shape == (2, 3) and spk.sum() == 6
    assert torch.equal(ours.reset_mem(), torch.zeros(2, 3))


def test_multi_step_in_sequential():
    seq = nn.Sequential(nn.Linear(6, 8), fastlif.Leaky(0.9, step_mode="multi", init_hidden=True),
                        nn.Linear(8, 3), fastlif.Leaky(0.9, step_mode="multi", init_hidden=True))
    x = torch.rand(10, 4, 6) * 2
    out = seq(x)
    assert out.shape == (10, 4, 3)
    lif1, lif2 = seq[1], seq[3]
    # the same as stepping the layers one by one
    ref1 = fastlif.Leaky(0.9)
    h, m1 = [], ref1.init_leaky()
    for xt in seq[0](x):
        s, m1 = ref1(xt, m1)
        h.append(s)
    ref2 = fastlif.Leaky(0.9)
    o, m2 = [], ref2.init_leaky()
    for ht in seq[2](torch.stack(h)):
        s, m2 = ref2(ht, m2)
        o.append(s)
    assert torch.equal(out, torch.stack(o))
    assert torch.equal(lif1.mem, m1) and torch.equal(lif2.mem, m2)


def test_snntorch_surrogates_are_recognised_and_fused():
    for name, make in SNN_SURROGATES.items():
        if name == "default":
            continue
        _, sg = fastlif.surrogate.resolve(make())
        assert sg is not None, f"{name} not recognised"
    assert fastlif.surrogate.resolve(snn_surrogate.atan(alpha=3.0))[1] == fastlif.surrogate.atan(3.0)
    assert fastlif.surrogate.resolve(snn_surrogate.sigmoid(slope=7))[1] == fastlif.surrogate.sigmoid(7)


def test_unknown_callable_warns_and_runs_on_reference():
    spike_fn = snn_surrogate.spike_rate_escape()  # no fused version
    with pytest.warns(UserWarning, match="reference"):
        ours = fastlif.Leaky(0.9, spike_grad=spike_fn)
    theirs = snn.Leaky(0.9, spike_grad=spike_fn)
    check(ours, theirs, via_sequence=True)


def test_tutorial_network_trains_identically():
    import snntorch.functional as SF
    torch.manual_seed(0)
    theirs = TinySNN(lif_cls=snn.Leaky, spike_grad=snn_surrogate.fast_sigmoid(), fused=False)
    ours = TinySNN(lif_cls=fastlif.Leaky, spike_grad=snn_surrogate.fast_sigmoid(), fused=False)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    opt_t = torch.optim.Adam(theirs.parameters(), lr=1e-3, weight_decay=1e-5)
    opt_o = torch.optim.Adam(ours.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn = SF.ce_count_loss()
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.rand(12, 16, 784, generator=g) < 0.2
        y = torch.randint(0, 10, (16,), generator=g)
        losses = []
        for model, opt in ((theirs, opt_t), (ours, opt_o)):
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append((out, loss))
        assert torch.equal(losses[0][0], losses[1][0]), "output spikes differ"
        torch.testing.assert_close(losses[1][1], losses[0][1], rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name} differs")

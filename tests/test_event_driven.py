"""The tutorial's network event-driven (the fast Poisson encoder, SpikeLinear fc1/fc2, fused
Leaky) against the tutorial's dense parts: the same training, step for step and to the same
accuracy."""
import copy

import pytest
import torch

from fastlif import encode, losses
from fastlif.tutorial import data, demo
from fastlif.tutorial.model import TinySNN
from conftest import needs_cpp

pytestmark = needs_cpp


def _steps(model, spikes_list, labels_list):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn = losses.ce_count_loss()
    out = []
    for spikes, labels in zip(spikes_list, labels_list):
        loss = loss_fn(model(spikes), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


def test_a_few_steps_give_the_dense_networks_losses():
    """Same weights, same spikes: SpikeLinear layers (fed the bool spikes, or their events) train
    as nn.Linear layers do, loss for loss to 1e-5 over several Adam steps."""
    torch.manual_seed(0)
    dense = TinySNN(spike_linear=False)
    with torch.no_grad():
        dense.fc1.weight.mul_(3)  # both layers spike, so every part of the network is exercised
        dense.fc2.weight.mul_(4)
    sparse = TinySNN(spike_linear=True)
    sparse.load_state_dict(dense.state_dict())  # the same state_dict keys
    assert type(sparse.fc1).__name__ == "SpikeLinear" and type(dense.fc1) is torch.nn.Linear
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(16, 1, 28, 28, generator=gen) for _ in range(5)]
    labels = [torch.randint(10, (16,), generator=gen) for _ in range(5)]
    encoded = [encode.poisson(x, 25, method="fast", rng=torch.Generator().manual_seed(i), return_events=True)
               for i, x in enumerate(images)]
    spikes = [s for s, _ in encoded]
    want = _steps(dense, spikes, labels)
    got = _steps(copy.deepcopy(sparse), spikes, labels)
    got_events = _steps(copy.deepcopy(sparse), [e for _, e in encoded], labels)
    assert max(abs(a - b) for a, b in zip(got, want)) <= 1e-5, (got, want)
    assert max(abs(a - b) for a, b in zip(got_events, want)) <= 1e-5, (got_events, want)
    assert len(set(round(v, 4) for v in want)) > 1  # it trained: the loss moved


@pytest.mark.slow
def test_event_driven_tinysnn_reaches_the_dense_accuracy():
    """Two epochs on the offline digits: the event-driven network (fast encoder, SpikeLinear) and the
    tutorial's dense parts (its encoder, nn.Linear), from the same weights, end within one point of
    test accuracy."""
    split = data.load("digits", subset=10000, seed=0, log=lambda m: None)
    results = {}
    torch.manual_seed(0)
    init = TinySNN(spike_linear=False).state_dict()
    for name, encoder, spike_linear in (("dense", "tutorial", False), ("event-driven", "fast", True)):
        cfg = demo.DemoConfig(epochs=2, encoder=encoder, spike_linear=spike_linear, progress=False)
        model = TinySNN(spike_linear=spike_linear)
        model.load_state_dict(init)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        enc_gen, shuffle_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        for _ in range(cfg.epochs):
            demo.train_one_epoch(model, opt, losses.ce_count_loss(), split, cfg, torch.device("cpu"), enc_gen,
                                 shuffle_gen, progress=False)
        results[name] = demo.evaluate(model, split.test_x, split.test_y, cfg, torch.device("cpu"),
                                      torch.Generator().manual_seed(1))
    assert results["dense"] > 0.8, results  # both learnt
    assert abs(results["event-driven"] - results["dense"]) <= 0.01, results

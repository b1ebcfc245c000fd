"""Every fastlif.tutorial.plot function returns a matplotlib Figure that can be saved."""
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from fastlif.tutorial import plot


def _saved(fig, tmp_path, name):
    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40)
    assert path.stat().st_size > 1000
    return path


def test_voltage_trace(tmp_path):
    t = np.arange(200) * 1e-3
    I = np.where((t > 0.05) & (t < 0.15), 1.2, 0.0)
    v = np.clip(np.cumsum(I) * 0.05 % 1.0, 0, 1)
    spikes = np.diff(v, prepend=0) < 0
    _saved(plot.voltage_trace(t, I, v, spikes, v_th=1.0, v_reset=0.0, title="LIF"), tmp_path, "v")
    # several neurons, torch tensors
    _saved(plot.voltage_trace(torch.tensor(t), torch.rand(200, 3), torch.rand(200, 3),
                              torch.rand(200, 3) > 0.9), tmp_path, "v3")


def test_voltage_trace_from_sim(tmp_path):
    from fastlif import sim
    I, res = sim.tutorial_current_step()
    _saved(plot.voltage_trace(res.t, I, res.v[:, 0], res.spikes[:, 0], 1.0, 0.0), tmp_path, "sim")


def test_spike_raster_and_counts(tmp_path):
    spk = torch.rand(50, 10) > 0.8
    _saved(plot.spike_raster(spk, title="out"), tmp_path, "raster")
    _saved(plot.spike_raster(spk.float().numpy(), dt=1e-3, max_neurons=5), tmp_path, "raster_ms")
    _saved(plot.spike_raster(torch.rand(30, 300) > 0.95), tmp_path, "raster_many")
    _saved(plot.spike_raster(torch.zeros(5, 3)), tmp_path, "raster_empty")
    counts = spk.sum(0)
    _saved(plot.spike_counts(counts, true=3, pred=int(counts.argmax())), tmp_path, "counts")
    _saved(plot.spike_counts(spk), tmp_path, "counts_from_spikes")
    _saved(plot.output_panel(spk, true=2), tmp_path, "panel")


def test_encoding_panel(tmp_path):
    img = torch.rand(1, 28, 28)
    spk = torch.rand(100, 784) < img.reshape(-1) * 0.1
    _saved(plot.encoding_panel(img, spk, label=7), tmp_path, "enc")
    _saved(plot.encoding_panel(img.reshape(-1).numpy(), spk.numpy(), name="digits"), tmp_path, "enc_flat")


@pytest.mark.parametrize("history", [
    {"loss": [2.0, 1.0, 0.5], "acc": [0.5, 0.8, 0.9], "val_acc": [0.6, 0.85, 0.92]},
    {"loss": [1.0]},
    {},
])
def test_training_curves(history, tmp_path):
    _saved(plot.training_curves(history), tmp_path, "curves")


def test_no_pyplot_state():
    import matplotlib.pyplot as plt
    before = len(plt.get_fignums())
    plot.spike_counts([1, 2, 3])
    assert len(plt.get_fignums()) == before  # figures are not registered with pyplot

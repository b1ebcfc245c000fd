"""The demo and the `fastlif` command: a tiny offline demo run, `fastlif check`, TinySNN."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastlif import cli
from fastlif.tutorial import demo
from fastlif.tutorial.model import TinySNN

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"1_lif_current_step.png", "2_poisson_encoding.png", "3_training_curves.png",
           "4_output_spikes.png"}


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["demo", "--epochs", "1", "--subset", "128", "--num-steps", "5", "--dataset", "digits",
                   "--out", str(out), "--data", str(tmp_path / "data"), "--no-progress",
                   "--timing-batches", "1", "--seed", "1"])
    text = capsys.readouterr().out
    assert rc == 0
    assert FIGURES <= set(os.listdir(out))
    assert all((out / f).stat().st_size > 5000 for f in FIGURES)
    assert "Test accuracy after 1 epoch(s):" in text and "%" in text
    assert "[6/6] Time per epoch" in text  # the speed comparison ran, against snnTorch's code here
    assert ("tutorial's snnTorch" in text) == (importlib.util.find_spec("snntorch") is not None)
    assert str(out) in text


def test_python_m_fastlif_check():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "fastlif", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all backends agree with the reference" in proc.stdout
    assert "speed" in proc.stdout


def test_check_reports_a_disagreeing_backend(monkeypatch):
    import fastlif
    from fastlif import backends

    real = fastlif.lif_sequence

    def broken(x, *args, backend="auto", **kwargs):
        spk, mem = real(x, *args, backend="reference", **kwargs)
        if backend == "reference":
            return spk, mem
        return 1 - spk, mem  # a "backend" whose spikes are wrong

    monkeypatch.setattr(fastlif, "lif_sequence", broken)
    monkeypatch.setattr(backends, "available", lambda device="cpu": ["cpp", "reference"])
    lines = []
    assert cli.check("cpu", speed=False, out=lines.append) == 1
    assert any("FAIL" in line and "spikes differ" in line for line in lines)


def test_check_reports_a_disagreeing_synaptic_backend(monkeypatch):
    from fastlif import neurons

    real = neurons.run_synaptic

    def broken(*args, backend="auto", **kwargs):
        spk, syn, mem = real(*args, backend=backend, **kwargs)
        return (spk if backend == "reference" else 1 - spk), syn, mem

    monkeypatch.setattr(neurons, "run_synaptic", broken)
    lines = []
    assert cli.check("cpu", speed=False, out=lines.append) == 1
    assert any("case 'Synaptic" in line and "spikes differ" in line for line in lines)
    assert not any("case 'RLeaky" in line for line in lines)


def test_cli_errors(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--epochs", "-1"])
    with pytest.raises(SystemExit):
        cli.main([])
    with pytest.raises(SystemExit):
        cli.main(["demo", "--dataset", "cifar"])


def test_tinysnn_matches_the_tutorial_network():
    """The fused TinySNN computes the tutorial's snnTorch loop (same weights, same spikes)."""
    snn = pytest.importorskip("snntorch")
    from snntorch import surrogate as snn_surrogate

    torch.manual_seed(0)
    tut = TinySNN(lif_cls=snn.Leaky, spike_grad=snn_surrogate.fast_sigmoid(), fused=False)
    with torch.no_grad():
        tut.fc1.weight.mul_(4)  # make both layers spike
        tut.fc2.weight.mul_(6)
    fused = TinySNN()
    fused.load_state_dict(tut.state_dict())  # same parameter and buffer names
    from fastlif import encode
    x = encode.poisson(torch.rand(16, 1, 28, 28), 30, rng=torch.Generator().manual_seed(0))
    spk_t, (mem1_t, _) = tut(x, return_mem=True)
    spk_f, (mem1_f, _) = fused(x, return_mem=True)
    assert spk_t.sum() > 0 and mem1_t.gt(1).any()
    # one matmul over [T*B, 784] instead of T of them may round differently (last bit)
    torch.testing.assert_close(mem1_f, mem1_t, rtol=1e-5, atol=1e-5)
    assert (spk_f != spk_t).float().mean() < 1e-3


def test_demo_on_mnist_files(tmp_path, capsys):
    """The demo's MNIST path, on a tiny MNIST written in torchvision's raw layout (offline)."""
    import struct

    import numpy as np

    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 80), ("t10k", 20)):
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28))
            f.write(rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8).tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">II", 2049, n))
            f.write(rng.integers(0, 10, size=n, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    rc = cli.main(["demo", "--epochs", "1", "--subset", "64", "--num-steps", "3", "--batch-size", "32",
                   "--dataset", "mnist", "--data", str(tmp_path / "data"), "--out", str(out),
                   "--no-progress", "--timing-batches", "0"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "data: MNIST, 64 training / 20 test images" in text
    assert "downloading" not in text
    assert FIGURES <= set(os.listdir(out))


def test_demo_mnist_unavailable_exits_2(tmp_path, monkeypatch, capsys):
    from fastlif.tutorial import data

    def offline(*args, **kwargs):
        raise data.DatasetUnavailable("offline? (Name or service not known)")
    monkeypatch.setattr(data, "mnist_datasets", offline)
    rc = cli.main(["demo", "--epochs", "0", "--dataset", "mnist", "--data", str(tmp_path),
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2
    assert "--dataset digits" in capsys.readouterr().err


def test_demo_baseline_is_snntorch_or_the_reference_loop(monkeypatch):
    """The demo's speed comparison: the tutorial's snnTorch code (snn.Leaky stepped, nn.Linear, the
    tutorial's encoder) when snnTorch imports, else the same network on the reference loop."""
    cfg = demo.DemoConfig()
    model, base_cfg, what = demo.tutorial_baseline(cfg, torch.device("cpu"))
    assert base_cfg.encoder == "tutorial" and cfg.encoder == "fast"
    assert type(model.fc1) is torch.nn.Linear and not model.fused
    if importlib.util.find_spec("snntorch") is not None:
        import snntorch
        assert type(model.lif1) is snntorch.Leaky and "snnTorch" in what
    monkeypatch.setitem(sys.modules, "snntorch", None)  # as if it were not installed
    model, _, what = demo.tutorial_baseline(cfg, torch.device("cpu"))
    assert model.lif1.backend == "reference" and "reference loop" in what

"""DistributedDataParallel over fastlif: learnable beta and threshold are ordinary parameters.

One step of the example's TinySNN on 2 gloo processes, each with half of the batch, equals one
step of a single process on the whole batch (DDP averages the gradients; the loss is a mean).
Tolerances: fp64 parameters after the step agree to rtol 1e-10 / atol 1e-12 (only the order of
the averaging differs); fp32 to rtol 1e-5 / atol 1e-6. Both ranks hold bitwise the same
parameters. The example itself is run end to end through torchrun.
"""
import importlib.util
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ddp_train.py"
WORLD = 2
TIMEOUT_S = 240
B, T, IN, HIDDEN, OUT = 8, 12, 784, 24, 10
DTYPES = {"float64": (torch.float64, dict(rtol=1e-10, atol=1e-12)),
          "float32": (torch.float32, dict(rtol=1e-5, atol=1e-6))}

pytestmark = pytest.mark.xdist_group("ddp")


def load_example():
    spec = importlib.util.spec_from_file_location("ddp_train_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_batch():
    """Poisson spikes of random images, as the example encodes them, and labels."""
    from fastlif.encode import poisson
    g = torch.Generator().manual_seed(123)
    images = torch.rand(B, 1, 28, 28, generator=g)
    labels = torch.randint(OUT, (B,), generator=g)
    return poisson(images, T, max_rate_hz=400.0, rng=g), labels


def one_step(example, dtype, spikes, labels, wrap=None):
    """The example's model and train_step, one SGD step; returns the parameters after it."""
    torch.manual_seed(0)
    model = example.TinySNN(in_dim=IN, hidden=HIDDEN, out_dim=OUT, learn_beta=True,
                            learn_threshold=True).to(dtype)
    net = wrap(model) if wrap else model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    loss_fn = example.fastlif.losses.ce_count_loss()
    example.train_step(net, optimizer, loss_fn, spikes, labels)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def loopback_env():
    """Keep gloo on the loopback interface (Linux names it lo), whatever the host name says."""
    if sys.platform.startswith("linux") and "GLOO_SOCKET_IFNAME" not in os.environ:
        return {"GLOO_SOCKET_IFNAME": "lo"}
    return {}


def worker(rank, port, out_dir):
    os.environ.update(loopback_env())
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        from torch.nn.parallel import DistributedDataParallel as DDP
        example = load_example()
        spikes, labels = make_batch()
        half = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        result = {name: one_step(example, dtype, spikes[:, half], labels[half], wrap=DDP)
                  for name, (dtype, _) in DTYPES.items()}
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process_on_whole_batch(tmp_path, restore_threads):
    workers = mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not workers.join(timeout=1):  # raises if a worker failed
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail(f"the DDP workers did not finish within {TIMEOUT_S} s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    example = load_example()
    spikes, labels = make_batch()
    torch.manual_seed(0)
    initial = {name: p.detach() for name, p in example.TinySNN(
        in_dim=IN, hidden=HIDDEN, out_dim=OUT, learn_beta=True, learn_threshold=True
    ).named_parameters()}
    for name in ("lif1.beta", "lif1.threshold", "lif2.beta", "lif2.threshold"):
        assert name in initial, f"{name} should be an ordinary (DDP-averaged) parameter"

    for dtype_name, (dtype, tol) in DTYPES.items():
        single = one_step(example, dtype, spikes, labels)
        for name, value in single.items():
            assert not torch.equal(value, initial[name].to(dtype)), f"{name} did not train"
            for r, rank in enumerate(ranks):
                got = rank[dtype_name][name]
                assert torch.equal(got, ranks[0][dtype_name][name]), f"ranks differ on {name}"
                torch.testing.assert_close(got, value, **tol,
                                           msg=lambda m: f"{dtype_name} {name} rank {r}: {m}")


def teardown_abort_only(proc):
    """torch 2.11's gloo process group sometimes aborts a rank at interpreter exit, after
    ``destroy_process_group`` has returned ("terminate called without an active exception": a
    gloo thread still joinable when its owner is destroyed; 1 run in ~10 on the 2-core CI
    machine). The training is over by then, so this is accepted only when the run printed all it
    should and the only failure is that abort; any other non-zero exit fails the test."""
    done = "test acc=" in proc.stdout and sum(l.startswith("epoch ") for l in proc.stdout.splitlines()) == 2
    aborted = ("terminate called without an active exception" in proc.stderr
               and "SIGABRT" in proc.stderr)
    # torchrun's own traceback (raising ChildFailedError) is the only one allowed
    tracebacks = proc.stderr.count("Traceback (most recent call last)")
    return done and aborted and tracebacks <= 1 and (tracebacks == 0 or "ChildFailedError" in proc.stderr)


def test_example_runs_under_torchrun(tmp_path):
    """examples/ddp_train.py, 2 processes, gloo, a short run on synthetic data."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(EXAMPLE),
           "--dataset", "synthetic", "--epochs", "2", "--batch-size", "32", "--num-steps", "8",
           "--hidden", "32", "--learn-beta", "--learn-threshold", "--cpu", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, **loopback_env()),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 and not teardown_abort_only(proc):
        pytest.fail(proc.stdout + proc.stderr)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2, proc.stdout  # printed once, by rank 0
    assert "2 process(es) on cpu (gloo)" in proc.stdout
    assert any(line.startswith("test acc=") for line in lines), proc.stdout

"""Train the tutorial's TinySNN with fastlif over N processes (DistributedDataParallel).

    torchrun --nproc_per_node 2 examples/ddp_train.py                 # 2 CPU processes (gloo)
    torchrun --nproc_per_node 4 examples/ddp_train.py --epochs 5      # 4 GPUs (NCCL)
    python examples/ddp_train.py                                      # one process

The network is the tutorial's (Linear 784 -> 128, LIF, Linear 128 -> 10, LIF, fast-sigmoid
surrogate, cross-entropy on output spike counts, Adam), with the two ``snn.Leaky`` layers
replaced by ``fastlif.Leaky(step_mode="multi")``: each layer runs all T steps in one fused
call instead of a Python loop over time. ``--learn-beta`` / ``--learn-threshold`` make the
decay and threshold per-neuron ``nn.Parameter``s; DDP averages their gradients like any other.

Each process reads its own shard of the training set (``DistributedSampler``) and draws its
own Poisson spikes (``fastlif.encode.poisson`` with a generator seeded by seed and rank), so a
step on N processes with per-process batch B is one step on a global batch of N*B images.
Data is scikit-learn's bundled digits brought to MNIST's 28x28 format (``--dataset digits``,
the default: no download), MNIST itself (``--dataset mnist``, downloaded to ``--data-dir``),
or random class prototypes (``--dataset synthetic``: no scikit-learn needed).
Rank 0 prints the loss and accuracy of each epoch over all processes, and the test accuracy.
"""
import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

import fastlif
from fastlif.encode import poisson
from fastlif.tutorial.model import TinySNN  # the tutorial's network, fused over time


def train_step(model, optimizer, loss_fn, spikes, labels):
    """One optimisation step on a batch; returns ``(loss, output spikes)``."""
    spk_rec = model(spikes)
    loss = loss_fn(spk_rec, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), spk_rec.detach()


def synthetic_data(n_train=2000, n_test=400, in_dim=28 * 28, classes=10, seed=0):
    """Images in [0, 1]: a random prototype per class, with pixel noise."""
    g = torch.Generator().manual_seed(seed)
    protos = (torch.rand(classes, in_dim, generator=g) < 0.25).float()

    def make(n):
        y = torch.randint(classes, (n,), generator=g)
        noise = torch.rand(n, in_dim, generator=g)
        return (0.8 * protos[y] + 0.2 * noise).clamp(0, 1).view(n, 1, 28, 28), y

    (train_x, train_y), (test_x, test_y) = make(n_train), make(n_test)
    return train_x, train_y, test_x, test_y


def load_data(args, rank):
    """The same images on every process (each then reads its own shard through the sampler)."""
    if args.dataset == "synthetic":
        return synthetic_data(seed=args.seed)
    from fastlif.tutorial import data
    if args.dataset == "digits":
        split = data.load_digits(subset=args.subset, seed=args.seed)
    else:  # MNIST: rank 0 downloads it once, the others read what it wrote
        if rank != 0:
            dist.barrier()
        try:
            split = data.load_mnist(args.data_dir, subset=args.subset, seed=args.seed)
        finally:
            if rank == 0:
                dist.barrier()
    return split.train_x, split.train_y, split.test_x, split.test_y


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_distributed(force_cpu):
    """Join the process group torchrun set up (or a group of one without torchrun)."""
    if "RANK" not in os.environ:  # plain `python ddp_train.py`: a world of one process
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available() and not force_cpu:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", choices=("digits", "mnist", "synthetic"), default="digits")
    p.add_argument("--data-dir", default="./data", help="where MNIST is cached (--dataset mnist)")
    p.add_argument("--subset", type=int, default=10000, help="training images (digits, mnist)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--num-steps", type=int, default=50, help="time steps T")
    p.add_argument("--dt", type=float, default=1e-3, help="seconds per time step")
    p.add_argument("--max-rate-hz", type=float, default=100.0, help="firing rate of a pixel of 1.0")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--learn-beta", action="store_true", help="per-neuron learnable decay")
    p.add_argument("--learn-threshold", action="store_true", help="per-neuron learnable threshold")
    p.add_argument("--backend", default="auto", choices=("auto", "cpp", "triton", "reference"))
    p.add_argument("--cpu", action="store_true", help="gloo on CPU even when GPUs are present")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per process (0: cores / processes)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rank, world, device = setup_distributed(args.cpu)
    if device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local))
    log = print if rank == 0 else (lambda *a, **k: None)

    torch.manual_seed(args.seed)  # the same initial weights everywhere (DDP also broadcasts them)
    train_x, train_y, test_x, test_y = load_data(args, rank)
    model = TinySNN(in_dim=train_x[0].numel(), hidden=args.hidden, learn_beta=args.learn_beta,
                    learn_threshold=args.learn_threshold, backend=args.backend).to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = fastlif.losses.ce_count_loss()

    train_set = TensorDataset(train_x, train_y)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    rng = torch.Generator(device=device).manual_seed(args.seed * 1000 + rank)  # own spikes per rank

    log(f"fastlif DDP: {world} process(es) on {device.type} ({dist.get_backend()}), "
        f"{len(train_set)} training images ({args.dataset}), "
        f"global batch {world * args.batch_size}, T={args.num_steps}, "
        f"backends: {fastlif.backends.describe()}")
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        ddp.train()
        start = time.perf_counter()
        stats = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, seen
        for imgs, labels in loader:
            imgs, labels = imgs.to(device), labels.to(device)
            spikes = poisson(imgs, args.num_steps, args.max_rate_hz, args.dt, rng=rng)
            loss, spk_rec = train_step(ddp, optimizer, loss_fn, spikes, labels)
            preds = spk_rec.sum(0).argmax(1)
            stats += torch.stack([loss.double() * len(labels), (preds == labels).sum().double(),
                                  torch.tensor(float(len(labels)), device=device,
                                               dtype=torch.float64)])
        dist.all_reduce(stats)  # totals over every process
        loss_sum, correct, seen = stats.tolist()
        if seen == 0:
            raise SystemExit(f"no full batch of {args.batch_size} per process: lower --batch-size")
        log(f"epoch {epoch}: loss={loss_sum / seen:.4f} acc={correct / seen:.4f} "
            f"({int(seen)} images, {time.perf_counter() - start:.1f}s)")

    if rank == 0:  # the whole test set on one process, with fixed spikes
        model.eval()
        g = torch.Generator(device=device).manual_seed(args.seed)
        correct = 0
        with torch.no_grad():
            for start in range(0, len(test_y), 256):
                imgs = test_x[start:start + 256].to(device)
                spikes = poisson(imgs, args.num_steps, args.max_rate_hz, args.dt, rng=g)
                preds = model(spikes).sum(0).argmax(1)
                correct += (preds.cpu() == test_y[start:start + 256]).sum().item()
        log(f"test acc={correct / len(test_y):.4f} ({len(test_y)} images)")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

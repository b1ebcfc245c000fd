"""Where a second thread starts to pay: each family's fused call on a team of 1 and of 2,
interleaved (A B A B), over a sweep of sizes; prints the 2-thread/1-thread ratio of the medians
against the bytes the kernel moves, and the spread. The crossover sets kGrainBytes in
csrc/common.h (team_size); see bench/README.md.

    python -m bench.threads [--rounds 15] [--families leaky,synaptic,rleaky,encoder,linear]

The team is forced with fastlif._C._team_policy (the busy-machine fallback off), so the two
columns differ only in the team size.
"""
import argparse
import statistics
import time

import torch

import fastlif
import fastlif.encode
from fastlif import _C


def _layer(family, N):
    if family == "leaky":
        return fastlif.Leaky(0.95, learn_beta=True), 3, 4
    if family == "synaptic":
        return fastlif.Synaptic(alpha=0.9, beta=0.95, learn_beta=True), 4, 6
    if family == "rleaky":
        return fastlif.RLeaky(beta=0.95, V=0.5, all_to_all=False, learn_beta=True), 3, 4
    raise ValueError(family)


def cases(family, sizes):
    """(label, bytes the kernel's region moves, callable) for forward and forward+backward."""
    out = []
    for T, B, N in sizes:
        if family == "encoder":
            img = torch.rand(B, N)
            out.append((f"encoder T={T} B={B} N={N}", B * N * (T + 1024),
                        lambda img=img, T=T: fastlif.encode.poisson(img, T, method="fast")))
            continue
        if family == "linear":
            lin = fastlif.SpikeLinear(N, N)
            x = (torch.rand(T * B, N) < 0.1).float()
            nnz = int(x.sum())
            out.append((f"linear fwd M={T * B} K=N={N}", 4 * ((T * B * N) // 16 + (T * B * N // 2) * N),
                        lambda lin=lin, x=x: lin(x)))
            continue
        layer, nf, nb = _layer(family, N)
        x = torch.randn(T, B, N) * 0.5 + 0.1
        n = T * B * N

        def fwd(layer=layer, x=x):
            with torch.no_grad():
                layer.sequence(x)

        def fb(layer=layer, x=x):
            xx = x.detach().requires_grad_()
            outs = layer.sequence(xx)
            torch.autograd.backward([o for o in outs], [torch.ones_like(o) for o in outs])

        out.append((f"{family} fwd T={T} B={B} N={N}", 4 * nf * n, fwd))
        out.append((f"{family} fwd+bwd T={T} B={B} N={N}", 4 * nb * n, fb))
    return out


def median_pair(fn, rounds):
    """Medians (ms) of fn on a team of 1 and of 2, alternated call by call."""
    t = {1: [], 2: []}
    for team in (1, 2, 1, 2):  # warm-up
        _C._team_policy(forced=team)
        fn()
    for _ in range(rounds):
        for team in (1, 2):
            _C._team_policy(forced=team)
            t0 = time.perf_counter()
            fn()
            t[team].append((time.perf_counter() - t0) * 1e3)
    _C._team_policy(forced=0)
    return t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--families", default="leaky,synaptic,rleaky,encoder")
    p.add_argument("--sizes", default="8,16,32,64,128,256,512", help="N values at T=50, B=64")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before each case wait up to S seconds for other processes to leave the cores")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    _C._team_policy(adaptive=0)
    sizes = [(50, 64, int(n)) for n in args.sizes.split(",")] + [(100, 64, 1024)]
    from bench.bench_cpu import OthersBusy, wait_idle
    print(f"{'case':<40} {'MiB moved':>9} {'1 thr ms':>9} {'2 thr ms':>9} {'2/1':>6} {'2/1 q20-q80':>12} cores taken by others")
    for family in args.families.split(","):
        for label, nbytes, fn in cases(family, sizes):
            if args.wait_idle > 0:
                wait_idle(args.wait_idle)
            with OthersBusy() as others:
                t = median_pair(fn, args.rounds)
            m1, m2 = statistics.median(t[1]), statistics.median(t[2])
            ratios = sorted(b / a for a, b in zip(t[1], t[2]))
            q = statistics.quantiles(ratios, n=5)
            print(f"{label:<40} {nbytes / 2**20:9.2f} {m1:9.3f} {m2:9.3f} {m2 / m1:6.2f} "
                  f"{q[0]:5.2f}-{q[3]:<5.2f} others {others.value * 100:3.0f}%", flush=True)
    _C._team_policy(adaptive=1)


if __name__ == "__main__":
    main()

"""What the default allocator costs the fused ops, and what advise_huge (csrc/common.h) saves:
Leaky's forward+backward at the large size with MADV_HUGEPAGE advice on and off, alternated
call by call in one process, with the page faults per call (getrusage's minor faults).

    python -m bench.alloc [--rounds 15] [--threads 1]
    MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=536870912 python -m bench.alloc

(the second: glibc's thresholds raised, freed memory kept for reuse: the tuned row.)
"""
import argparse
import os
import resource
import statistics
import time

import torch

import fastlif
from fastlif import _C


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", default="100,64,1024")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    T, B, N = map(int, args.shape.split(","))
    lif = fastlif.Leaky(0.95, learn_beta=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, N, generator=g) * 0.5 + 0.1
    grads = [torch.randn(T, B, N, generator=g) for _ in range(2)]

    def fb():
        xx = x.detach().requires_grad_()
        torch.autograd.backward(list(lif.sequence(xx)), grads)

    res = {0: [], 1: []}
    faults = {0: [], 1: []}
    for huge in (0, 1, 0, 1):
        _C._team_policy(huge=huge)
        fb()
    for _ in range(args.rounds):
        for huge in (0, 1):
            _C._team_policy(huge=huge)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            fb()
            res[huge].append((time.perf_counter() - t0) * 1e3)
            faults[huge].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    _C._team_policy(huge=1)
    tuned = os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default")
    nbytes = 28 * T * B * N
    for huge in (0, 1):
        s = sorted(res[huge])
        q = statistics.quantiles(s, n=5)
        med = statistics.median(s)
        print(f"Leaky fwd+bwd {T}x{B}x{N}, {args.threads} threads, mmap threshold {tuned}, "
              f"huge-page advice {'on ' if huge else 'off'}: median {med:.2f} ms (q20-q80 {q[0]:.2f}-{q[3]:.2f}), "
              f"{nbytes / med / 1e6:.1f} GB/s, {statistics.median(faults[huge]):.0f} page faults/call")
    print(f"ratio on/off of the medians: {statistics.median(res[1]) / statistics.median(res[0]):.3f}")


if __name__ == "__main__":
    main()

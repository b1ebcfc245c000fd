"""What the default allocator costs the fused ops, and what the output pool (csrc/pool.cpp)
saves: Leaky's forward+backward (learnable beta, upstream gradients on spikes and membranes,
as bench_cpu's) with the pool on (the default) and off (``fastlif.set_cpu_cache_limit(0)``:
plain torch tensors from glibc, with huge-page advice for fresh large ones), alternated call by
call in one process, with the page faults per call (getrusage's minor faults). Rows go to
bench/results/alloc.csv.

    python -m bench.alloc [--rounds 21] [--threads 2] [--sizes 50,64,128 100,64,1024]
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

from bench.common import append_rows, cpu_name, extra, torch_version

MODES = {"pool": 1 << 30, "no_pool": 0}


def _faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(T, B, N, rounds):
    """{mode: (times in ms, faults per call)} with the modes alternated call by call."""
    lif = fastlif.Leaky(0.95, learn_beta=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, N, generator=g) * 0.5 + 0.1
    grads = [torch.randn(T, B, N, generator=g) for _ in range(2)]

    def fb():
        xx = x.detach().requires_grad_()
        torch.autograd.backward(list(lif.sequence(xx)), grads)

    times = {m: [] for m in MODES}
    faults = {m: [] for m in MODES}
    for mode in list(MODES) * 2:  # warm-up
        fastlif.set_cpu_cache_limit(MODES[mode])
        fb()
    for _ in range(rounds):
        for mode, limit in MODES.items():
            fastlif.set_cpu_cache_limit(limit)
            f0, t0 = _faults(), time.perf_counter()
            fb()
            times[mode].append((time.perf_counter() - t0) * 1e3)
            faults[mode].append(_faults() - f0)
    fastlif.set_cpu_cache_limit(MODES["pool"])
    return times, faults


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--sizes", nargs="+", default=["50,64,128", "100,64,1024"], help="T,B,N each")
    p.add_argument("--csv", default="alloc.csv", help="CSV under bench/results/ ('' for none)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tuned = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    allocator = f"glibc thresholds raised ({tuned})" if tuned else "glibc defaults"
    rows = []
    for size in args.sizes:
        T, B, N = map(int, size.split(","))
        times, faults = measure(T, B, N, args.rounds)
        nbytes = 28 * T * B * N  # what forward+backward moves (bench_cpu's roofline count)
        meds = {m: statistics.median(times[m]) for m in MODES}
        ratios = sorted(a / b for a, b in zip(times["pool"], times["no_pool"]))
        q = statistics.quantiles(ratios, n=5)
        for mode in MODES:
            s = sorted(times[mode])
            qs = statistics.quantiles(s, n=5)
            f = statistics.median(faults[mode])
            print(f"Leaky fwd+bwd {T}x{B}x{N}, {args.threads} threads, {allocator}, {mode:>7}: median "
                  f"{meds[mode]:.3f} ms (q20-q80 {qs[0]:.3f}-{qs[3]:.3f}), {nbytes / meds[mode] / 1e6:.1f} GB/s, "
                  f"{f:.0f} page faults/call", flush=True)
            rows.append(dict(bench="alloc", case=f"leaky_{T}x{B}x{N}" + ("_tuned_malloc" if tuned else ""),
                             shape=f"{T}x{B}x{N}", dtype="float32", provider=f"fastlif_{mode}",
                             direction="forward+backward", median_ms=f"{meds[mode]:.4f}",
                             q20_ms=f"{qs[0]:.4f}", q80_ms=f"{qs[3]:.4f}",
                             ratio_vs_fastlif=f"{meds[mode] / meds['pool']:.3f}",
                             throughput=f"{nbytes / meds[mode] / 1e6:.2f}", throughput_unit="GB/s",
                             device=cpu_name(), torch=torch_version(),
                             extra=extra(threads=args.threads, faults_per_call=f, allocator=allocator)))
        print(f"  pool/no-pool, call by call: median {statistics.median(ratios):.3f} (q20-q80 {q[0]:.3f}-{q[3]:.3f})")
    if args.csv:
        print(f"{len(rows)} rows appended to {append_rows(args.csv, rows)}")


if __name__ == "__main__":
    main()

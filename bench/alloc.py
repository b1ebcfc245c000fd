"""What the default allocator costs the fused ops, and what the output pool (csrc/pool.cpp)
saves: Leaky's forward+backward (learnable beta, upstream gradients on spikes and membranes,
as bench_cpu's) with the pool on (the default) and off (``FASTLIF_CPU_CACHE_MB=0``: plain torch
tensors from glibc, with huge-page advice for fresh large ones), with the page faults per call
(getrusage's minor faults). Rows go to bench/results/alloc.csv.

Each mode runs in processes of its own, alternated (pool, no pool, pool, ...): whether glibc
faults a call's outputs in afresh depends on the history of the process's frees (its mmap
threshold adapts), so one process switching modes would measure neither as a user has it.

    python -m bench.alloc [--processes 3] [--calls 21] [--threads 2] [--sizes 50,64,128 100,64,1024]
    MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=536870912 python -m bench.alloc

(the second: glibc's thresholds raised, freed memory kept for reuse: the tuned rows.)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

MODES = {"pool": None, "no_pool": "0"}  # FASTLIF_CPU_CACHE_MB


def child(T, B, N, calls, threads):
    """One process's run: a few warm-up calls, then ``calls`` timed ones; prints JSON."""
    import resource
    import time

    import torch

    import fastlif
    torch.set_num_threads(threads)
    lif = fastlif.Leaky(0.95, learn_beta=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, N, generator=g) * 0.5 + 0.1
    grads = [torch.randn(T, B, N, generator=g) for _ in range(2)]

    def fb():
        xx = x.detach().requires_grad_()
        torch.autograd.backward(list(lif.sequence(xx)), grads)

    for _ in range(3):
        fb()
    times, faults = [], []
    for _ in range(calls):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        fb()
        times.append((time.perf_counter() - t0) * 1e3)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(json.dumps({"times": times, "faults": faults}))


def run_child(mode, size, calls, threads):
    env = dict(os.environ)
    env.pop("FASTLIF_CPU_CACHE_MB", None)
    if MODES[mode] is not None:
        env["FASTLIF_CPU_CACHE_MB"] = MODES[mode]
    out = subprocess.run([sys.executable, "-m", "bench.alloc", "--child", size, "--calls", str(calls),
                          "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=3, help="processes per mode and size")
    p.add_argument("--calls", type=int, default=21, help="timed calls per process")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--sizes", nargs="+", default=["50,64,128", "100,64,1024"], help="T,B,N each")
    p.add_argument("--csv", default="alloc.csv", help="CSV under bench/results/ ('' for none)")
    p.add_argument("--child", metavar="T,B,N", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*map(int, args.child.split(",")), args.calls, args.threads)
        return
    from bench.common import append_rows, cpu_name, extra, torch_version
    tuned = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    allocator = f"glibc thresholds raised ({tuned})" if tuned else "glibc defaults"
    rows = []
    for size in args.sizes:
        T, B, N = map(int, size.split(","))
        times = {m: [] for m in MODES}
        faults = {m: [] for m in MODES}
        per_process = {m: [] for m in MODES}
        for _ in range(args.processes):
            for mode in MODES:
                r = run_child(mode, size, args.calls, args.threads)
                times[mode] += r["times"]
                faults[mode] += r["faults"]
                per_process[mode].append(statistics.median(r["times"]))
        nbytes = 28 * T * B * N  # what forward+backward moves (bench_cpu's roofline count)
        meds = {m: statistics.median(times[m]) for m in MODES}
        for mode in MODES:
            qs = statistics.quantiles(sorted(times[mode]), n=5)
            f = statistics.median(faults[mode])
            spread = ", ".join(f"{t:.3f}" for t in per_process[mode])
            print(f"Leaky fwd+bwd {T}x{B}x{N}, {args.threads} threads, {allocator}, {mode:>7}: median "
                  f"{meds[mode]:.3f} ms (q20-q80 {qs[0]:.3f}-{qs[3]:.3f}; per process {spread}), "
                  f"{nbytes / meds[mode] / 1e6:.1f} GB/s, {f:.0f} page faults/call "
                  f"(mean {statistics.fmean(faults[mode]):.0f})", flush=True)
            rows.append(dict(bench="alloc", case=f"leaky_{T}x{B}x{N}" + ("_tuned_malloc" if tuned else ""),
                             shape=f"{T}x{B}x{N}", dtype="float32", provider=f"fastlif_{mode}",
                             direction="forward+backward", median_ms=f"{meds[mode]:.4f}",
                             q20_ms=f"{qs[0]:.4f}", q80_ms=f"{qs[3]:.4f}",
                             ratio_vs_fastlif=f"{meds[mode] / meds['pool']:.3f}",
                             throughput=f"{nbytes / meds[mode] / 1e6:.2f}", throughput_unit="GB/s",
                             device=cpu_name(), torch=torch_version(),
                             extra=extra(threads=args.threads, faults_per_call=f,
                                         faults_mean=statistics.fmean(faults[mode]), allocator=allocator,
                                         processes=args.processes, calls=args.calls)))
        print(f"  no pool / pool: {meds['no_pool'] / meds['pool']:.2f}x")
    if args.csv:
        print(f"{len(rows)} rows appended to {append_rows(args.csv, rows)}")


if __name__ == "__main__":
    main()

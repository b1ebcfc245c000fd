"""This tree against another checkout of fastlif, neuron by neuron: forward+backward of each
family's benchmark layer (the providers of ``bench/bench_cpu.py``, tutorial size, and Leaky's and
Synaptic's large size), each tree in fresh processes of its own, alternated A B A B, so that a
change can be judged against the machine's drift ("no existing neuron slower").

    python -m bench.ab_trees --base /path/to/other/checkout [--rounds 5] [--cases leaky,sj_lif]
                             [--threads 1] [--apart]

The other checkout must be built in place (``python setup.py build_ext --inplace``). Each worker
process imports fastlif and ``bench.bench_cpu`` from its own tree; this file is run as a script
by path, so that a tree older than it needs nothing of it. Rows in ``bench/results/ab.csv``: the
median over rounds of each process's median per call, per tree.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

CASES = ("leaky", "leaky_fixed", "leaky_immediate", "leaky_zero", "synaptic", "rleaky", "rleaky_immediate",
         "lapicque", "alpha", "rsynaptic", "sj_lif", "sj_plif", "leaky_large", "synaptic_large")
TUTORIAL, LARGE = (50, 64, 128), (100, 64, 1024)


def worker(cases, threads=0, apart=False):
    """In a fresh process, in the tree on sys.path: median microseconds per call of each case
    (``threads`` > 0: torch's thread count; ``apart``: forward and backward timed apart, as
    ``<case>:forward`` and ``<case>:backward``)."""
    import torch
    if threads > 0:
        torch.set_num_threads(threads)
    import fastlif
    from bench.bench_cpu import (BETA, THRESHOLD, V, family_fastlif, forward_backward, make_inputs,
                                 provider_fastlif, sj_family_providers)
    out = {}
    for case in cases:
        T, B, N = LARGE if case.endswith("_large") else TUTORIAL
        family = case.replace("_large", "")
        x, grads = make_inputs(T, B, N)
        if family == "leaky":
            fn = provider_fastlif()[0]
        elif family == "leaky_fixed":  # the tutorial's own layer: a fixed beta, nothing learnable
            fn = fastlif.Leaky(BETA, threshold=THRESHOLD).sequence
        elif family in ("leaky_immediate", "leaky_zero"):  # the two other saved layouts and resets
            fn = fastlif.Leaky(BETA, threshold=THRESHOLD, learn_beta=True,
                               reset_delay=family != "leaky_immediate",
                               reset_mechanism="zero" if family == "leaky_zero" else "subtract").sequence
        elif family == "rleaky_immediate":
            fn = fastlif.RLeaky(beta=BETA, V=V, all_to_all=False, threshold=THRESHOLD, learn_beta=True,
                                reset_delay=False).sequence
        elif family in ("sj_lif", "sj_plif"):
            fn = sj_family_providers(family == "sj_plif")["fastlif"](N)[0]
        else:
            fn = family_fastlif(family, N)[0]
        calls = 3 if case.endswith("_large") else 15
        for _ in range(3):
            forward_backward(fn, x, grads)
        per = {"forward": [], "backward": [], "forward+backward": []}
        for _ in range(7):
            spent = dict.fromkeys(per, 0.0)
            for _ in range(calls):
                xx = x.detach().requires_grad_()
                t0 = time.perf_counter()
                outs = fn(xx)
                t1 = time.perf_counter()
                torch.autograd.backward(list(outs), grads[:len(outs)])
                t2 = time.perf_counter()
                spent["forward"] += t1 - t0
                spent["backward"] += t2 - t1
                spent["forward+backward"] += t2 - t0
            for k in per:
                per[k].append(spent[k] / calls * 1e6)
        if apart:
            out[f"{case}:forward"] = statistics.median(per["forward"])
            out[f"{case}:backward"] = statistics.median(per["backward"])
        else:
            out[case] = statistics.median(per["forward+backward"])
    out["_threads"] = torch.get_num_threads()
    print(json.dumps(out))




def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="another fastlif checkout, built in place (required)")
    p.add_argument("--rounds", type=int, default=5, help="fresh processes per tree, alternated")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--threads", type=int, default=0, help="torch's thread count in the workers (0: its default)")
    p.add_argument("--apart", action="store_true", help="time forward and backward apart")
    p.add_argument("--csv", default="ab.csv", help="CSV name under bench/results/ ('' to skip)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker.split(","), args.threads, args.apart)
    if not args.base:
        p.error("--base is required")
    from bench.common import append_rows, cpu_name, extra, git_commit, run_in_tree, torch_version
    here, base = Path(__file__).resolve().parent.parent, Path(args.base).resolve()
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    keys = [f"{c}:{d}" for c in cases for d in ("forward", "backward")] if args.apart else cases
    samples = {"this": {k: [] for k in keys}, "base": {k: [] for k in keys}}
    threads = None
    worker_args = ["--worker", ",".join(cases), "--threads", str(args.threads)] + (["--apart"] if args.apart else [])
    for r in range(args.rounds):
        # the order alternates too: a process that runs second in a pair can meet another machine
        for label, tree in (("base", base), ("this", here))[::1 if r % 2 == 0 else -1]:
            got = run_in_tree(Path(__file__).resolve(), tree, worker_args)
            threads = got.pop("_threads")
            for k in keys:
                samples[label][k].append(got[k])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {samples['this'][k][-1]:.0f}/{samples['base'][k][-1]:.0f} us" for k in keys), flush=True)
    base_commit = git_commit(base)
    print(f"\n{'forward and backward apart' if args.apart else 'forward+backward'}, median us over {args.rounds} "
          f"processes per tree (this tree / {base_commit}), {threads} threads; the median of the pairs' ratios "
          f"follows each (it cancels the machine's drift between rounds)")
    rows = []
    for k in keys:
        c, _, direction = k.partition(":")
        mine, theirs = statistics.median(samples["this"][k]), statistics.median(samples["base"][k])
        pair_ratio = statistics.median(a / b for a, b in zip(samples["this"][k], samples["base"][k]))
        faster = sum(a < b for a, b in zip(samples["this"][k], samples["base"][k]))
        print(f"  {k:25s} {mine:9.0f} {theirs:9.0f}   {mine / theirs:.3f}x the base's time "
              f"(pairs {pair_ratio:.3f}x); faster in {faster} of {args.rounds} pairs")
        T, B, N = LARGE if c.endswith("_large") else TUTORIAL
        for label, med, ss in (("fastlif", mine, samples["this"][k]),
                               (f"fastlif_base_{base_commit}", theirs, samples["base"][k])):
            q = statistics.quantiles(ss, n=5) if len(ss) > 1 else [med] * 4
            rows.append(dict(bench="ab_trees", case=c, shape=f"{T}x{B}x{N}", dtype="float32", provider=label,
                             direction=direction or "forward+backward", median_ms=med / 1e3, q20_ms=q[0] / 1e3,
                             q80_ms=q[3] / 1e3, ratio_vs_fastlif=med / mine, device=cpu_name(),
                             torch=torch_version(),
                             extra=extra(threads=threads, rounds=args.rounds, base=base_commit,
                                         faster_pairs=f"{faster}/{args.rounds}", pair_ratio=round(pair_ratio, 4))))
    if args.csv:
        print(f"{len(rows)} rows appended to {append_rows(args.csv, rows)}")


if __name__ == "__main__":
    sys.exit(main())

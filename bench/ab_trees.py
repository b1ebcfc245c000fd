"""This tree against another checkout of fastlif, neuron by neuron: forward+backward of each
family's benchmark layer (the providers of ``bench/bench_cpu.py``, tutorial size, and Leaky's and
Synaptic's large size), each tree in fresh processes of its own, alternated A B A B, so that a
change can be judged against the machine's drift ("no existing neuron slower").

    python -m bench.ab_trees --base /path/to/other/checkout [--rounds 5] [--cases leaky,sj_lif]

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

CASES = ("leaky", "leaky_fixed", "leaky_immediate", "leaky_zero", "synaptic", "rleaky", "rleaky_immediate", "lapicque", "alpha", "rsynaptic", "sj_lif", "sj_plif",
         "leaky_large", "synaptic_large")
TUTORIAL, LARGE = (50, 64, 128), (100, 64, 1024)


def worker(cases):
    """In a fresh process, in the tree on sys.path: median microseconds per call of each case."""
    import torch
    from bench.bench_cpu import (family_fastlif, forward_backward, make_inputs, provider_fastlif,
                                 sj_family_providers)
    out = {}
    for case in cases:
        T, B, N = LARGE if case.endswith("_large") else TUTORIAL
        family = case.replace("_large", "")
        x, grads = make_inputs(T, B, N)
        if family == "leaky":
            fn = provider_fastlif()[0]
        elif family == "leaky_fixed":  # the tutorial's own layer: a fixed beta, nothing learnable
            import fastlif
            from bench.bench_cpu import BETA, THRESHOLD
            fn = fastlif.Leaky(BETA, threshold=THRESHOLD).sequence
        elif family in ("leaky_immediate", "leaky_zero"):  # the two other saved layouts and resets
            import fastlif
            from bench.bench_cpu import BETA, THRESHOLD
            fn = fastlif.Leaky(BETA, threshold=THRESHOLD, learn_beta=True,
                               reset_delay=family != "leaky_immediate",
                               reset_mechanism="zero" if family == "leaky_zero" else "subtract").sequence
        elif family == "rleaky_immediate":
            import fastlif
            from bench.bench_cpu import BETA, THRESHOLD, V
            fn = fastlif.RLeaky(beta=BETA, V=V, all_to_all=False, threshold=THRESHOLD, learn_beta=True,
                                reset_delay=False).sequence
        elif family in ("sj_lif", "sj_plif"):
            fn = sj_family_providers(family == "sj_plif")["fastlif"](N)[0]
        else:
            fn = family_fastlif(family, N)[0]
        calls = 3 if case.endswith("_large") else 15
        for _ in range(3):
            forward_backward(fn, x, grads)
        per = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(calls):
                forward_backward(fn, x, grads)
            per.append((time.perf_counter() - t0) / calls * 1e6)
        out[case] = statistics.median(per)
    out["_threads"] = torch.get_num_threads()
    print(json.dumps(out))




def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="another fastlif checkout, built in place (required)")
    p.add_argument("--rounds", type=int, default=5, help="fresh processes per tree, alternated")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--csv", default="ab.csv", help="CSV name under bench/results/ ('' to skip)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker.split(","))
    if not args.base:
        p.error("--base is required")
    from bench.common import append_rows, cpu_name, extra, git_commit, run_in_tree, torch_version
    here, base = Path(__file__).resolve().parent.parent, Path(args.base).resolve()
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    samples = {"this": {c: [] for c in cases}, "base": {c: [] for c in cases}}
    threads = None
    for r in range(args.rounds):
        for label, tree in (("base", base), ("this", here)):
            got = run_in_tree(Path(__file__).resolve(), tree, ["--worker", ",".join(cases)])
            threads = got.pop("_threads")
            for c in cases:
                samples[label][c].append(got[c])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{c} {samples['this'][c][-1]:.0f}/{samples['base'][c][-1]:.0f} us" for c in cases), flush=True)
    base_commit = git_commit(base)
    print(f"\nforward+backward, median us over {args.rounds} processes per tree "
          f"(this tree / {base_commit}), {threads} threads")
    rows = []
    for c in cases:
        mine, theirs = statistics.median(samples["this"][c]), statistics.median(samples["base"][c])
        faster = sum(a < b for a, b in zip(samples["this"][c], samples["base"][c]))
        print(f"  {c:15s} {mine:9.0f} {theirs:9.0f}   {mine / theirs:.3f}x the base's time; "
              f"faster in {faster} of {args.rounds} pairs")
        T, B, N = LARGE if c.endswith("_large") else TUTORIAL
        for label, med, ss in (("fastlif", mine, samples["this"][c]),
                               (f"fastlif_base_{base_commit}", theirs, samples["base"][c])):
            q = statistics.quantiles(ss, n=5) if len(ss) > 1 else [med] * 4
            rows.append(dict(bench="ab_trees", case=c, shape=f"{T}x{B}x{N}", dtype="float32", provider=label,
                             direction="forward+backward", median_ms=med / 1e3, q20_ms=q[0] / 1e3,
                             q80_ms=q[3] / 1e3, ratio_vs_fastlif=med / mine, device=cpu_name(),
                             torch=torch_version(),
                             extra=extra(threads=threads, rounds=args.rounds, base=base_commit,
                                         faster_pairs=f"{faster}/{args.rounds}")))
    if args.csv:
        print(f"{len(rows)} rows appended to {append_rows(args.csv, rows)}")


if __name__ == "__main__":
    sys.exit(main())

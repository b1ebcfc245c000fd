"""The fixed cost of one fused call (CPU, fp32): what a tiny call costs, against the floor that
torch's autograd itself sets and, with ``--base PATH``, against another checkout of fastlif
(e.g. the commit before the restructuring), interleaved A B A B in fresh processes.

    python -m bench.bench_dispatch                       # this tree
    python -m bench.bench_dispatch --base /tmp/base      # and another tree, interleaved

Also the measured design choice behind the op boundary (fastlif/ops/common.py): in eager mode a
call goes through one ``torch.autograd.Function`` and under ``torch.compile`` through the custom
ops; the ``function_trivial`` and ``custom_op_trivial`` rows time the same trivial work through
each path, so the difference is the dispatch alone.

Rows go to ``bench/results/dispatch.csv``.
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = (4, 2, 8)  # T, B, N: small enough that the per-call overhead is all there is


def _timer():
    """fastlif's one timer, loaded from this tree's file (so that --base can import another
    fastlif in the worker without mixing the two packages)."""
    spec = importlib.util.spec_from_file_location("fastlif_timing", ROOT / "fastlif" / "timing.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.time_call


def worker(include_floors):
    """Runs in a fresh process; prints one JSON object: median microseconds by row name."""
    import torch
    import fastlif

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    time_call = _timer()
    T, B, N = TINY
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, N, generator=gen) * 0.5 + 0.6
    g_spk, g_mem = torch.randn(T, B, N, generator=gen), torch.randn(T, B, N, generator=gen)
    xg = x.clone().requires_grad_()

    def fwd():
        with torch.no_grad():
            fastlif.lif_sequence(x, 0.9, 1.0)

    def fwd_bwd():
        spk, mem = fastlif.lif_sequence(xg, 0.9, 1.0)
        torch.autograd.backward([spk, mem], [g_spk, g_mem])
        xg.grad = None

    def us(fn):
        return time_call(fn, warmup=20, repeat=50, min_time_s=1.0, max_repeat=20000)[0] * 1e3

    out = {"fastlif_forward": us(fwd), "fastlif_forward+backward": us(fwd_bwd)}
    if include_floors:
        class Trivial(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2, x * 3

            @staticmethod
            def backward(ctx, ga, gb):
                return ga * 2 + gb * 3

        @torch.library.custom_op("fastlif_bench::trivial", mutates_args=())
        def trivial(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, x * 3

        @trivial.register_fake
        def _(x):
            return torch.empty_like(x), torch.empty_like(x)

        def trivial_backward(ctx, ga, gb):
            return ga * 2 + gb * 3

        trivial.register_autograd(trivial_backward)

        def via(fn):
            def call():
                a, b = fn(xg)
                torch.autograd.backward([a, b], [g_spk, g_mem])
                xg.grad = None
            return call

        out["function_trivial_forward+backward"] = us(via(Trivial.apply))
        out["custom_op_trivial_forward+backward"] = us(via(trivial))
    print(json.dumps(out), flush=True)


def run_worker(tree, include_floors, threads):
    from bench.common import run_in_tree
    return run_in_tree(Path(__file__).resolve(), tree, ["--worker"] + (["--floors"] if include_floors else []),
                       env={"BENCH_THREADS": str(threads)})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=None, help="another fastlif checkout (built in place) to compare with")
    p.add_argument("--rounds", type=int, default=5, help="fresh processes per tree, interleaved (default 5)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--csv", default="dispatch.csv", help="CSV name under bench/results/ ('' to skip)")
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from bench.common import append_rows, cpu_name, extra, git_commit, torch_version

    trees = [("fastlif", ROOT)] + ([("base", Path(args.base).resolve())] if args.base else [])
    samples = {}  # (tree label, row) -> [us per round]
    for r in range(args.rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        for label, tree in order:
            got = run_worker(tree, include_floors=(label == "fastlif"), threads=args.threads)
            for row, value in got.items():
                samples.setdefault((label, row), []).append(value)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{label} {row} {vals[-1]:.1f} us" for (label, row), vals in samples.items()), flush=True)

    base_commit = git_commit(args.base) if args.base else ""
    T, B, N = TINY
    print(f"\ntiny call T={T} B={B} N={N}, {args.threads} threads: median over {args.rounds} fresh processes "
          f"(each the median of >= 1 s of calls); spread = min..max over the processes")
    rows = []
    for (label, row), vals in samples.items():
        name, direction = row.rsplit("_", 1)
        provider = name if label == "fastlif" else f"fastlif_base_{base_commit or 'other'}"
        med = statistics.median(vals)
        ratio = ""
        ours = samples.get(("fastlif", row))
        if label != "fastlif" and ours:
            ratio = f"  (this tree is {med / statistics.median(ours):.2f}x faster)"
        print(f"  {provider:<28} {direction:<17} {med:8.1f} us  [{min(vals):.1f}..{max(vals):.1f}]{ratio}")
        rows.append(dict(bench="dispatch", case="tiny_call", shape=f"{T}x{B}x{N}", dtype="float32",
                         provider=provider, direction=direction, median_ms=f"{med / 1e3:.6g}",
                         q20_ms=f"{min(vals) / 1e3:.6g}", q80_ms=f"{max(vals) / 1e3:.6g}",
                         device=cpu_name(), torch=torch_version(),
                         extra=extra(threads=args.threads, rounds=args.rounds,
                                     spread="min..max over processes (in q20/q80)",
                                     settings="lif_sequence(x, 0.9, 1.0) auto backend; backward with "
                                              "upstream on spk and mem" if name == "fastlif" else
                                              "x*2, x*3 and its backward through this dispatch path")))
    if args.csv:
        print(f"{len(rows)} rows appended to {append_rows(args.csv, rows)}")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker("--floors" in sys.argv)
    else:
        sys.exit(main())

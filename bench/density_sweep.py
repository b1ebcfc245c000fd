"""What the density-sweep benchmarks of fastlif's event-driven layers share: ``bench_spike_linear``
(SpikeLinear against nn.Linear) and ``bench_spike_conv`` (SpikeConv2d against nn.Conv2d).

Each benchmark describes itself in a :class:`Sweep` (its names, its ``fastlif.ops`` module for
DENSE_ABOVE, how it labels and parses a shape, its CSV settings strings) and builds its own
layers and calls; this module runs the sweep (:func:`run_sweep`), times each point
(:func:`interleaved`: rounds that rotate the providers, so that a busy machine slows all of
them alike; medians and 20/80 % quantiles of the rounds), finds the crossover density
(:func:`crossover`), writes the CSV rows (``bench.common.FIELDS``) and draws the figure,
redraws it from a CSV's latest run (``--replot``), and times ``--busy N`` (:func:`run_busy`).

Results are ``{(case, density, provider, direction): {"timing": (median, q20, q80) in ms,
"load", "busy", "shape"}}``; the providers are ``events`` (the event kernels at every density),
``auto`` (the layer's default dispatch) and the dense torch peer (``Sweep.dense``).
"""
import argparse
import math
import os
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch

import fastlif

from bench.bench_cpu import OthersBusy, loadavg, wait_idle
from bench.bench_demo_epoch import quantiles
from bench.common import RESULTS, Spinners, append_rows, cpu_name, extra, read_rows, torch_version

FWD, FB, FBI = "forward", "forward+backward", "forward+backward_input"
DIRECTIONS = (FWD, FB, FBI)


@dataclass(frozen=True)
class Sweep:
    """One benchmark, as the shared pieces need it. ``label(shape)`` is the CSV's shape label
    (the density follows it), ``parse(label)`` reads back what the figure needs of the shape
    (``title(shape)``, a panel's), ``flops(shape)`` the dense-equivalent flop count of a call
    (named by ``flops_unit``), ``settings(case, provider, direction)`` a row's settings."""
    bench: str  # the CSV's bench column, "spike_linear"
    layer: str  # "SpikeLinear"
    dense: str  # the dense provider's name, "nn_linear"
    dense_layer: str  # "nn.Linear"
    dense_legend: str  # the dense provider's line in the figure's legend
    ops: ModuleType  # the layer's fastlif.ops module: its DENSE_ABOVE is marked and printed
    csv: str  # the defaults under bench/results/
    png: str
    label: Callable
    parse: Callable
    title: Callable
    flops: Callable
    flops_unit: str
    settings: Callable

    @property
    def providers(self):
        return ("events", "auto", self.dense)


def make_call(layer, x, upstream, direction):
    """One timed call: forward under no_grad, or forward and backward (gradients reset first,
    so every call does the same work)."""
    if direction == FWD:
        def call():
            with torch.no_grad():
                return layer(x)
        return call
    params = list(layer.parameters())

    def call():
        for p in params:
            p.grad = None
        xx = x.detach().requires_grad_() if direction == FBI else x
        layer(xx).backward(upstream)
    return call


def interleaved(calls, rounds, min_round_s):
    """``{name: (median, q20, q80)}`` in ms: each round calls every provider (in rotated order)
    for at least ``min_round_s`` and records its mean time per call."""
    names = list(calls)
    samples = {n: [] for n in names}
    for name in names:  # warm-up
        calls[name]()
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            call, n, t0 = calls[name], 0, time.perf_counter()
            while True:
                call()
                n += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= min_round_s:
                    break
            samples[name].append(elapsed / n * 1e3)
    return {n: quantiles(s) for n, s in samples.items()}


def one_thread(call):
    """``call`` on one thread (torch.set_num_threads, which fastlif's kernels follow)."""
    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return call()
        finally:
            torch.set_num_threads(threads)
    return run


def run_busy(bench, calls, n, rounds, min_round_s, csv_name):
    """``--busy N`` of the event-layer benchmarks: each call (``{(case, shape, direction): call}``)
    on the default threads against the same call on one thread, in rounds that rotate the two,
    beside ``n`` processes spinning on a core each (issue 18's target: within 1.5x). Prints the
    ratios and appends the rows (cases ``busy<n>_<case>``) to ``csv_name`` unless it is None."""
    threads, device, rows = torch.get_num_threads(), cpu_name(), []
    print(f"\nBeside {n} spinning process{'es' if n > 1 else ''}: {bench} on {threads} threads against one "
          f"thread under the same load (target: within 1.5x)", flush=True)
    with Spinners(n):
        for (case, shape, direction), call in calls.items():
            with OthersBusy() as busy:
                timing = interleaved({"fastlif": call, "fastlif_1thread": one_thread(call)}, rounds, min_round_s)
            ratio = timing["fastlif"][0] / timing["fastlif_1thread"][0]
            print(f"  [{'met' if ratio <= 1.5 else 'NOT met'}] busy{n}_{case} {direction}: "
                  f"{timing['fastlif'][0]:.3f} ms on {threads} threads, {timing['fastlif_1thread'][0]:.3f} ms "
                  f"on 1: {ratio:.2f}x", flush=True)
            for name in ("fastlif", "fastlif_1thread"):
                med, q20, q80 = timing[name]
                rows.append(dict(bench=bench, case=f"busy{n}_{case}", shape=shape, dtype="float32", provider=name,
                                 direction=direction, median_ms=f"{med:.6g}", q20_ms=f"{q20:.6g}",
                                 q80_ms=f"{q80:.6g}", ratio_vs_fastlif=f"{med / timing['fastlif'][0]:.6g}",
                                 device=device, torch=torch_version(),
                                 extra=extra(threads=1 if name == "fastlif_1thread" else threads, spinning=n,
                                             busy_during=busy.value, settings="backend='auto'")))
    if csv_name:
        print(f"rows appended to {append_rows(csv_name, rows)}")


def crossover(densities, events_ms, dense_ms):
    """The density where the event path's time meets the dense one's (log-interpolated), or
    None when one side wins over the whole sweep."""
    pts = list(zip(densities, events_ms, dense_ms))
    for (d0, e0, g0), (d1, e1, g1) in zip(pts, pts[1:]):
        r0, r1 = math.log(e0 / g0), math.log(e1 / g1)
        if r0 <= 0 < r1 or (r0 < 0 <= r1):
            f = r0 / (r0 - r1)
            return math.exp(math.log(d0) + f * (math.log(d1) - math.log(d0)))
    return None


class IdleWait:
    """``--wait-idle``: a budget of seconds, for the whole run, spent waiting for the other
    processes to leave the cores (busy < 15 %) before a timing, and for redoing (at most twice)
    a timing they disturbed."""

    def __init__(self, budget_s):
        self.left = budget_s

    def __call__(self):
        if self.left <= 0:
            return
        t0 = time.perf_counter()
        wait_idle(min(60.0, self.left))
        self.left -= time.perf_counter() - t0

    def redo(self, busy, attempt):
        return busy > 0.15 and self.left > 0 and attempt < 2


class Timer:
    """How a sweep times its points: ``rounds`` rounds of at least ``min_round_s`` each (--quick:
    two rounds, one call each, for a smoke check), within --wait-idle's budget (``idle``)."""

    def __init__(self, args):
        self.rounds, self.min_round_s = (2, 0.0) if args.quick else (args.rounds, 0.05)
        self.idle = IdleWait(args.wait_idle)


def parse_args(sweep, doc, argv, own):
    """The flags every sweep has, with the benchmark's own (``own(parser)``) after --wait-idle."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    p.add_argument("--rounds", type=int, default=7, help="rounds of interleaved timings (default 7)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="on a shared machine: spend up to S seconds in all waiting for other processes "
                        "to leave the cores before each timing, and redoing disturbed ones; default 0")
    own(p)
    p.add_argument("--quick", action="store_true",
                   help="smoke check: small sizes, 3 densities, nothing written unless --csv / --png")
    p.add_argument("--csv", default=None, help=f"CSV name under bench/results/ (default {sweep.csv})")
    p.add_argument("--png", default=None, help=f"figure path (default bench/results/{sweep.png})")
    p.add_argument("--replot", action="store_true",
                   help="only redraw the figure from the latest run in the CSV (no timing)")
    return p.parse_args(argv)


def busy_csv(args):
    """Where --busy's rows go: cpu_busy.csv, none with --quick unless --csv names one."""
    return args.csv or (None if args.quick else "cpu_busy.csv")


def print_head(sweep):
    """The column heads of a case's table (:func:`time_point` prints its rows)."""
    print(f"   {'density':>8} {'direction':<24} " + " ".join(f"{p:>16}" for p in sweep.providers) +
          "   nn/events  busy", flush=True)


def time_point(sweep, results, calls, case, d, direction, shape, load, timer):
    """Times ``calls`` (``{provider: call}``) at density ``d`` in ``direction``, again while
    other processes disturb it and --wait-idle's budget lasts; keeps the timings in ``results``
    and prints the row of the case's table."""
    for attempt in range(3):
        timer.idle()
        with OthersBusy() as busy:
            timing = interleaved(calls, timer.rounds, timer.min_round_s)
        if not timer.idle.redo(busy.value, attempt):
            break
        print(f"   ({direction} at {d * 100:g}%: other processes took {busy.value * 100:.0f}% of the "
              f"cores; again)", flush=True)
    for name in sweep.providers:
        results[(case, d, name, direction)] = dict(timing=timing[name], load=load, busy=busy.value, shape=shape)
    ratio = timing[sweep.dense][0] / timing["events"][0]
    print(f"   {d * 100:7.2f}% {direction:<24} " +
          " ".join(f"{timing[p][0]:>13.3f} ms" for p in sweep.providers) +
          f"   {ratio:8.2f}x  {busy.value * 100:3.0f}%", flush=True)


def crossovers(sweep, results, sizes, densities):
    """``{(case, direction): crossover density or None}``, events against the dense peer."""
    def medians(case, name, direction):
        return [results[(case, d, name, direction)]["timing"][0] for d in densities]
    return {(case, direction): crossover(densities, medians(case, "events", direction),
                                         medians(case, sweep.dense, direction))
            for case in sizes for direction in DIRECTIONS}


def print_crossovers(sweep, cross):
    print(f"\nCrossover densities (events = {sweep.dense_layer}; DENSE_ABOVE = {sweep.ops.DENSE_ABOVE * 100:g}%):")
    for (case, direction), c in cross.items():
        print(f"   {case:<6} {direction:<24} " + ("none in the sweep" if c is None else f"{c * 100:.1f}%"))


def csv_rows(sweep, results, cross, threads, device):
    """A row per timing, then a row per crossover (its density in ``throughput``, empty where
    the sweep has none)."""
    rows = []
    for (case, d, name, direction), res in results.items():
        med, q20, q80 = res["timing"]
        base = results[(case, d, "auto", direction)]["timing"][0]
        rows.append(dict(bench=sweep.bench, case=case, shape=f"{sweep.label(res['shape'])} d={d * 100:g}%",
                         dtype="float32", provider=name, direction=direction, median_ms=f"{med:.6g}",
                         q20_ms=f"{q20:.6g}", q80_ms=f"{q80:.6g}", ratio_vs_fastlif=f"{med / base:.6g}",
                         throughput=f"{sweep.flops(res['shape']) / (med * 1e-3):.6g}",
                         throughput_unit=f"dense-equivalent flop/s ({sweep.flops_unit})", device=device,
                         torch=torch_version(),
                         extra=extra(density=d, threads=threads, load1=res["load"], busy_during=res["busy"],
                                     settings=sweep.settings(case, name, direction))))
    for (case, direction), c in cross.items():
        shape = results[next(k for k in results if k[0] == case)]["shape"]
        rows.append(dict(bench=sweep.bench, case=case, shape=f"{sweep.label(shape)} crossover",
                         dtype="float32", provider="crossover", direction=direction,
                         throughput="" if c is None else f"{c:.4g}",
                         throughput_unit=f"density where events = {sweep.dense}", device=device,
                         torch=torch_version(),
                         extra=extra(threads=threads, found=c is not None,
                                     settings="log-interpolated between the swept densities")))
    return rows


def plot(sweep, results, cross, sizes, densities, path, threads, device):
    """A panel per size (rows) and direction (columns): each provider's median with its 20-80 %
    band against the density, log-log, with the crossover and DENSE_ABOVE marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sizes), len(DIRECTIONS), figsize=(5.2 * len(DIRECTIONS), 4.2 * len(sizes)),
                             squeeze=False)
    style = {"events": ("C0", "-o", f"{sweep.layer}, event kernels (backend='cpp')"),
             "auto": ("C2", "--s", f"{sweep.layer}, backend='auto'"),
             sweep.dense: ("C3", "-^", sweep.dense_legend)}
    dense_above = sweep.ops.DENSE_ABOVE
    for i, (case, shape) in enumerate(sizes.items()):
        for j, direction in enumerate(DIRECTIONS):
            ax = axes[i][j]
            for name in sweep.providers:
                t = [results[(case, d, name, direction)]["timing"] for d in densities]
                color, fmt, label = style[name]
                ax.plot(densities, [m for m, _, _ in t], fmt, color=color, label=label, markersize=4)
                ax.fill_between(densities, [q for _, q, _ in t], [q for _, _, q in t], color=color, alpha=0.2)
            c = cross[(case, direction)]
            if c is not None:
                ax.axvline(c, color="0.4", linestyle=":", label=f"crossover {c * 100:.1f}%")
            ax.axvline(dense_above, color="C2", linestyle=":", alpha=0.5, label=f"DENSE_ABOVE {dense_above * 100:g}%")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{case}: {sweep.title(shape)}, {direction}", fontsize=10)
            ax.set_xlabel("density of non-zero inputs")
            ax.set_ylabel("time per call (ms)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"fastlif.{sweep.layer} vs {sweep.dense_layer}, fp32, {threads} threads, {device}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def from_csv(sweep, csv_name):
    """The results and crossovers of the latest run in ``csv_name`` (for --replot): ``(results,
    cross, sizes, densities, threads, device)``, the sizes as ``sweep.parse`` reads them."""
    rows = read_rows(csv_name)
    if not rows:
        raise SystemExit(f"no rows in bench/results/{csv_name}")
    last = max(r["timestamp"] for r in rows)
    results, cross, sizes, densities, threads = {}, {}, {}, set(), "?"
    for r in rows:
        if r["timestamp"] != last:
            continue
        ex = {k: v for k, v in (i.split("=", 1) for i in r["extra"].split(";") if "=" in i)}
        threads = ex.get("threads", threads)
        if r["provider"] == "crossover":
            cross[(r["case"], r["direction"])] = float(r["throughput"]) if r["throughput"] else None
            continue
        sizes[r["case"]] = sweep.parse(r["shape"])
        d = float(ex["density"])
        densities.add(d)
        results[(r["case"], d, r["provider"], r["direction"])] = dict(
            timing=(float(r["median_ms"]), float(r["q20_ms"]), float(r["q80_ms"])))
    return results, cross, sizes, sorted(densities), threads, rows[-1]["device"]


def replot(sweep, args):
    """--replot: the figure again from the latest run in the CSV, with no timing."""
    results, cross, sizes, densities, threads, device = from_csv(sweep, args.csv or sweep.csv)
    path = args.png or str(RESULTS / sweep.png)
    print(f"figure: {plot(sweep, results, cross, sizes, densities, path, threads, device)}")
    return 0


def run_sweep(sweep, args, timer, sizes, densities, run_case, printout, png):
    """The sweep: ``run_case(case, *shape, densities, results, timer)`` for every size, the
    crossover table, the benchmark's own ``printout(results, sizes, densities)``, the CSV rows
    (none with --quick unless --csv names a file) and the figure at ``png`` (None: none)."""
    threads, device = torch.get_num_threads(), cpu_name()
    print(f"fastlif {sweep.layer} benchmark: {device}, {threads} threads, torch {torch_version()}, "
          f"backends {fastlif.backends.describe()}; load average {loadavg():.2f}; "
          f"DENSE_ABOVE = {sweep.ops.DENSE_ABOVE}")
    print(f"columns: median time per call of each provider, {sweep.dense_layer}'s time / the event kernels', "
          "share of the cores other processes kept busy")
    t0 = time.perf_counter()
    results = {}
    for case, shape in sizes.items():
        run_case(case, *shape, densities, results, timer)
    cross = crossovers(sweep, results, sizes, densities)
    print_crossovers(sweep, cross)
    printout(results, sizes, densities)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average at the end {loadavg():.2f}")

    csv_name = args.csv or (None if args.quick else sweep.csv)
    if csv_name:
        print(f"rows appended to {append_rows(csv_name, csv_rows(sweep, results, cross, threads, device))}")
    if png:
        print(f"figure: {plot(sweep, results, cross, sizes, densities, png, threads, device)}")
    return 0

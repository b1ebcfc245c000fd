"""CPU benchmark of fastlif.SpikeLinear (the event-driven linear layer) against nn.Linear over a
sweep of input densities: where the event kernels beat the dense GEMM, and by how much.

Run from the repository root:  ``python -m bench.bench_spike_linear``  (``--quick``: a smoke
check on small sizes that writes nothing unless ``--csv`` is given; ``--replot``: redraw the
figure from the CSV's latest run; ``--wait-idle S`` on a shared machine; ``--busy N``: beside N
spinning processes, each call on the default threads against one thread, rows in
``bench/results/cpu_busy.csv``; ``--density D`` with it: the input's density, the tutorial's
1.25 % by default, above 25 % the dense GEMM). Rows go to
``bench/results/spike_linear.csv`` (columns: ``bench.common.FIELDS``; the density is in the
shape label and in ``extra``), the figure to ``bench/results/spike_linear_crossover.png``.

Sizes: ``fc1``, the tutorial's first layer (T=50, B=64: M = 3200 rows, 784 -> 128), and
``large`` (T=100, B=64: M = 6400 rows, 2048 -> 1024); fp32. The input is Bernoulli spikes of
the given density, ``[T, B, in]``. ``--sizes fc2`` measures the tutorial's output layer (128 ->
10), fed float32 spikes in every direction, as a hidden layer gets them from a neuron (where
``auto`` runs the GEMM: ``fastlif.ops.spike_linear.NARROW_OUT``); its figure is
``spike_linear_crossover_fc2.png``. Providers:

``events``      ``SpikeLinear(backend="cpp")``: the event kernels at every density
``auto``        ``SpikeLinear()``: the event kernels up to DENSE_ABOVE, the GEMM above
``nn_linear``   ``nn.Linear`` with the same weights (MKL GEMM)

SpikeLinear gets the spikes as bool (what fastlif.encode.poisson returns); nn.Linear gets them
as float32, converted beforehand and not timed (its best case). Directions: ``forward`` (no
grad), ``forward+backward`` (weight and bias gradients, the input needing none, as for a first
layer; random upstream gradient) and ``forward+backward_input`` (the input, float32 0/1,
requires grad too: a hidden layer; grad @ W is a dense GEMM for every provider). Each
provider's calls are timed in rounds that rotate the providers (a busy machine slows all of
them alike); medians and 20/80 % quantiles of the rounds. The crossover is the density where
the ``events`` and ``nn_linear`` medians meet (interpolated on log density).
"""
import argparse
import math
import os
import sys
import time

import torch
from torch import nn

import fastlif
from fastlif.ops import spike_linear as ops
from fastlif.testing import normwise

from bench.bench_cpu import OthersBusy, loadavg, wait_idle
from bench.bench_demo_epoch import quantiles
from bench.common import RESULTS, Spinners, append_rows, cpu_name, extra, read_rows, torch_version

CSV = "spike_linear.csv"
PNG = "spike_linear_crossover.png"
DENSITIES = (0.005, 0.01, 0.0125, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
SIZES = {"fc1": (50, 64, 784, 128), "large": (100, 64, 2048, 1024), "fc2": (50, 64, 128, 10)}  # T, B, in, out
DEFAULT_SIZES = ("fc1", "large")
QUICK_SIZES = {"fc1": (5, 64, 784, 128), "large": (5, 64, 2048, 1024), "fc2": (5, 64, 128, 10)}
FLOAT_INPUT = {"fc2"}  # SpikeLinear fed float32 spikes (a hidden layer's), not bool
QUICK_DENSITIES = (0.01, 0.1, 0.5)
PROVIDERS = ("events", "auto", "nn_linear")
FWD, FB, FBI = "forward", "forward+backward", "forward+backward_input"
DIRECTIONS = (FWD, FB, FBI)
TUTORIAL_DENSITY = 0.0125


def make_layers(K, N, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(K, N)
    events = fastlif.SpikeLinear(K, N, backend="cpp")
    auto = fastlif.SpikeLinear(K, N, backend="auto")
    events.load_state_dict(lin.state_dict())
    auto.load_state_dict(lin.state_dict())
    return {"events": events, "auto": auto, "nn_linear": lin}


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


def run_case(case, T, B, K, N, densities, rounds, min_round_s, results, idle):
    M = T * B
    layers = make_layers(K, N)
    gen = torch.Generator().manual_seed(1)
    upstream = torch.randn(T, B, N, generator=gen)
    print(f"\n== {case}: M = {T}x{B} = {M} rows, {K} -> {N}; load average {loadavg():.2f}", flush=True)
    print(f"   {'density':>8} {'direction':<24} " + " ".join(f"{p:>16}" for p in PROVIDERS) +
          "   nn/events  busy", flush=True)
    for d in densities:
        spikes = torch.rand(T, B, K, generator=gen) < d
        dense = spikes.float()
        with torch.no_grad():  # correctness, once per density
            want = layers["nn_linear"](dense)
            for name in ("events", "auto"):
                err = normwise(layers[name](spikes), want)
                assert err < 1e-5, f"{case} density {d}: {name} differs from nn.Linear ({err:.1e})"
        load = loadavg()
        for direction in DIRECTIONS:
            calls = {}
            for name in PROVIDERS:
                x = dense if (name == "nn_linear" or direction == FBI or case in FLOAT_INPUT) else spikes
                calls[name] = make_call(layers[name], x, upstream, direction)
            for attempt in range(3):
                idle()
                with OthersBusy() as busy:
                    timing = interleaved(calls, rounds, min_round_s)
                if not idle.redo(busy.value, attempt):
                    break
                print(f"   ({direction} at {d * 100:g}%: other processes took {busy.value * 100:.0f}% of the "
                      f"cores; again)", flush=True)
            for name in PROVIDERS:
                results[(case, d, name, direction)] = dict(timing=timing[name], load=load, busy=busy.value,
                                                           shape=(T, B, K, N))
            ratio = timing["nn_linear"][0] / timing["events"][0]
            print(f"   {d * 100:7.2f}% {direction:<24} " +
                  " ".join(f"{timing[p][0]:>13.3f} ms" for p in PROVIDERS) +
                  f"   {ratio:8.2f}x  {busy.value * 100:3.0f}%", flush=True)


def summarize(results, sizes, densities):
    """Crossover densities per (case, direction), and the tutorial-density speed-ups."""
    cross = {}
    for case in sizes:
        for direction in DIRECTIONS:
            ev = [results[(case, d, "events", direction)]["timing"][0] for d in densities]
            nn_ = [results[(case, d, "nn_linear", direction)]["timing"][0] for d in densities]
            cross[(case, direction)] = crossover(densities, ev, nn_)
    return cross


def csv_rows(results, cross, threads, device):
    rows = []
    for (case, d, name, direction), res in results.items():
        T, B, K, N = res["shape"]
        med, q20, q80 = res["timing"]
        base = results[(case, d, "auto", direction)]["timing"][0]
        settings = {"events": "fastlif.SpikeLinear(backend='cpp') on bool spikes",
                    "auto": f"fastlif.SpikeLinear(backend='auto', DENSE_ABOVE={ops.DENSE_ABOVE}) on bool spikes",
                    "nn_linear": "torch.nn.Linear on float32 spikes (converted beforehand, untimed)"}[name]
        if direction == FBI or case in FLOAT_INPUT:
            settings = settings.replace("bool spikes", "float32 spikes")
        if name == "auto":
            settings += f", NARROW_OUT={ops.NARROW_OUT}"
        if direction == FBI:
            settings += "; input requires grad"
        rows.append(dict(bench="spike_linear", case=case, shape=f"{T * B}x{K}->{N} d={d * 100:g}%",
                         dtype="float32", provider=name, direction=direction, median_ms=f"{med:.6g}",
                         q20_ms=f"{q20:.6g}", q80_ms=f"{q80:.6g}", ratio_vs_fastlif=f"{med / base:.6g}",
                         throughput=f"{2 * T * B * K * N / (med * 1e-3):.6g}",
                         throughput_unit="dense-equivalent flop/s (2*M*K*N)", device=device,
                         torch=torch_version(),
                         extra=extra(density=d, threads=threads, load1=res["load"], busy_during=res["busy"],
                                     settings=settings)))
    for (case, direction), c in cross.items():
        T, B, K, N = (results[next(k for k in results if k[0] == case)])["shape"]
        rows.append(dict(bench="spike_linear", case=case, shape=f"{T * B}x{K}->{N} crossover",
                         dtype="float32", provider="crossover", direction=direction,
                         throughput="" if c is None else f"{c:.4g}",
                         throughput_unit="density where events = nn_linear", device=device,
                         torch=torch_version(),
                         extra=extra(threads=threads, found=c is not None,
                                     settings="log-interpolated between the swept densities")))
    return rows


def plot(results, cross, sizes, densities, path, threads, device):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sizes), len(DIRECTIONS), figsize=(5.2 * len(DIRECTIONS), 4.2 * len(sizes)),
                             squeeze=False)
    style = {"events": ("C0", "-o", "SpikeLinear, event kernels (backend='cpp')"),
             "auto": ("C2", "--s", "SpikeLinear, backend='auto'"),
             "nn_linear": ("C3", "-^", "nn.Linear (dense GEMM)")}
    for i, (case, (T, B, K, N)) in enumerate(sizes.items()):
        for j, direction in enumerate(DIRECTIONS):
            ax = axes[i][j]
            for name in PROVIDERS:
                t = [results[(case, d, name, direction)]["timing"] for d in densities]
                color, fmt, label = style[name]
                ax.plot(densities, [m for m, _, _ in t], fmt, color=color, label=label, markersize=4)
                ax.fill_between(densities, [q for _, q, _ in t], [q for _, _, q in t], color=color, alpha=0.2)
            c = cross[(case, direction)]
            if c is not None:
                ax.axvline(c, color="0.4", linestyle=":", label=f"crossover {c * 100:.1f}%")
            ax.axvline(ops.DENSE_ABOVE, color="C2", linestyle=":", alpha=0.5,
                       label=f"DENSE_ABOVE {ops.DENSE_ABOVE * 100:g}%")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{case}: {T * B}x{K} -> {N}, {direction}", fontsize=10)
            ax.set_xlabel("density of non-zero inputs")
            ax.set_ylabel("time per call (ms)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"fastlif.SpikeLinear vs nn.Linear, fp32, {threads} threads, {device}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def from_csv(csv_name):
    """The results and crossovers of the latest run in ``csv_name`` (for --replot)."""
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
        M, rest = r["shape"].split("x", 1)
        K, N = rest.split(" ")[0].split("->")
        sizes[r["case"]] = (int(M), 1, int(K), int(N))  # (T, B, in, out): the figure needs T * B only
        d = float(ex["density"])
        densities.add(d)
        results[(r["case"], d, r["provider"], r["direction"])] = dict(
            timing=(float(r["median_ms"]), float(r["q20_ms"]), float(r["q80_ms"])))
    return results, cross, sizes, sorted(densities), threads, rows[-1]["device"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    p.add_argument("--rounds", type=int, default=7, help="rounds of interleaved timings (default 7)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="on a shared machine: spend up to S seconds in all waiting for other processes "
                        "to leave the cores before each timing, and redoing disturbed ones; default 0")
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                   help=f"comma-separated sizes among {', '.join(SIZES)} (default {','.join(DEFAULT_SIZES)})")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="beside N processes spinning on a core each: SpikeLinear(backend='auto') at the "
                        "tutorial's density on the default threads against one thread (rows in cpu_busy.csv)")
    p.add_argument("--density", type=float, default=TUTORIAL_DENSITY, metavar="D",
                   help=f"--busy's input density (default {TUTORIAL_DENSITY}, the tutorial's; above "
                        f"DENSE_ABOVE = {ops.DENSE_ABOVE} auto runs the dense GEMM)")
    p.add_argument("--quick", action="store_true",
                   help="smoke check: small sizes, 3 densities, nothing written unless --csv / --png")
    p.add_argument("--csv", default=None, help=f"CSV name under bench/results/ (default {CSV})")
    p.add_argument("--png", default=None, help=f"figure path (default bench/results/{PNG})")
    p.add_argument("--replot", action="store_true",
                   help="only redraw the figure from the latest run in the CSV (no timing)")
    args = p.parse_args(argv)
    if args.replot:
        results, cross, sizes, densities, threads, device = from_csv(args.csv or CSV)
        print(f"figure: {plot(results, cross, sizes, densities, args.png or str(RESULTS / PNG), threads, device)}")
        return 0

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = cpu_name()
    chosen = [c for c in args.sizes.split(",") if c]
    unknown = [c for c in chosen if c not in SIZES]
    if unknown or not chosen:
        raise SystemExit(f"--sizes: unknown size(s) {', '.join(unknown) or '(none given)'}; expected some of {', '.join(SIZES)}")
    sizes, densities = (QUICK_SIZES, QUICK_DENSITIES) if args.quick else (SIZES, DENSITIES)
    sizes = {c: sizes[c] for c in chosen}
    rounds = 2 if args.quick else args.rounds
    min_round_s = 0.0 if args.quick else 0.05
    if args.busy:
        calls = {}
        for case, (T, B, K, N) in sizes.items():
            layer = make_layers(K, N)["auto"]
            gen = torch.Generator().manual_seed(1)
            spikes = torch.rand(T, B, K, generator=gen) < args.density
            upstream = torch.randn(T, B, N, generator=gen)
            for direction in DIRECTIONS:
                x = spikes.float() if (direction == FBI or case in FLOAT_INPUT) else spikes
                calls[(case, f"{T * B}x{K}->{N} d={args.density * 100:g}%", direction)] = \
                    make_call(layer, x, upstream, direction)
        run_busy("spike_linear", calls, args.busy, rounds, min_round_s,
                 args.csv or (None if args.quick else "cpu_busy.csv"))
        return 0
    print(f"fastlif SpikeLinear benchmark: {device}, {threads} threads, torch {torch_version()}, "
          f"backends {fastlif.backends.describe()}; load average {loadavg():.2f}; "
          f"DENSE_ABOVE = {ops.DENSE_ABOVE}")
    print("columns: median time per call of each provider, nn.Linear's time / the event kernels', "
          "share of the cores other processes kept busy")
    t0 = time.perf_counter()
    results, idle = {}, IdleWait(args.wait_idle)
    for case, (T, B, K, N) in sizes.items():
        run_case(case, T, B, K, N, densities, rounds, min_round_s, results, idle)
    cross = summarize(results, sizes, densities)

    print(f"\nCrossover densities (events = nn.Linear; DENSE_ABOVE = {ops.DENSE_ABOVE * 100:g}%):")
    for (case, direction), c in cross.items():
        print(f"   {case:<6} {direction:<24} " + ("none in the sweep" if c is None else f"{c * 100:.1f}%"))
    d = TUTORIAL_DENSITY if TUTORIAL_DENSITY in densities else densities[0]
    print(f"\nAt {d * 100:g}% density (the tutorial's Poisson spikes):")
    for case in sizes:
        for direction in DIRECTIONS:
            ev = results[(case, d, "events", direction)]["timing"]
            au = results[(case, d, "auto", direction)]["timing"]
            lin = results[(case, d, "nn_linear", direction)]["timing"]
            print(f"   {case:<6} {direction:<24} SpikeLinear {au[0]:.3f} ms (events {ev[0]:.3f}) vs "
                  f"nn.Linear {lin[0]:.3f} ms: {lin[0] / au[0]:.1f}x")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average at the end {loadavg():.2f}")

    csv_name = args.csv or (None if args.quick else CSV)
    if csv_name:
        path = append_rows(csv_name, csv_rows(results, cross, threads, device))
        print(f"rows appended to {path}")
    default_png = PNG if set(chosen) == set(DEFAULT_SIZES) else PNG.replace(".png", f"_{'_'.join(chosen)}.png")
    png = args.png or (None if args.quick else str(RESULTS / default_png))
    if png:
        print(f"figure: {plot(results, cross, sizes, densities, png, threads, device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU benchmark of fastlif.SpikeConv2d (the event-driven convolution) against nn.Conv2d over a
sweep of input densities: where the event kernels beat the dense convolution, and by how much.

Run from the repository root:  ``python -m bench.bench_spike_conv``  (``--quick``: a smoke
check on small sizes that writes nothing unless ``--csv`` is given; ``--replot``: redraw the
figure from the CSV's latest run; ``--wait-idle S`` on a shared machine; ``--busy N``: beside N
spinning processes, each target's call on the default threads against one thread, rows in
``bench/results/cpu_busy.csv``). Rows go to
``bench/results/spike_conv.csv`` (columns: ``bench.common.FIELDS``; the density is in the shape
label and in ``extra``), the figure to ``bench/results/spike_conv_crossover.png``.

Sizes, an N-MNIST conv net's (T=100, B=32: 3200 images; fp32, padding 0):

``input``   the input layer, 2 -> 12 channels, 5x5 kernel, 34x34 images (-> 30x30)
``hidden``  a hidden layer, 12 -> 64 channels, 5x5 kernel, 12x12 maps (-> 8x8)

The input is Bernoulli spikes of the given density, ``[T, B, C, H, W]``. Providers:

``events``      ``SpikeConv2d(backend="cpp")``: the event kernels at every density
``auto``        ``SpikeConv2d()``: the event kernels up to DENSE_ABOVE, the dense convolution above
``nn_conv2d``   ``nn.Conv2d`` with the same weights (oneDNN), on ``[T*B, C, H, W]``

SpikeConv2d gets the spikes as bool; nn.Conv2d gets them as float32, converted beforehand and
not timed (its best case). Directions: ``forward`` (no grad), ``forward+backward`` (weight and
bias gradients only: the input layer's case) and ``forward+backward_input`` (the input, float32
0/1, requires grad too: a hidden layer; the input gradient is torch's dense transposed
convolution for every provider). Timing as bench_spike_linear's: rounds that rotate the
providers, medians and 20/80 % quantiles of the rounds; the crossover is the density where the
``events`` and ``nn_conv2d`` medians meet (interpolated on log density).
"""
import argparse
import os
import sys
import time

import torch
from torch import nn

import fastlif
from fastlif.ops import spike_conv as ops
from fastlif.testing import normwise

from bench.bench_cpu import OthersBusy, loadavg
from bench.bench_spike_linear import IdleWait, crossover, interleaved, run_busy
from bench.common import RESULTS, append_rows, cpu_name, extra, read_rows, torch_version

CSV = "spike_conv.csv"
PNG = "spike_conv_crossover.png"
DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SIZES = {"input": (100, 32, 2, 12, 5, 34), "hidden": (100, 32, 12, 64, 5, 12)}  # T, B, C, O, k, H=W
QUICK_SIZES = {"input": (4, 8, 2, 12, 5, 34), "hidden": (4, 8, 12, 64, 5, 12)}
QUICK_DENSITIES = (0.02, 0.1, 0.5)
PROVIDERS = ("events", "auto", "nn_conv2d")
FWD, FB, FBI = "forward", "forward+backward", "forward+backward_input"
DIRECTIONS = (FWD, FB, FBI)
TARGETS = (("input", 0.02, FB, 5.0), ("hidden", 0.1, FWD, 2.0), ("hidden", 0.1, FBI, 1.0))  # case, d, dir, x


def make_layers(C, O, k, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(C, O, k)
    events = fastlif.SpikeConv2d(C, O, k, backend="cpp")
    auto = fastlif.SpikeConv2d(C, O, k, backend="auto")
    events.load_state_dict(conv.state_dict())
    auto.load_state_dict(conv.state_dict())
    return {"events": events, "auto": auto, "nn_conv2d": conv}


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


def run_case(case, T, B, C, O, k, H, densities, rounds, min_round_s, results, idle):
    N = T * B
    layers = make_layers(C, O, k)
    gen = torch.Generator().manual_seed(1)
    OH = H - k + 1
    upstream = torch.randn(N, O, OH, OH, generator=gen)
    print(f"\n== {case}: {T}x{B} = {N} images, {C}x{H}x{H} -> {O}x{OH}x{OH}, {k}x{k}; load average "
          f"{loadavg():.2f}", flush=True)
    print(f"   {'density':>8} {'direction':<24} " + " ".join(f"{p:>16}" for p in PROVIDERS) +
          "   nn/events  busy", flush=True)
    for d in densities:
        spikes = torch.rand(T, B, C, H, H, generator=gen) < d
        dense = spikes.float().reshape(N, C, H, H)
        with torch.no_grad():  # correctness, once per density
            want = layers["nn_conv2d"](dense)
            for name in ("events", "auto"):
                err = normwise(layers[name](spikes).reshape(want.shape), want)
                assert err < 1e-5, f"{case} density {d}: {name} differs from nn.Conv2d ({err:.1e})"
        load = loadavg()
        for direction in DIRECTIONS:
            calls = {}
            for name in PROVIDERS:
                if name == "nn_conv2d":
                    x, up = dense, upstream
                else:
                    x = dense.reshape(T, B, C, H, H) if direction == FBI else spikes
                    up = upstream.reshape(T, B, O, OH, OH)
                calls[name] = make_call(layers[name], x, up, direction)
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
                                                           shape=(T, B, C, O, k, H))
            ratio = timing["nn_conv2d"][0] / timing["events"][0]
            print(f"   {d * 100:7.2f}% {direction:<24} " +
                  " ".join(f"{timing[p][0]:>13.3f} ms" for p in PROVIDERS) +
                  f"   {ratio:8.2f}x  {busy.value * 100:3.0f}%", flush=True)


def label(shape):
    T, B, C, O, k, H = shape
    return f"{T * B}x{C}x{H}x{H}->{O} k{k}"


def csv_rows(results, cross, threads, device):
    rows = []
    for (case, d, name, direction), res in results.items():
        T, B, C, O, k, H = res["shape"]
        OH = H - k + 1
        med, q20, q80 = res["timing"]
        base = results[(case, d, "auto", direction)]["timing"][0]
        settings = {"events": "fastlif.SpikeConv2d(backend='cpp') on bool spikes [T, B, C, H, W]",
                    "auto": f"fastlif.SpikeConv2d(backend='auto', DENSE_ABOVE={ops.DENSE_ABOVE}) on bool spikes",
                    "nn_conv2d": "torch.nn.Conv2d on float32 spikes [T*B, C, H, W] (converted beforehand, untimed)"}[name]
        if direction == FBI:
            settings = settings.replace("bool spikes", "float32 spikes") + "; input requires grad"
        rows.append(dict(bench="spike_conv", case=case, shape=f"{label(res['shape'])} d={d * 100:g}%",
                         dtype="float32", provider=name, direction=direction, median_ms=f"{med:.6g}",
                         q20_ms=f"{q20:.6g}", q80_ms=f"{q80:.6g}", ratio_vs_fastlif=f"{med / base:.6g}",
                         throughput=f"{2 * T * B * O * C * k * k * OH * OH / (med * 1e-3):.6g}",
                         throughput_unit="dense-equivalent flop/s (2*N*O*C*k*k*OH*OW)", device=device,
                         torch=torch_version(),
                         extra=extra(density=d, threads=threads, load1=res["load"], busy_during=res["busy"],
                                     settings=settings)))
    for (case, direction), c in cross.items():
        shape = results[next(k for k in results if k[0] == case)]["shape"]
        rows.append(dict(bench="spike_conv", case=case, shape=f"{label(shape)} crossover",
                         dtype="float32", provider="crossover", direction=direction,
                         throughput="" if c is None else f"{c:.4g}",
                         throughput_unit="density where events = nn_conv2d", device=device,
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
    style = {"events": ("C0", "-o", "SpikeConv2d, event kernels (backend='cpp')"),
             "auto": ("C2", "--s", "SpikeConv2d, backend='auto'"),
             "nn_conv2d": ("C3", "-^", "nn.Conv2d (dense, oneDNN)")}
    for i, (case, shape) in enumerate(sizes.items()):
        for j, direction in enumerate(DIRECTIONS):
            ax = axes[i][j]
            for name in PROVIDERS:
                t = [results[(case, d, name, direction)]["timing"] for d in densities]
                color, fmt, lab = style[name]
                ax.plot(densities, [m for m, _, _ in t], fmt, color=color, label=lab, markersize=4)
                ax.fill_between(densities, [q for _, q, _ in t], [q for _, _, q in t], color=color, alpha=0.2)
            c = cross[(case, direction)]
            if c is not None:
                ax.axvline(c, color="0.4", linestyle=":", label=f"crossover {c * 100:.1f}%")
            ax.axvline(ops.DENSE_ABOVE, color="C2", linestyle=":", alpha=0.5,
                       label=f"DENSE_ABOVE {ops.DENSE_ABOVE * 100:g}%")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{case}: {label(shape)}, {direction}", fontsize=10)
            ax.set_xlabel("density of non-zero inputs")
            ax.set_ylabel("time per call (ms)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"fastlif.SpikeConv2d vs nn.Conv2d, fp32, {threads} threads, {device}", fontsize=11)
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
        N, C, H, rest = r["shape"].split("x", 3)
        W, O = rest.split(" ")[0].split("->")
        k = int(r["shape"].split(" k")[1].split(" ")[0])
        sizes[r["case"]] = (int(N), 1, int(C), int(O), k, int(H))
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
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="beside N processes spinning on a core each: SpikeConv2d(backend='auto') at each "
                        "target's density and direction, default threads against one (rows in cpu_busy.csv)")
    p.add_argument("--quick", action="store_true",
                   help="smoke check: small sizes, 3 densities, nothing written unless --csv / --png")
    p.add_argument("--cases", default=None, help="comma-separated cases to run (default: all)")
    p.add_argument("--densities", default=None, help="comma-separated densities (default: the sweep)")
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
    sizes, densities = (QUICK_SIZES, QUICK_DENSITIES) if args.quick else (SIZES, DENSITIES)
    if args.cases:
        sizes = {c: sizes[c] for c in args.cases.split(",")}
    if args.densities:
        densities = tuple(float(d) for d in args.densities.split(","))
    rounds = 2 if args.quick else args.rounds
    min_round_s = 0.0 if args.quick else 0.05
    if args.busy:
        calls = {}
        for case, d, direction, _ in TARGETS:
            if case not in sizes:
                continue
            T, B, C, O, k, H = sizes[case]
            layer = make_layers(C, O, k)["auto"]
            gen = torch.Generator().manual_seed(1)
            spikes = torch.rand(T, B, C, H, H, generator=gen) < d
            OH = H - k + 1
            upstream = torch.randn(T, B, O, OH, OH, generator=gen)
            x = spikes.float() if direction == FBI else spikes
            calls[(case, f"{label(sizes[case])} d={d * 100:g}%", direction)] = make_call(layer, x, upstream, direction)
        run_busy("spike_conv", calls, args.busy, rounds, min_round_s,
                 args.csv or (None if args.quick else "cpu_busy.csv"))
        return 0
    print(f"fastlif SpikeConv2d benchmark: {device}, {threads} threads, torch {torch_version()}, "
          f"backends {fastlif.backends.describe()}; load average {loadavg():.2f}; "
          f"DENSE_ABOVE = {ops.DENSE_ABOVE}")
    print("columns: median time per call of each provider, nn.Conv2d's time / the event kernels', "
          "share of the cores other processes kept busy")
    t0 = time.perf_counter()
    results, idle = {}, IdleWait(args.wait_idle)
    for case, shape in sizes.items():
        run_case(case, *shape, densities, rounds, min_round_s, results, idle)
    cross = {(case, direction): crossover(
        densities, [results[(case, d, "events", direction)]["timing"][0] for d in densities],
        [results[(case, d, "nn_conv2d", direction)]["timing"][0] for d in densities])
        for case in sizes for direction in DIRECTIONS}

    print(f"\nCrossover densities (events = nn.Conv2d; DENSE_ABOVE = {ops.DENSE_ABOVE * 100:g}%):")
    for (case, direction), c in cross.items():
        print(f"   {case:<6} {direction:<24} " + ("none in the sweep" if c is None else f"{c * 100:.1f}%"))
    print("\nTargets (nn.Conv2d's median / SpikeConv2d's, auto; 20-80 % quantiles in brackets):")
    for case, d, direction, want in TARGETS:
        if (case, d, "auto", direction) not in results:
            continue
        au = results[(case, d, "auto", direction)]["timing"]
        cv = results[(case, d, "nn_conv2d", direction)]["timing"]
        got = cv[0] / au[0]
        print(f"   {case:<6} {d * 100:g}% {direction:<24} SpikeConv2d {au[0]:.2f} ms [{au[1]:.2f}-{au[2]:.2f}] vs "
              f"nn.Conv2d {cv[0]:.2f} ms [{cv[1]:.2f}-{cv[2]:.2f}]: {got:.2f}x (target >= {want:g}x: "
              f"{'met' if got >= want else 'SHORT'})")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average at the end {loadavg():.2f}")

    csv_name = args.csv or (None if args.quick else CSV)
    if csv_name:
        path = append_rows(csv_name, csv_rows(results, cross, threads, device))
        print(f"rows appended to {path}")
    png = args.png or (None if args.quick else str(RESULTS / PNG))
    if png and not args.cases and not args.densities:
        print(f"figure: {plot(results, cross, sizes, densities, png, threads, device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
convolution for every provider). Timing as bench_spike_linear's (``bench/density_sweep.py``,
which also holds the crossover, the CSV rows, the figure and the flags the two share): rounds
that rotate the providers, medians and 20/80 % quantiles of the rounds; the crossover is the
density where the ``events`` and ``nn_conv2d`` medians meet (interpolated on log density).
"""
import sys

import torch
from torch import nn

import fastlif
from fastlif.ops import spike_conv as ops
from fastlif.testing import normwise

from bench.bench_cpu import loadavg
from bench.common import RESULTS
from bench.density_sweep import (DIRECTIONS, FB, FBI, FWD, Sweep, Timer, busy_csv, make_call, parse_args,
                                 print_head, replot, run_busy, run_sweep, time_point)

CSV = "spike_conv.csv"
PNG = "spike_conv_crossover.png"
DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SIZES = {"input": (100, 32, 2, 12, 5, 34), "hidden": (100, 32, 12, 64, 5, 12)}  # T, B, C, O, k, H=W
QUICK_SIZES = {"input": (4, 8, 2, 12, 5, 34), "hidden": (4, 8, 12, 64, 5, 12)}
QUICK_DENSITIES = (0.02, 0.1, 0.5)
TARGETS = (("input", 0.02, FB, 5.0), ("hidden", 0.1, FWD, 2.0), ("hidden", 0.1, FBI, 1.0))  # case, d, dir, x


def make_layers(C, O, k, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(C, O, k)
    events = fastlif.SpikeConv2d(C, O, k, backend="cpp")
    auto = fastlif.SpikeConv2d(C, O, k, backend="auto")
    events.load_state_dict(conv.state_dict())
    auto.load_state_dict(conv.state_dict())
    return {"events": events, "auto": auto, "nn_conv2d": conv}


def label(shape):
    T, B, C, O, k, H = shape
    return f"{T * B}x{C}x{H}x{H}->{O} k{k}"


def parse(shape_label):
    """(T, B, C, O, k, H) from a CSV shape label; B = 1, T the image count."""
    N, C, H, rest = shape_label.split("x", 3)
    W, O = rest.split(" ")[0].split("->")
    k = int(shape_label.split(" k")[1].split(" ")[0])
    return int(N), 1, int(C), int(O), k, int(H)


def settings(case, name, direction):
    text = {"events": "fastlif.SpikeConv2d(backend='cpp') on bool spikes [T, B, C, H, W]",
            "auto": f"fastlif.SpikeConv2d(backend='auto', DENSE_ABOVE={ops.DENSE_ABOVE}) on bool spikes",
            "nn_conv2d": "torch.nn.Conv2d on float32 spikes [T*B, C, H, W] (converted beforehand, untimed)"}[name]
    if direction == FBI:
        text = text.replace("bool spikes", "float32 spikes") + "; input requires grad"
    return text


def flops(shape):
    T, B, C, O, k, H = shape
    OH = H - k + 1
    return 2 * T * B * O * C * k * k * OH * OH


SWEEP = Sweep(bench="spike_conv", layer="SpikeConv2d", dense="nn_conv2d", dense_layer="nn.Conv2d",
              dense_legend="nn.Conv2d (dense, oneDNN)", ops=ops, csv=CSV, png=PNG, label=label, parse=parse,
              title=label, flops=flops, flops_unit="2*N*O*C*k*k*OH*OW", settings=settings)


def run_case(case, T, B, C, O, k, H, densities, results, timer):
    N = T * B
    layers = make_layers(C, O, k)
    gen = torch.Generator().manual_seed(1)
    OH = H - k + 1
    upstream = torch.randn(N, O, OH, OH, generator=gen)
    print(f"\n== {case}: {T}x{B} = {N} images, {C}x{H}x{H} -> {O}x{OH}x{OH}, {k}x{k}; load average "
          f"{loadavg():.2f}", flush=True)
    print_head(SWEEP)
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
            for name in SWEEP.providers:
                if name == "nn_conv2d":
                    x, up = dense, upstream
                else:
                    x = dense.reshape(T, B, C, H, H) if direction == FBI else spikes
                    up = upstream.reshape(T, B, O, OH, OH)
                calls[name] = make_call(layers[name], x, up, direction)
            time_point(SWEEP, results, calls, case, d, direction, (T, B, C, O, k, H), load, timer)


def targets_printout(results, sizes, densities):
    """The targets' speed-ups, where the run measured their case, density and direction."""
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


def own_arguments(p):
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="beside N processes spinning on a core each: SpikeConv2d(backend='auto') at each "
                        "target's density and direction, default threads against one (rows in cpu_busy.csv)")
    p.add_argument("--cases", default=None, help="comma-separated cases to run (default: all)")
    p.add_argument("--densities", default=None, help="comma-separated densities (default: the sweep)")


def main(argv=None):
    args = parse_args(SWEEP, __doc__, argv, own_arguments)
    if args.replot:
        return replot(SWEEP, args)

    torch.set_num_threads(args.threads)
    sizes, densities = (QUICK_SIZES, QUICK_DENSITIES) if args.quick else (SIZES, DENSITIES)
    if args.cases:
        sizes = {c: sizes[c] for c in args.cases.split(",")}
    if args.densities:
        densities = tuple(float(d) for d in args.densities.split(","))
    timer = Timer(args)
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
        run_busy(SWEEP.bench, calls, args.busy, timer.rounds, timer.min_round_s, busy_csv(args))
        return 0
    png = args.png or (None if args.quick else str(RESULTS / PNG))
    if args.cases or args.densities:
        png = None
    return run_sweep(SWEEP, args, timer, sizes, densities, run_case, targets_printout, png)


if __name__ == "__main__":
    sys.exit(main())

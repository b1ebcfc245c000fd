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
the ``events`` and ``nn_linear`` medians meet (interpolated on log density). The timing, the
crossover, the CSV rows, the figure and the flags it shares with bench_spike_conv are in
``bench/density_sweep.py``.
"""
import sys

import torch
from torch import nn

import fastlif
from fastlif.ops import spike_linear as ops
from fastlif.testing import normwise

from bench.bench_cpu import loadavg
from bench.common import RESULTS
from bench.density_sweep import (DIRECTIONS, FBI, Sweep, Timer, busy_csv, make_call, parse_args, print_head,
                                 replot, run_busy, run_sweep, time_point)

CSV = "spike_linear.csv"
PNG = "spike_linear_crossover.png"
DENSITIES = (0.005, 0.01, 0.0125, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
SIZES = {"fc1": (50, 64, 784, 128), "large": (100, 64, 2048, 1024), "fc2": (50, 64, 128, 10)}  # T, B, in, out
DEFAULT_SIZES = ("fc1", "large")
QUICK_SIZES = {"fc1": (5, 64, 784, 128), "large": (5, 64, 2048, 1024), "fc2": (5, 64, 128, 10)}
FLOAT_INPUT = {"fc2"}  # SpikeLinear fed float32 spikes (a hidden layer's), not bool
QUICK_DENSITIES = (0.01, 0.1, 0.5)
TUTORIAL_DENSITY = 0.0125


def make_layers(K, N, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(K, N)
    events = fastlif.SpikeLinear(K, N, backend="cpp")
    auto = fastlif.SpikeLinear(K, N, backend="auto")
    events.load_state_dict(lin.state_dict())
    auto.load_state_dict(lin.state_dict())
    return {"events": events, "auto": auto, "nn_linear": lin}


def label(shape):
    T, B, K, N = shape
    return f"{T * B}x{K}->{N}"


def title(shape):
    T, B, K, N = shape
    return f"{T * B}x{K} -> {N}"


def parse(shape_label):
    """(T, B, in, out) from a CSV shape label; B = 1, T the row count: the figure needs T * B only."""
    M, rest = shape_label.split("x", 1)
    K, N = rest.split(" ")[0].split("->")
    return int(M), 1, int(K), int(N)


def settings(case, name, direction):
    text = {"events": "fastlif.SpikeLinear(backend='cpp') on bool spikes",
            "auto": f"fastlif.SpikeLinear(backend='auto', DENSE_ABOVE={ops.DENSE_ABOVE}) on bool spikes",
            "nn_linear": "torch.nn.Linear on float32 spikes (converted beforehand, untimed)"}[name]
    if direction == FBI or case in FLOAT_INPUT:
        text = text.replace("bool spikes", "float32 spikes")
    if name == "auto":
        text += f", NARROW_OUT={ops.NARROW_OUT}"
    if direction == FBI:
        text += "; input requires grad"
    return text


def flops(shape):
    T, B, K, N = shape
    return 2 * T * B * K * N


SWEEP = Sweep(bench="spike_linear", layer="SpikeLinear", dense="nn_linear", dense_layer="nn.Linear",
              dense_legend="nn.Linear (dense GEMM)", ops=ops, csv=CSV, png=PNG, label=label, parse=parse,
              title=title, flops=flops, flops_unit="2*M*K*N", settings=settings)


def run_case(case, T, B, K, N, densities, results, timer):
    M = T * B
    layers = make_layers(K, N)
    gen = torch.Generator().manual_seed(1)
    upstream = torch.randn(T, B, N, generator=gen)
    print(f"\n== {case}: M = {T}x{B} = {M} rows, {K} -> {N}; load average {loadavg():.2f}", flush=True)
    print_head(SWEEP)
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
            for name in SWEEP.providers:
                x = dense if (name == "nn_linear" or direction == FBI or case in FLOAT_INPUT) else spikes
                calls[name] = make_call(layers[name], x, upstream, direction)
            time_point(SWEEP, results, calls, case, d, direction, (T, B, K, N), load, timer)


def tutorial_printout(results, sizes, densities):
    """SpikeLinear (auto) against nn.Linear at the tutorial's density (else the sweep's lowest)."""
    d = TUTORIAL_DENSITY if TUTORIAL_DENSITY in densities else densities[0]
    print(f"\nAt {d * 100:g}% density (the tutorial's Poisson spikes):")
    for case in sizes:
        for direction in DIRECTIONS:
            ev = results[(case, d, "events", direction)]["timing"]
            au = results[(case, d, "auto", direction)]["timing"]
            lin = results[(case, d, "nn_linear", direction)]["timing"]
            print(f"   {case:<6} {direction:<24} SpikeLinear {au[0]:.3f} ms (events {ev[0]:.3f}) vs "
                  f"nn.Linear {lin[0]:.3f} ms: {lin[0] / au[0]:.1f}x")


def own_arguments(p):
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                   help=f"comma-separated sizes among {', '.join(SIZES)} (default {','.join(DEFAULT_SIZES)})")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="beside N processes spinning on a core each: SpikeLinear(backend='auto') at the "
                        "tutorial's density on the default threads against one thread (rows in cpu_busy.csv)")
    p.add_argument("--density", type=float, default=TUTORIAL_DENSITY, metavar="D",
                   help=f"--busy's input density (default {TUTORIAL_DENSITY}, the tutorial's; above "
                        f"DENSE_ABOVE = {ops.DENSE_ABOVE} auto runs the dense GEMM)")


def main(argv=None):
    args = parse_args(SWEEP, __doc__, argv, own_arguments)
    if args.replot:
        return replot(SWEEP, args)

    torch.set_num_threads(args.threads)
    chosen = [c for c in args.sizes.split(",") if c]
    unknown = [c for c in chosen if c not in SIZES]
    if unknown or not chosen:
        raise SystemExit(f"--sizes: unknown size(s) {', '.join(unknown) or '(none given)'}; "
                         f"expected some of {', '.join(SIZES)}")
    sizes, densities = (QUICK_SIZES, QUICK_DENSITIES) if args.quick else (SIZES, DENSITIES)
    sizes = {c: sizes[c] for c in chosen}
    timer = Timer(args)
    if args.busy:
        calls = {}
        for case, (T, B, K, N) in sizes.items():
            layer = make_layers(K, N)["auto"]
            gen = torch.Generator().manual_seed(1)
            spikes = torch.rand(T, B, K, generator=gen) < args.density
            upstream = torch.randn(T, B, N, generator=gen)
            for direction in DIRECTIONS:
                x = spikes.float() if (direction == FBI or case in FLOAT_INPUT) else spikes
                calls[(case, f"{label((T, B, K, N))} d={args.density * 100:g}%", direction)] = \
                    make_call(layer, x, upstream, direction)
        run_busy(SWEEP.bench, calls, args.busy, timer.rounds, timer.min_round_s, busy_csv(args))
        return 0
    # a figure of other sizes than the default gets a name of its own, so as not to replace the default's
    default_png = PNG if set(chosen) == set(DEFAULT_SIZES) else PNG.replace(".png", f"_{'_'.join(chosen)}.png")
    png = args.png or (None if args.quick else str(RESULTS / default_png))
    return run_sweep(SWEEP, args, timer, sizes, densities, run_case, tutorial_printout, png)


if __name__ == "__main__":
    sys.exit(main())

"""The per-step call (issue 19): ``spk, mem = lif(x, mem)``, one step at a time, as a user who
only swaps ``import snntorch as snn`` for fastlif runs it. fastlif against snnTorch with the
same settings (defaults: atan surrogate, subtract reset, ``init_hidden=False``), for Leaky,
Synaptic, RLeaky(all_to_all=False, V) and RLeaky(linear_features=N):

* ``forward``: one step under ``torch.no_grad()``;
* ``forward+backward``: one step from an input and states that require grad, then backward of
  every output (fixed upstream gradients), parameters' gradients included (RLeaky's V and its
  Linear learn by default);
* ``loop25``: T=25 per-step calls (states carried), then one backward through all the steps.

The providers are interleaved sample by sample in one process (default allocator, torch's
default thread count), so a noisy machine hits both alike; ``ratio_vs_fastlif`` is a row's
median over fastlif's (above 1: fastlif is faster). Rows go to ``bench/results/step.csv``.

    python -m bench.bench_step                     # every neuron, B=128 N=1000 and B=32 N=256
    python -m bench.bench_step --threads 1         # the same with torch (and fastlif) on 1 thread
    python -m bench.bench_step --neurons leaky --shapes 32x256 --min-time 1 --no-csv

On a loaded 2-core machine torch's 2-thread ops (snnTorch's element-wise ops at B=128 N=1000,
and the Linear's GEMM of RLeaky(linear_features) in both libraries) wait for a preempted thread
now and then (a scheduler tick, milliseconds): the q80 column shows it. ``--threads 1`` measures
the same calls without that. The ``note`` in ``extra`` tells runs apart (before/after a change).
"""
import argparse
import statistics
import time

import torch

from bench.common import append_rows, cpu_name, extra, torch_version

NEURONS = ("leaky", "synaptic", "rleaky_v", "rleaky_linear")
SHAPES = ((128, 1000), (32, 256))
MODES = ("forward", "forward+backward", "loop25")
LOOP_T = 25


def build(lib, neuron, N):
    """The layer (same initial parameters for both libraries) and its number of states."""
    torch.manual_seed(0)
    if neuron == "leaky":
        return lib.Leaky(beta=0.9), ("mem",)
    if neuron == "synaptic":
        return lib.Synaptic(alpha=0.8, beta=0.9), ("syn", "mem")
    if neuron == "rleaky_v":
        return lib.RLeaky(beta=0.9, all_to_all=False, V=0.5), ("spk", "mem")
    if neuron == "rleaky_linear":
        layer = lib.RLeaky(beta=0.9, linear_features=N)
        with torch.no_grad():  # the same weights in both libraries
            layer.recurrent.weight.copy_(torch.randn(N, N, generator=torch.Generator().manual_seed(1)) * 0.05)
            layer.recurrent.bias.zero_()
        return layer, ("spk", "mem")
    raise ValueError(neuron)


def cases(lib, neuron, B, N):
    """``{mode: fn}`` for one library: each fn runs one sample of its mode."""
    layer, states = build(lib, neuron, N)
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(B, N, generator=gen) * 1.2).requires_grad_()
    xs = [(torch.rand(B, N, generator=gen) * 1.2).requires_grad_() for _ in range(LOOP_T)]
    init = [torch.rand(B, N, generator=gen) * 0.5 for _ in states]
    if states[0] == "spk":
        init[0] = (init[0] > 0.4).float()
    init = [s.requires_grad_() for s in init]
    n_out = 1 + (2 if neuron == "synaptic" else 1)
    grads = [torch.randn(B, N, generator=gen) for _ in range(n_out)]
    params = [p for p in layer.parameters()]

    def forward():
        with torch.no_grad():
            layer(x, *init)

    def forward_backward():
        out = layer(x, *init)
        torch.autograd.backward(out, grads)
        for t in (x, *init, *params):
            t.grad = None

    def loop():
        carried = [s.detach() for s in init]
        spks = []
        for xt in xs:
            out = layer(xt, *carried)
            spk = out[0]
            carried = [spk, out[-1]] if states[0] == "spk" else list(out[1:])
            spks.append(spk)
        loss = torch.stack(spks).sum() + carried[-1].sum()
        loss.backward()
        for t in (*xs, *params):
            t.grad = None

    return {"forward": forward, "forward+backward": forward_backward, "loop25": loop}


def interleaved(fns, *, warmup, min_samples, min_time_s):
    """Per-provider sorted samples (ms): the providers alternate sample by sample (the order
    flipped each round)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    samples = {n: [] for n in names}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_samples or time.perf_counter() - start < min_time_s:
        for n in (names if rounds % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            samples[n].append((time.perf_counter() - t0) * 1e3)
        rounds += 1
    return {n: sorted(s) for n, s in samples.items()}


def summary(s):
    q = statistics.quantiles(s, n=5) if len(s) > 1 else s * 4
    return statistics.median(s), q[0], q[3]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neurons", nargs="+", default=list(NEURONS), choices=NEURONS)
    ap.add_argument("--shapes", nargs="+", default=[f"{b}x{n}" for b, n in SHAPES])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds of samples per case (both providers)")
    ap.add_argument("--min-samples", type=int, default=30)
    ap.add_argument("--no-csv", action="store_true")
    ap.add_argument("--note", default="", help="a word for the CSV's extra column (e.g. before/after)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's own count). On a loaded machine torch's "
                         "2-thread element-wise ops can stall for a scheduler tick; 1 thread shows the cost without that")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import snntorch
    import fastlif

    rows = []
    print(f"threads={torch.get_num_threads()} torch {torch.__version__} snntorch {snntorch.__version__}")
    print(f"{'neuron':<14}{'shape':>9} {'mode':<17}{'fastlif ms (q20-q80)':>26}{'snntorch ms (q20-q80)':>27}"
          f"{'speedup':>9}")
    for shape in args.shapes:
        B, N = map(int, shape.split("x"))
        for neuron in args.neurons:
            fns = {"fastlif": cases(fastlif, neuron, B, N), "snntorch": cases(snntorch, neuron, B, N)}
            for mode in args.modes:
                loop = mode == "loop25"
                res = interleaved({p: f[mode] for p, f in fns.items()}, warmup=3 if loop else 20,
                                  min_samples=10 if loop else args.min_samples, min_time_s=args.min_time)
                stats = {p: summary(s) for p, s in res.items()}
                base = stats["fastlif"][0]
                speedup = stats["snntorch"][0] / base
                cell = {p: f"{m:8.4f} ({lo:.4f}-{hi:.4f})" for p, (m, lo, hi) in stats.items()}
                print(f"{neuron:<14}{shape:>9} {mode:<17}{cell['fastlif']:>26}{cell['snntorch']:>27}"
                      f"{speedup:>8.2f}x", flush=True)
                steps = LOOP_T if loop else 1
                for p, (m, lo, hi) in stats.items():
                    rows.append(dict(bench="step", case=neuron, shape=f"{B}x{N}", dtype="float32", provider=p,
                                     direction=mode, median_ms=f"{m:.6g}", q20_ms=f"{lo:.6g}", q80_ms=f"{hi:.6g}",
                                     ratio_vs_fastlif=f"{m / base:.4g}",
                                     throughput=f"{B * N * steps / m * 1e3:.4g}", throughput_unit="neuron-steps/s",
                                     device=cpu_name(), torch=torch_version(),
                                     extra=extra(threads=torch.get_num_threads(), samples=len(res[p]),
                                                 snntorch=snntorch.__version__, note=args.note or "-")))
    if not args.no_csv:
        print("rows ->", append_rows("step.csv", rows))


if __name__ == "__main__":
    main()

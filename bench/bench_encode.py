"""Poisson rate encoding on the CPU: fastlif's fast encoder against the tutorial's, snnTorch's and
SpikingJelly's.

Run from the repository root:  ``python -m bench.bench_encode``  (``--quick``: the tutorial's size
only, fewer repetitions). Rows go to ``bench/results/encode.csv`` (columns:
``bench.common.FIELDS``).

Every provider encodes the same images ``[B, 784]`` into ``[T, B, 784]`` spike trains in which
each (t, b, i) fires independently with ``p = clamp(x * 100 Hz * 1 ms, 0, 1)``:

``fastlif``              ``fastlif.encode.poisson(x, T, method="fast")``: geometric skips in C++
                         (OpenMP, torch's thread count), bool spikes
``fastlif_events``       the same with ``return_events=True``: also the CSR
                         ``fastlif.events.SpikeEvents`` of the spikes
``fastlif_1thread``      ``fastlif`` with ``torch.set_num_threads(1)``
``tutorial``             the tutorial's ``poisson_encode`` verbatim (``torch.rand`` of
                         ``[T, B, N]`` < p; = ``fastlif.encode.poisson``'s default method)
``snntorch_rate``        ``snntorch.spikegen.rate(p, num_steps=T)``: its rate coding fires with
                         probability equal to its input, so it is given ``p`` itself (computed
                         once, outside the timing); float spikes
``spikingjelly_poisson`` SpikingJelly's ``encoding.PoissonEncoder()`` on ``p.expand(T, B, N)``:
                         it also fires with probability equal to its input, so it is given ``p``,
                         all T steps in one call (its fastest form); float spikes

Cases: ``digits`` (the offline digit images of ``fastlif.tutorial.data``, MNIST-like: 64 % of the
pixels are 0, ~1.6 % of the spike-steps fire), ``rand3`` (``torch.rand(B, 784) ** 3``: no zero
pixels, ~2.5 % fire), both at the tutorial's size (B=64, T=50), and ``large`` (rand3 at B=256,
T=200). Calls are timed in rounds that rotate the providers, so a busy machine slows all of them
alike; medians and 20/80 % quantiles over all calls, ratios = provider / fastlif. The load
average and the share of the cores that other processes kept busy during each case
(``others_busy``) are printed and recorded: on a machine shared with other jobs, a team of
OpenMP threads waits for a preempted member (a scheduler tick, 4-8 ms), so multi-threaded calls
(fastlif's, and torch's own ops in the tutorial's) are then slowed far more than one thread;
``--wait-idle S`` waits up to S seconds for the other processes to leave the cores first.
"""
import argparse
import os
import sys
import time

import torch

from bench.bench_cpu import OthersBusy, wait_idle
from bench.bench_demo_epoch import quantiles, tutorial_poisson_encode
from bench.common import Spinners, append_rows, cpu_name, extra, torch_version

RATE, DT, N_PIX = 100.0, 1e-3, 784
CSV = "encode.csv"


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def digit_images(batch):
    """``batch`` offline digit images ``[batch, 784]`` (sklearn's digits in MNIST's format), or None
    when they cannot be had."""
    try:
        from fastlif.tutorial import data
        split = data.load("digits", "./data", 10000, seed=0, log=lambda *a: None)
    except Exception as err:  # noqa: BLE001 - an optional case
        print(f"digits unavailable ({err}); skipping that case")
        return None
    return split.train_x[:batch].reshape(batch, -1).contiguous()


def providers(T):
    """(name, fn(x, p, g) -> spikes) for every provider that can run here."""
    from fastlif import encode

    def fast_1thread(x, p, g):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return encode.poisson(x, T, RATE, DT, rng=g, method="fast")
        finally:
            torch.set_num_threads(before)

    out = [
        ("fastlif", lambda x, p, g: encode.poisson(x, T, RATE, DT, rng=g, method="fast")),
        ("fastlif_events", lambda x, p, g: encode.poisson(x, T, RATE, DT, rng=g, method="fast",
                                                          return_events=True)[0]),
        ("fastlif_1thread", fast_1thread),
        ("tutorial", lambda x, p, g: tutorial_poisson_encode(x, T, RATE, DT, g)),
    ]
    try:
        from snntorch import spikegen
        out.append(("snntorch_rate", lambda x, p, g: spikegen.rate(p, num_steps=T)))
    except ImportError:
        print("snntorch is not installed: skipping snntorch_rate")
    try:
        from spikingjelly.activation_based import encoding
        sj = encoding.PoissonEncoder()
        out.append(("spikingjelly_poisson", lambda x, p, g: sj(p.expand(T, *p.shape))))
    except ImportError:
        print("spikingjelly is not installed: skipping spikingjelly_poisson")
    return out


def run_case(case, x, T, rounds, calls, rows, wait_s):
    B = x.shape[0]
    p = torch.clamp(x * RATE * DT, 0.0, 1.0)  # what snnTorch and SpikingJelly are given
    provs = providers(T)
    times = {name: [] for name, _ in provs}
    rates = {}
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    for name, fn in provs:  # warm-up, and the fraction of spike-steps each gives
        for _ in range(2):
            spikes = fn(x, p, g)
        rates[name] = float(spikes.float().mean())
    if wait_s > 0:
        wait_idle(wait_s)
    loads = [loadavg()]
    with OthersBusy() as others:
        for r in range(rounds):
            order = provs[r % len(provs):] + provs[:r % len(provs)]
            for name, fn in order:
                for _ in range(calls):
                    t0 = time.perf_counter()
                    fn(x, p, g)
                    times[name].append((time.perf_counter() - t0) * 1e3)
            loads.append(loadavg())
    base = quantiles(times["fastlif"])[0]
    print(f"\n{case}: T={T} B={B} N={x.shape[1]}, mean p {float(p.mean()):.4f}, "
          f"{torch.get_num_threads()} threads, load average {min(loads):.2f}-{max(loads):.2f}, "
          f"others kept {others.value:.0%} of the cores busy")
    print(f"{'provider':<22} {'median ms':>10} {'q20':>8} {'q80':>8} {'vs fastlif':>11} {'spike frac':>11}")
    for name, _ in provs:
        med, q20, q80 = quantiles(times[name])
        ratio = med / base
        print(f"{name:<22} {med:>10.3f} {q20:>8.3f} {q80:>8.3f} {ratio:>10.2f}x {rates[name]:>11.4f}")
        rows.append({
            "bench": "encode", "case": case, "shape": f"T{T}xB{B}x{x.shape[1]}", "dtype": "float32",
            "provider": name, "direction": "forward", "median_ms": f"{med:.4g}", "q20_ms": f"{q20:.4g}",
            "q80_ms": f"{q80:.4g}", "ratio_vs_fastlif": f"{ratio:.3f}", "throughput": f"{B / med * 1e3:.1f}",
            "throughput_unit": "images/s", "device": cpu_name(), "torch": torch_version(),
            "extra": extra(threads=1 if name == "fastlif_1thread" else torch.get_num_threads(),
                           samples=len(times[name]), spike_frac=rates[name], mean_p=float(p.mean()),
                           loadavg_min=min(loads), loadavg_max=max(loads), others_busy=others.value),
        })


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the tutorial's size only, fewer repetitions")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 10, quick 3)")
    ap.add_argument("--calls", type=int, default=None, help="calls per provider and round (default 20, quick 10)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before each case, wait up to S seconds for other processes to leave the cores")
    ap.add_argument("--no-csv", action="store_true", help="print only, append nothing")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="beside N processes spinning on a core each (a busy machine); cases busyN_*")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 10)
    calls = args.calls or (10 if args.quick else 20)

    from fastlif import backends
    print(f"Poisson encoding, rate {RATE:g} Hz, dt {DT * 1e3:g} ms; backends: {backends.describe()}; "
          f"load average {loadavg():.2f}")
    g = torch.Generator().manual_seed(0)
    cases = []
    digits = digit_images(64)
    if digits is not None:
        cases.append(("digits", digits, 50))
    cases.append(("rand3", torch.rand(64, N_PIX, generator=g) ** 3, 50))
    if not args.quick:
        cases.append(("large", torch.rand(256, N_PIX, generator=g) ** 3, 200))
    rows = []
    from contextlib import nullcontext
    with (Spinners(args.busy) if args.busy else nullcontext()):
        for case, x, T in cases:
            run_case(f"busy{args.busy}_{case}" if args.busy else case, x, T,
                     rounds if case != "large" else max(1, rounds // 2), calls, rows,
                     0.0 if args.busy else args.wait_idle)
    if not args.no_csv:
        print(f"\n{len(rows)} rows appended to {append_rows(CSV, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

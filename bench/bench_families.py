"""The neurons on the family spec (issue 20) against their peers' own CPU paths, forward +
backward over a sequence at T=50, B=64, N=128 (the tutorial's size):

* snnTorch's ``Lapicque``, ``Alpha``, ``RSynaptic`` (one-to-one V): snnTorch's per-step loop
  against fastlif's ``layer.sequence(x_seq)`` (one fused call each way);
* ``Synaptic`` (on the spec since issue 20), and ``Leaky`` (its own kernels) as the yardstick;
* SpikingJelly's ``LIFNode`` and ``ParametricLIFNode``: SpikingJelly's own multi-step module
  (``step_mode='m'``, its default CPU path) against ``fastlif.spikingjelly``'s.

The loss is the spikes against fixed random upstream gradients; backward reaches the input and
every learnable parameter. Providers are interleaved sample by sample in one process (default
allocator, torch's thread setting); ``ratio_vs_fastlif`` is the peer's median over fastlif's.
Rows go to ``bench/results/families.csv``.

    python -m bench.bench_families                    # every neuron, 2 threads (torch's default)
    python -m bench.bench_families --threads 1 --repeat 21
"""
import argparse
import statistics
import time

import torch

from bench.common import append_rows, cpu_name, extra, torch_version

T, B, N = 50, 64, 128


def _snntorch_pair(name, **kw):
    import snntorch
    import fastlif

    def build(lib):
        torch.manual_seed(0)
        return getattr(lib, name)(**kw)

    peer, ours = build(snntorch), build(fastlif)

    def run_peer(x):
        """snnTorch's loop as its docs write it: zero states from reset_mem, carried by hand."""
        init = peer.reset_mem()
        states = init if isinstance(init, tuple) else (init,)
        spikes = []
        for x_t in x:
            out = peer(x_t, *states)
            spikes.append(out[0])
            states = out if name == "RSynaptic" else out[1:]  # RSynaptic takes (spk, syn, mem) back
        return torch.stack(spikes)

    return run_peer, (lambda x: ours.sequence(x)[0])


def _spikingjelly_pair(name, **kw):
    from spikingjelly.activation_based import functional, neuron
    import fastlif.spikingjelly as fsj
    peer = getattr(neuron, name)(step_mode="m", **kw)
    ours = getattr(fsj, name)(step_mode="m", **kw)

    def run(module, reset):
        def fn(x):
            reset(module)
            return module(x)
        return fn

    return run(peer, functional.reset_net), run(ours, lambda m: m.reset())


NEURONS = {
    "leaky (yardstick)": lambda: _snntorch_pair("Leaky", beta=0.9),
    "synaptic": lambda: _snntorch_pair("Synaptic", alpha=0.8, beta=0.9),
    "lapicque": lambda: _snntorch_pair("Lapicque", beta=0.9),
    "alpha": lambda: _snntorch_pair("Alpha", alpha=0.9, beta=0.8),
    "rsynaptic_v": lambda: _snntorch_pair("RSynaptic", alpha=0.8, beta=0.9, all_to_all=False, V=0.5),
    "sj_lif": lambda: _spikingjelly_pair("LIFNode", tau=2.0),
    "sj_plif": lambda: _spikingjelly_pair("ParametricLIFNode", init_tau=2.0),
}


def sample(fn, x, up):
    x = x.detach().requires_grad_()
    start = time.perf_counter()
    spk = fn(x)
    torch.autograd.backward(spk, up)
    return (time.perf_counter() - start) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--neurons", nargs="+", default=list(NEURONS), choices=list(NEURONS))
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-csv", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, N, generator=g) * 0.6 + 0.3
    up = torch.randn(T, B, N, generator=g)
    rows = []
    print(f"{'neuron':<18}{'peer ms':>10}{'fastlif ms':>12}{'ratio':>8}   spread (q20-q80 of the ratio)")
    for name in args.neurons:
        try:
            peer, ours = NEURONS[name]()
        except (ImportError, AttributeError) as err:
            print(f"{name:<18}skipped: {err}")
            continue
        for fn in (peer, ours):  # warm-up
            sample(fn, x, up)
        times = {"peer": [], "fastlif": []}
        for _ in range(args.repeat):
            times["peer"].append(sample(peer, x, up))
            times["fastlif"].append(sample(ours, x, up))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios = sorted(a / b for a, b in zip(times["peer"], times["fastlif"]))
        q20, q80 = ratios[len(ratios) // 5], ratios[(4 * len(ratios)) // 5]
        print(f"{name:<18}{med['peer']:>10.2f}{med['fastlif']:>12.3f}{med['peer'] / med['fastlif']:>8.1f}x"
              f"   {q20:.1f}-{q80:.1f}x")
        for provider in ("peer", "fastlif"):
            qs = sorted(times[provider])
            rows.append(dict(bench="families", case=name, shape=f"T{T}xB{B}xN{N}", dtype="float32",
                             provider=("snntorch" if not name.startswith("sj") else "spikingjelly")
                             if provider == "peer" else "fastlif",
                             direction="forward+backward", median_ms=f"{med[provider]:.4f}",
                             q20_ms=f"{qs[len(qs) // 5]:.4f}", q80_ms=f"{qs[(4 * len(qs)) // 5]:.4f}",
                             ratio_vs_fastlif=f"{med[provider] / med['fastlif']:.3f}", device=cpu_name(),
                             torch=torch_version(),
                             extra=extra(threads=torch.get_num_threads(), repeat=args.repeat)))
    if rows and not args.no_csv:
        print("rows appended to", append_rows("families.csv", rows))


if __name__ == "__main__":
    main()

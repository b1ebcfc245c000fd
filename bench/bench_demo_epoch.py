"""One training epoch of the tutorial's TinySNN: snnTorch's step loop against fused fastlif.

Run from the repository root:  ``python -m bench.bench_demo_epoch``
Rows go to ``bench/results/demo_epoch.csv`` (columns: ``bench.common.FIELDS``).

What is timed is the tutorial's training step on the demo's data (the offline digits,
10k-image training subset, so no download is needed; MNIST batches cost the same):
Poisson-encode a batch of 64 images for T=50 steps at up to 100 Hz, forward
784-128-10 with two LIF layers (beta 0.9, fast-sigmoid surrogate), count cross-entropy,
backward, Adam (lr 1e-3, weight decay 1e-5). Providers:

``snntorch``           the tutorial's code: ``snn.Leaky`` called step by step in a Python loop,
                       ``snntorch.functional.ce_count_loss``, the tutorial's ``poisson_encode``
``fastlif-events``     what ``make demo`` runs: ``fastlif.tutorial.model.TinySNN`` as it comes
                       (``fc1``/``fc2`` are ``SpikeLinear``, visiting only the non-zero inputs;
                       ``Leaky.sequence`` fused over T), the fast encoder
                       (``method="fast"``) handing its events straight to ``fc1``
``fastlif``            the previous release's network: the same TinySNN with the tutorial's
                       ``nn.Linear`` (``spike_linear=False``, dense GEMMs on the spikes) and the
                       tutorial's encoder
``fastlif-reference``  the ``fastlif`` network on fastlif's reference loop backend

All start from the same weights and see the same batches; all but ``fastlif-events`` also see
the same spikes (the fast encoder draws the same law, other spikes).
Directions: ``train_epoch`` (the whole step, as a user's epoch), ``train_epoch_network``
(the same with the spikes encoded beforehand: the network's share alone) and ``encode``
(the Poisson encoding alone, identical for all). Epoch times are the median time per
batch times the number of batches in an epoch; batches are timed in rounds that rotate the
providers, so a busy machine slows all of them alike. The load average is recorded.
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch

from bench.common import Spinners, append_rows, cpu_name, cpu_steal_jiffies, extra, torch_version, wait_policy_label

T_STEPS, BATCH, RATE, DT = 50, 64, 100.0, 1e-3
CSV = "demo_epoch.csv"


def tutorial_poisson_encode(images, num_steps, max_rate_hz=100.0, dt=1e-3, rng=None):
    """The tutorial's encoder, verbatim."""
    if images.dim() > 2:
        B = images.size(0)
        flat = images.view(B, -1)
        N = images[0].numel()
    else:
        B, N = images.shape
        flat = images
    if rng is None:
        rng = torch.Generator(device=images.device)
    lam = flat * max_rate_hz
    p = torch.clamp(lam * dt, 0.0, 1.0)
    rand = torch.rand((num_steps, B, N), generator=rng, device=images.device)
    return rand < p


def tutorial_model():
    """The tutorial's TinySNN with snnTorch's Leaky, stepped in its Python loop."""
    import snntorch as snn
    from snntorch import surrogate

    from fastlif.tutorial.model import TinySNN
    return TinySNN(lif_cls=snn.Leaky, spike_grad=surrogate.fast_sigmoid(), fused=False)


class Provider:
    def __init__(self, name, model, loss_fn, encode):
        self.name, self.model, self.loss_fn, self.encode = name, model, loss_fn, encode
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
        self.times = {"train_epoch": [], "train_epoch_network": [], "encode": []}

    def step(self, imgs, labels, gen, spikes=None):
        spikes = self.encode(imgs, T_STEPS, RATE, DT, gen) if spikes is None else spikes
        spk_rec = self.model(spikes)
        loss = self.loss_fn(spk_rec, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()


PROVIDERS = ("snntorch", "fastlif-events", "fastlif", "fastlif-reference")


def fast_encode(images, num_steps, max_rate_hz, dt, rng):
    """The demo's encoding: the fast encoder's events, which TinySNN's SpikeLinear fc1 takes."""
    from fastlif import encode
    return encode.poisson(images, num_steps, max_rate_hz=max_rate_hz, dt=dt, rng=rng, method="fast",
                          return_events=True)[1]


def make_providers(names):
    import snntorch.functional as SF

    from fastlif import encode, losses
    from fastlif.tutorial.model import TinySNN

    base = tutorial_model()
    state = base.state_dict()
    out = []
    for name in names:
        if name == "snntorch":
            model = copy.deepcopy(base)
            out.append(Provider(name, model, SF.ce_count_loss(), tutorial_poisson_encode))
        elif name == "fastlif-events":
            model = TinySNN()
            model.load_state_dict(state)
            out.append(Provider(name, model, losses.ce_count_loss(), fast_encode))
        elif name in ("fastlif", "fastlif-reference"):
            model = TinySNN(backend="cpp" if name == "fastlif" else "reference", spike_linear=False)
            model.load_state_dict(state)
            out.append(Provider(name, model, losses.ce_count_loss(),
                                lambda x, T, r, dt, g: encode.poisson(x, T, max_rate_hz=r, dt=dt, rng=g)))
        else:
            raise SystemExit(f"unknown provider {name!r}; expected some of {', '.join(PROVIDERS)}")
    return out


def quantiles(samples):
    samples = sorted(samples)
    if len(samples) < 2:
        return samples[0], samples[0], samples[0]
    q = statistics.quantiles(samples, n=5)
    return statistics.median(samples), q[0], q[3]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=40,
                    help="batches timed per provider and round (default 40; an epoch has 156)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, providers rotated (default 3)")
    ap.add_argument("--providers", default=",".join(PROVIDERS))
    ap.add_argument("--dataset", default="digits", choices=("digits", "mnist", "auto"))
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--no-csv", action="store_true", help="print only, append nothing")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="time beside N processes spinning on a core each (a busy machine); the case "
                         "name says so")
    args = ap.parse_args(argv)

    from fastlif import backends
    from fastlif.tutorial import data

    split = data.load(args.dataset, "./data", args.subset, seed=0, log=print)
    n_epoch = data.num_batches(len(split.train_y), BATCH, drop_last=True)
    batches = list(data.batches(split.train_x, split.train_y, BATCH, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(0)))
    nb = min(args.batches, len(batches))
    torch.manual_seed(0)
    providers = make_providers(args.providers.split(","))
    pre = [tutorial_poisson_encode(x, T_STEPS, RATE, DT, torch.Generator().manual_seed(i))
           for i, (x, _) in enumerate(batches[:nb])]
    loads = []
    print(f"TinySNN epoch on {split.name} ({n_epoch} batches of {BATCH}, T={T_STEPS}); timing {nb} "
          f"batches x {args.rounds} rounds per provider; {torch.get_num_threads()} threads; "
          f"backends: {backends.describe()}")
    for p in providers:  # warm-up (first calls build caches, allocate)
        for i in range(2):
            p.step(*batches[i], torch.Generator().manual_seed(i))
    spinners = Spinners(args.busy) if args.busy else None
    if spinners:
        spinners.__enter__()
    steal0, timed0 = cpu_steal_jiffies(), time.perf_counter()
    for r in range(args.rounds):
        loads.append(os.getloadavg()[0])
        order = providers[r % len(providers):] + providers[:r % len(providers)]
        for p in order:
            for i in range(nb):
                imgs, labels = batches[i]
                g = torch.Generator().manual_seed(i)
                t0 = time.perf_counter()
                spikes = p.encode(imgs, T_STEPS, RATE, DT, g)
                t1 = time.perf_counter()
                p.step(imgs, labels, None, spikes=spikes)
                t2 = time.perf_counter()
                p.step(imgs, labels, None, spikes=pre[i])
                t3 = time.perf_counter()
                p.times["train_epoch"].append(t2 - t0)
                p.times["encode"].append(t1 - t0)
                p.times["train_epoch_network"].append(t3 - t2)
        print(f"  round {r + 1}/{args.rounds} done (load average {loads[-1]:.2f})", flush=True)
    steal1, timed = cpu_steal_jiffies(), time.perf_counter() - timed0
    if spinners:
        spinners.__exit__(None, None, None)
    # the share of the machine's CPU time its host took while the rounds ran (all cores)
    steal_pct = (100.0 * (steal1 - steal0) / os.sysconf("SC_CLK_TCK") / (timed * (os.cpu_count() or 1))
                 if steal0 is not None and steal1 is not None else float("nan"))
    print(f"  CPU time stolen by the VM's host during the rounds: {steal_pct:.1f} %")

    ref = next((p for p in providers if p.name == "fastlif"), None)
    peer = next((p for p in providers if p.name == "snntorch"), None)
    rows = []
    # "time/fastlif": time over the previous release's network (>1 is slower);
    # "snnTorch/time": snnTorch's tutorial code's time over this one (the speed-up, >1 is faster)
    print(f"\n{'provider':<18} {'direction':<20} {'epoch s':>8} {'q20':>7} {'q80':>7} {'ms/batch':>9} "
          f"{'time/fastlif':>12} {'snnTorch/time':>13}")
    for direction in ("train_epoch", "train_epoch_network", "encode"):
        base = quantiles(ref.times[direction])[0] if ref else None
        peer_med = quantiles(peer.times[direction])[0] if peer else None
        for p in providers:
            med, q20, q80 = quantiles(p.times[direction])
            ratio = med / base if base else float("nan")
            speedup = peer_med / med if peer_med else float("nan")
            ratio_text = f"{ratio:.2f}x" if base else "-"  # no "fastlif" provider in this run
            speedup_text = f"{speedup:.1f}x" if peer_med else "-"
            print(f"{p.name:<18} {direction:<20} {med * n_epoch:>8.2f} {q20 * n_epoch:>7.2f} "
                  f"{q80 * n_epoch:>7.2f} {med * 1e3:>9.2f} {ratio_text:>12} {speedup_text:>13}")
            rows.append({
                "bench": "demo_epoch", "case": f"TinySNN 784-128-10 {split.name}-{len(split.train_y)}"
                        + (f" beside {args.busy} spinning" if args.busy else "") + wait_policy_label(),
                "shape": f"T{T_STEPS}xB{BATCH}x784", "dtype": "float32", "provider": p.name,
                "direction": direction, "median_ms": f"{med * n_epoch * 1e3:.1f}",
                "q20_ms": f"{q20 * n_epoch * 1e3:.1f}", "q80_ms": f"{q80 * n_epoch * 1e3:.1f}",
                "ratio_vs_fastlif": f"{ratio:.3f}",
                "throughput": f"{BATCH / med:.1f}", "throughput_unit": "images/s",
                "device": cpu_name(), "torch": torch_version(),
                "extra": extra(batches_per_epoch=n_epoch, timed_batches=len(p.times[direction]),
                               speedup_vs_snntorch=round(speedup, 2),
                               ms_per_batch=med * 1e3, threads=torch.get_num_threads(),
                               loadavg_max=max(loads), loadavg_min=min(loads), steal_pct=round(steal_pct, 2)),
            })
    if not args.no_csv:
        path = append_rows(CSV, rows)
        print(f"\nappended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

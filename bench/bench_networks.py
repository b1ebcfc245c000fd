"""Training steps of networks as snnTorch's tutorials write them: snnTorch's per-step loop, the
same loop with ``import fastlif as snn`` (the swap alone), ``fastlif.sequence`` on the same
per-step network, and ``fastlif.sequence(..., event_driven=True)`` (SpikeLinear / SpikeConv2d
twins for layers fed spikes).

One training step = forward over T steps, a cross-entropy loss on the output spike counts,
backward, Adam. Every provider trains its own copy of the same initial weights on the same
(synthetic) data of the real shapes. Providers are interleaved in each round (a fresh order per
round) and each figure is the median of the rounds, with the 20-80 % spread; ratios are
against snnTorch's loop, measured in the same run. Default allocator and torch's thread
count: what users have.

    python -m bench.bench_networks                 # all cases, rows to bench/results/networks.csv
    python -m bench.bench_networks --case tutorial5 --rounds 9
    python -m bench.bench_networks --quick          # small shapes, a smoke test of the script
"""
import argparse
import copy
import random
import statistics
import time
import warnings

import torch
from torch import nn

import fastlif

from .common import append_rows, cpu_name, extra, torch_version

try:
    import snntorch
    from snntorch import utils as snn_utils
except ImportError:  # the benchmark compares against snnTorch: it is required here
    raise SystemExit("bench_networks needs snnTorch: pip install snntorch") from None


# --- the networks, as the tutorials write them ----------------------------------------------------

class Tutorial5Net(nn.Module):
    """snnTorch tutorial 5's class: 784-1000-10, its own loop over the steps, explicit states."""

    def __init__(self, m, num_steps, hidden=1000):
        super().__init__()
        self.num_steps = num_steps
        self.fc1, self.lif1 = nn.Linear(784, hidden), m.Leaky(beta=0.95)
        self.fc2, self.lif2 = nn.Linear(hidden, 10), m.Leaky(beta=0.95)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk2_rec = []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
        return torch.stack(spk2_rec)


def tutorial5_sequential(m, hidden=1000):
    """The same network as the per-step nn.Sequential that fastlif.sequence takes."""
    return nn.Sequential(nn.Linear(784, hidden), m.Leaky(beta=0.95, init_hidden=True),
                         nn.Linear(hidden, 10), m.Leaky(beta=0.95, init_hidden=True))


def tutorial6_conv(m):
    sg = m.surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                         nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                         nn.Flatten(), nn.Linear(64 * 4 * 4, 10), m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True))


def nmnist_conv(m):
    sg = m.surrogate.atan()
    return nn.Sequential(nn.Conv2d(2, 12, 5), nn.MaxPool2d(2), m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                         nn.Conv2d(12, 32, 5), nn.MaxPool2d(2), m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True),
                         nn.Flatten(), nn.Linear(32 * 5 * 5, 10), m.Leaky(beta=0.5, spike_grad=sg, init_hidden=True))


def shd(m, recurrent=False, n_in=700, hidden=256):
    lif = (m.RLeaky(beta=0.9, linear_features=hidden, init_hidden=True) if recurrent
           else m.Leaky(beta=0.9, init_hidden=True))
    return nn.Sequential(nn.Linear(n_in, hidden), lif, nn.Linear(hidden, 20), m.Leaky(beta=0.9, init_hidden=True))


def tinysnn(m):
    """The seed tutorial's network, 784-128-10, fast_sigmoid."""
    sg = m.surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(nn.Linear(784, 128), m.Leaky(beta=0.9, spike_grad=sg, init_hidden=True),
                         nn.Linear(128, 10), m.Leaky(beta=0.9, spike_grad=sg, init_hidden=True))


# --- providers ------------------------------------------------------------------------------------

def per_step_loop(net, x, num_steps):
    """snnTorch's idiom: reset, one call per step, stack."""
    snn_utils.reset(net)
    if num_steps is not None:
        return torch.stack([net(x) for _ in range(num_steps)])
    return torch.stack([net(x[t]) for t in range(x.shape[0])])


def make_step(net, forward):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        spk = forward(net, x)
        loss = loss_fn(spk.sum(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def providers_for(case, build, num_steps, static, class_net=None):
    """name -> training step, all from one set of initial weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        base = build(fastlif)
        theirs = build(snntorch)
        theirs.load_state_dict(base.state_dict())
    T = num_steps if static else None
    out = {}
    if class_net is not None:  # tutorial 5: its own class, its own loop
        theirs_cls, ours_cls = class_net(snntorch), class_net(fastlif)
        ours_cls.load_state_dict(theirs_cls.state_dict())
        out["snntorch"] = make_step(theirs_cls, lambda n, x: n(x))
        out["fastlif-swap"] = make_step(ours_cls, lambda n, x: n(x))
    else:
        out["snntorch"] = make_step(theirs, lambda n, x: per_step_loop(n, x, T))
        out["fastlif-swap"] = make_step(copy.deepcopy(base), lambda n, x: per_step_loop(n, x, T))
    out["fastlif-sequence"] = make_step(copy.deepcopy(base), lambda n, x: fastlif.sequence(n, x, T))
    out["fastlif-sequence-events"] = make_step(
        copy.deepcopy(base), lambda n, x: fastlif.sequence(n, x, T, event_driven=True))
    return out


def cases(quick):
    s = (lambda full, small: small if quick else full)
    g = torch.Generator().manual_seed(1)
    T5, B5 = s(25, 4), s(128, 8)
    T6, B6 = s(25, 4), s(128, 8)
    TN, BN = s(100, 4), s(32, 4)
    TS, BS = s(100, 8), s(32, 4)
    TT, BT = s(25, 4), s(128, 8)
    return [
        dict(name="tutorial5", shape=f"T={T5},B={B5},784-1000-10", T=T5, static=True,
             x=torch.rand(B5, 784, generator=g), y=torch.randint(0, 10, (B5,), generator=g),
             build=tutorial5_sequential, class_net=lambda m: Tutorial5Net(m, T5)),
        dict(name="tutorial6-conv", shape=f"T={T6},B={B6},1x28x28", T=T6, static=True,
             x=torch.rand(B6, 1, 28, 28, generator=g), y=torch.randint(0, 10, (B6,), generator=g),
             build=tutorial6_conv),
        dict(name="nmnist-conv", shape=f"T={TN},B={BN},2x34x34,2%", T=TN, static=False,
             x=(torch.rand(TN, BN, 2, 34, 34, generator=g) < 0.02).float(),
             y=torch.randint(0, 10, (BN,), generator=g), build=nmnist_conv),
        dict(name="shd-leaky", shape=f"T={TS},B={BS},700-256-20,2%", T=TS, static=False,
             x=(torch.rand(TS, BS, 700, generator=g) < 0.02).float(),
             y=torch.randint(0, 20, (BS,), generator=g), build=shd),
        dict(name="shd-rleaky", shape=f"T={TS},B={BS},700-256r-20,2%", T=TS, static=False,
             x=(torch.rand(TS, BS, 700, generator=g) < 0.02).float(),
             y=torch.randint(0, 20, (BS,), generator=g), build=lambda m: shd(m, recurrent=True)),
        dict(name="tinysnn", shape=f"T={TT},B={BT},784-128-10,rate", T=TT, static=False,
             x=(torch.rand(TT, BT, 784, generator=g) < 0.0125).float(),
             y=torch.randint(0, 10, (BT,), generator=g), build=tinysnn),
    ]


def run_case(case, rounds, warmup):
    provs = providers_for(case["name"], case["build"], case["T"], case["static"], case.get("class_net"))
    x, y = case["x"], case["y"]
    for fn in provs.values():
        for _ in range(warmup):
            fn(x, y)
    samples = {name: [] for name in provs}
    order = list(provs)
    for _ in range(rounds):
        random.shuffle(order)  # interleaved, a fresh order each round
        for name in order:
            t0 = time.perf_counter()
            provs[name](x, y)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def summarise(samples):
    out = {}
    for name, s in samples.items():
        q = statistics.quantiles(sorted(s), n=5, method="inclusive") if len(s) > 1 else s * 4
        out[name] = (statistics.median(s), q[0], q[3])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", help="run only these cases (repeatable)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="small shapes: a smoke test of the script")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    try:
        from tqdm import tqdm
    except ImportError:  # progress only
        tqdm = None
    todo = [c for c in cases(args.quick) if not args.case or c["name"] in args.case]
    rows = []
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch_version()}, snnTorch "
          f"{snntorch.__version__}; training step (forward, CE loss, backward, Adam), medians of "
          f"{args.rounds} interleaved rounds")
    bar = tqdm(todo, desc="networks", unit="case") if tqdm else todo
    results = []
    for case in bar:
        stats = summarise(run_case(case, args.rounds, args.warmup))
        results.append((case, stats))
        base = stats["snntorch"][0]
        for name, (med, q20, q80) in stats.items():
            rows.append(dict(bench="networks", case=case["name"], shape=case["shape"], dtype="float32",
                             provider=name, direction="train_step", median_ms=f"{med:.3f}",
                             q20_ms=f"{q20:.3f}", q80_ms=f"{q80:.3f}",
                             ratio_vs_fastlif=f"{base / med:.3f}", device="cpu", torch=torch_version(),
                             extra=extra(speedup_vs_snntorch=base / med, threads=torch.get_num_threads(),
                                         rounds=args.rounds, quick=int(args.quick))))
    print(f"\n| network | shape | snnTorch loop | swap only | fastlif.sequence | + event-driven |")
    print("|---|---|---:|---:|---:|---:|")
    for case, stats in results:
        base = stats["snntorch"][0]
        cells = []
        for name in ("snntorch", "fastlif-swap", "fastlif-sequence", "fastlif-sequence-events"):
            med, q20, q80 = stats[name]
            ratio = "" if name == "snntorch" else f" (**{base / med:.2f}x**)"
            cells.append(f"{med:.1f} ms [{q20:.1f}-{q80:.1f}]{ratio}")
        print(f"| {case['name']} | {case['shape']} | " + " | ".join(cells) + " |")
    if not args.no_save and not args.quick:
        path = append_rows("networks.csv", rows)
        print(f"\nrows appended to {path}")


if __name__ == "__main__":
    main()

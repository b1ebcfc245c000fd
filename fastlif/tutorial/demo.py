"""``fastlif demo``: the tutorial end to end, with fused ``fastlif.Leaky`` layers.

1. the LIF current-step simulation (tutorial section 2, :mod:`fastlif.sim`);
2. the Poisson encoding of one training image (sections 3-4);
3. training the tutorial's ``TinySNN`` (784-128-10, beta 0.9, fast-sigmoid surrogate with
   slope 25, Adam lr 1e-3 / weight decay 1e-5, cross-entropy on spike counts, T=50 steps
   at up to 100 Hz, batch 64), with a progress bar per epoch;
4. the test accuracy after every epoch and the training curves;
5. the output spikes and spike counts of one test digit;
6. the time per epoch against the tutorial's snnTorch code (when snnTorch is installed; else
   against the same network on fastlif's reference loop).

The network is the tutorial's, run event-driven: the input spikes come from the fast Poisson
encoder (``encode.poisson(method="fast")``: the same law, work in proportion to the spikes,
with their events), ``fc1`` and ``fc2`` are :class:`fastlif.SpikeLinear` layers that add only
the weight columns of the inputs that spiked (about 1 % of them), and ``lif1.sequence`` /
``lif2.sequence`` run the T-step LIF recurrence in one fused kernel call each. Each part can be
turned back to the tutorial's: ``encoder="tutorial"`` (its draw-for-draw encoding),
``spike_linear=False`` (``nn.Linear``), ``fused=False`` (one ``lif(x_t, mem)`` call per step).

Every figure is written as a PNG into ``--out``. Use :func:`main` (``fastlif demo ...``) or
the pieces: :class:`TinySNN`, :func:`train_one_epoch`, :func:`evaluate`.
"""
import copy
import os
import time
from dataclasses import dataclass

import torch

from tqdm.auto import tqdm

from .. import backends, encode, losses, sim
from ..timing import time_call
from . import data as data_mod, plot
from .model import TinySNN

__all__ = ["TinySNN", "DemoConfig", "train_one_epoch", "evaluate", "time_per_batch", "run"]  # TinySNN: .model


@dataclass
class DemoConfig:
    """The demo's settings (the tutorial's values by default)."""

    epochs: int = 15
    subset: int = 10000
    num_steps: int = 50
    batch_size: int = 64
    device: str = "auto"
    data: str = "./data"
    out: str = "./demo_out"
    dataset: str = "auto"
    seed: int = 0
    backend: str = "auto"
    max_rate_hz: float = 100.0
    dt: float = 1e-3
    lr: float = 1e-3
    weight_decay: float = 1e-5
    timing_batches: int = 5
    progress: bool = True
    encoder: str = "fast"        # "fast" (same law, event-driven) or "tutorial" (draw for draw)
    spike_linear: bool = True    # fc1/fc2 as fastlif.SpikeLinear (False: the tutorial's nn.Linear)
    fused: bool = True           # LIF layers over the whole sequence (False: the tutorial's step loop)


def _encode(cfg, imgs, gen):
    """The input spikes of a batch: with the fast encoder, their SpikeEvents (which TinySNN's
    SpikeLinear fc1 takes as they are, and any other layer reads as ``events.dense``)."""
    if cfg.encoder == "fast":
        return encode.poisson(imgs, cfg.num_steps, max_rate_hz=cfg.max_rate_hz, dt=cfg.dt, rng=gen,
                              method="fast", return_events=True)[1]
    return encode.poisson(imgs, cfg.num_steps, max_rate_hz=cfg.max_rate_hz, dt=cfg.dt, rng=gen)


def train_step(model, optimizer, loss_fn, imgs, labels, cfg, gen):
    """One tutorial training step; returns ``(loss, number correct)``."""
    spikes = _encode(cfg, imgs, gen)
    spk_rec = model(spikes)
    loss = loss_fn(spk_rec, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        correct = (spk_rec.sum(dim=0).argmax(dim=1) == labels).sum().item()
    return loss.item(), correct


def train_one_epoch(model, optimizer, loss_fn, split, cfg, device, enc_gen, shuffle_gen, desc="",
                    progress=True):
    """One pass over ``split.train_*`` (shuffled, last partial batch dropped, as the tutorial).

    Returns ``(mean loss, train accuracy, seconds)``.
    """
    model.train()
    n_batches = data_mod.num_batches(len(split.train_y), cfg.batch_size, drop_last=True)
    it = data_mod.batches(split.train_x, split.train_y, cfg.batch_size, shuffle=True,
                          drop_last=True, generator=shuffle_gen)
    total_loss = total_correct = total_seen = 0
    t0 = time.perf_counter()
    bar = tqdm(it, total=n_batches, desc=desc, leave=False, unit="batch",
               disable=None if progress else True, dynamic_ncols=True)
    for imgs, labels in bar:
        imgs, labels = imgs.to(device), labels.to(device)
        loss, correct = train_step(model, optimizer, loss_fn, imgs, labels, cfg, enc_gen)
        total_loss += loss * labels.size(0)
        total_correct += correct
        total_seen += labels.size(0)
        bar.set_postfix(loss=f"{total_loss / total_seen:.3f}", acc=f"{total_correct / total_seen:.3f}",
                        refresh=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    bar.close()
    if not total_seen:
        return float("nan"), float("nan"), seconds
    return total_loss / total_seen, total_correct / total_seen, seconds


@torch.no_grad()
def evaluate(model, x, y, cfg, device, enc_gen):
    """Test accuracy: predicted class = the output neuron with the most spikes."""
    model.eval()
    correct = 0
    for imgs, labels in data_mod.batches(x, y, cfg.batch_size):
        imgs, labels = imgs.to(device), labels.to(device)
        spk_rec = model(_encode(cfg, imgs, enc_gen))
        correct += (spk_rec.sum(dim=0).argmax(dim=1) == labels).sum().item()
    return correct / max(len(y), 1)


def time_per_batch(model, split, cfg, device, n_batches=3, warmup=1):
    """Median seconds of one full training step of ``model`` (a private copy is trained).

    Uses the first ``warmup + n_batches`` batches of the training set with a fixed
    encoding seed, so two models are timed on identical work.
    """
    model = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = losses.ce_count_loss()
    gen = torch.Generator(device=device).manual_seed(1234)
    model.train()
    available = max(data_mod.num_batches(len(split.train_y), cfg.batch_size, drop_last=True), 0)
    n_batches, warmup = min(n_batches, available), min(warmup, max(available - n_batches, 0))
    if n_batches == 0:
        return float("nan")
    batches = data_mod.batches(split.train_x, split.train_y, cfg.batch_size, drop_last=True)

    def step():
        imgs, labels = next(batches)
        train_step(model, opt, loss_fn, imgs.to(device), labels.to(device), cfg, gen)

    return time_call(step, device=device, warmup=warmup, repeat=n_batches)[0] / 1e3


def tutorial_baseline(cfg, device):
    """The model and settings the demo's speed is compared with: the tutorial's snnTorch code
    (``snn.Leaky`` stepped in its Python loop, ``nn.Linear``, its Poisson encoding) when snnTorch
    is installed, else the same network on fastlif's reference loop. Returns ``(model, cfg,
    what)``."""
    base_cfg = copy.copy(cfg)
    base_cfg.encoder = "tutorial"
    try:
        import snntorch as snn
        from snntorch import surrogate as snn_surrogate
    except ImportError:
        return (TinySNN(backend="reference", spike_linear=False).to(device), base_cfg,
                "the reference loop (snnTorch is not installed)")
    return (TinySNN(lif_cls=snn.Leaky, spike_grad=snn_surrogate.fast_sigmoid(), fused=False).to(device),
            base_cfg, f"the tutorial's snnTorch {getattr(snn, '__version__', '')} code")


def _parts(cfg):
    return ", ".join([
        "fast Poisson encoder" if cfg.encoder == "fast" else "the tutorial's Poisson encoder",
        "SpikeLinear" if cfg.spike_linear else "nn.Linear",
        "fused fastlif.Leaky" if cfg.fused else "fastlif.Leaky stepped per time step"])


def resolve_device(name):
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("fastlif demo: --device cuda was asked for but no CUDA device is available")
    return dev


def _fmt_s(s):
    return f"{s:.1f} s" if s >= 1 else f"{s * 1e3:.0f} ms"


def run(cfg: DemoConfig, log=print):
    """Run the demo; returns a summary dict (accuracies, timings, figure paths)."""
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    os.makedirs(cfg.out, exist_ok=True)
    figures = []

    def save(fig, name):
        path = os.path.join(cfg.out, name)
        fig.savefig(path, dpi=90)
        figures.append(path)
        return path

    backend = backends.select(cfg.backend, device.type)
    log(f"fastlif demo: device {device} ({torch.get_num_threads()} threads)" if device.type == "cpu"
        else f"fastlif demo: device {device} ({torch.cuda.get_device_name(device)})")

    # 1. The LIF neuron driven by current steps
    I, res = sim.tutorial_current_step()
    path = save(plot.voltage_trace(res.t, I, res.v[:, 0], res.spikes[:, 0], v_th=1.0, v_reset=0.0,
                                   title="LIF neuron driven by current steps (tau = 20 ms, Euler, dt = 1 ms)"),
                "1_lif_current_step.png")
    log(f"[1/6] LIF simulation: {int(res.spikes.sum())} spikes in {len(res.t)} ms -> {path}")

    # Data
    split = data_mod.load(cfg.dataset, cfg.data, cfg.subset, cfg.seed, log=lambda m: log("      " + m))
    log(f"      data: {split.name}, {len(split.train_y)} training / {len(split.test_y)} test images "
        f"({split.source})")

    # 2. Poisson encoding of one training image (the tutorial shows T = 100)
    g = torch.Generator().manual_seed(cfg.seed)
    spk_demo = encode.poisson(split.train_x[:1], 100, max_rate_hz=cfg.max_rate_hz, dt=cfg.dt, rng=g)
    path = save(plot.encoding_panel(split.train_x[0], spk_demo[:, 0], int(split.train_y[0]),
                                    name=split.name), "2_poisson_encoding.png")
    log(f"[2/6] Poisson encoding: {int(spk_demo.sum())} input spikes in 100 steps -> {path}")

    # 3. Training with fused layers
    if cfg.encoder not in ("fast", "tutorial"):
        raise ValueError(f"encoder must be 'fast' or 'tutorial', got {cfg.encoder!r}")
    model = TinySNN(backend=backend, spike_linear=cfg.spike_linear, fused=cfg.fused).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = losses.ce_count_loss()
    enc_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    test_gen = torch.Generator(device=device)
    n_batches = data_mod.num_batches(len(split.train_y), cfg.batch_size, drop_last=True)
    log(f"[3/6] Training TinySNN 784-128-10 ({_parts(cfg)}; backend {backend}): "
        f"{cfg.epochs} epoch(s) x {n_batches} batches of {cfg.batch_size}, T={cfg.num_steps}")
    history = {"loss": [], "acc": [], "val_acc": [], "epoch_s": []}
    for ep in range(1, cfg.epochs + 1):
        tr_loss, tr_acc, secs = train_one_epoch(model, optimizer, loss_fn, split, cfg, device, enc_gen,
                                                shuffle_gen, desc=f"Epoch {ep}/{cfg.epochs}",
                                                progress=cfg.progress)
        test_gen.manual_seed(cfg.seed + 1)  # the same test spikes after every epoch
        va_acc = evaluate(model, split.test_x, split.test_y, cfg, device, test_gen)
        for k, v in zip(("loss", "acc", "val_acc", "epoch_s"), (tr_loss, tr_acc, va_acc, secs)):
            history[k].append(v)
        log(f"      epoch {ep:>2}: train loss {tr_loss:.4f}  train acc {tr_acc:.4f}  "
            f"test acc {va_acc:.4f}  ({_fmt_s(secs)})")

    # 4. Accuracy and training curves
    if history["val_acc"]:
        final = history["val_acc"][-1]
    else:  # --epochs 0: the untrained network
        test_gen.manual_seed(cfg.seed + 1)
        final = evaluate(model, split.test_x, split.test_y, cfg, device, test_gen)
    path = save(plot.training_curves(history, title=f"TinySNN on {split.name} ({_parts(cfg)})"),
                "3_training_curves.png")
    log(f"[4/6] Test accuracy after {cfg.epochs} epoch(s): {final * 100:.2f}% on {len(split.test_y)} "
        f"{split.name} test images -> {path}")

    # 5. Output spikes for one test digit (the tutorial's viz_one_example)
    model.eval()
    with torch.no_grad():
        g = torch.Generator(device=device).manual_seed(0)
        spikes = encode.poisson(split.test_x[:1].to(device), cfg.num_steps, max_rate_hz=cfg.max_rate_hz,
                                dt=cfg.dt, rng=g)
        spk_rec, _ = model(spikes, return_mem=True)
    spk = spk_rec[:, 0].cpu()
    true = int(split.test_y[0])
    pred = int(spk.sum(0).argmax())
    path = save(plot.output_panel(spk, true=true), "4_output_spikes.png")
    log(f"[5/6] One test digit: true {true}, predicted {pred}, output spike counts "
        f"{spk.sum(0).int().tolist()} -> {path}")

    # 6. Speed against the tutorial's code (or the reference loop), on identical batches
    ratio = t_fused = t_ref = float("nan")
    baseline = None
    nb = min(cfg.timing_batches, n_batches)
    if nb > 0:
        warmup = 1 if n_batches > nb else 0
        ref_model, ref_cfg, baseline = tutorial_baseline(cfg, device)
        ref_model.load_state_dict(model.state_dict())
        # A B A B, the better of each: a busy moment slows both alike
        runs = [(time_per_batch(model, split, cfg, device, n_batches=nb, warmup=warmup),
                 time_per_batch(ref_model, split, ref_cfg, device, n_batches=nb, warmup=warmup))
                for _ in range(2)]
        t_fused, t_ref = min(r[0] for r in runs), min(r[1] for r in runs)
        ratio = t_ref / t_fused
        verdict = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x SLOWER"
        log(f"[6/6] Time per epoch ({n_batches} batches, from the median of {nb} timed batches each): "
            f"fastlif ({_parts(cfg)}) {_fmt_s(t_fused * n_batches)}, {baseline} "
            f"{_fmt_s(t_ref * n_batches)} -> fastlif is {verdict}")
    else:
        log("[6/6] Speed comparison skipped (--timing-batches 0, or no full training batch)")

    total = time.perf_counter() - t_start
    log(f"Done in {_fmt_s(total)}. Figures in {os.path.abspath(cfg.out)}: "
        + ", ".join(os.path.basename(p) for p in figures))
    return {"history": history, "test_acc": final, "figures": figures, "dataset": split.name,
            "backend": backend, "device": str(device), "batch_s_fused": t_fused,
            "batch_s_reference": t_ref, "speedup_vs_reference": ratio, "baseline": baseline,
            "n_batches": n_batches,
            "total_s": total}

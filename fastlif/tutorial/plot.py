"""The tutorial's figures, as functions that return matplotlib Figures.

Figures are built on matplotlib's Agg canvas without pyplot, so nothing opens a window,
nothing global is touched, and nothing needs closing: ``fig.savefig("x.png")`` to write
one, or let a notebook display the returned Figure. Inputs may be numpy arrays or torch
tensors (on any device).

``voltage_trace``   input current and membrane voltage of a LIF neuron (tutorial section 2)
``encoding_panel``  an image, its Poisson spike raster and spike-count map (section 3/4)
``spike_raster``    spikes as dots over time x neuron (section 5, output spikes)
``spike_counts``    spike count per class as bars, true and predicted class marked
``output_panel``    raster above counts, the tutorial's ``viz_one_example`` figure
``training_curves`` loss and accuracy per epoch (the tutorial's ``train_hist``)
"""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["voltage_trace", "spike_raster", "spike_counts", "output_panel", "encoding_panel",
           "training_curves"]

SPIKE_COLOR = "crimson"


def _np(a):
    """numpy view of a tensor / array / list (detached, on the CPU)."""
    if a is None:
        return None
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        if str(a.dtype) == "torch.bfloat16":
            a = a.float()
        a = a.numpy()
    return np.asarray(a)


def _figure(figsize):
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def voltage_trace(t, I, v, spikes, v_th=1.0, v_reset=0.0, title=None, *, time_scale=1e3,
                  time_label="time (ms)"):
    """Input current (top) and membrane voltage with threshold and spike marks (bottom).

    Args:
        t: ``[T]`` times in seconds (``fastlif.sim``'s ``res.t``); plotted times are
            ``t * time_scale`` labelled ``time_label`` (defaults: milliseconds).
        I: ``[T]`` or ``[T, N]`` input current.
        v: ``[T]`` or ``[T, N]`` membrane voltage.
        spikes: ``[T]`` or ``[T, N]`` bool spikes (drawn as vertical lines from ``v_reset``
            to just above ``v_th``).
        v_th, v_reset: threshold (dashed line) and reset voltage.
        title: figure title.
    """
    t = _np(t).reshape(-1) * time_scale
    I, v, spikes = _np(I), _np(v), _np(spikes).astype(bool)
    v = v.reshape(len(t), -1)
    spikes = spikes.reshape(len(t), -1)
    I = I.reshape(len(t), -1)
    fig = _figure((10, 6))
    ax = fig.subplots(2, 1, sharex=True)
    many = v.shape[1] > 1
    for n in range(I.shape[1]):
        ax[0].plot(t, I[:, n], label=None if many else "Input current  $I(t)$")
    ax[0].set_ylabel("I  (a.u.)")
    ax[0].grid(alpha=0.3)
    for n in range(v.shape[1]):
        ax[1].plot(t, v[:, n], label=None if many else "Membrane  $V_m(t)$")
    ax[1].axhline(v_th, ls="--", c="gray", alpha=0.8, label="threshold")
    spike_t = t[np.nonzero(spikes.any(axis=1))[0]]
    ax[1].vlines(spike_t, ymin=v_reset, ymax=v_th * 1.05, color=SPIKE_COLOR, alpha=0.7,
                 label=f"spikes ({int(spikes.sum())})")
    ax[1].set_xlabel(time_label)
    ax[1].set_ylabel("V")
    ax[1].grid(alpha=0.3)
    if not many:
        ax[0].legend(loc="upper right")
    ax[1].legend(loc="upper right")
    if title:
        fig.suptitle(title)
    return fig


def spike_raster(spk, title=None, *, ax=None, dt=None, ylabel="neuron", marker_size=8,
                 max_neurons=None):
    """Spikes ``[T, N]`` (bool, 0/1 or graded) as dots: time on x, neuron index on y.

    Neuron 0 is at the top (as in the tutorial). ``dt`` (seconds) turns the x axis into
    milliseconds instead of steps; ``max_neurons`` shows only the first ones. Draws into
    ``ax`` when given and returns its Figure.
    """
    spk = _np(spk)
    if spk.ndim == 1:
        spk = spk[:, None]
    spk = spk.reshape(spk.shape[0], -1)
    if max_neurons is not None:
        spk = spk[:, :max_neurons]
    T, N = spk.shape
    if ax is None:
        fig = _figure((8, 3.2 if N <= 20 else 4.5))
        ax = fig.subplots()
    else:
        fig = ax.figure
    t_idx, n_idx = np.nonzero(spk != 0)
    unit = dt * 1e3 if dt else 1.0
    ax.scatter(t_idx * unit, n_idx, s=marker_size, color="C0", marker="|" if N > 40 else "o")
    ax.set_xlim(-0.5 * unit, (T - 0.5) * unit)
    ax.set_ylim(N - 0.5, -0.5)
    if N <= 20:
        ax.set_yticks(range(N))
    ax.set_xlabel("time (ms)" if dt else "time step")
    ax.set_ylabel(ylabel)
    ax.set_title(title if title is not None else f"Spike raster ({int((spk != 0).sum())} spikes)")
    return fig


def spike_counts(counts, true=None, pred=None, *, ax=None, title=None, xlabel="class"):
    """Bar chart of spike counts per class; the true class in green, a wrong prediction in red.

    ``counts`` is ``[C]`` (or spikes ``[T, C]``, summed over time). Draws into ``ax`` when
    given and returns its Figure.
    """
    counts = _np(counts).astype(float)
    if counts.ndim == 2:
        counts = counts.sum(axis=0)
    counts = counts.reshape(-1)
    C = len(counts)
    if pred is None and C:
        pred = int(np.argmax(counts))
    if ax is None:
        fig = _figure((8, 3.2))
        ax = fig.subplots()
    else:
        fig = ax.figure
    colors = ["C0"] * C
    if pred is not None and true is not None and int(pred) != int(true) and 0 <= int(pred) < C:
        colors[int(pred)] = "tab:red"
    if true is not None and 0 <= int(true) < C:
        colors[int(true)] = "tab:green"
    ax.bar(np.arange(C), counts, color=colors)
    ax.set_xticks(range(C))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("spike count")
    if title is None:
        title = "Spike counts over window"
        if true is not None or pred is not None:
            parts = [f"true={int(true)}" if true is not None else None,
                     f"pred={int(pred)}" if pred is not None else None]
            title += " (" + ", ".join(p for p in parts if p) + ")"
    ax.set_title(title)
    return fig


def output_panel(spk, true=None, title=None):
    """The tutorial's ``viz_one_example``: output raster ``[T, C]`` above the spike counts."""
    spk = _np(spk)
    spk = spk.reshape(spk.shape[0], -1)
    counts = (spk != 0).sum(axis=0) if spk.dtype == bool else spk.sum(axis=0)
    pred = int(np.argmax(counts))
    fig = _figure((8, 6))
    axes = fig.subplots(2, 1)
    if title is None:
        title = "Output spikes over time" + (f" — true={int(true)}, pred={pred}"
                                             if true is not None else f" — pred={pred}")
    spike_raster(spk, title, ax=axes[0], ylabel="class id")
    spike_counts(counts, true=true, pred=pred, ax=axes[1], title="Spike counts over window")
    return fig


def encoding_panel(image, spikes, label=None, *, name="MNIST"):
    """Image, spike raster (time x pixels) and spike count per pixel, side by side.

    Args:
        image: one image, ``[1, H, W]``, ``[H, W]`` or ``[H*W]`` (square) in [0, 1].
        spikes: its spike train ``[T, H*W]`` (e.g. ``poisson(...)[:, 0]``).
        label: the class, shown in the title.
        name: dataset name for the title.
    """
    image = _np(image).astype(float)
    spikes = _np(spikes)
    T = spikes.shape[0]
    spikes = spikes.reshape(T, -1)
    if image.ndim == 3:
        image = image[0]
    if image.ndim == 1:
        side = int(round(np.sqrt(image.size)))
        image = image.reshape(side, side)
    count_map = (spikes != 0).sum(axis=0).reshape(image.shape)

    fig = _figure((11, 3.6))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.imshow(image, cmap="gray")
    ax1.set_title(f"{name} image" + (f" (label={int(label)})" if label is not None else ""))
    ax1.axis("off")
    ax2.imshow(spikes.T.astype(float), aspect="auto", interpolation="nearest", cmap="gray_r")
    ax2.set_title("Spike raster (time × pixels)")
    ax2.set_xlabel("Time step")
    ax2.set_ylabel("Pixel index")
    im = ax3.imshow(count_map, cmap="viridis")
    ax3.set_title("Spike counts per pixel\n(∝ intensity × window)")
    ax3.axis("off")
    fig.colorbar(im, ax=ax3, fraction=0.046, pad=0.04)
    return fig


def training_curves(history, title=None):
    """Loss and accuracy per epoch from a history dict (the tutorial's ``train_hist``).

    Recognised keys (lists, one value per epoch): ``loss`` (train loss), ``acc`` (train
    accuracy), ``val_acc`` (test accuracy); others are ignored. Accuracies in [0, 1].
    """
    loss = list(history.get("loss", []))
    acc = list(history.get("acc", []))
    val = list(history.get("val_acc", []))
    fig = _figure((10, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    if loss:
        ax1.plot(np.arange(1, len(loss) + 1), loss, "o-", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("count cross-entropy")
    ax1.set_title("Training loss")
    ax1.grid(alpha=0.3)
    if acc:
        ax2.plot(np.arange(1, len(acc) + 1), np.asarray(acc) * 100, "o-", label="train")
    if val:
        ax2.plot(np.arange(1, len(val) + 1), np.asarray(val) * 100, "s-", label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    # the final test accuracy in the title: a label beside the last point lands on the curves
    ax2.set_title(f"Accuracy (test {val[-1] * 100:.1f}% after epoch {len(val)})" if val else "Accuracy")
    ax2.grid(alpha=0.3)
    if acc or val:
        ax2.legend(loc="lower right")
    n = max(len(loss), len(acc), len(val))
    if 0 < n <= 20:
        for ax in (ax1, ax2):
            ax.set_xticks(np.arange(1, n + 1))
    if title:
        fig.suptitle(title)
    return fig

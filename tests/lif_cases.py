"""Shared pieces of the equivalence tests: option grids, input makers, and comparisons."""
import itertools

import torch
from torch import nn

import fastlif
from fastlif import surrogate as sg
from fastlif.reference import lif_sequence_reference

RESETS = ("subtract", "zero", "none")
SURROGATES = {
    "atan": sg.atan(2.0), "fast_sigmoid": sg.fast_sigmoid(25), "sigmoid": sg.sigmoid(5),
    "triangular": sg.triangular(1), "ste": sg.straight_through_estimator(),
    "disabled": sg.no_grad(),
}
# which parameters are per neuron (last dimension) rather than scalars
PARAM_LAYOUTS = ("scalar", "per_neuron", "mixed")


def make_params(n_last, layout, dtype=torch.float32, seed=0):
    """beta (some values outside [0, 1], to exercise the clamp), threshold, graded factor."""
    g = torch.Generator().manual_seed(seed)
    if layout == "scalar":
        beta, thr, graded = torch.tensor(0.85), torch.tensor(0.9), torch.tensor(1.3)
    else:
        beta = torch.rand(n_last, generator=g) * 1.2 - 0.05
        thr = torch.rand(n_last, generator=g) * 0.5 + 0.75
        graded = torch.rand(n_last, generator=g) + 0.5
        if layout == "mixed":
            thr = torch.tensor(0.9)
    return [p.to(dtype).requires_grad_() for p in (beta, thr, graded)]


def make_input(shape, dtype=torch.float32, seed=0, scale=0.8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale + 0.3).to(dtype)


def run(fn, x, params, mem0, upstream, **options):
    """Forward, then backward with random upstream gradients on spikes and membrane.

    Returns the spikes, the membrane, and the gradients of x, mem0 and every parameter
    (None where the input did not require grad).
    """
    x = x.detach().requires_grad_()  # a view: keeps the caller's strides (non-contiguous cases)
    params = [p.detach().clone().requires_grad_() for p in params]
    mem0 = None if mem0 is None else mem0.detach().clone().requires_grad_()
    beta, thr, graded = params
    spk, mem = fn(x, beta, thr, mem=mem0, graded_spikes_factor=graded, **options)
    g_spk, g_mem = upstream
    inputs = [x] + ([mem0] if mem0 is not None else []) + params
    grads = torch.autograd.grad((spk * g_spk).sum() + (mem * g_mem).sum(), inputs,
                                allow_unused=True)
    grads = list(grads)
    if mem0 is None:
        grads.insert(1, None)
    return spk.detach(), mem.detach(), grads


def fused(backend):
    def call(x, beta, thr, *, surrogate, **kw):
        return fastlif.lif_sequence(x, beta, thr, surrogate=surrogate, backend=backend, **kw)
    return call


def reference(x, beta, thr, *, surrogate, **kw):
    return lif_sequence_reference(x, beta, thr, spike_fn=surrogate, **kw)


GRAD_NAMES = ("x", "mem0", "beta", "threshold", "graded_spikes_factor")


def normwise_error(a, b, floor=0.0):
    scale = max(b.abs().max().item(), floor)
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def assert_grads_close(fast, ref, tol=1e-5):
    """Every gradient within ``tol`` relative, normwise: max|a-b| / max|b|.

    Parameter gradients are sums of n = x.numel() / param.numel() terms over batch and time,
    and cancel: fp32 summation alone (the reference's as much as ours) is off by about
    eps * sqrt(n) * rms(term). So their scale is at least sqrt(n) * rms(grad_x) (grad_x is
    the size of one term); a real mistake, even in a single term, is far above that.
    """
    grad_x = ref[0]
    for name, a, b in zip(GRAD_NAMES, fast, ref):
        if b is None:
            assert a is None or not a.abs().max().item(), f"{name}: unexpected gradient"
            continue
        assert a is not None, f"{name}: gradient missing"
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        floor = 0.0
        if name not in ("x", "mem0"):
            n_terms = grad_x.numel() / max(b.numel(), 1)
            floor = grad_x.double().pow(2).mean().sqrt().item() * n_terms ** 0.5
        err = normwise_error(a.double(), b.double(), floor)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


def option_grid():
    return list(itertools.product(RESETS, (True, False), SURROGATES, PARAM_LAYOUTS))


class TutorialTinySNN(nn.Module):
    """The tutorial's network (section 5.1: 784-128-10, beta 0.9) with the LIF class and the
    surrogate factory swappable. ``fused=True`` applies each Linear to all steps at once and
    runs each fastlif.Leaky over the whole sequence; otherwise it is the tutorial's loop."""

    def __init__(self, lif_cls, spike_grad_factory, fused=False, in_dim=784, hidden=128,
                 out_dim=10, beta=0.9):
        super().__init__()
        self.fused = fused
        self.fc1 = nn.Linear(in_dim, hidden)
        self.lif1 = lif_cls(beta=beta, spike_grad=spike_grad_factory())
        self.fc2 = nn.Linear(hidden, out_dim)
        self.lif2 = lif_cls(beta=beta, spike_grad=spike_grad_factory())

    def forward(self, x_seq):
        if self.fused:
            spk1, _ = self.lif1.sequence(self.fc1(x_seq.float()))
            return self.lif2.sequence(self.fc2(spk1))[0]
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk_rec = []
        for t in range(x_seq.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x_seq[t].float()), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
        return torch.stack(spk_rec)

"""The equivalence harness: random cases, one forward+backward with random upstream gradients,
and the comparisons, shared by the CPU, Triton-interpreter and CUDA test suites and by
``fastlif check`` (as ``torch.testing`` is torch's). Torch only.

A case is one LIF call's inputs: ``x [T, ...]``, the initial membrane, the parameters (each a
scalar or one value per neuron along the last dimension) and the upstream gradients of spikes
and membrane. :func:`run` makes fresh leaves of it in a dtype on a device, runs the reference
or a backend, backpropagates and returns the outputs and every gradient by name.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

import fastlif
from .layout import compute_dtype
from .reference import lif_sequence_reference

PARAMS = ("beta", "threshold", "graded")


@dataclass
class Case:
    x: torch.Tensor
    mem0: Optional[torch.Tensor]
    params: Dict[str, torch.Tensor]
    grad_spk: torch.Tensor
    grad_mem: torch.Tensor


@dataclass
class Result:
    spk: torch.Tensor
    mem: torch.Tensor
    grads: Dict[str, torch.Tensor] = field(default_factory=dict)

    def __iter__(self):  # spk, mem, grads = run(...)
        return iter((self.spk, self.mem, self.grads))

    def __getitem__(self, i):
        return (self.spk, self.mem, self.grads)[i]


def make_case(T, neurons, *, per_neuron=(True, True, True), mem0=True, seed=0, scale=0.8,
              offset=0.3, beta_range=(-0.05, 1.15), threshold_range=(0.75, 1.25),
              graded_range=(0.5, 1.5)):
    """Random inputs in fp32 on the CPU (:func:`run` casts and moves them, so that an fp64 run
    sees exactly the values of an fp32 run): x ~ N(offset, scale^2) of shape ``[T, *neurons]``;
    parameters uniform in their ranges (beta's default reaches outside [0, 1], to exercise the
    clamp), each per neuron or a scalar."""
    gen = torch.Generator().manual_seed(seed)
    L = neurons[-1] if len(neurons) else 1

    def uniform(lo_hi, pn):
        lo, hi = lo_hi
        return torch.rand(L if pn else (), generator=gen, dtype=torch.float32) * (hi - lo) + lo

    x = torch.randn(T, *neurons, generator=gen, dtype=torch.float32) * scale + offset
    params = {"beta": uniform(beta_range, per_neuron[0]),
              "threshold": uniform(threshold_range, per_neuron[1]),
              "graded": uniform(graded_range, per_neuron[2])}
    m0 = torch.randn(*neurons, generator=gen, dtype=torch.float32) if mem0 else None
    grad_spk = torch.randn(T, *neurons, generator=gen, dtype=torch.float32)
    grad_mem = torch.randn(T, *neurons, generator=gen, dtype=torch.float32)
    return Case(x, m0, params, grad_spk, grad_mem)


def layout(name):
    """``per_neuron`` flags of a named parameter layout: scalar, per_neuron, mixed."""
    return {"scalar": (False, False, False), "per_neuron": (True, True, True),
            "mixed": (True, False, True)}[name]


def run(case, backend, *, dtype=torch.float32, device="cpu", learn=PARAMS, upstream=("spk", "mem"),
        x=None, reset_mechanism="subtract", reset_delay=True, surrogate=None, low_memory=False):
    """Forward (``backend``: ``"reference"`` for the plain loop, else a fastlif backend) and
    backward with the case's upstream gradients on ``upstream`` outputs. ``x`` replaces the
    case's input (e.g. a non-contiguous view of it). Gradients of outputs nobody asked about
    are zeros, so that dicts compare key by key."""
    compute = compute_dtype(dtype)
    leaves = {"x": (case.x if x is None else x).to(device, dtype).detach().requires_grad_()}
    for name, p in case.params.items():
        leaves[name] = p.to(device, compute).clone().requires_grad_(name in learn)
    if case.mem0 is not None:
        leaves["mem0"] = case.mem0.to(device, dtype).clone().requires_grad_()
    kw = dict(mem=leaves.get("mem0"), reset_mechanism=reset_mechanism, reset_delay=reset_delay,
              graded_spikes_factor=leaves["graded"])
    if backend == "reference":
        spk, mem = lif_sequence_reference(leaves["x"], leaves["beta"], leaves["threshold"],
                                          spike_fn=surrogate, **kw)
    else:
        # the public name, looked up at each call: what users call (and what a test of
        # `fastlif check` may replace by a broken one)
        spk, mem = fastlif.lif_sequence(leaves["x"], leaves["beta"], leaves["threshold"], surrogate=surrogate,
                                backend=backend, low_memory=low_memory, **kw)
    outs, ups = [], []
    for name, out, up in (("spk", spk, case.grad_spk), ("mem", mem, case.grad_mem)):
        if name in upstream and out.requires_grad:
            outs.append(out)
            ups.append(up.to(device, out.dtype))
    if outs:
        torch.autograd.backward(outs, ups)
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)).detach()
             for k, v in leaves.items() if v.requires_grad}
    return Result(spk.detach(), mem.detach(), grads)


def run_per_step(layer, x_seq, mem=None):
    """Step a per-step LIF module (``snntorch.Leaky`` or ``fastlif.Leaky``) over the leading time
    dimension of ``x_seq``, the way snnTorch's tutorials do, and stack its outputs: the loop
    every fused result is compared with. Returns ``(spk_seq, mem_seq)``."""
    mem = layer.init_leaky() if mem is None else mem
    spikes, mems = [], []
    for x in x_seq:
        spk, mem = layer(x, mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def normwise(a, b, floor=0.0):
    """max|a - b| / max(max|b|, floor) (1 when that is 0): the error of a whole tensor, which
    means something where cancellation makes single elements tiny."""
    a, b = a.double().cpu(), b.double().cpu()
    if not b.numel():
        return 0.0
    scale = max(b.abs().max().item(), floor)
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def sum_floor(grads, name):
    """The error floor of a parameter gradient: a sum of n terms over batch and time, which
    cancels; fp32 summation alone (the fp32 reference's as much as a kernel's) is off by about
    eps * sqrt(n) * rms(term), a term being the size of one element of grad x. A real mistake,
    even in one term, is far above it."""
    grad_x = grads["x"]
    n_terms = grad_x.numel() / max(grads[name].numel(), 1)
    return grad_x.double().pow(2).mean().sqrt().item() * n_terms ** 0.5


def assert_grads_close(got, want, rtol=1e-5, *, floor=1e-6, param_floor=None, what=""):
    """Every gradient in ``want`` within ``rtol``, normwise (:func:`normwise` with ``floor``);
    ``param_floor="sum"`` floors parameter gradients at :func:`sum_floor` instead (for an fp32
    reference, whose own sums are that far off)."""
    assert set(got) == set(want), f"{what} gradients of {sorted(got)} != {sorted(want)}"
    for name in want:
        a, b = got[name], want[name]
        assert a.shape == b.shape, f"{what} grad {name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert not a.isnan().any() or b.isnan().any(), f"{what} grad {name}: NaN"
        f = sum_floor(want, name) if param_floor == "sum" and name in PARAMS else floor
        err = normwise(a, b, f)
        assert err <= rtol, f"{what} grad {name}: normwise error {err:.2e} > {rtol:.0e}"


def forward_backward(fn, leaves, upstream):
    """A family-generic run: ``fn(**leaves)`` returns a tuple of outputs; backpropagate
    ``upstream`` (one tensor or None per output) and return ``(outputs, {name: grad})`` for
    every leaf that requires grad (zeros where no gradient arrived)."""
    outputs = fn(**leaves)
    pairs = [(out, up.to(out.device, out.dtype)) for out, up in zip(outputs, upstream)
             if up is not None and out.requires_grad]
    if pairs:
        torch.autograd.backward([p[0] for p in pairs], [p[1] for p in pairs])
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)).detach()
             for k, v in leaves.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    return tuple(o.detach() for o in outputs), grads


def leaves_of(tensors, dtype=torch.float32, device="cpu", learn=()):
    """Fresh leaves of named tensors (None stays None): inputs and states in ``dtype``, requiring
    grad; parameters (:data:`PARAMS_ALL`) in the compute dtype, requiring grad if in ``learn``."""
    compute = compute_dtype(dtype)
    out = {}
    for name, t in tensors.items():
        if t is None or not isinstance(t, torch.Tensor):
            out[name] = t
            continue
        is_param = name in PARAMS_ALL
        t = t.detach().to(device, compute if is_param else dtype).clone()
        out[name] = t.requires_grad_(name in learn or not is_param)
    return out


PARAMS_ALL = ("alpha", "beta", "threshold", "graded", "V")


_SPIN = "import time\nt = time.monotonic() + {s}\nwhile time.monotonic() < t:\n    pass\n"


class Spinners:
    """``n`` busy-looping processes (default: one per core), for at most ``seconds`` each (each
    ends by itself; all are killed when the block ends): another training job or DataLoader
    workers holding the cores. The benchmarks' ``--busy`` modes and the busy-machine tests use it."""

    def __init__(self, n=None, seconds=900.0):
        import os
        self.n, self.seconds = n or os.cpu_count() or 1, seconds

    def __enter__(self):
        import subprocess
        import sys
        import time
        self.procs = [subprocess.Popen([sys.executable, "-c", _SPIN.format(s=self.seconds)]) for _ in range(self.n)]
        time.sleep(0.3)  # let them take the cores
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait(timeout=10)
        return False


# --- spec'd families (fastlif/family.py): cases and the comparison built from the spec ---------

def family_case(spec, T, neurons, seed=0, scale=1.2):
    """Random inputs for ``spec``'s family in fp64: ``(x [T, *neurons], initial states, params)``,
    the parameters from the spec's ``example`` (a spike state holds spikes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *neurons, generator=g, dtype=torch.float64) * scale + 0.4
    states = [torch.randn(*neurons, generator=g, dtype=torch.float64) * 0.5 for _ in spec.states]
    if spec.spike_state:
        states[0] = (states[0] > 0).double()
    return x, states, list(spec.example(neurons[-1], g, torch.float64))


def family_run(spec, backend, x, states, params, options, surrogate, dtype=torch.float32, device="cpu",
               single_step=False, upstream_seed=1):
    """One forward+backward of ``spec``'s family on ``backend`` with fresh leaves in ``dtype`` and
    random upstream gradients on every output; returns ``(outputs, gradients)`` (gradients of x,
    then of each given state, then of each parameter)."""
    from .family import run_family
    compute = compute_dtype(dtype)
    leaves = [x.to(device, dtype).requires_grad_()]
    leaves += [None if s is None else s.to(device, compute).requires_grad_() for s in states]
    leaves += [p.to(device, compute).requires_grad_() for p in params]
    n = len(spec.states)
    outs = run_family(spec, leaves[0], leaves[1:1 + n], leaves[1 + n:], single_step=single_step, options=options,
                      spike_fn=surrogate, surrogate=surrogate, backend=backend)
    g = torch.Generator().manual_seed(upstream_seed)
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype) for o in outs]
    used = [leaf for leaf in leaves if leaf is not None]
    grads = torch.autograd.grad(outs, used, ups, allow_unused=True)
    return [o.detach() for o in outs], [torch.zeros_like(u) if v is None else v for v, u in zip(grads, used)]


def compare_family(spec, backend, options, surrogate, device="cpu", T=9, neurons=(3, 7), seed=0, rtol=1e-5):
    """``backend`` against the family's reference step: fp32 outputs bit for bit, every gradient
    within ``rtol`` (normwise) of the fp64 reference's (parameter gradients above fp32's own
    summation floor, :func:`sum_floor`). Returns ``(problems, worst gradient error)``; no
    problems: it agrees."""
    x, states, params = family_case(spec, T, neurons, seed)
    got, got_grads = family_run(spec, backend, x, states, params, options, surrogate, device=device)
    want, _ = family_run(spec, "reference", x, states, params, options, surrogate, device=device)
    _, want_grads = family_run(spec, "reference", x, states, params, options, surrogate, torch.float64, device)
    problems = [f"output {k} differs from the reference's" for k, (a, b) in enumerate(zip(got, want))
                if not torch.equal(a, b)]
    labels = ["x", *spec.states, *spec.params]
    worst = 0.0
    for label, a, b in zip(labels, got_grads, want_grads):
        floor = sum_floor({"x": want_grads[0], label: b}, label) if label in spec.params else 1e-6
        err = normwise(a, b, floor)
        worst = max(worst, err)
        if err > rtol:
            problems.append(f"gradient of {label}: normwise error {err:.2e} > {rtol:g}")
    return problems, worst

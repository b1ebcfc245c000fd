"""The Triton scan skeleton every spec'd neuron family runs on (``fastlif/family.py``): one
forward kernel, one reverse-time backward kernel and their launchers, written once. A family's
Triton file (``kernels/<name>.py``) holds only its two step functions and registers them::

    @triton.jit
    def forward(x, s0, s1, s2, p0, p1, p2, p3, p4, p5, O0: tl.constexpr, O1: tl.constexpr,
                O2: tl.constexpr, O3: tl.constexpr):
        ...
        return spk, s0, s1, s2          # the spike output and the states after the step

    @triton.jit
    def backward(x, s0, s1, s2, n0, n1, n2, p0, p1, p2, p3, p4, p5, gspk, g0, g1, g2, sg_a,
                 sg_b, SG: tl.constexpr, O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr,
                 O3: tl.constexpr):
        ...
        return gx, g0, g1, g2, gp0, gp1, gp2, gp3, gp4, gp5

    scan.register("<name>", forward, backward)

``s*`` are the states before the step (unused slots: zeros), ``p*`` its parameters in the spec's
order (unused slots: zeros), ``O*`` its integer options; ``n*`` in backward are the states after
the step (forward's outputs), ``x`` is zeros for a family that does not read it; ``g*`` are the gradients
reaching the states after the step, and it returns those reaching the states before it, x's,
and the step's parameter gradients. The same contract as the C++ step (``csrc/scan.h``), so the
two read alike. The step functions reach the kernels as compile-time arguments.
"""
import torch
import triton
import triton.language as tl

from fastlif import backends
from fastlif.layout import compute_dtype, grid as step_grid
from fastlif.spec import FAMILIES

from . import common as C

MAX_STATES, MAX_PARAMS, MAX_OPTIONS = 3, 6, 4


@triton.jit
def _param(ptr, lidx, mask, PRESENT: tl.constexpr, PN: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr):
    if PRESENT:
        return C.load_param(ptr, lidx, mask, PN, CDT)  # a scalar unless per neuron
    else:
        return tl.zeros([BLOCK], dtype=CDT)


@triton.jit
def _params_of(p0_ptr, p1_ptr, p2_ptr, p3_ptr, p4_ptr, p5_ptr, lidx, mask, NP: tl.constexpr, PN0: tl.constexpr,
               PN1: tl.constexpr, PN2: tl.constexpr, PN3: tl.constexpr, PN4: tl.constexpr, PN5: tl.constexpr,
               CDT: tl.constexpr, BLOCK: tl.constexpr):
    """A program's parameters (the unused slots: zeros)."""
    return (_param(p0_ptr, lidx, mask, NP > 0, PN0, CDT, BLOCK), _param(p1_ptr, lidx, mask, NP > 1, PN1, CDT, BLOCK),
            _param(p2_ptr, lidx, mask, NP > 2, PN2, CDT, BLOCK), _param(p3_ptr, lidx, mask, NP > 3, PN3, CDT, BLOCK),
            _param(p4_ptr, lidx, mask, NP > 4, PN4, CDT, BLOCK), _param(p5_ptr, lidx, mask, NP > 5, PN5, CDT, BLOCK))


@triton.jit
def _store(ptr, off, value, mask, PRESENT: tl.constexpr):
    if PRESENT:
        tl.store(ptr + off, C.cast(value, ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["T", "N_BUCKET"])
def scan_fwd_kernel(
    x_ptr, i0_ptr, i1_ptr, i2_ptr, p0_ptr, p1_ptr, p2_ptr, p3_ptr, p4_ptr, p5_ptr,  # inputs
    spk_ptr, s0_ptr, s1_ptr, s2_ptr,                                                 # outputs
    T, N, L, N_BUCKET,
    STEP: tl.constexpr, NS: tl.constexpr, NP: tl.constexpr, O0: tl.constexpr, O1: tl.constexpr,
    O2: tl.constexpr, O3: tl.constexpr, PN0: tl.constexpr, PN1: tl.constexpr, PN2: tl.constexpr, PN3: tl.constexpr,
    PN4: tl.constexpr, PN5: tl.constexpr, BLOCK: tl.constexpr, PREFETCH: tl.constexpr,
):
    CDT: tl.constexpr = p0_ptr.dtype.element_ty
    offs, mask, lidx = C.block_offsets(N, L, BLOCK)
    p0, p1, p2, p3, p4, p5 = _params_of(p0_ptr, p1_ptr, p2_ptr, p3_ptr, p4_ptr, p5_ptr, lidx, mask, NP, PN0, PN1,
                                        PN2, PN3, PN4, PN5, CDT, BLOCK)
    s0 = C.load_state(i0_ptr, offs, mask, i0_ptr is not None, CDT, BLOCK)
    s1 = C.load_state(i1_ptr, offs, mask, i1_ptr is not None, CDT, BLOCK)
    s2 = C.load_state(i2_ptr, offs, mask, i2_ptr is not None, CDT, BLOCK)
    x_next = tl.load(x_ptr + offs, mask=mask, other=0)
    for t in range(0, T):
        off = tl.cast(t, tl.int64) * N + offs
        x, x_next = C.step_input(x_ptr, off, N, mask, t, T, x_next, PREFETCH, CDT)
        spk, s0, s1, s2 = STEP(x, s0, s1, s2, p0, p1, p2, p3, p4, p5, O0, O1, O2, O3)
        _store(spk_ptr, off, spk, mask, True)
        _store(s0_ptr, off, s0, mask, NS > 0)
        _store(s1_ptr, off, s1, mask, NS > 1)
        _store(s2_ptr, off, s2, mask, NS > 2)


@triton.jit(do_not_specialize=["T", "N_BUCKET"])
def scan_bwd_kernel(
    gspk_ptr, gs0_ptr, gs1_ptr, gs2_ptr, x_ptr, i0_ptr, i1_ptr, i2_ptr, s0_ptr, s1_ptr, s2_ptr,  # inputs
    p0_ptr, p1_ptr, p2_ptr, p3_ptr, p4_ptr, p5_ptr,
    gx_ptr, gi0_ptr, gi1_ptr, gi2_ptr, gp0_ptr, gp1_ptr, gp2_ptr, gp3_ptr, gp4_ptr, gp5_ptr,    # outputs
    T, N, L, N_BUCKET, sg_a: "fp64", sg_b: "fp64",
    STEP: tl.constexpr, NS: tl.constexpr, NP: tl.constexpr, SPIKE_STATE: tl.constexpr, SG: tl.constexpr,
    O0: tl.constexpr, O1: tl.constexpr, O2: tl.constexpr, O3: tl.constexpr, PN0: tl.constexpr,
    PN1: tl.constexpr, PN2: tl.constexpr, PN3: tl.constexpr, PN4: tl.constexpr, PN5: tl.constexpr, BLOCK: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    """Walks T in reverse; each step is rebuilt from x and the states before it (forward's
    outputs of the step before, or the initial states)."""
    CDT: tl.constexpr = p0_ptr.dtype.element_ty
    offs, mask, lidx = C.block_offsets(N, L, BLOCK)
    p0, p1, p2, p3, p4, p5 = _params_of(p0_ptr, p1_ptr, p2_ptr, p3_ptr, p4_ptr, p5_ptr, lidx, mask, NP, PN0, PN1,
                                        PN2, PN3, PN4, PN5, CDT, BLOCK)
    init0 = C.load_state(i0_ptr, offs, mask, i0_ptr is not None, CDT, BLOCK)
    init1 = C.load_state(i1_ptr, offs, mask, i1_ptr is not None, CDT, BLOCK)
    init2 = C.load_state(i2_ptr, offs, mask, i2_ptr is not None, CDT, BLOCK)
    sga, sgb = C.surrogate_vectors(sg_a, sg_b, CDT, BLOCK)
    zero = tl.zeros([BLOCK], dtype=CDT)
    c0, c1, c2 = zero, zero, zero  # the state gradients carried to the step before
    a0, a1, a2, a3, a4, a5 = zero, zero, zero, zero, zero, zero  # the parameters' sums over time
    for i in range(0, T):
        off = (T - 1 - i).to(tl.int64) * N + offs
        has_prev = i < T - 1
        pmask = mask & has_prev
        s0 = tl.where(has_prev, C.load_state(s0_ptr, off - N, pmask, NS > 0, CDT, BLOCK), init0)
        s1 = tl.where(has_prev, C.load_state(s1_ptr, off - N, pmask, NS > 1, CDT, BLOCK), init1)
        s2 = tl.where(has_prev, C.load_state(s2_ptr, off - N, pmask, NS > 2, CDT, BLOCK), init2)
        n0 = C.load_state(s0_ptr, off, mask, NS > 0, CDT, BLOCK)
        n1 = C.load_state(s1_ptr, off, mask, NS > 1, CDT, BLOCK)
        n2 = C.load_state(s2_ptr, off, mask, NS > 2, CDT, BLOCK)
        x = C.load_state(x_ptr, off, mask, x_ptr is not None, CDT, BLOCK)
        g0 = C.load_state(gs0_ptr, off, mask, gs0_ptr is not None, CDT, BLOCK) + c0
        g1 = C.load_state(gs1_ptr, off, mask, gs1_ptr is not None, CDT, BLOCK) + c1
        g2 = C.load_state(gs2_ptr, off, mask, gs2_ptr is not None, CDT, BLOCK) + c2
        gspk = C.load_state(gspk_ptr, off, mask, gspk_ptr is not None, CDT, BLOCK)
        if SPIKE_STATE:  # the spike output is state 0: one gradient reaches it
            gspk = gspk + g0
            g0 = tl.zeros([BLOCK], dtype=CDT)
        gx, c0, c1, c2, q0, q1, q2, q3, q4, q5 = STEP(x, s0, s1, s2, n0, n1, n2, p0, p1, p2, p3, p4, p5, gspk,
                                                      g0, g1, g2, sga, sgb, SG, O0, O1, O2, O3)
        tl.store(gx_ptr + off, gx, mask=mask)
        a0 += q0
        a1 += q1
        a2 += q2
        a3 += q3
        a4 += q4
        a5 += q5
    _store(gi0_ptr, offs, c0, mask, gi0_ptr is not None)
    _store(gi1_ptr, offs, c1, mask, gi1_ptr is not None)
    _store(gi2_ptr, offs, c2, mask, gi2_ptr is not None)
    _store(gp0_ptr, offs, a0, mask, gp0_ptr is not None)
    _store(gp1_ptr, offs, a1, mask, gp1_ptr is not None)
    _store(gp2_ptr, offs, a2, mask, gp2_ptr is not None)
    _store(gp3_ptr, offs, a3, mask, gp3_ptr is not None)
    _store(gp4_ptr, offs, a4, mask, gp4_ptr is not None)
    _store(gp5_ptr, offs, a5, mask, gp5_ptr is not None)


_FWD = C.FusedKernel(scan_fwd_kernel, {}, compute_arg="p0_ptr")
_BWD = C.FusedKernel(scan_bwd_kernel, {}, compute_arg="p0_ptr")
_STEPS = {}  # family name -> (forward step, backward step)


def _padded(items, n, fill=None):
    items = list(items)
    return items + [fill] * (n - len(items))


def _params(spec, params, compute, device, L):
    tensors = [C.launch_param(p, compute, device, L, name) for p, name in zip(params, spec.params)]
    flags = [t.numel() > 1 for t in tensors]
    dummy = tensors[0] if tensors else torch.zeros(1, dtype=compute, device=device)
    return _padded(tensors, MAX_PARAMS, dummy), _padded(flags, MAX_PARAMS, False)


def _checked(spec, options):
    if len(spec.states) > MAX_STATES or len(spec.params) > MAX_PARAMS or len(options) > MAX_OPTIONS:
        raise ValueError(f"the Triton scan runs families of up to {MAX_STATES} states, {MAX_PARAMS} parameters "
                         f"and {MAX_OPTIONS} options; {spec.name} has more")
    return _padded(options, MAX_OPTIONS, 0)


def fwd(x, states0, params, *, family, steps, options):
    spec = FAMILIES[family]
    C.check_dtype(x.dtype, "x")
    compute = compute_dtype(x.dtype)
    T, R, L = step_grid(x.shape, steps)
    N = R * L
    xc = x.contiguous()
    spk = C.new(x.shape, x.dtype, x.device)
    states = [C.new(x.shape, compute, x.device) for _ in spec.states]
    p, pn = _params(spec, params, compute, x.device, L)
    o = _checked(spec, options)
    with C.on_device(x):
        _FWD[C.grid(N)](xc, *_padded(states0, MAX_STATES), *p, spk, *_padded(states, MAX_STATES), T, N, L,
                        C.bucket(N), STEP=_STEPS[family][0], NS=len(spec.states), NP=len(spec.params),
                        O0=o[0], O1=o[1], O2=o[2], O3=o[3], PN0=pn[0], PN1=pn[1], PN2=pn[2], PN3=pn[3], PN4=pn[4],
                        PN5=pn[5])
    return spk, states


def bwd(grad_spk, grad_states, x, states0, states, params, *, family, steps, options, surrogate_kind,
        surrogate_param, x_dtype):
    spec = FAMILIES[family]
    ref = states[-1]
    compute = ref.dtype
    T, R, L = step_grid(ref.shape, steps)
    N = R * L
    p, pn = _params(spec, params, compute, ref.device, L)
    partial = [C.new((N,), compute, ref.device) if isinstance(v, torch.Tensor) else None for v in params]
    grad_x = C.new(ref.shape, compute, ref.device)
    grad_states0 = [None if s is None else C.new(s.shape, compute, s.device) for s in states0]
    o = _checked(spec, options)
    sg_a, sg_b = C.surrogate_constants(surrogate_kind, surrogate_param)
    contiguous = (lambda t: None if t is None else t.contiguous())  # noqa: E731
    with C.on_device(ref):
        _BWD[C.grid(N)](contiguous(grad_spk), *_padded(map(contiguous, grad_states), MAX_STATES),
                        contiguous(x), *_padded(states0, MAX_STATES), *_padded(states, MAX_STATES), *p, grad_x,
                        *_padded(grad_states0, MAX_STATES), *_padded(partial, MAX_PARAMS), T, N, L, C.bucket(N),
                        sg_a, sg_b, STEP=_STEPS[family][1], NS=len(spec.states), NP=len(spec.params),
                        SPIKE_STATE=spec.spike_state, SG=surrogate_kind, O0=o[0], O1=o[1], O2=o[2], O3=o[3], PN0=pn[0],
                        PN1=pn[1], PN2=pn[2], PN3=pn[3], PN4=pn[4], PN5=pn[5])
    grad_params = [None if g is None else C.reduce_param_grad(g, v, R, L) for g, v in zip(partial, params)]
    return (grad_x if x_dtype == compute else grad_x.to(x_dtype)), grad_states0, grad_params


def register(family, forward_step, backward_step):
    """Run the family named ``family`` (its spec registered by ``fastlif/families/<family>.py``)
    on Triton with these step functions."""
    _STEPS[family] = (forward_step, backward_step)
    backends.register(family, "triton", lambda: (fwd, bwd))

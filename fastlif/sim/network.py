"""Recurrent networks of LIF neurons with exponential current (CUBA) or conductance (COBA)
synapses, equal to Brian2's numpy target spike for spike and bit for bit.

The models are the two benchmarks of Vogels & Abbott (2005) as Brian2 writes them::

    CUBA  dv/dt  = (ge + gi - (v - E_L) + I)/tau_m : volt (unless refractory)
          dge/dt = -ge/tau_e : volt
          dgi/dt = -gi/tau_i : volt                       method "exact" or "euler"
    COBA  dv/dt  = (ge*(E_e - v) + gi*(E_i - v) - (v - E_L) + I)/tau_m : volt (unless refractory)
          dge/dt = -ge/tau_e : 1
          dgi/dt = -gi/tau_i : 1                          method "euler" (it is not linear)

    G = NeuronGroup(N, eqs, threshold="v > v_th", reset="v = v_reset",
                    refractory=refractory, method=method)   # I a constant
    S = Synapses(src, G, "w : 1", on_pre="ge += w")        # or gi; per-synapse delays

One step ``k`` follows Brian2's schedule: ``groups`` (every neuron integrates; ge and gi
decay also while refractory; a clamped refractory neuron keeps its v), ``thresholds``
(``v > v_th``, or ``>=`` with ``strict_threshold=False``, and not refractory),
``synapses`` (each projection adds the weights of the spikes whose delay ends in step k,
in Brian2's order, below), ``resets`` (``v = v_reset``). The synaptic additions of step k
only reach v through the update of step k+1, so the simulator performs them at the start of
step k+1, fused with that update: one pass over the state per step.

Order of the additions to one target (it decides the last bit of ge and gi): Brian2's numpy
target applies a projection's events with ``numpy.add.at`` in the order of its spike queue:
by the step the spike was emitted (earliest first), then by source neuron, then by synapse
index (the order of the ``pre, post, weight`` arrays). Projections act one after another
in the order Brian2 runs them (by name within the ``synapses`` slot); here, recurrent
projections in list order, then inputs in list order.

Expressions: the update is Brian2's generated code, with its constants (the ``_lio_``
values of the scalar block) computed by numpy from the same float64 operands in the same
order, so ``exp`` is numpy's, as in Brian2's numpy target. fastmath stays off.

Parallelism and determinism: each thread owns a contiguous range of neurons, for the update
and as targets of the spike delivery (each projection's synapses are kept as CSR by source
and delay, sorted by target within a source, so a thread finds its range by bisection),
so no atomics are needed and every target sees its additions in the same order whatever
the thread count: results are identical for any number of threads.
"""
import time
from typing import NamedTuple, Optional, Sequence

import numpy as np
from numba import njit, prange

from .lif import _real_array, _scalar

__all__ = ["simulate_network", "NetworkResult", "Projection", "Input",
           "random_connections", "poisson_spikes", "cuba_params", "coba_params"]

MODELS = ("cuba", "coba")
METHODS = ("exact", "euler")
# Threads are opt-in. A parallel region costs ~10 us to start and join on a quiet machine,
# about what one thread needs for a whole 4000-neuron step with its spikes; on a shared
# machine a worker thread waits for a core at every join: measured here (2 cores, other
# jobs running), 2 threads took 0.2-3.5 ms a step against 6-8 us (4k) and 40-80 us (40k)
# for one thread. The network's steps are too short to amortise a fork/join each.
_DEFAULT_THREADS = 1


class Projection(NamedTuple):
    """Synapses onto the network: ``pre`` [S] source indices, ``post`` [S] target neurons,
    ``weight`` (scalar or [S], units of ge/gi), ``delay`` (seconds, scalar or [S]: 0, or a
    whole number of steps >= 1) and ``target``: ``"e"`` adds to ge, ``"i"`` to gi. The array
    order is the synapse order (Brian2's synapse index)."""
    pre: np.ndarray
    post: np.ndarray
    weight: object
    delay: object = 0.0
    target: str = "e"


class Input(NamedTuple):
    """External spikes: source ``sources[m]`` (in ``0..n-1``) spikes in step ``steps[m]``,
    delivered through ``projection`` (its ``pre`` index the sources). Brian2's
    SpikeGeneratorGroup; ``poisson_spikes`` makes Poisson trains for it."""
    n: int
    steps: np.ndarray
    sources: np.ndarray
    projection: Projection


class NetworkResult(NamedTuple):
    """What ``simulate_network`` returns. ``spike_i`` [S] int32 neuron and ``spike_step``
    [S] int64 step of every spike, ordered by step then neuron (Brian2's SpikeMonitor
    order); ``spike_t`` [S] = ``spike_step*dt``; ``v`` [T, R] the membrane of the recorded
    neurons at the start of each step (StateMonitor, ``when="start"``), or None;
    ``record`` [R] their indices; ``t`` [T]; ``v_end``, ``ge_end``, ``gi_end`` [N] the
    final state; ``threads`` the number of threads used; ``build_s`` the seconds spent
    checking the arguments and building the synapse tables, ``run_s`` those of the
    compiled simulation loop alone (what benchmarks compare)."""
    spike_i: np.ndarray
    spike_step: np.ndarray
    spike_t: np.ndarray
    v: Optional[np.ndarray]
    record: np.ndarray
    t: np.ndarray
    v_end: np.ndarray
    ge_end: np.ndarray
    gi_end: np.ndarray
    threads: int
    build_s: float
    run_s: float


# ------------------------------------------------------------------ the compiled core
#
# Projections are flattened into one set of arrays: projection p has sources
# 0..npre[p]-1, delays dmin[p]..dmin[p]+nd[p]-1 (steps), and its synapses from source s
# with delay dmin+d are post/w[ptr[pbase[p] + s*nd + d] : ptr[... + 1]], sorted by post.
# A homogeneous weight is wh[p] (no per-synapse weight stored) when whom[p].
# src[p] < 0: the network itself is the source; src[p] = q >= 0: input q, whose spikes
# in step s are in_src[in_ptr[q*(T+1) + s] : in_ptr[q*(T+1) + s + 1]].

@njit(cache=True, fastmath=False, nogil=True)
def _deliver(lo, hi, j, bisect, tgt_e, tgt_i, P, ptype, psrc, pnpre, pdmin, pnd, pbase,
             ptr, post, w, whom, wh, sp_ptr, sp_i, T, in_ptr, in_src):
    """Add the events whose delivery step is ``j`` to targets ``lo:hi``, in Brian2's order."""
    for p in range(P):
        tgt = tgt_e if ptype[p] == 0 else tgt_i
        nd = pnd[p]
        dmin = pdmin[p]
        base = pbase[p]
        hom = whom[p]
        wp = wh[p]
        q = psrc[p]
        # Earliest emission first: the longest delay first.
        for d in range(nd - 1, -1, -1):
            s = j - dmin - d
            if s < 0:
                continue
            if q < 0:
                a0 = sp_ptr[s]
                a1 = sp_ptr[s + 1]
            else:
                a0 = in_ptr[q * (T + 1) + s]
                a1 = in_ptr[q * (T + 1) + s + 1]
            for m in range(a0, a1):
                src = sp_i[m] if q < 0 else in_src[m]
                row = base + src * nd + d
                c0 = ptr[row]
                c1 = ptr[row + 1]
                if bisect:
                    c0 = c0 + np.searchsorted(post[c0:c1], lo)
                    c1 = c0 + np.searchsorted(post[c0:c1], hi)
                if hom:
                    for c in range(c0, c1):
                        tgt[post[c]] += wp
                else:
                    for c in range(c0, c1):
                        tgt[post[c]] += w[c]


@njit(cache=True, fastmath=False, nogil=True)
def _update(lo, hi, k, coba, exact, clamp, strict, n_ref, c, v_th, v_reset,
            v_all, ge_all, gi_all, last_all, flag_all, spk):
    """Steps ``groups``, ``thresholds`` and ``resets`` of step ``k`` for neurons ``lo:hi``;
    writes the spiking neurons to ``spk[lo:]`` and returns how many.

    ``c`` holds Brian2's scalar constants (see ``_constants``). The update loops are
    branch-free (selects, one loop per model, int64 step counters, uint8 flags, local
    slices) so that LLVM vectorises them; the few spikes are collected in a second pass."""
    c0 = c[0]; c1 = c[1]; c2 = c[2]; c3 = c[3]; c4 = c[4]; c5 = c[5]
    v = v_all[lo:hi]; ge = ge_all[lo:hi]; gi = gi_all[lo:hi]
    last = last_all[lo:hi]; flag = flag_all[lo:hi]
    m = hi - lo
    if coba:
        for j in range(m):
            vj = v[j]; gej = ge[j]; gij = gi[j]
            # (a*((El+I) + ((ge*(Ee - v)) + (gi*(Ei - v)))) - v)) + v
            x = (c0 * ((c1 + ((gej * (c2 - vj)) + (gij * (c3 - vj)))) - vj)) + vj
            ge[j] = (c4 * gej) + gej
            gi[j] = (c5 * gij) + gij
            not_ref = (k - last[j]) >= n_ref
            x = vj if (not not_ref) and clamp else x
            above = x > v_th
            if not strict:
                above = above | (x == v_th)
            s = above & not_ref
            v[j] = v_reset if s else x
            flag[j] = np.uint8(1) if s else np.uint8(0)
    elif exact:
        for j in range(m):
            vj = v[j]; gej = ge[j]; gij = gi[j]
            # l14 + (((ke*ge) + (ki*gi)) + (E*v))
            x = c0 + (((c1 * gej) + (c2 * gij)) + (c3 * vj))
            ge[j] = c4 * gej
            gi[j] = c5 * gij
            not_ref = (k - last[j]) >= n_ref
            x = vj if (not not_ref) and clamp else x
            above = x > v_th
            if not strict:
                above = above | (x == v_th)
            s = above & not_ref
            v[j] = v_reset if s else x
            flag[j] = np.uint8(1) if s else np.uint8(0)
    else:
        for j in range(m):
            vj = v[j]; gej = ge[j]; gij = gi[j]
            # (a*(((El+I) + (ge + gi)) - v)) + v
            x = (c0 * ((c1 + (gej + gij)) - vj)) + vj
            ge[j] = (c4 * gej) + gej
            gi[j] = (c5 * gij) + gij
            not_ref = (k - last[j]) >= n_ref
            x = vj if (not not_ref) and clamp else x
            above = x > v_th
            if not strict:
                above = above | (x == v_th)
            s = above & not_ref
            v[j] = v_reset if s else x
            flag[j] = np.uint8(1) if s else np.uint8(0)
    n = 0
    for j in range(m):
        if flag[j]:
            last[j] = k
            spk[lo + n] = lo + j
            n += 1
    return n


@njit(cache=True, fastmath=False, nogil=True)
def _gather(k, nb, bounds, nspk, spk, sp_ptr, sp_i):
    """Append the spikes of step ``k`` (block by block: ascending neurons) to the list,
    growing it when full; returns the list (possibly a new array)."""
    total = 0
    for b in range(nb):
        total += nspk[b]
    start = sp_ptr[k]
    if start + total > sp_i.shape[0]:
        bigger = np.empty(max(2 * sp_i.shape[0], start + total), np.int32)
        bigger[:start] = sp_i[:start]
        sp_i = bigger
    m = start
    for b in range(nb):
        lo = bounds[b]
        for r in range(nspk[b]):
            sp_i[m] = spk[lo + r]
            m += 1
    sp_ptr[k + 1] = m
    return sp_i


@njit(cache=True, fastmath=False, nogil=True)
def _run_serial(T, coba, exact, clamp, strict, n_ref, c, v_th, v_reset, v, ge, gi, last,
                rec, rec_v, P, ptype, psrc, pnpre, pdmin, pnd, pbase, ptr, post, w, whom, wh,
                in_ptr, in_src, sp_cap):
    N = v.shape[0]
    spk = np.empty(N, np.int32)
    flag = np.zeros(N, np.uint8)
    sp_ptr = np.zeros(T + 1, np.int64)
    sp_i = np.empty(sp_cap, np.int32)
    nspk = np.zeros(1, np.int64)
    bounds = np.zeros(2, np.int64)
    bounds[1] = N
    for k in range(T):
        if k > 0:
            _deliver(0, N, k - 1, False, ge, gi, P, ptype, psrc, pnpre, pdmin, pnd, pbase,
                     ptr, post, w, whom, wh, sp_ptr, sp_i, T, in_ptr, in_src)
        for r in range(rec.shape[0]):
            rec_v[k, r] = v[rec[r]]
        nspk[0] = _update(0, N, k, coba, exact, clamp, strict, n_ref, c, v_th, v_reset,
                          v, ge, gi, last, flag, spk)
        sp_i = _gather(k, 1, bounds, nspk, spk, sp_ptr, sp_i)
    return sp_ptr, sp_i


@njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _run_parallel(T, nb, coba, exact, clamp, strict, n_ref, c, v_th, v_reset, v, ge, gi,
                  last, rec, rec_v, P, ptype, psrc, pnpre, pdmin, pnd, pbase, ptr, post, w,
                  whom, wh, in_ptr, in_src, sp_cap):
    N = v.shape[0]
    spk = np.empty(N, np.int32)
    flag = np.zeros(N, np.uint8)
    sp_ptr = np.zeros(T + 1, np.int64)
    sp_i = np.empty(sp_cap, np.int32)
    nspk = np.zeros(nb, np.int64)
    size = (N + nb - 1) // nb
    bounds = np.empty(nb + 1, np.int64)
    for b in range(nb + 1):
        bounds[b] = min(N, b * size)
    for k in range(T):
        for r in range(rec.shape[0]):
            rec_v[k, r] = v[rec[r]]
        # One parallel region a step: each thread delivers the previous step's events to
        # its own neurons, then updates them (no atomics, no barrier in between).
        for b in prange(nb):
            lo = bounds[b]
            hi = bounds[b + 1]
            if k > 0:
                _deliver(lo, hi, k - 1, True, ge, gi, P, ptype, psrc, pnpre, pdmin, pnd,
                         pbase, ptr, post, w, whom, wh, sp_ptr, sp_i, T, in_ptr, in_src)
            nspk[b] = _update(lo, hi, k, coba, exact, clamp, strict, n_ref, c, v_th,
                              v_reset, v, ge, gi, last, flag, spk)
        sp_i = _gather(k, nb, bounds, nspk, spk, sp_ptr, sp_i)
    return sp_ptr, sp_i


# ------------------------------------------------------------------ Python layer

def _constants(model, method, clamp, dt, tau_m, tau_e, tau_i, E_L, I, E_e, E_i):
    """Brian2's scalar block (the ``_lio_`` constants) for the model, computed with the same
    float64 operations in the same order as its generated numpy code."""
    c = np.zeros(8)
    if model == "coba":
        c[:6] = [dt / tau_m, E_L + I, E_e, E_i, (-dt) / tau_e, (-dt) / tau_i]
    elif method == "euler":
        c[:6] = [dt / tau_m, E_L + I, 0.0, 0.0, (-dt) / tau_e, (-dt) / tau_i]
    else:
        for name, tau in (("tau_e", tau_e), ("tau_i", tau_i)):
            if tau == tau_m:
                raise ValueError(f"method 'exact' needs {name} != tau_m (Brian2's exact "
                                 f"solution divides by tau_m - {name}); got both {tau}")
        exp = np.exp
        l4 = E_L + I
        l5 = tau_e * exp((-dt) / tau_e)
        l6 = -exp(dt / tau_e)
        l7 = dt / tau_m
        l8 = (-dt) / tau_m
        l9 = 0.0 - tau_m
        l10 = tau_i * exp((-dt) / tau_i)
        l11 = -exp(dt / tau_i)
        l12 = (-E_L) - I
        l14 = l4 + (l12 * exp(l8))
        if clamp:
            ke = ((l5 * (l6 + exp(l7))) * exp(l8)) / (l9 + tau_e)
            ki = ((l10 * (l11 + exp(l7))) * exp(l8)) / (l9 + tau_i)
        else:
            # Without "(unless refractory)" sympy simplifies the same solution into another
            # form (Brian2 2.9), which rounds differently.
            ke = (((tau_e * ((-exp(dt / tau_e)) + exp(dt / tau_m))) * exp((-dt) / tau_e))
                  * exp((-dt) / tau_m)) / (tau_e - tau_m)
            ki = (((tau_i * ((-exp(dt / tau_i)) + exp(dt / tau_m))) * exp((-dt) / tau_i))
                  * exp((-dt) / tau_m)) / (tau_i - tau_m)
        c[:6] = [l14, ke, ki, exp(l8), exp((-dt) / tau_e), exp((-dt) / tau_i)]
    return c


def _index_array(name, value, n, limit_name):
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of indices, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise TypeError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][0]
        raise ValueError(f"{name} has index {bad} out of range 0..{n - 1} ({limit_name})")
    return arr


def _delay_steps(name, delay, S, dt):
    """Delays in seconds -> whole steps; 0 (Brian2's default: the same step) or >= 1 step."""
    d = _real_array(name, delay)
    if d.ndim > 1 or (d.ndim == 1 and d.shape[0] != S):
        raise ValueError(f"{name} must be a scalar or [{S}] (one per synapse), got shape "
                         f"{d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{name} must be finite")
    if np.any(d < 0):
        raise ValueError(f"{name} must be >= 0, got {d.min()}")
    steps = np.round(d / dt)
    if np.any((d > 0) & (steps < 1)):
        raise ValueError(f"{name} has a delay below one step (dt = {dt}); use 0 or >= dt")
    if np.any(np.abs(steps * dt - d) > 1e-6 * dt + 1e-12 * np.abs(d)):
        raise ValueError(f"{name} must be whole multiples of dt = {dt} (0, or at least one "
                         "step)")
    return np.broadcast_to(steps.astype(np.int64), (S,))


def _projection(where, proj, n_pre, N, dt):
    if not isinstance(proj, Projection):
        if isinstance(proj, (tuple, list)) and 3 <= len(proj) <= 5:
            proj = Projection(*proj)
        else:
            raise TypeError(f"{where} must be a Projection(pre, post, weight, delay, target), "
                            f"got {type(proj).__name__}")
    if proj.target not in ("e", "i"):
        raise ValueError(f"{where}.target must be 'e' (ge) or 'i' (gi), got {proj.target!r}")
    pre = _index_array(f"{where}.pre", proj.pre, n_pre, f"{n_pre} sources")
    post = _index_array(f"{where}.post", proj.post, N, f"{N} neurons")
    S = pre.shape[0]
    if post.shape[0] != S:
        raise ValueError(f"{where}: pre has {S} entries but post has {post.shape[0]}")
    weight = _real_array(f"{where}.weight", proj.weight)
    if weight.ndim > 1 or (weight.ndim == 1 and weight.shape[0] != S):
        raise ValueError(f"{where}.weight must be a scalar or [{S}] (one per synapse), got "
                         f"shape {weight.shape}")
    if not np.all(np.isfinite(weight)):
        raise ValueError(f"{where}.weight must be finite")
    delay = _delay_steps(f"{where}.delay", proj.delay, S, dt)
    return pre, post, weight, delay, 0 if proj.target == "e" else 1


def _flatten(projs, T):
    """CSR by (source, delay), sorted by target within (stable: multapses keep their
    order, so each target sees its additions in Brian2's order)."""
    P = len(projs)
    ptype = np.zeros(P, np.int64); psrc = np.zeros(P, np.int64)
    pnpre = np.zeros(P, np.int64); pdmin = np.zeros(P, np.int64)
    pnd = np.ones(P, np.int64); pbase = np.zeros(P, np.int64)
    whom = np.zeros(P, np.bool_); wh = np.zeros(P)
    ptrs, posts, ws = [], [], []
    base, off = 0, 0
    for p, (q, n_pre, pre, post, weight, delay, typ) in enumerate(projs):
        S = pre.shape[0]
        dmin = int(delay.min()) if S else 0
        nd = int(delay.max()) - dmin + 1 if S else 1
        order = np.lexsort((post, delay, pre))      # by pre, then delay, then post; stable
        row = pre[order] * nd + (delay[order] - dmin)
        counts = np.bincount(row, minlength=n_pre * nd)
        ptr = np.empty(n_pre * nd + 1, np.int64)
        ptr[0] = off
        np.cumsum(counts, out=ptr[1:])
        ptr[1:] += off
        ptrs.append(ptr[:-1] if p < P - 1 else ptr)
        posts.append(post[order].astype(np.int32))
        if weight.ndim == 0:
            whom[p] = True
            wh[p] = float(weight)
        else:
            ws.append(np.ascontiguousarray(weight[order]))
        ptype[p], psrc[p], pnpre[p], pdmin[p], pnd[p], pbase[p] = typ, q, n_pre, dmin, nd, base
        base += n_pre * nd
        off += S
    if P == 0:
        ptr = np.zeros(1, np.int64)
        post = np.zeros(0, np.int32)
    else:
        ptr = np.concatenate(ptrs)
        post = np.concatenate(posts)
    # Per-synapse weights are stored at their synapse's global position; with none, no
    # weight array at all (4 bytes a synapse: the target index).
    w = np.zeros(off if ws else 0)
    if ws:
        pos = 0
        wi = 0
        for p, (q, n_pre, pre, post_p, weight, delay, typ) in enumerate(projs):
            S = pre.shape[0]
            if not whom[p]:
                w[pos:pos + S] = ws[wi]
                wi += 1
            pos += S
    return P, ptype, psrc, pnpre, pdmin, pnd, pbase, ptr, post, w, whom, wh


def simulate_network(N, T, dt, *, model="cuba", method=None, tau_m=20e-3, tau_e=5e-3,
                     tau_i=10e-3, E_L=-49e-3, v_th=-50e-3, v_reset=-60e-3, refractory=5e-3,
                     clamp_refractory=True, strict_threshold=True, I=0.0, E_e=0.0,
                     E_i=-80e-3, v0=None, ge0=0.0, gi0=0.0,
                     synapses: Sequence = (), inputs: Sequence = (), record=None,
                     threads=None):
    """Simulate a recurrent network of LIF neurons with exponential current (``"cuba"``) or
    conductance (``"coba"``) synapses for ``T`` steps of ``dt``, exactly as Brian2's numpy
    target does (module docstring: the equations, the schedule, the order of additions).

    Units are SI as floats (seconds, volts; CUBA's ge, gi in volts, COBA's dimensionless).

    Parameters
    ----------
    N, T : int
        Neurons and time steps.
    dt, tau_m, tau_e, tau_i : float > 0
        Step and time constants (membrane, excitatory and inhibitory synapses).
    model : "cuba" or "coba";  method : "exact" (CUBA only) or "euler"
        Default: "exact" for CUBA, "euler" for COBA.
    E_L, v_th, v_reset, I, E_e, E_i : float
        Rest, threshold, reset, constant drive (in volts, added like ``E_L``), and COBA's
        reversal potentials.
    refractory : float >= 0
        Rounded down to whole steps like Brian2's ``timestep`` (``simulate_lif``).
    clamp_refractory : bool
        True: v is held while refractory (``(unless refractory)``); False: it integrates.
    strict_threshold : bool
        True: spike when ``v > v_th`` (Brian2's CUBA and COBA); False: ``v >= v_th``.
    v0, ge0, gi0 : float or [N]
        Initial state (v0 None: ``E_L``).
    synapses : sequence of Projection
        Recurrent projections (sources are the N neurons), in Brian2's running order.
    inputs : sequence of Input
        External spikes (given or ``poisson_spikes``), acting after the recurrent ones.
    record : None, or indices of neurons whose v to record every step.
    threads : None or int >= 1
        Threads (blocks of neurons, each its own targets). None: one (see
        ``_DEFAULT_THREADS``: a fork/join a step costs more than it saves on busy machines).
        The result is identical for any count.

    Returns
    -------
    NetworkResult
    """
    t_build = time.perf_counter()
    if isinstance(N, (bool, np.bool_)) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N must be a positive integer, got {N!r}")
    if isinstance(T, (bool, np.bool_)) or not isinstance(T, (int, np.integer)) or T < 0:
        raise ValueError(f"T must be a non-negative integer number of steps, got {T!r}")
    N, T = int(N), int(T)
    if N >= 2**31 or T >= 2**31:
        raise ValueError("N and T must be below 2**31")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; use one of {MODELS}")
    if method is None:
        method = "exact" if model == "cuba" else "euler"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if model == "coba" and method == "exact":
        raise ValueError("method 'exact' needs linear equations; COBA's ge*(E_e - v) is not "
                         "(Brian2 refuses it too): use method='euler'")
    dt = _scalar("dt", dt, positive=True)
    tau_m = _scalar("tau_m", tau_m, positive=True)
    tau_e = _scalar("tau_e", tau_e, positive=True)
    tau_i = _scalar("tau_i", tau_i, positive=True)
    E_L = _scalar("E_L", E_L)
    v_th = _scalar("v_th", v_th)
    v_reset = _scalar("v_reset", v_reset)
    I = _scalar("I", I)
    E_e = _scalar("E_e", E_e)
    E_i = _scalar("E_i", E_i)
    refractory = _scalar("refractory", refractory, nonnegative=True)
    for name, flag in (("clamp_refractory", clamp_refractory),
                       ("strict_threshold", strict_threshold)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")

    def state(name, value, default):
        arr = _real_array(name, default if value is None else value)
        if arr.ndim == 0:
            arr = np.full(N, float(arr))
        if arr.shape != (N,):
            raise ValueError(f"{name} must be a scalar or [N={N}], got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
        return np.array(arr, np.float64)        # an owned copy: the simulation writes it

    v = state("v0", v0, E_L)
    ge = state("ge0", ge0, 0.0)
    gi = state("gi0", gi0, 0.0)

    projs = []
    for n, proj in enumerate(synapses):
        pre, post, weight, delay, typ = _projection(f"synapses[{n}]", proj, N, N, dt)
        projs.append((-1, N, pre, post, weight, delay, typ))
    in_ptrs, in_srcs = [], []
    for q, inp in enumerate(inputs):
        if not isinstance(inp, Input):
            raise TypeError(f"inputs[{q}] must be an Input(n, steps, sources, projection), "
                            f"got {type(inp).__name__}")
        n_in = inp.n
        if isinstance(n_in, (bool, np.bool_)) or not isinstance(n_in, (int, np.integer)) \
                or n_in < 1:
            raise ValueError(f"inputs[{q}].n must be a positive integer, got {n_in!r}")
        steps = _index_array(f"inputs[{q}].steps", inp.steps, max(T, 1), f"{T} steps")
        srcs = _index_array(f"inputs[{q}].sources", inp.sources, int(n_in), f"{n_in} sources")
        if steps.shape != srcs.shape:
            raise ValueError(f"inputs[{q}]: steps has {steps.shape[0]} entries but sources "
                             f"has {srcs.shape[0]}")
        order = np.lexsort((srcs, steps))
        steps, srcs = steps[order], srcs[order]
        if steps.size and np.any((np.diff(steps) == 0) & (np.diff(srcs) == 0)):
            raise ValueError(f"inputs[{q}]: a source spikes twice in one step")
        ptr = np.zeros(T + 1, np.int64)
        np.cumsum(np.bincount(steps, minlength=T)[:T], out=ptr[1:])
        in_ptrs.append(ptr + sum(len(s) for s in in_srcs))
        in_srcs.append(srcs.astype(np.int32))
        pre, post, weight, delay, typ = _projection(f"inputs[{q}].projection", inp.projection,
                                                    int(n_in), N, dt)
        projs.append((q, int(n_in), pre, post, weight, delay, typ))
    flat = _flatten(projs, T)
    in_ptr = np.concatenate(in_ptrs) if in_ptrs else np.zeros(1, np.int64)
    in_src = np.concatenate(in_srcs) if in_srcs else np.zeros(0, np.int32)

    rec = np.zeros(0, np.int64) if record is None else \
        _index_array("record", record, N, f"{N} neurons")
    rec_v = np.empty((T, rec.shape[0]))
    if threads is None:
        nb = _DEFAULT_THREADS
    else:
        if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)) \
                or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        nb = int(threads)
    nb = max(1, min(nb, N))

    c = _constants(model, method, bool(clamp_refractory), dt, tau_m, tau_e, tau_i, E_L, I, E_e, E_i)
    # Brian2's timestep(refractory, dt); capped so the step arithmetic stays in int32.
    n_ref = int(min((refractory + 1e-3 * dt) / dt, T + 1))
    last = np.full(N, -n_ref - 1, np.int64)
    sp_cap = max(1024, N)
    common = (model == "coba", method == "exact", bool(clamp_refractory),
              bool(strict_threshold), n_ref, c, v_th, v_reset, v, ge, gi, last, rec, rec_v,
              *flat, in_ptr, in_src, sp_cap)
    t_run = time.perf_counter()
    if nb == 1:
        sp_ptr, sp_i = _run_serial(T, *common)
    else:
        sp_ptr, sp_i = _run_parallel(T, nb, *common)
    t_end = time.perf_counter()
    n_sp = int(sp_ptr[T])
    spike_i = sp_i[:n_sp].copy()
    spike_step = np.repeat(np.arange(T, dtype=np.int64), np.diff(sp_ptr))
    return NetworkResult(spike_i, spike_step, spike_step * dt,
                         rec_v if record is not None else None, rec, np.arange(T) * dt,
                         v, ge, gi, nb, t_run - t_build, t_end - t_run)


# ------------------------------------------------------------------ building blocks

def random_connections(n_pre, n_post, p, seed, *, pre_offset=0):
    """Bernoulli connectivity with probability ``p`` (autapses allowed, as in Brian2's
    ``connect(p=p)``): ``(pre, post)`` int64 ordered by pre then post. Sources are
    ``pre_offset .. pre_offset + n_pre - 1``. Built source by source in chunks, so memory
    stays in proportion to the synapses."""
    p = _scalar("p", p, nonnegative=True)
    if p > 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    rng = np.random.default_rng(seed)
    pres, posts = [], []
    # Geometric gaps between successive synapses in the flattened n_pre x n_post matrix:
    # the same Bernoulli(p) draw for every pair, without a dense matrix.
    total = n_pre * n_post
    pos = -1
    while p > 0:
        m = int(max(1024, (total - pos) * p * 1.1 + 100))
        gaps = rng.geometric(p, m)
        flat = pos + np.cumsum(gaps)
        keep = flat[flat < total]
        pres.append(keep // n_post + pre_offset)
        posts.append(keep % n_post)
        if keep.size < m:
            break
        pos = int(flat[-1])
    if not pres:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pres), np.concatenate(posts)


def poisson_spikes(n, rate, T, dt, seed):
    """``(steps, sources)`` of ``n`` Poisson sources at ``rate`` Hz for ``T`` steps: each
    source spikes in a step with probability ``rate*dt`` (Brian2's PoissonGroup), drawn
    from ``numpy.random.default_rng(seed)``. Hand to ``Input(n, steps, sources, proj)``."""
    rate = _scalar("rate", rate, nonnegative=True)
    dt = _scalar("dt", dt, positive=True)
    if rate * dt > 1:
        raise ValueError(f"rate*dt must be <= 1, got {rate * dt}")
    rng = np.random.default_rng(seed)
    steps, sources = [], []
    chunk = max(1, (1 << 22) // max(n, 1))
    for k0 in range(0, T, chunk):
        k1 = min(T, k0 + chunk)
        s, i = np.nonzero(rng.random((k1 - k0, n)) < rate * dt)
        steps.append(s + k0)
        sources.append(i)
    if not steps:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(steps), np.concatenate(sources)


def cuba_params(N=4000, seed=0, p=None):
    """The CUBA benchmark as Brian2's example writes it (Vogels & Abbott 2005), for
    ``simulate_network(**cuba_params(N), T=..., dt=1e-4)``: 80 % excitatory neurons,
    connection probability 0.02 at 4000 neurons and ``80/N`` above (80 synapses a neuron,
    as Brian2's paper scales it), we = 1.62 mV, wi = -9 mV, v0 uniform in [v_reset, v_th)."""
    p = min(1.0, 80.0 / N) if p is None else p
    rng = np.random.default_rng(seed)
    ne = int(N * 0.8)
    pe, qe = random_connections(ne, N, p, rng.integers(2**63))
    pi, qi = random_connections(N - ne, N, p, rng.integers(2**63), pre_offset=ne)
    mV = 1e-3
    v_th, v_reset = -50 * mV, -60 * mV
    v0 = v_reset + rng.random(N) * (v_th - v_reset)
    return dict(N=N, model="cuba", method="exact", tau_m=20e-3, tau_e=5e-3, tau_i=10e-3,
                E_L=-49 * mV, v_th=v_th, v_reset=v_reset, refractory=5e-3, v0=v0,
                synapses=[Projection(pe, qe, (60 * 0.27 / 10) * mV, 0.0, "e"),
                          Projection(pi, qi, (-20 * 4.5 / 10) * mV, 0.0, "i")])


def coba_params(N=4000, seed=0, p=None):
    """The COBA benchmark as Brian2's benchmark scripts write it: El -60 mV, Ee 0 mV,
    Ei -80 mV, I = 20 mV, we 0.6, wi 6.7, v_th -50 mV, v_reset -60 mV, 5 ms refractory,
    Euler, v0 = -55 mV + 5 mV * randn, p 0.02 at 4000 (80/N above)."""
    p = min(1.0, 80.0 / N) if p is None else p
    rng = np.random.default_rng(seed)
    ne = int(N * 0.8)
    pe, qe = random_connections(ne, N, p, rng.integers(2**63))
    pi, qi = random_connections(N - ne, N, p, rng.integers(2**63), pre_offset=ne)
    mV = 1e-3
    v0 = -55 * mV + 5 * mV * rng.standard_normal(N)
    return dict(N=N, model="coba", method="euler", tau_m=20e-3, tau_e=5e-3, tau_i=10e-3,
                E_L=-60 * mV, E_e=0.0, E_i=-80 * mV, I=20 * mV, v_th=-50 * mV,
                v_reset=-60 * mV, refractory=5e-3, v0=v0,
                synapses=[Projection(pe, qe, 0.6, 0.0, "e"),
                          Projection(pi, qi, 6.7, 0.0, "i")])

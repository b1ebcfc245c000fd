"""A CPU reference simulator for populations of LIF neurons in physical units.

The tutorial starts from the LIF neuron as an RC circuit, simulated by a hand-written loop.
``simulate_lif`` is that loop made into a tool: many neurons at once, compiled with Numba,
parallel over neurons, and written to agree with Brian2 spike for spike.

Agreeing with Brian2 bit for bit means copying not just its model but its schedule and the
exact order of its floating-point operations. One time step ``k`` (``t = k*dt``) is:

  0. the membrane at the start of the step is what ``res.v[k]`` holds (Brian2's StateMonitor
     records in the ``start`` slot, before anything else happens in the step);
  1. neurons that are not refractory integrate one step with the input ``I[k]``
     (clamped refractory neurons keep their v; unclamped ones integrate too):
       euler: ``v = dt/tau * ((E_L + R*I) - v) + v``
       exact: ``v = E_L + ((R*I + e*v) + e*(-E_L - R*I))`` with ``e = exp(-dt/tau)``
  2. non-refractory neurons with ``v >= v_th`` spike (``res.spikes[k]``, time ``k*dt``);
  3. the input spikes of step ``k`` add their weights to v, input by input in ascending
     order, skipping the neurons that just spiked and, when clamped, the refractory ones
     (Brian2's ``on_pre='v += w'`` skips them for a variable marked ``(unless refractory)``);
  4. the neurons that spiked are set to ``v_reset``.

A neuron that spiked at step ``s`` is refractory in steps ``s+1 ... s+n-1``, where
``n = int((refractory + 1e-3*dt) / dt)`` is Brian2's ``timestep(refractory, dt)``:
the refractory time rounded *down* to whole steps (with a tolerance of dt/1000).

The Brian2 model this reproduces bit for bit (numpy target; its C++ targets compile with
-ffast-math and may differ in the last bits)::

    eqs = "dv/dt = ((E_L + R*I) - v)/tau : 1 (unless refractory)\nI = I_ta(t, i) : 1"
    G = NeuronGroup(N, eqs, threshold="v >= v_th", reset="v = v_reset",
                    refractory=refractory, method="euler" or "exact")  # E_L, R, tau constants
    S = Synapses(inputs, G, "w : 1", on_pre="v += w"); S.connect()  # input spikes, weights

Drop ``(unless refractory)`` for ``clamp_refractory=False``. The expression order above is
what Brian2 generates for *this* formulation: with E_L or R as per-neuron variables, or a
current shared by all neurons (``I_ta(t)``, hoisted out of the neuron loop), Brian2 orders
the exact update differently: v then agrees only to rounding (a few ulp), and a spike that
lands exactly on the threshold could flip.

The tutorial's loop is this model with E_L = 0, R = 1 and Euler, shifted by one index: its
``V[k]`` is ``res.v[k]`` and its ``spk[k+1]`` is ``res.spikes[k]``. Its expression
``(-(V - E_L) + I) * (dt/tau)`` rounds exactly like Brian2's for E_L = 0 (``-V + I`` is
``I - V``), so it too is reproduced bit for bit.
"""
from typing import NamedTuple

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = ["simulate_lif", "LIFResult", "tutorial_current_step"]

METHODS = ("euler", "exact")


class LIFResult(NamedTuple):
    """What ``simulate_lif`` returns: ``v`` [T, N] float64 (membrane at the start of each
    step), ``spikes`` [T, N] bool (spikes emitted in each step) and ``t`` [T] (``k*dt``)."""
    v: np.ndarray
    spikes: np.ndarray
    t: np.ndarray


# The loop nest is tiled for the caches. Each thread owns one contiguous segment of the
# population and walks it in chunks of _CHUNK neurons, _TILE steps at a time: a chunk's state
# (v, last spike, current: 20 bytes a neuron) stays in the 48 KiB L1 for its _TILE steps
# (untiled, the state spills to L2 and the loop runs ~1.7x slower), and all threads fill the
# same few rows of the [T, N] outputs at a time, so freshly faulted-in pages are written
# while still in cache (one chunk running through all T steps is ~15% slower on a 10k x 10k
# trace).
_CHUNK = 1024
_TILE = 32
# Threads only pay off with at least _MIN_BLOCK neurons each and _MIN_PARALLEL neuron-steps
# in all: a parallel region costs ~10 us to start and join, and far more (a scheduler time
# slice per call) when the machine is busy and a worker thread has to wait for a core.
_MIN_BLOCK = 64
_MIN_PARALLEL = 1 << 18


@njit(cache=True, fastmath=False, nogil=True)
def _run_segment(lo, hi, I, v0, exact, a, e, R, E_L, v_th, v_reset, n_ref, clamp,
                 in_ptr, in_idx, W, v_out, s_out, strict):
    """Simulate neurons ``lo:hi`` through all T steps, filling their columns of ``s_out``
    [T, N] and ``v_out`` ([T, N], or [1, N] to record no trace).

    ``I`` is [T, N], or [T, 1] for one current shared by every neuron. The neuron loop is
    branch-free (selects only) so that LLVM vectorises it. fastmath stays off:
    reassociating or contracting (FMA) the arithmetic would break bitwise agreement with
    Brian2.
    """
    T = s_out.shape[0]
    record_v = v_out.shape[0] == T
    shared_I = I.shape[1] == 1
    neg_E_L = -E_L
    nonstrict = not strict
    v_all = v0[lo:hi].copy()
    # Step of the last spike, like Brian2's `lastspike`; the start value is far enough
    # back that no neuron starts refractory.
    last_all = np.full(hi - lo, -n_ref, np.int32)
    shared = np.empty(min(hi - lo, _CHUNK))
    for k0 in range(0, T, _TILE):
        for c0 in range(lo, hi, _CHUNK):
            c1 = min(hi, c0 + _CHUNK)
            m = c1 - c0
            v = v_all[c0 - lo:c1 - lo]
            last = last_all[c0 - lo:c1 - lo]
            for k in range(k0, min(T, k0 + _TILE)):
                vrow = v_out[k if record_v else 0, c0:c1]
                srow = s_out[k, c0:c1]
                if shared_I:
                    shared[:m] = I[k, 0]
                    Irow = shared
                else:
                    Irow = I[k, c0:c1]
                for j in range(m):
                    vj = v[j]
                    lj = last[j]
                    vrow[j] = vj
                    if exact:
                        RI = R * Irow[j]
                        x = E_L + ((RI + e * vj) + e * (neg_E_L - RI))
                    else:
                        x = a * ((E_L + R * Irow[j]) - vj) + vj
                    refractory = k - lj < n_ref
                    x = vj if refractory & clamp else x
                    s = ((x > v_th) | (nonstrict & (x == v_th))) & (not refractory)
                    srow[j] = s
                    last[j] = np.int32(k) if s else lj
                    v[j] = v_reset if s else x
                # Input spikes land after the threshold, so they can make a neuron spike
                # at the earliest in the next step. They skip the neurons that just spiked
                # (reset anyway) and, when clamped, the refractory ones: Brian2's synapse
                # code skips exactly these for `v += w` on a variable that is
                # `(unless refractory)`.
                for p in range(in_ptr[k], in_ptr[k + 1]):
                    wrow = W[in_idx[p], c0:c1]
                    for i in range(m):
                        since = k - last[i]
                        hold = (since == 0) | (clamp & (since < n_ref))
                        vi = v[i]
                        v[i] = vi if hold else vi + wrow[i]


@njit(parallel=True, cache=True, fastmath=False, nogil=True)
def _simulate_parallel(nblocks, I, v0, exact, a, e, R, E_L, v_th, v_reset, n_ref, clamp,
                       in_ptr, in_idx, W, v_out, s_out, strict):
    """``_run_segment`` on ``nblocks`` equal segments of the population, one per thread."""
    N = s_out.shape[1]
    size = (N + nblocks - 1) // nblocks
    for b in prange(nblocks):
        lo = min(N, b * size)
        _run_segment(lo, min(N, lo + size), I, v0, exact, a, e, R, E_L, v_th, v_reset,
                     n_ref, clamp, in_ptr, in_idx, W, v_out, s_out, strict)


def _scalar(name, value, *, positive=False, nonnegative=False):
    """A finite real scalar as float, or a TypeError/ValueError that names ``name``."""
    if (isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0
            or np.iscomplexobj(value)):
        raise TypeError(f"{name} must be a real scalar, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real scalar, got {value!r}") from None
    if not np.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if positive and not x > 0:
        raise ValueError(f"{name} must be > 0, got {x}")
    if nonnegative and not x >= 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return x


def _real_array(name, value):
    """``value`` as a float64 array, or a TypeError that names ``name``."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def simulate_lif(I, dt, tau_m, *, R=1.0, E_L=0.0, v_th=1.0, v_reset=0.0, v0=None,
                 refractory=0.0, clamp_refractory=True, method="euler",
                 spikes_in=None, weights=None, record_v=True, strict_threshold=False):
    """Simulate a population of leaky integrate-and-fire neurons,
    ``tau_m dv/dt = (E_L - v) + R*I``, exactly as Brian2 does (see the module docstring
    for the schedule of a step).

    Units are yours, as long as they are consistent: e.g. seconds, volts, ohms, amperes
    (``R*I`` in volts), or the tutorial's dimensionless ``R=1``.

    Parameters
    ----------
    I : array [T] or [T, N]
        Input current per step, held constant over the step. [T, N] gives each neuron its
        own current; [T] is one current shared by all neurons.
    dt, tau_m : float > 0
        Time step and membrane time constant.
    R, E_L, v_th, v_reset : float
        Membrane resistance, resting potential, threshold (spike when ``v >= v_th``, or
        ``v > v_th`` with ``strict_threshold``) and reset potential.
    v0 : None, float or array [N]
        Membrane at the start of step 0 (``res.v[0]``); None starts at rest, ``E_L``.
    refractory : float >= 0
        Refractory time, rounded down to whole steps like Brian2 (see the module docstring).
    clamp_refractory : bool
        True: v stays at ``v_reset`` while refractory (Brian2's ``(unless refractory)``).
        False: v keeps integrating while refractory, but the neuron cannot spike.
    method : "euler" or "exact"
        Forward Euler, or exponential integration for an input held constant over a step.
    spikes_in : array [T, N_in] of bool, optional
        Input spike raster; each input spike at step k adds ``weights[i]`` to v (step 3).
    weights : array [N_in, N], optional
        Dense input weights, in the units of v; required with ``spikes_in`` and only then.
    strict_threshold : bool
        False (default): spike when ``v >= v_th`` (Brian2 ``threshold="v >= v_th"``);
        True: when ``v > v_th``, as Brian2's CUBA and COBA examples write it.
    record_v : bool
        False skips the [T, N] membrane trace (``res.v`` is None): the spikes alone cost
        a ninth of the memory traffic, which is what bounds large simulations.

    The number of neurons N comes from ``I`` [T, N], else from ``v0`` [N] or
    ``weights`` [N_in, N]; with none of these, N = 1. Whatever gives it must agree.

    Returns
    -------
    LIFResult(v, spikes, t)
        ``v`` [T, N] float64, the membrane at the start of step k (what Brian2's
        StateMonitor records); ``spikes`` [T, N] bool, the spikes emitted in step k;
        ``t`` [T], ``k*dt``. Always 2-D, also for one neuron. ``v`` is None when
        ``record_v`` is False.
    """
    dt = _scalar("dt", dt, positive=True)
    tau_m = _scalar("tau_m", tau_m, positive=True)
    R = _scalar("R", R)
    E_L = _scalar("E_L", E_L)
    v_th = _scalar("v_th", v_th)
    v_reset = _scalar("v_reset", v_reset)
    refractory = _scalar("refractory", refractory, nonnegative=True)
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, one of {METHODS}, got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    for name, flag in (("clamp_refractory", clamp_refractory), ("record_v", record_v),
                       ("strict_threshold", strict_threshold)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")

    I = _real_array("I", I)
    if I.ndim not in (1, 2):
        raise ValueError(f"I must be [T] or [T, N], got a {I.ndim}-D array of shape {I.shape}")
    T = I.shape[0]
    if T >= 2**31:  # spike steps are kept as int32
        raise ValueError(f"I has {T} time steps; at most 2**31 - 1 are supported")

    # N: from I [T, N], else from v0 [N] or weights [N_in, N], else one neuron.
    sources = {}
    if I.ndim == 2:
        sources["I"] = I.shape[1]
    if v0 is not None:
        v0 = _real_array("v0", v0)
        if v0.ndim > 1:
            raise ValueError(f"v0 must be a scalar or [N], got shape {v0.shape}")
        if v0.ndim == 1:
            sources["v0"] = v0.shape[0]
    if (spikes_in is None) != (weights is None):
        raise ValueError("spikes_in and weights go together: give both or neither "
                         f"(got {'spikes_in' if weights is None else 'weights'} only)")
    if weights is not None:
        weights = _real_array("weights", weights)
        if weights.ndim != 2:
            raise ValueError(f"weights must be [N_in, N], got shape {weights.shape}")
        sources["weights"] = weights.shape[1]
    if len(set(sources.values())) > 1:
        raise ValueError("the number of neurons N disagrees between "
                         + ", ".join(f"{k} (N={n})" for k, n in sources.items()))
    N = next(iter(sources.values()), 1)

    if v0 is None:
        v0 = np.full(N, E_L)
    elif v0.ndim == 0:
        v0 = np.full(N, float(v0))
    v0 = np.ascontiguousarray(v0)
    if not np.all(np.isfinite(v0)):
        raise ValueError("v0 must be finite")

    if spikes_in is not None:
        raster = np.asarray(spikes_in)
        if raster.ndim != 2:
            raise ValueError(f"spikes_in must be [T, N_in], got shape {raster.shape}")
        if raster.dtype != np.bool_:
            if raster.dtype.kind not in "iuf" or not np.all((raster == 0) | (raster == 1)):
                raise TypeError("spikes_in must be boolean (or 0/1 values), "
                                f"got dtype {raster.dtype}")
            raster = raster != 0
        if raster.shape[0] != T:
            raise ValueError(f"spikes_in has {raster.shape[0]} time steps but I has {T}")
        if raster.shape[1] != weights.shape[0]:
            raise ValueError(f"weights must be [N_in, N] with N_in = {raster.shape[1]} inputs "
                             f"of spikes_in, got weights of shape {weights.shape}")
        # Row-major nonzero lists each step's input spikes in ascending input order,
        # the order in which Brian2 applies them.
        steps, in_idx = np.nonzero(raster)
        in_ptr = np.zeros(T + 1, np.int64)
        np.cumsum(np.bincount(steps, minlength=T), out=in_ptr[1:])
        in_idx = in_idx.astype(np.int64)
        W = np.ascontiguousarray(weights)
    else:
        in_ptr = np.zeros(T + 1, np.int64)
        in_idx = np.zeros(0, np.int64)
        W = np.zeros((0, N))

    I2 = np.ascontiguousarray(I.reshape(T, -1) if I.ndim == 2 else I.reshape(T, 1))
    # Brian2 computes these once per step from the same float64 operands; numpy's exp
    # (not Numba's) so that the factor is the one Brian2's numpy target uses.
    a = dt / tau_m
    e = float(np.exp(np.float64(-dt) / tau_m))
    # Brian2's timestep(refractory, dt); anything longer than the run is the same as T + 1
    # steps (no second spike), which keeps the step arithmetic in int32.
    n_ref = int(min((refractory + 1e-3 * dt) / dt, T + 1))

    v_out = np.empty((T if record_v else 1, N))
    s_out = np.empty((T, N), np.bool_)
    args = (I2, v0, method == "exact", a, e, R, E_L, v_th, v_reset, n_ref,
            bool(clamp_refractory), in_ptr, in_idx, W, v_out, s_out, bool(strict_threshold))
    nblocks = min(get_num_threads(), N // _MIN_BLOCK)
    if nblocks > 1 and N * T >= _MIN_PARALLEL:
        _simulate_parallel(nblocks, *args)
    else:
        _run_segment(0, N, *args)
    return LIFResult(v_out if record_v else None, s_out, np.arange(T) * dt)


def tutorial_current_step():
    """The tutorial's current-step experiment: ``(I, res)``.

    ``I`` [2000] is the tutorial's input (four current plateaus plus a small sinusoidal
    wiggle), ``res`` is ``simulate_lif`` of one neuron with the tutorial's parameters
    (dt = 1 ms, tau = 20 ms, v_th = 1, v_reset = 0, E_L = 0, R = 1, Euler), which equals the
    tutorial's loop bit for bit: its ``V`` is ``res.v[:, 0]`` and its ``spk[1:]`` is
    ``res.spikes[:-1, 0]``. Plot with ``fastlif.plot.voltage_trace(res.t, I, res.v[:, 0],
    res.spikes[:, 0], 1.0, 0.0)``.
    """
    T, dt, tau = 2000, 1e-3, 0.02
    I = np.zeros(T)
    I[200:350] += 0.60
    I[500:650] += 1.10
    I[800:950] += 0.90
    I[1200:1600] += 1.20
    t_arr = np.arange(T)
    I += 0.05 * (0.5 + 0.5 * np.sin(2 * np.pi * t_arr / 120))
    res = simulate_lif(I, dt, tau, R=1.0, E_L=0.0, v_th=1.0, v_reset=0.0, method="euler")
    return I, res

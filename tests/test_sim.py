"""fastlif.sim.simulate_lif against the tutorial's hand-written loop and against Brian2.

Agreement is asserted bit for bit (spikes equal, V with zero tolerance). That holds by
construction: the simulator performs the same IEEE double operations, in the same order,
as Brian2's generated numpy code (and, for E_L = 0, R = 1, as the tutorial's loop), Numba
compiles it without fastmath (no reassociation, no FMA contraction), and the one
transcendental, exp(-dt/tau), is computed by numpy just as Brian2's numpy target does.
Any tolerance would hide a schedule or expression-order bug that can flip a spike.
"""
import zlib

import numpy as np
import pytest

from fastlif.sim import simulate_lif, tutorial_current_step

try:  # the module with the simulator's internals (_MIN_PARALLEL)
    from fastlif.sim import lif as fastlif_sim  # fastlif/sim/ a package
except ImportError:
    import fastlif.sim as fastlif_sim           # fastlif/sim.py a module

# Brian2 2.9 still calls pyparsing's camelCase API, which pyparsing 3.2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning")


# --------------------------------------------------------------------------- the tutorial

def tutorial_input():
    T = 2000
    I = np.zeros(T)
    I[200:350] += 0.60; I[500:650] += 1.10; I[800:950] += 0.90; I[1200:1600] += 1.20
    t_arr = np.arange(T)
    I += 0.05 * (0.5 + 0.5 * np.sin(2 * np.pi * t_arr / 120))
    return I


def tutorial_loop(I, dt=1e-3, tau=0.02, v_th=1.0, v_reset=0.0, E_L=0.0):
    """The tutorial's section-2 loop, verbatim."""
    T = len(I)
    V = np.zeros(T); spk = np.zeros(T, dtype=bool)
    for t in range(T - 1):
        dV = (-(V[t] - E_L) + I[t]) * (dt / tau)    # R=1
        V[t + 1] = V[t] + dV
        if V[t + 1] >= v_th:
            spk[t + 1] = True
            V[t + 1] = v_reset
    return V, spk


def test_tutorial_loop_bit_for_bit():
    I = tutorial_input()
    V, spk = tutorial_loop(I)
    res = simulate_lif(I, 1e-3, 0.02, v_th=1.0, v_reset=0.0, E_L=0.0, method="euler")
    assert res.v.shape == (2000, 1) and res.spikes.shape == (2000, 1)
    assert spk.sum() > 5
    # The tutorial's V[k] is res.v[k]; its spk[k+1] is res.spikes[k].
    # (-(V - 0) + I) * (dt/tau) and (dt/tau) * ((0 + 1*I) - V) round identically, so V is
    # equal bit for bit, not just to 1e-15.
    np.testing.assert_array_equal(res.v[:, 0], V)
    np.testing.assert_array_equal(res.spikes[:-1, 0], spk[1:])
    assert not spk[0]
    np.testing.assert_array_equal(res.t, np.arange(2000) * 1e-3)


def test_tutorial_current_step():
    I, res = tutorial_current_step()
    np.testing.assert_array_equal(I, tutorial_input())
    V, spk = tutorial_loop(I)
    np.testing.assert_array_equal(res.v[:, 0], V)
    np.testing.assert_array_equal(res.spikes[:-1, 0], spk[1:])


# --------------------------------------------------------------------------- Brian2

def _b2_copy(values):
    """An owned copy of an array read from a Brian2 object. Brian2 2.10 (Python 3.12) hands
    out views into memory that its monitors free once they are collected, so a view kept
    past the network reads garbage (denormals such as 6.9e-310)."""
    return np.array(values, copy=True)


def run_brian2(I, dt, tau, *, R, E_L, v_th, v_reset, v0, refractory, clamp, method,
               spikes_in=None, weights=None):
    """The same model in Brian2 (numpy target): v [T, N], spikes [T, N], t [T]."""
    b2 = pytest.importorskip("brian2", reason="brian2 is needed for the Brian2 comparison")
    b2.prefs.codegen.target = "numpy"  # no compiler involved, runs offline
    T, N = I.shape
    b2.start_scope()
    b2.defaultclock.dt = dt * b2.second
    # The current as a per-neuron TimedArray: Brian2 then generates the same expression
    # as for a per-neuron variable (a shared `ta(t)` would be hoisted and reordered).
    I_ta = b2.TimedArray(I, dt=dt * b2.second)
    eqs = ("dv/dt = ((E_L + R*I) - v)/tau : 1" + (" (unless refractory)" if clamp else "")
           + "\nI = I_ta(t, i) : 1")
    G = b2.NeuronGroup(N, eqs, threshold="v >= v_th", reset="v = v_reset",
                       refractory=refractory * b2.second, method=method,
                       namespace=dict(E_L=E_L, R=R, tau=tau * b2.second, v_th=v_th,
                                      v_reset=v_reset, I_ta=I_ta))
    G.v = v0
    objects = [G]
    if spikes_in is not None:
        steps, inputs = np.nonzero(spikes_in)
        P = b2.SpikeGeneratorGroup(spikes_in.shape[1], inputs, steps * dt * b2.second)
        S = b2.Synapses(P, G, "w_syn : 1", on_pre="v += w_syn")
        S.connect()
        S.w_syn[:] = weights[_b2_copy(S.i[:]), _b2_copy(S.j[:])]
        objects += [P, S]
    state = b2.StateMonitor(G, "v", record=True)  # when='start': v at the start of a step
    spikes = b2.SpikeMonitor(G)
    net = b2.Network(*objects, state, spikes)
    net.run(T * dt * b2.second)
    # Copied while the network and its monitors are alive (see _b2_copy).
    v, t = _b2_copy(state.v[:]), _b2_copy(state.t_[:])
    spike_t, spike_i = _b2_copy(spikes.t_[:]), _b2_copy(spikes.i[:])
    del net, state, spikes, objects, G
    k = np.round(spike_t / dt).astype(int)
    raster = np.zeros((T, N), bool)
    raster[k, spike_i] = True
    assert raster.sum() == len(k)  # at most one spike per neuron and step
    return v.T, raster, t, spike_t, k


# method, dt, refractory, clamp, inputs, shared current
BRIAN2_CASES = [
    ("euler", 1e-3, 0.0, True, False, False),
    ("exact", 1e-4, 0.0, True, False, False),
    ("euler", 1e-4, 2e-3, True, False, False),
    ("exact", 1e-3, 2.7e-3, True, False, False),   # 2.7 ms at 1 ms: 2 steps, not round()'s 3
    ("exact", 1e-4, 2e-3, False, False, False),
    ("euler", 1e-3, 2.7e-3, False, False, False),
    ("exact", 1e-4, 2e-3, True, True, False),
    ("euler", 1e-3, 3e-3, True, True, False),
    ("euler", 1e-3, 3e-3, False, True, False),
    ("exact", 1e-4, 1e-3, False, True, True),      # I [T] shared, N from v0 and weights
]


@pytest.mark.parametrize("method,dt,refractory,clamp,inputs,shared", BRIAN2_CASES)
def test_matches_brian2(method, dt, refractory, clamp, inputs, shared):
    pytest.importorskip("brian2", reason="brian2 is needed for the Brian2 comparison")
    rng = np.random.default_rng(zlib.crc32(repr((method, dt, refractory, clamp, inputs, shared)).encode()))
    T, N, N_in = 300, 16, 6
    # Physical units: 100 MOhm, currents up to 1.5 nA drive v_inf far above threshold, so
    # inter-spike intervals come close to the refractory time and its length matters.
    I = rng.uniform(0.1e-9, 1.5e-9, T if shared else (T, N))
    params = dict(R=1e8, E_L=-0.070, v_th=-0.050, v_reset=-0.065,
                  v0=rng.uniform(-0.070, -0.045, N), refractory=refractory, method=method)
    spikes_in = weights = None
    if inputs:
        spikes_in = rng.random((T, N_in)) < 0.15     # often several inputs in one step
        weights = rng.normal(0.002, 0.004, (N_in, N))
    res = simulate_lif(I, dt, 0.02, clamp_refractory=clamp, spikes_in=spikes_in,
                       weights=weights, **params)
    I_b2 = np.tile(I[:, None], (1, N)) if shared else I
    v_b2, spikes_b2, t_b2, spike_t_b2, spike_k_b2 = run_brian2(
        I_b2, dt, 0.02, clamp=clamp, spikes_in=spikes_in, weights=weights, **params)

    assert spikes_b2.sum() >= 20, "the case should exercise spiking"
    np.testing.assert_array_equal(res.spikes, spikes_b2)
    np.testing.assert_array_equal(res.t[spike_k_b2], spike_t_b2)  # stamped at k*dt
    np.testing.assert_allclose(res.v, v_b2, rtol=0, atol=0)       # bit for bit
    np.testing.assert_array_equal(res.t, t_b2)


# --------------------------------------------------------------------------- semantics

def test_refractory_length_is_brian2_timestep():
    # A drive so strong that a free neuron spikes in every step it may: spikes come
    # every n = int((refractory + 1e-3*dt)/dt) steps.
    for refractory, dt, n in [(2.7e-3, 1e-3, 2), (3e-4, 1e-4, 3), (0.0, 1e-3, 1),
                              (0.5e-3, 1e-3, 1), (5e-3, 1e-3, 5)]:
        res = simulate_lif(np.full(40, 1e3), dt, 0.02, v0=2.0, refractory=refractory)
        np.testing.assert_array_equal(np.flatnonzero(res.spikes[:, 0]), np.arange(0, 40, n))


@pytest.mark.parametrize("method", ["euler", "exact"])
def test_clamped_and_unclamped_refractory(method):
    I = np.full(60, 3.0)
    clamped = simulate_lif(I, 1e-3, 0.02, refractory=5e-3, method=method)
    free = simulate_lif(I, 1e-3, 0.02, refractory=5e-3, clamp_refractory=False, method=method)
    s = int(np.flatnonzero(clamped.spikes[:, 0])[0])
    # Clamped: v holds v_reset from the start of step s+1 through the start of step s+5.
    np.testing.assert_array_equal(clamped.v[s + 1:s + 6, 0], 0.0)
    assert clamped.v[s + 6, 0] > 0.0
    # Unclamped: v integrates during refractoriness (and may pass v_th) but cannot spike.
    assert np.all(np.diff(free.v[s + 1:s + 6, 0]) > 0)
    assert not free.spikes[s + 1:s + 5, 0].any()
    assert free.spikes[:, 0].sum() > clamped.spikes[:, 0].sum()


def test_input_spikes_order_and_refractory_targets():
    # Ascending input order decides the rounding: ((0 + 1) + 2**-53) - 1 == 0, whereas
    # the reverse order would leave 2**-53.
    spikes_in = np.zeros((3, 3), bool)
    spikes_in[0] = True
    weights = np.array([[1.0], [2.0**-53], [-1.0]])
    res = simulate_lif(np.zeros(3), 1e-3, 0.02, v_th=10.0, spikes_in=spikes_in, weights=weights)
    assert res.v[1, 0] == 0.0 and not np.signbit(res.v[1, 0])

    # Input during refractoriness: ignored when clamped, added when not; an input in the
    # spike's own step is overwritten by the reset.
    spikes_in = np.zeros((8, 1), bool)
    spikes_in[[0, 2]] = True
    kw = dict(v0=2.0, refractory=4e-3, spikes_in=spikes_in, weights=np.array([[0.5]]))
    clamped = simulate_lif(np.zeros(8), 1e-3, 0.02, **kw)
    free = simulate_lif(np.zeros(8), 1e-3, 0.02, clamp_refractory=False, **kw)
    assert clamped.spikes[0, 0] and free.spikes[0, 0]
    np.testing.assert_array_equal(clamped.v[1:5, 0], 0.0)
    assert free.v[1, 0] == 0.0 and free.v[3, 0] > 0.4


def test_shapes_and_population_inference():
    I = np.linspace(0, 2, 50)
    assert simulate_lif(I, 1e-3, 0.02).v.shape == (50, 1)
    by_v0 = simulate_lif(I, 1e-3, 0.02, v0=np.linspace(0, 0.9, 7))
    assert by_v0.v.shape == by_v0.spikes.shape == (50, 7) and by_v0.spikes.dtype == bool
    assert by_v0.t.shape == (50,)
    # A shared current [T] is the same as that current given to every neuron.
    tiled = simulate_lif(np.tile(I[:, None], (1, 7)), 1e-3, 0.02, v0=np.linspace(0, 0.9, 7))
    np.testing.assert_array_equal(by_v0.v, tiled.v)
    by_w = simulate_lif(I, 1e-3, 0.02, spikes_in=np.zeros((50, 2), bool), weights=np.ones((2, 4)))
    assert by_w.v.shape == (50, 4)
    # v0 defaults to rest, E_L.
    assert np.all(simulate_lif(I, 1e-3, 0.02, E_L=-0.07, v_th=1.0).v[0] == -0.07)
    # Integer and float32 inputs are converted to float64.
    res32 = simulate_lif(I.astype(np.float32), 1e-3, 0.02)
    np.testing.assert_array_equal(res32.v, simulate_lif(I.astype(np.float32).astype(float), 1e-3, 0.02).v)
    assert simulate_lif(np.zeros(0), 1e-3, 0.02).v.shape == (0, 1)
    assert simulate_lif(np.zeros((5, 0)), 1e-3, 0.02).v.shape == (5, 0)


def test_record_v_false_gives_the_same_spikes():
    rng = np.random.default_rng(5)
    I = rng.uniform(0, 3, (300, 200))
    kw = dict(v0=rng.uniform(0, 1, 200), refractory=2e-3, method="exact",
              spikes_in=rng.random((300, 3)) < 0.1, weights=rng.normal(0, 0.3, (3, 200)))
    full = simulate_lif(I, 1e-3, 0.02, **kw)
    lean = simulate_lif(I, 1e-3, 0.02, record_v=False, **kw)
    assert lean.v is None
    np.testing.assert_array_equal(lean.spikes, full.spikes)
    np.testing.assert_array_equal(lean.t, full.t)


def test_population_split_across_threads_is_exact():
    # Neurons are independent: a large population (split into blocks over threads) gives
    # the same bits as simulating its neurons in small groups.
    rng = np.random.default_rng(3)
    T, N, N_in = 120, 2500, 4
    assert N * T >= fastlif_sim._MIN_PARALLEL  # large enough to run on the threads
    I = rng.uniform(0, 3, (T, N))
    v0 = rng.uniform(0, 1, N)
    spikes_in = rng.random((T, N_in)) < 0.1
    weights = rng.normal(0, 0.3, (N_in, N))
    kw = dict(refractory=3e-3, method="exact")
    whole = simulate_lif(I, 1e-3, 0.02, v0=v0, spikes_in=spikes_in, weights=weights, **kw)
    for lo in range(0, N, 97):
        part = simulate_lif(I[:, lo:lo + 97], 1e-3, 0.02, v0=v0[lo:lo + 97],
                            spikes_in=spikes_in, weights=weights[:, lo:lo + 97], **kw)
        np.testing.assert_array_equal(whole.v[:, lo:lo + 97], part.v)
        np.testing.assert_array_equal(whole.spikes[:, lo:lo + 97], part.spikes)
    assert whole.spikes.sum() > 1000
    # A refractory period longer than the simulation: one spike per neuron at most.
    once = simulate_lif(I, 1e-3, 0.02, v0=v0, refractory=1e9)
    assert once.spikes.sum(axis=0).max() == 1


# --------------------------------------------------------------------------- errors

I10 = np.ones(10)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(dt=0.0), ValueError, r"dt must be > 0"),
    (dict(dt=-1e-3), ValueError, r"dt must be > 0"),
    (dict(dt=float("nan")), ValueError, r"dt must be finite"),
    (dict(dt="1e-3"), TypeError, r"dt must be a real scalar"),
    (dict(dt=np.ones(2)), TypeError, r"dt must be a real scalar"),
    (dict(tau_m=0.0), ValueError, r"tau_m must be > 0"),
    (dict(tau_m=-0.02), ValueError, r"tau_m must be > 0"),
    (dict(method="rk4"), ValueError, r"unknown method 'rk4'"),
    (dict(method=None), TypeError, r"method must be a string"),
    (dict(refractory=-1e-3), ValueError, r"refractory must be >= 0"),
    (dict(v_th=1j), TypeError, r"v_th must be a real scalar"),
    (dict(R=None), TypeError, r"R must be a real scalar"),
    (dict(clamp_refractory="yes"), TypeError, r"clamp_refractory must be a bool"),
    (dict(record_v=1), TypeError, r"record_v must be a bool"),
    (dict(I=np.ones((10, 2, 3))), ValueError, r"I must be \[T\] or \[T, N\], got a 3-D"),
    (dict(I=np.float64(1.0)), ValueError, r"I must be \[T\] or \[T, N\], got a 0-D"),
    (dict(I=np.array(["a", "b"])), TypeError, r"I must be a real numeric array"),
    (dict(I=np.ones(10) * 1j), TypeError, r"I must be a real numeric array"),
    (dict(v0=np.zeros((2, 2))), ValueError, r"v0 must be a scalar or \[N\]"),
    (dict(v0=np.array([0.0, np.inf])), ValueError, r"v0 must be finite"),
    (dict(I=np.ones((10, 3)), v0=np.zeros(4)), ValueError,
     r"number of neurons N disagrees between I \(N=3\), v0 \(N=4\)"),
    (dict(spikes_in=np.zeros((10, 2), bool)), ValueError, r"spikes_in and weights go together"),
    (dict(weights=np.ones((2, 1))), ValueError, r"spikes_in and weights go together"),
    (dict(spikes_in=np.zeros((10, 2), bool), weights=np.ones((3, 1))), ValueError,
     r"weights must be \[N_in, N\] with N_in = 2 inputs"),
    (dict(spikes_in=np.zeros((10, 2), bool), weights=np.ones(2)), ValueError,
     r"weights must be \[N_in, N\], got shape \(2,\)"),
    (dict(spikes_in=np.zeros((9, 2), bool), weights=np.ones((2, 1))), ValueError,
     r"spikes_in has 9 time steps but I has 10"),
    (dict(spikes_in=np.zeros(10, bool), weights=np.ones((1, 1))), ValueError,
     r"spikes_in must be \[T, N_in\]"),
    (dict(spikes_in=np.full((10, 2), 2), weights=np.ones((2, 1))), TypeError,
     r"spikes_in must be boolean"),
    (dict(I=np.ones((10, 3)), spikes_in=np.zeros((10, 2), bool), weights=np.ones((2, 5))),
     ValueError, r"disagrees between I \(N=3\), weights \(N=5\)"),
])
def test_errors_name_the_problem(kwargs, exc, match):
    args = dict(I=I10, dt=1e-3, tau_m=0.02)
    args.update(kwargs)
    I, dt, tau_m = args.pop("I"), args.pop("dt"), args.pop("tau_m")
    with pytest.raises(exc, match=match):
        simulate_lif(I, dt, tau_m, **args)


def test_spikes_in_accepts_zero_one_integers():
    spikes = np.zeros((10, 2), int)
    spikes[3, 1] = 1
    res = simulate_lif(I10 * 0, 1e-3, 0.02, spikes_in=spikes, weights=np.array([[0.1], [0.2]]))
    assert res.v[4, 0] == 0.2

"""fastlif.sim.simulate_network against Brian2's numpy target (bit for bit) and NEST (statistics).

Brian2 builds the network (connectivity, initial membranes) and hands it over; both then run
and must give the same spikes (neuron and step) and the same membrane bits on the recorded
neurons, with zero tolerance: the simulator performs Brian2's float64 operations in Brian2's
order, so any difference is a schedule or expression-order bug.
"""
import numpy as np
import pytest

from fastlif.sim import (Input, Projection, coba_params, cuba_params, poisson_spikes,
                         random_connections, simulate_network)

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning")

DT = 1e-4
mV = 1e-3
CUBA = dict(model="cuba", tau_m=20e-3, tau_e=5e-3, tau_i=10e-3, E_L=-49 * mV, v_th=-50 * mV,
            v_reset=-60 * mV, refractory=5e-3, we=(60 * 0.27 / 10) * mV,
            wi=(-20 * 4.5 / 10) * mV)
COBA = dict(model="coba", tau_m=20e-3, tau_e=5e-3, tau_i=10e-3, E_L=-60 * mV, v_th=-50 * mV,
            v_reset=-60 * mV, refractory=5e-3, E_e=0.0, E_i=-80 * mV, I=20 * mV, we=0.6,
            wi=6.7)


def _copy(x):
    # Brian2 may hand out views into memory freed with its objects (see test_sim._b2_copy).
    return np.array(x, copy=True)


def run_brian2(prm, N, T, *, method, p=0.02, seed=1, clamp=True, strict=True,
               delay_e=0.0, delay_i=0.0, hetero_delay=False, hetero_w=False, inputs=(),
               record=(0, 1, 2, 3), v_init="rand"):
    """The network in Brian2 (numpy target), built by Brian2. Returns its spikes, its v
    trace and everything simulate_network needs to run the same network."""
    b2 = pytest.importorskip("brian2", reason="brian2 is needed for the Brian2 comparison")
    b2.prefs.codegen.target = "numpy"
    b2.prefs.logging.console_log_level = "ERROR"
    b2.start_scope()
    b2.seed(seed)
    b2.defaultclock.dt = DT * b2.second
    V, S = b2.volt, b2.second
    unit = "volt" if prm["model"] == "cuba" else "1"
    unless = " (unless refractory)" if clamp else ""
    I = prm.get("I", 0.0)
    if prm["model"] == "cuba":
        # Brian2's example writes no I; with one, it is a constant added to the drive.
        rhs = "(ge+gi-(v-El))/taum" if I == 0 else "(ge+gi-(v-El)+I)/taum"
    else:
        rhs = "(ge*(Ee-v) + gi*(Ei-v) - (v-El) + I)/taum"
    eqs = (f"dv/dt = {rhs} : volt{unless}\n"
           f"dge/dt = -ge/taue : {unit}\ndgi/dt = -gi/taui : {unit}")
    ns = dict(taum=prm["tau_m"] * S, taue=prm["tau_e"] * S, taui=prm["tau_i"] * S,
              El=prm["E_L"] * V, Vt=prm["v_th"] * V, Vr=prm["v_reset"] * V, I=I * V,
              Ee=prm.get("E_e", 0.0) * V, Ei=prm.get("E_i", 0.0) * V)
    wunit = V if prm["model"] == "cuba" else 1
    ns.update(we=prm["we"] * wunit, wi=prm["wi"] * wunit)
    G = b2.NeuronGroup(N, eqs, threshold="v > Vt" if strict else "v >= Vt",
                       reset="v = Vr", refractory=prm["refractory"] * S, method=method,
                       namespace=ns, name="neurons")
    if v_init == "rand":
        G.v = "Vr + rand() * (Vt - Vr)"
    else:
        G.v = "-55*mV + 5*mV*randn()"
    ne = int(0.8 * N)
    model_w = f"w : {unit}" if hetero_w else ""
    syn = []
    for name, tgt, cond, d in (("syn_0_e", "ge", f"i<{ne}", delay_e),
                               ("syn_1_i", "gi", f"i>={ne}", delay_i)):
        Sy = b2.Synapses(G, G, model_w, on_pre=f"{tgt} += {'w' if hetero_w else 'w' + tgt[1]}",
                         delay=None if hetero_delay else d * S, namespace=ns, name=name)
        Sy.connect(cond, p=p)
        if hetero_w:
            Sy.w = f"{'we' if tgt == 'ge' else 'wi'} * (0.5 + rand())"
        if hetero_delay:
            Sy.delay = f"{d} * second * int(1 + 3*rand()) "
        syn.append(Sy)
    objects = [G, *syn]
    for q, (n_in, steps, srcs, pre, post, w, tgt) in enumerate(inputs):
        gen = b2.SpikeGeneratorGroup(n_in, srcs, steps * DT * S, name=f"gen_{q}")
        Sy = b2.Synapses(gen, G, f"w : {unit}", on_pre=f"{tgt} += w", name=f"syn_2_in{q}")
        Sy.connect(i=pre, j=post)
        Sy.w = w * wunit
        objects += [gen, Sy]
    mon_v = b2.StateMonitor(G, "v", record=list(record))
    mon_s = b2.SpikeMonitor(G)
    # Hand-over: what Brian2 built, read before the run.
    handed = dict(v0=_copy(G.v_[:]), synapses=[])
    for Sy, tgt, w in zip(syn, "ei", (prm["we"], prm["wi"])):
        weight = _copy(Sy.w_[:]) if hetero_w else w
        delay = _copy(Sy.delay_[:]) if hetero_delay else float(np.ravel(Sy.delay_[:])[0])
        handed["synapses"].append(Projection(_copy(Sy.i[:]), _copy(Sy.j[:]), weight, delay,
                                             tgt))
    net = b2.Network(*objects, mon_v, mon_s)
    net.run(T * DT * S)
    out = dict(v=_copy(mon_v.v_[:]).T, spike_i=_copy(mon_s.i[:]),
               spike_step=np.round(_copy(mon_s.t_[:]) / DT).astype(np.int64))
    del net, objects, mon_v, mon_s, G, syn
    return out, handed


def fastlif_kwargs(prm):
    return {k: v for k, v in prm.items() if k not in ("we", "wi")}


def assert_same(b2_out, res, record):
    # SpikeMonitor order within a step is ascending neuron, as ours.
    assert res.spike_i.shape == b2_out["spike_i"].shape, \
        f"{len(res.spike_i)} spikes, Brian2 {len(b2_out['spike_i'])}"
    np.testing.assert_array_equal(res.spike_step, b2_out["spike_step"])
    np.testing.assert_array_equal(res.spike_i, b2_out["spike_i"])
    np.testing.assert_array_equal(res.record, np.asarray(record))
    # Bit for bit: equal arrays of float64, no tolerance.
    np.testing.assert_array_equal(res.v, b2_out["v"])


# ----------------------------------------------------------------- Brian2, bit for bit

@pytest.mark.parametrize("model", ["cuba", "coba"])
def test_benchmark_4000_neurons_one_second(model):
    """The benchmark networks as Brian2 ships them, 4000 neurons, 1 s."""
    prm = CUBA if model == "cuba" else COBA
    method = "exact" if model == "cuba" else "euler"
    record = (0, 1, 999, 3200, 3999)
    T = 10_000
    b2_out, handed = run_brian2(prm, 4000, T, method=method, record=record,
                                v_init="rand" if model == "cuba" else "randn")
    res = simulate_network(4000, T, DT, method=method, record=record,
                           **fastlif_kwargs(prm), **handed)
    rate = len(res.spike_i) / 4000 / (T * DT)
    assert rate > 1.0, f"the network is nearly silent ({rate:.2f} Hz): not a useful check"
    assert_same(b2_out, res, record)


CASES = {
    "cuba euler": dict(prm=CUBA, method="euler"),
    "cuba exact unclamped": dict(prm=CUBA, method="exact", clamp=False),
    "cuba exact >= threshold": dict(prm=CUBA, method="exact", strict=False),
    "cuba exact drive I": dict(prm={**CUBA, "I": 0.7 * mV, "E_L": -50.5 * mV},
                               method="exact"),
    "cuba euler drive I": dict(prm={**CUBA, "I": 0.7 * mV, "E_L": -50.5 * mV},
                               method="euler"),
    "cuba delays": dict(prm=CUBA, method="exact", delay_e=2 * DT, delay_i=5 * DT),
    "cuba per-synapse delays and weights": dict(prm=CUBA, method="exact", delay_e=DT,
                                                delay_i=2 * DT, hetero_delay=True,
                                                hetero_w=True),
    "coba unclamped": dict(prm=COBA, method="euler", clamp=False, v_init="randn"),
    "coba per-synapse weights and delays": dict(prm=COBA, method="euler", v_init="randn",
                                                hetero_w=True, hetero_delay=True,
                                                delay_e=DT, delay_i=3 * DT),
}


@pytest.mark.parametrize("case", list(CASES))
def test_options_small_network(case):
    """Every option on 400 neurons (p = 0.2: 80 synapses a neuron), 0.3 s."""
    kw = dict(CASES[case])
    prm, method = kw.pop("prm"), kw.pop("method")
    N, T, record = 400, 3000, (0, 7, 350)
    b2_out, handed = run_brian2(prm, N, T, method=method, p=0.2, record=record, **kw)
    res = simulate_network(N, T, DT, method=method, record=record,
                           clamp_refractory=kw.get("clamp", True),
                           strict_threshold=kw.get("strict", True),
                           **fastlif_kwargs(prm), **handed)
    assert len(res.spike_i) > N, "too few spikes for a meaningful comparison"
    assert_same(b2_out, res, record)


@pytest.mark.parametrize("model", ["cuba", "coba"])
def test_poisson_and_given_input_spikes(model):
    """Poisson input (drawn by fastlif, handed to Brian2 as a SpikeGeneratorGroup) onto ge
    with per-synapse weights, a second given input onto gi; both add after the recurrent
    synapses in the same step (Brian2 runs them after, by name)."""
    prm = CUBA if model == "cuba" else COBA
    prm = {**prm, "E_L": -60 * mV} if model == "cuba" else {**prm, "I": 5 * mV}
    N, T, record = 300, 3000, (0, 5, 299)
    rng = np.random.default_rng(3)
    scale = mV if model == "cuba" else 1.0
    n_in = 50
    steps, srcs = poisson_spikes(n_in, 40.0, T, DT, seed=4)
    pre, post = random_connections(n_in, N, 0.3, seed=5)
    w = rng.uniform(0.5, 1.5, len(pre)) * (4.0 * scale if model == "cuba" else 0.3)
    steps2 = np.arange(5, T, 97)
    srcs2 = np.zeros_like(steps2)
    pre2, post2 = np.zeros(N, np.int64), np.arange(N)
    w2 = np.full(N, -2.0 * scale if model == "cuba" else 0.5)
    inputs = [(n_in, steps, srcs, pre, post, w, "ge"), (1, steps2, srcs2, pre2, post2, w2, "gi")]
    method = "exact" if model == "cuba" else "euler"
    b2_out, handed = run_brian2(prm, N, T, method=method, p=0.2, record=record, inputs=inputs,
                                v_init="rand" if model == "cuba" else "randn")
    ins = [Input(n_in, steps, srcs, Projection(pre, post, w, 0.0, "e")),
           Input(1, steps2, srcs2, Projection(pre2, post2, w2, 0.0, "i"))]
    res = simulate_network(N, T, DT, method=method, record=record, inputs=ins,
                           **fastlif_kwargs(prm), **handed)
    assert len(res.spike_i) > N
    assert_same(b2_out, res, record)


# ----------------------------------------------------------------- determinism, threads

def test_identical_for_any_thread_count():
    kw = cuba_params(2000, seed=2)
    base = simulate_network(T=2000, dt=DT, threads=1, record=[0, 1999], **kw)
    assert len(base.spike_i) > 1000
    for threads in (2, 3, 7):
        res = simulate_network(T=2000, dt=DT, threads=threads, record=[0, 1999], **kw)
        assert res.threads == threads
        np.testing.assert_array_equal(res.spike_i, base.spike_i)
        np.testing.assert_array_equal(res.spike_step, base.spike_step)
        np.testing.assert_array_equal(res.v, base.v)
        np.testing.assert_array_equal(res.ge_end, base.ge_end)
        np.testing.assert_array_equal(res.gi_end, base.gi_end)


def test_builders_are_seeded_and_scaled():
    a, b = cuba_params(1000, seed=3), cuba_params(1000, seed=3)
    np.testing.assert_array_equal(a["synapses"][0].pre, b["synapses"][0].pre)
    np.testing.assert_array_equal(a["v0"], b["v0"])
    c = coba_params(20_000, seed=0)
    n_syn = sum(len(p.pre) for p in c["synapses"])
    assert abs(n_syn / 20_000 - 80) < 2          # 80 synapses a neuron at any size
    pre, post = random_connections(200, 300, 0.1, seed=1)
    assert np.all(np.diff(pre * 300 + post) > 0)  # ordered by pre then post, no repeats
    assert abs(len(pre) / 60_000 - 0.1) < 0.01


# ----------------------------------------------------------------- bad input

def _net(**over):
    kw = dict(N=10, T=5, dt=DT, synapses=[Projection([0, 1], [2, 3], 1e-3)])
    kw.update(over)
    return simulate_network(**kw)


@pytest.mark.parametrize("over, exc, match", [
    (dict(dt=-1e-4), ValueError, "dt must be > 0"),
    (dict(tau_m=0.0), ValueError, "tau_m must be > 0"),
    (dict(tau_e=float("nan")), ValueError, "tau_e must be finite"),
    (dict(refractory=-1e-3), ValueError, "refractory must be >= 0"),
    (dict(v_th=float("inf")), ValueError, "v_th must be finite"),
    (dict(N=0), ValueError, "N must be a positive integer"),
    (dict(T=-1), ValueError, "T must be"),
    (dict(model="hh"), ValueError, "unknown model"),
    (dict(model="coba", method="exact"), ValueError, "needs linear equations"),
    (dict(tau_e=20e-3), ValueError, "tau_e != tau_m"),
    (dict(v0=np.zeros(9)), ValueError, r"v0 must be a scalar or \[N=10\]"),
    (dict(v0=[np.nan] * 10), ValueError, "v0 must be finite"),
    (dict(synapses=[Projection([0, 10], [2, 3], 1e-3)]), ValueError,
     r"synapses\[0\].pre has index 10 out of range"),
    (dict(synapses=[Projection([0, 1], [2, -1], 1e-3)]), ValueError,
     r"synapses\[0\].post has index -1 out of range"),
    (dict(synapses=[Projection([0, 1], [2], 1e-3)]), ValueError, "pre has 2 entries but post"),
    (dict(synapses=[Projection([0, 1], [2, 3], [1e-3])]), ValueError,
     r"weight must be a scalar or \[2\]"),
    (dict(synapses=[Projection([0, 1], [2, 3], [1e-3, np.inf])]), ValueError,
     "weight must be finite"),
    (dict(synapses=[Projection([0, 1], [2, 3], 1e-3, 0.5e-4)]), ValueError,
     "delay below one step"),
    (dict(synapses=[Projection([0, 1], [2, 3], 1e-3, 1.5e-4)]), ValueError,
     "whole multiples of dt"),
    (dict(synapses=[Projection([0, 1], [2, 3], 1e-3, [1e-4, -1e-4])]), ValueError,
     "delay must be >= 0"),
    (dict(synapses=[Projection([0, 1], [2, 3], 1e-3, 0.0, "x")]), ValueError,
     "target must be 'e'"),
    (dict(synapses=[Projection([0.5, 1], [2, 3], 1e-3)]), TypeError, "integer indices"),
    (dict(synapses=["no"]), TypeError, "must be a Projection"),
    (dict(inputs=[Input(2, [0, 9], [0, 1], Projection([0], [0], 1e-3))]), ValueError,
     r"inputs\[0\].steps has index 9 out of range"),
    (dict(inputs=[Input(2, [0, 1], [0], Projection([0], [0], 1e-3))]), ValueError,
     "steps has 2 entries but sources has 1"),
    (dict(inputs=[Input(2, [1, 1], [0, 0], Projection([0], [0], 1e-3))]), ValueError,
     "spikes twice in one step"),
    (dict(record=[10]), ValueError, "record has index 10 out of range"),
    (dict(threads=0), ValueError, "threads must be a positive integer"),
    (dict(clamp_refractory=1), TypeError, "clamp_refractory must be a bool"),
])
def test_bad_input_is_refused_clearly(over, exc, match):
    with pytest.raises(exc, match=match):
        _net(**over)


# ----------------------------------------------------------------- NEST, statistics

@pytest.mark.parametrize("model, T", [("cuba", 10_000), ("coba", 3000)])
def test_rate_and_cv_agree_with_nest(model, T):
    """The same connectivity and initial membranes in NEST: CUBA as iaf_psc_exp (which NEST
    integrates exactly, as fastlif's "exact"), COBA as iaf_cond_exp (an adaptive solver,
    against fastlif's Euler). The mean rate and the mean CV of the interspike intervals
    agree within statistical error; the spike trains themselves diverge (NEST delivers
    spikes at least one step late and rounds differently). COBA runs 0.3 s: NEST takes
    about 10x longer for it than for CUBA."""
    nest = pytest.importorskip("nest", reason="nest-simulator (NEST 3) is needed for the "
                                              "NEST comparison: pip install nest-simulator")
    from bench.bench_sim import nest_network, rate_cv  # one NEST model for bench and test
    N = 4000
    kw = (cuba_params if model == "cuba" else coba_params)(N, seed=11)
    # NEST's smallest delay is one step: the same here for the comparison.
    kw["synapses"] = [p._replace(delay=DT) for p in kw["synapses"]]
    res = simulate_network(T=T, dt=DT, **kw)
    out = nest_network(nest, model, kw, T, DT, threads=1)
    # Skip the onset transient (COBA's first milliseconds are synchronous).
    keep1, keep2 = res.spike_t >= 0.05, out["spike_t"] >= 0.05
    r1, cv1 = rate_cv(res.spike_i[keep1], res.spike_t[keep1], N, T * DT - 0.05)
    r2, cv2 = rate_cv(out["spike_i"][keep2], out["spike_t"][keep2], N, T * DT - 0.05)
    assert r1 > 1 and r2 > 1
    assert abs(r1 - r2) / r2 < 0.15, f"rates: fastlif {r1:.2f} Hz, NEST {r2:.2f} Hz"
    assert abs(cv1 - cv2) < 0.15, f"CVs: fastlif {cv1:.3f}, NEST {cv2:.3f}"


# ----------------------------------------------------------------- simulate_lif's threshold

def test_simulate_lif_strict_threshold_option():
    """A membrane resting exactly on the threshold spikes with ``>=`` (the default) and never
    with ``strict_threshold=True`` (Brian2's ``v > v_th``)."""
    from fastlif.sim import simulate_lif
    I = np.zeros((50, 3))
    kw = dict(E_L=-0.05, v_th=-0.05, v_reset=-0.06, v0=-0.05, method="exact")
    loose = simulate_lif(I, DT, 20e-3, **kw)
    strict = simulate_lif(I, DT, 20e-3, strict_threshold=True, **kw)
    assert loose.spikes[0].all()
    assert not strict.spikes.any()
    np.testing.assert_array_equal(strict.v, np.full((50, 3), -0.05))
    with pytest.raises(TypeError, match="strict_threshold must be a bool"):
        simulate_lif(I, DT, 20e-3, strict_threshold="yes")

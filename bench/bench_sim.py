"""fastlif.sim.simulate_lif against Brian2 (numpy, cython, C++ standalone) and a NumPy loop.

    python -m bench.bench_sim             # small and large case, ~2 minutes on a quiet 2-core box
    python -m bench.bench_sim --case small
    python -m bench.bench_sim --network   # recurrent CUBA/COBA vs Brian2 and NEST (below)

The model is the same for every provider: LIF neurons in physical units (tau 20 ms,
R 100 MOhm, E_L -70 mV, v_th -50 mV, v_reset -65 mV), exact integration, dt 0.1 ms,
2 ms refractory (clamped), driven by one current shared by all neurons, 0.22 nA plus a
0.02 nA, 5 Hz wiggle; initial membranes spread between v_reset and v_th desynchronise
the population, which fires at about 20 Hz.

Times are simulation only: Brian2's code generation and compilation (its "build") and
Numba's first-call compile are reported apart. The ``direction`` column says what was
recorded: ``v+spikes`` is the [T, N] membrane trace plus the spikes (what
``simulate_lif`` returns by default), ``spikes`` the spikes alone (``record_v=False``;
Brian2 with only a SpikeMonitor). ``ratio_vs_fastlif`` is a provider's time over
fastlif's time for the same recording. Every Brian2 target runs in its own subprocess
(the standalone device is global state), building into a temporary directory.

The "write floor" rows allocate the same output arrays and write each element once on all
threads: the v+spikes simulation is bound by memory bandwidth (fresh pages must be zeroed by
the kernel and then written), so that is the speed of light for it. ``others_busy`` in the
extra column (the markdown's "other load") is how many cores other processes kept busy
during a measurement; on a shared machine, rows with a value well above 0 are inflated.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import append_rows, cpu_name, extra, threads, time_cpu

ROOT = Path(__file__).resolve().parent.parent
CASES = {"small": (100, 1000), "large": (10_000, 10_000)}   # name -> (N, T)
DT = 1e-4
MODEL = dict(tau_m=20e-3, R=100e6, E_L=-70e-3, v_th=-50e-3, v_reset=-65e-3, refractory=2e-3,
             method="exact")
# Brian2's numpy target is timed on at most this many seconds of wall time per run and
# scaled to the full number of steps (said in the row's extra column).
MAX_RUN_S = 15.0


def drive(T):
    t = np.arange(T) * DT
    return 0.22e-9 + 0.02e-9 * np.sin(2 * np.pi * 5.0 * t)


def initial_v(N):
    return np.random.default_rng(0).uniform(MODEL["v_reset"], MODEL["v_th"], N)


class Contention:
    """Cores kept busy by *other* processes while the ``with`` block ran: all busy CPU time
    (/proc/stat) minus this process's and its children's. The benchmark runs on shared
    machines; a row measured with ``others_busy`` well above 0 is inflated."""

    def __enter__(self):
        self.start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        if self.start is None or end is None:
            self.cores = float("nan")
            return
        busy, total, own = (e - s for e, s in zip(end, self.start))
        self.cores = max(0.0, (busy - own) / max(total, 1) * (os.cpu_count() or 1))

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                vals = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        own = sum(os.times()[:4]) * tick
        return sum(vals) - vals[3] - vals[4], sum(vals), own     # busy, total, ours (jiffies)


# --------------------------------------------------------------------------- NumPy loop

def numpy_loop(I, v0, record_v=True):
    """The simulator's schedule written as a plain NumPy loop over time (vectorised over
    neurons), exact method, shared current: the baseline a user would write by hand."""
    p = MODEL
    T, N = len(I), len(v0)
    e = np.exp(-DT / p["tau_m"])
    n_ref = int((p["refractory"] + 1e-3 * DT) / DT)
    v = v0.copy()
    last = np.full(N, -n_ref)
    V = np.empty((T, N)) if record_v else None
    S = np.empty((T, N), bool)
    for k in range(T):
        if record_v:
            V[k] = v
        RI = p["R"] * I[k]
        x = p["E_L"] + ((RI + e * v) + e * (-p["E_L"] - RI))
        refractory = (k - last) < n_ref
        x = np.where(refractory, v, x)
        s = (x >= p["v_th"]) & ~refractory
        S[k] = s
        last[s] = k
        x[s] = p["v_reset"]
        v = x
    return V, S


# --------------------------------------------------------------------------- write floor

def write_floor(T, N, record_v):
    """The least any simulator returning these outputs pays: allocate the [T, N] arrays and
    write every element once, on all threads. The v+spikes rows are bound by it."""
    from numba import get_num_threads, njit, prange

    @njit(parallel=True, cache=False)
    def fill(v, s, nblocks):
        T, N = s.shape
        size = (N + nblocks - 1) // nblocks
        for b in prange(nblocks):
            lo, hi = min(N, b * size), min(N, (b + 1) * size)
            for k in range(T):
                vrow = v[k if v.shape[0] == T else 0]
                for j in range(lo, hi):
                    vrow[j] = 1.0
                    s[k, j] = False

    def run():
        v = np.empty((T if record_v else 1, N))
        s = np.empty((T, N), np.bool_)
        fill(v, s, get_num_threads())
    return run


# --------------------------------------------------------------------------- Brian2 worker

def brian2_worker(target, case, record_v, n_threads, out_npz):
    """Build and time one Brian2 target; print one JSON line with the timings."""
    import brian2 as b2

    b2.prefs.logging.console_log_level = "ERROR"
    N, T = CASES[case]
    tmp = tempfile.TemporaryDirectory(prefix=f"b2_{target}_")
    t_setup = time.perf_counter()
    if target == "cpp_standalone":
        b2.set_device("cpp_standalone", directory=tmp.name, build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = n_threads
    else:
        b2.prefs.codegen.target = target
        if target == "cython":
            # A fresh, per-benchmark cache (shared by the small and the large case, which
            # generate the same code), so the first case pays the real compile time.
            b2.prefs.codegen.runtime.cython.cache_dir = os.environ["FASTLIF_BENCH_CYTHON_CACHE"]
    b2.defaultclock.dt = DT * b2.second
    p = MODEL
    I_ta = b2.TimedArray(drive(T), dt=DT * b2.second)
    G = b2.NeuronGroup(
        N, "dv/dt = ((E_L + R*I) - v)/tau : 1 (unless refractory)\nI = I_ta(t) : 1",
        threshold="v >= v_th", reset="v = v_reset", refractory=p["refractory"] * b2.second,
        method=p["method"], namespace=dict(E_L=p["E_L"], R=p["R"], tau=p["tau_m"] * b2.second,
                                           v_th=p["v_th"], v_reset=p["v_reset"], I_ta=I_ta))
    G.v = initial_v(N)
    spikes = b2.SpikeMonitor(G)
    objects = [G, spikes]
    if record_v:
        objects.append(b2.StateMonitor(G, "v", record=True))
    net = b2.Network(*objects)
    info = dict(target=target, threads=n_threads)

    if target == "cpp_standalone":
        net.run(T * DT * b2.second)
        t0 = time.perf_counter()
        b2.device.build(directory=tmp.name, compile=True, run=False)
        info["build_s"] = time.perf_counter() - t0 + (t0 - t_setup)
        runs, t0 = [], time.perf_counter()
        while len(runs) < 5 and time.perf_counter() - t0 < MAX_RUN_S:
            b2.device.run(tmp.name, with_output=False, run_args=None)
            runs.append(b2.device._last_run_time * 1e3)   # the network loop, as timed by main()
        runs.sort()
        info.update(median_ms=float(np.median(runs)), q20_ms=runs[0], q80_ms=runs[-1], steps=T)
    else:
        # The first (one-step) run generates, and for cython compiles, every code object.
        t0 = time.perf_counter()
        net.run(DT * b2.second)
        info["build_s"] = time.perf_counter() - t0 + (t0 - t_setup)
        steps = T
        t0 = time.perf_counter()
        net.run(min(T, 500) * DT * b2.second)
        est = (time.perf_counter() - t0) * T / min(T, 500)
        if est > MAX_RUN_S:
            steps = max(500, int(T * MAX_RUN_S / est))
        if record_v and N * steps > 2 * 10 ** 7:
            # The StateMonitor keeps every run's trace (800 MB per 10k x 10k run).
            steps = max(500, 2 * 10 ** 7 // N)
        repeat = 2 if est > 5 else 5
        med, q20, q80 = time_cpu(lambda: net.run(steps * DT * b2.second), warmup=0, repeat=repeat)
        scale = T / steps
        info.update(median_ms=med * scale, q20_ms=q20 * scale, q80_ms=q80 * scale, steps=steps)
    # The simulation is continuous across the runs above (build run, estimate, timed runs),
    # so its spikes in steps 0 .. T-1 are comparable with fastlif's.
    t_idx = np.round(np.asarray(spikes.t_[:]) / DT).astype(np.int64)
    i_idx = np.asarray(spikes.i[:]).astype(np.int64)
    keep = t_idx < T
    np.savez(out_npz, k=t_idx[keep], i=i_idx[keep])
    info["steps_simulated"] = int(round(float(net.t_) / DT)) if target != "cpp_standalone" else T
    info["version"] = b2.__version__
    print("RESULT " + json.dumps(info), flush=True)


def run_worker(target, case, record_v, n_threads, env):
    with tempfile.NamedTemporaryFile(suffix=".npz", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-m", "bench.bench_sim", "--worker", target, "--case", case,
           "--threads", str(n_threads), "--out", out] + (["--record-v"] if record_v else [])
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    try:
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            return dict(error=(proc.stderr.strip().splitlines() or ["failed"])[-1][:200])
        info = json.loads(line[-1][7:])
        data = np.load(out)
        info["spike_k"], info["spike_i"] = data["k"], data["i"]
        return info
    finally:
        os.unlink(out)


# --------------------------------------------------------------------------- first call

FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np
from fastlif.sim import simulate_lif
t1 = time.perf_counter()
simulate_lif(np.ones(64), 1e-3, 0.02, v0=np.zeros(4096))  # the threaded kernel
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def first_call_times():
    """Import and first-call time of simulate_lif in two fresh processes sharing one empty
    Numba cache: the first compiles, the second should load the compiled kernel."""
    out = []
    with tempfile.TemporaryDirectory(prefix="fastlif_numba_cache_") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", FIRST_CALL], cwd=ROOT, env=env,
                                  capture_output=True, text=True, check=True)
            out.append([float(x) for x in proc.stdout.split()[-2:]])
    return out   # [[import_s, first_call_s] cold, [..] cached]


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--no-brian2", action="store_true", help="skip the Brian2 providers")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--record-v", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return brian2_worker(args.worker, args.case, args.record_v, args.threads, args.out)

    from fastlif.sim import simulate_lif

    cases = list(CASES) if args.case == "all" else [args.case]
    # Only looked up here: importing Brian2 (and its OpenMP/compiler machinery) stays in
    # the worker processes.
    have_brian2 = not args.no_brian2 and importlib.util.find_spec("brian2") is not None
    if not have_brian2 and not args.no_brian2:
        print("brian2 is not installed: only fastlif and the NumPy loop are timed")
    device = cpu_name()
    n_threads = threads()
    t_start = time.perf_counter()
    rows, table = [], []

    def add(case, N, T, provider, direction, med, q20, q80, ref_ms, **ex):
        ns = med * 1e6 / (N * T)
        ratio = med / ref_ms if ref_ms else float("nan")
        table.append((case, provider, direction, med, ns, ratio, ex))
        rows.append(dict(bench="sim", case=case, shape=f"T={T} N={N}", dtype="float64",
                         provider=provider, direction=direction, median_ms=f"{med:.4g}",
                         q20_ms=f"{q20:.4g}", q80_ms=f"{q80:.4g}", ratio_vs_fastlif=f"{ratio:.4g}",
                         throughput=f"{N * T / (med * 1e-3):.4g}", throughput_unit="neuron-steps/s",
                         device=device, extra=extra(ns_per_neuron_step=ns, **ex)))
        busy = (f" (busy machine: other processes used {ex['others_busy']:.1f} cores)"
                if ex.get("others_busy", 0) > 0.25 else "")
        print(f"  {provider:<31} {direction:<9} {med:10.2f} ms {ns:8.3f} ns/neuron-step "
              f"{ratio:7.2f}x  {ex.get('note', '')}{busy}", flush=True)

    print("fastlif first call (fresh processes, one empty Numba cache) ...", flush=True)
    (imp0, call0), (imp1, call1) = first_call_times()
    print(f"  import {imp0:.2f} s; first call: {call0:.2f} s cold cache (compile), "
          f"{call1:.2f} s with the cache (import {imp1:.2f} s)", flush=True)
    for name, s, imp in (("fastlif first call, cold cache", call0, imp0),
                         ("fastlif first call, cached", call1, imp1)):
        rows.append(dict(bench="sim", case="first call", shape="T=64 N=4096", dtype="float64",
                         provider=name, direction="compile", median_ms=f"{s * 1e3:.4g}",
                         device=device, extra=extra(compile_s=s, import_s=imp,
                                                    cached=name.endswith("cached"))))

    env = dict(os.environ)
    cython_cache = tempfile.TemporaryDirectory(prefix="fastlif_bench_cython_")
    env["FASTLIF_BENCH_CYTHON_CACHE"] = cython_cache.name
    for case in cases:
        N, T = CASES[case]
        print(f"\ncase {case}: N={N} neurons, T={T} steps of {DT * 1e3:g} ms, {n_threads} threads",
              flush=True)
        I, v0 = drive(T), initial_v(N)
        big = N * T >= 10 ** 7
        ref = {}
        for record_v, direction in ((True, "v+spikes"), (False, "spikes")):
            res = simulate_lif(I, DT, v0=v0, record_v=record_v, **MODEL)
            fast_spikes = res.spikes
            del res
            with Contention() as busy:
                med, q20, q80 = time_cpu(
                    lambda: simulate_lif(I, DT, v0=v0, record_v=record_v, **MODEL),
                    warmup=1, repeat=7 if big else 20, min_time_s=0 if big else 1.0)
            ref[direction] = med
            rate = fast_spikes.sum() / N / (T * DT)
            add(case, N, T, "fastlif", direction, med, q20, q80, med, threads=n_threads,
                spikes=int(fast_spikes.sum()), rate_Hz=rate, others_busy=busy.cores)

        for record_v, direction in ((True, "v+spikes"), (False, "spikes")) if big else ():
            floor = write_floor(T, N, record_v)
            floor()
            with Contention() as busy:
                med, q20, q80 = time_cpu(floor, warmup=1, repeat=7, min_time_s=0)
            add(case, N, T, "write floor (alloc + fill outputs)", direction, med, q20, q80,
                ref[direction], threads=n_threads, others_busy=busy.cores)

        with Contention() as busy:
            med, q20, q80 = time_cpu(lambda: numpy_loop(I, v0), warmup=0, repeat=2 if big else 5)
        V, S = numpy_loop(I, v0)
        add(case, N, T, "numpy loop", "v+spikes", med, q20, q80, ref["v+spikes"],
            threads=1, spikes=int(S.sum()), same_spikes=bool(np.array_equal(S, fast_spikes)),
            others_busy=busy.cores)
        del V, S

        if not have_brian2:
            continue
        plan = [("numpy", False, 0), ("cython", False, 0), ("cpp_standalone", False, 0),
                ("cpp_standalone", True, 0)]
        plan[2:2] = [("numpy", True, 0), ("cython", True, 0)]
        if big:
            plan.append(("cpp_standalone", False, 2))
        for target, record_v, nt in plan:
            direction = "v+spikes" if record_v else "spikes"
            name = f"brian2 {target}" + (f" {nt} threads" if nt else " 1 thread"
                                         if target == "cpp_standalone" else "")
            with Contention() as busy:   # the whole worker, build included
                info = run_worker(target, case, record_v, nt, env)
            if "error" in info:
                print(f"  {name:<30} {direction:<9} failed: {info['error']}", flush=True)
                rows.append(dict(bench="sim", case=case, shape=f"T={T} N={N}", provider=name,
                                 direction=direction, device=device,
                                 extra=extra(error=info["error"].replace(";", ","))))
                continue
            ex = dict(threads=nt or 1, compile_s=info["build_s"],
                      version=f"brian2-{info['version']}", others_busy=busy.cores)
            if info["steps"] != T:
                ex["note"] = f"timed on {info['steps']} steps and scaled to {T}"
            # Brian2 hoists the shared current out of the neuron loop (and its C++ targets
            # compile with -ffast-math), so its v may differ in the last bits: say whether
            # the spikes still agree.
            compared = min(T, info["steps_simulated"])
            k, i = info["spike_k"], info["spike_i"]
            b2_raster = np.zeros((T, N), bool)
            b2_raster[k, i] = True
            ex.update(spikes=int(b2_raster[:compared].sum()),
                      same_spikes=bool(np.array_equal(b2_raster[:compared], fast_spikes[:compared])))
            if compared < T:
                ex["spikes_compared_steps"] = compared
            add(case, N, T, name, direction, info["median_ms"], info["q20_ms"], info["q80_ms"],
                ref[direction], **ex)

    path = append_rows("sim.csv", rows)
    print(f"\nwrote {len(rows)} rows to {path} ({time.perf_counter() - t_start:.0f} s in all)")
    print_markdown(table)


def print_markdown(table):
    print("\n| case | provider | records | median ms | ns / neuron-step | fastlif speed-up "
          "| same spikes | build / compile s | other load (cores) |")
    print("|---|---|---|---:|---:|---:|:---:|---:|---:|")
    for case, provider, direction, med, ns, ratio, ex in table:
        build = f"{ex['compile_s']:.1f}" if "compile_s" in ex else "-"
        note = f" ({ex['note']})" if "note" in ex else ""
        same = {True: "yes", False: "**no**"}.get(ex.get("same_spikes"),
                                                 "(ref)" if provider == "fastlif" else "-")
        print(f"| {case} | {provider}{note} | {direction} | {med:.1f} | {ns:.3f} | "
              f"{ratio:.1f}x | {same} | {build} | {ex.get('others_busy', float('nan')):.1f} |")


# =========================================================================== networks
#
#     python -m bench.bench_sim --network                 # CUBA and COBA at 4k, 40k, 400k
#     python -m bench.bench_sim --network --sizes 4000    # one size
#
# fastlif.sim.simulate_network against Brian2 (cpp_standalone on 2 OpenMP threads; its
# numpy target at 4k, on the very same connectivity and initial membranes, so that the spike
# trains can be compared one for one) and NEST 3 (iaf_psc_exp / iaf_cond_exp, 2 threads).
# 1 s of biological time, dt 0.1 ms; 80 synapses a neuron at every size (p = 0.02 at 4000).
# Times are the simulation loop only: Brian2's code generation and compile, NEST's network
# construction and fastlif's table building and Numba compile are reported apart. Providers
# run interleaved, round by round; each row gives the median and the spread (min..max) of its
# rounds, and the mean rate and mean CV of the interspike intervals of its own network.
# NEST's smallest delay is one step (Brian2's and fastlif's are 0 here); NEST integrates
# iaf_cond_exp with an adaptive solver (not Euler): its statistics are close, not equal.

NET_SIZES = (4000, 40_000, 400_000)
NET_T = 10_000
NET_ROUNDS = {4000: 3, 40_000: 2, 400_000: 1}
# On a shared machine the threaded simulators can take minutes a run (OpenMP barriers
# waiting for descheduled threads): a provider whose round took longer than NET_SLOW_S runs
# no more rounds, and a run over NET_TIMEOUT_S is stopped (reported as such).
NET_SLOW_S = 30.0
NET_TIMEOUT_S = 300
MV = 1e-3


def net_params(model, N, seed=0):
    from fastlif.sim import coba_params, cuba_params
    return (cuba_params if model == "cuba" else coba_params)(N, seed=seed)


def rate_cv(spike_i, spike_t, N, duration):
    """Mean rate (Hz) and the mean over neurons (with >= 3 spikes) of the CV of their
    interspike intervals."""
    spike_i = np.asarray(spike_i, np.int64)
    spike_t = np.asarray(spike_t, np.float64)
    rate = len(spike_i) / N / duration
    if len(spike_i) < 3:
        return rate, float("nan")
    order = np.lexsort((spike_t, spike_i))
    i, t = spike_i[order], spike_t[order]
    same = i[1:] == i[:-1]
    isi, who = np.diff(t)[same], i[1:][same]
    n = np.bincount(who, minlength=N)
    s1 = np.bincount(who, isi, minlength=N)
    s2 = np.bincount(who, isi * isi, minlength=N)
    ok = n >= 2
    mean = s1[ok] / n[ok]
    var = np.maximum(s2[ok] / n[ok] - mean * mean, 0)
    return rate, float(np.mean(np.sqrt(var) / mean))


def _b2_equations(model):
    if model == "cuba":
        return ("dv/dt = (ge+gi-(v-El))/taum : volt (unless refractory)\n"
                "dge/dt = -ge/taue : volt\ndgi/dt = -gi/taui : volt")
    return ("dv/dt = (ge*(Ee-v) + gi*(Ei-v) - (v-El) + I)/taum : volt (unless refractory)\n"
            "dge/dt = -ge/taue : 1\ndgi/dt = -gi/taui : 1")


def brian2_net_worker(target, model, N, threads, conn, out):
    """Build (and for C++ compile) the network in Brian2; numpy: run and time it here;
    cpp_standalone: leave the compiled binary in ``out``'s directory for the parent to run."""
    import brian2 as b2

    b2.prefs.logging.console_log_level = "ERROR"
    t0 = time.perf_counter()
    if target == "cpp_standalone":
        b2.set_device("cpp_standalone", directory=out, build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = threads
    else:
        b2.prefs.codegen.target = "numpy"
    b2.defaultclock.dt = DT * b2.second
    kw = net_params(model, N)
    S, V = b2.second, b2.volt
    wunit = V if model == "cuba" else 1
    ns = dict(taum=kw["tau_m"] * S, taue=kw["tau_e"] * S, taui=kw["tau_i"] * S,
              El=kw["E_L"] * V, Vt=kw["v_th"] * V, Vr=kw["v_reset"] * V,
              I=kw.get("I", 0.0) * V, Ee=kw.get("E_e", 0.0) * V, Ei=kw.get("E_i", 0.0) * V,
              we=float(kw["synapses"][0].weight) * wunit,
              wi=float(kw["synapses"][1].weight) * wunit)
    G = b2.NeuronGroup(N, _b2_equations(model), threshold="v > Vt", reset="v = Vr",
                       refractory=kw["refractory"] * S, method=kw["method"], namespace=ns)
    Ce = b2.Synapses(G, G, on_pre="ge += we", namespace=ns)
    Ci = b2.Synapses(G, G, on_pre="gi += wi", namespace=ns)
    if conn:
        # The very same network as fastlif's (numpy target: compared spike for spike).
        Ce.connect(i=kw["synapses"][0].pre, j=kw["synapses"][0].post)
        Ci.connect(i=kw["synapses"][1].pre, j=kw["synapses"][1].post)
        G.v = kw["v0"] * V
    else:
        ne, p = int(0.8 * N), min(1.0, 80.0 / N)
        Ce.connect(f"i<{ne}", p=p)
        Ci.connect(f"i>={ne}", p=p)
        G.v = ("Vr + rand()*(Vt - Vr)" if model == "cuba" else "-55*mV + 5*mV*randn()")
    mon = b2.SpikeMonitor(G)
    net = b2.Network(G, Ce, Ci, mon)
    info = dict(version=b2.__version__)
    if target == "cpp_standalone":
        net.run(NET_T * DT * S)
        b2.device.build(directory=out, compile=True, run=False)
        info["build_s"] = time.perf_counter() - t0
    else:
        net.run(0 * S)                  # code generation
        info["build_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        net.run(NET_T * DT * S)
        info["run_s"] = time.perf_counter() - t1
        np.savez(out, i=np.array(mon.i[:]), t=np.array(mon.t_[:]))
    print("RESULT " + json.dumps(info), flush=True)


def nest_network(nest, model, kw, T, dt, threads, conn=True):
    """The network in NEST 3: iaf_psc_exp (CUBA; currents in pA that move v as Brian2's ge
    does: w_pA = w_mV * C_m / tau_m) or iaf_cond_exp (COBA; g = ge * g_L). ``conn``: the
    connectivity and initial membranes of ``kw`` (fastlif's), else NEST's own
    pairwise_bernoulli draw with the same p. Delays: one step, NEST's minimum. Returns
    spike_i, spike_t (s), build_s, run_s."""
    N = kw["N"]
    t0 = time.perf_counter()
    nest.ResetKernel()
    nest.set_verbosity("M_ERROR")
    nest.SetKernelStatus({"resolution": dt * 1e3, "local_num_threads": threads,
                          "rng_seed": 12345})
    ms = lambda x: x * 1e3   # noqa: E731  (seconds or volts -> ms or mV)
    if model == "cuba":
        C = 250.0
        gl = C / ms(kw["tau_m"])                      # nS; pA per mV of Brian2's ge
        pop = nest.Create("iaf_psc_exp", N, params=dict(
            C_m=C, tau_m=ms(kw["tau_m"]), E_L=ms(kw["E_L"]), V_th=ms(kw["v_th"]),
            V_reset=ms(kw["v_reset"]), t_ref=ms(kw["refractory"]),
            tau_syn_ex=ms(kw["tau_e"]), tau_syn_in=ms(kw["tau_i"]), I_e=ms(kw["I"]) * gl
            if "I" in kw else 0.0))
        scale = lambda w: ms(w) * gl                  # noqa: E731
    else:
        C, gl = 200.0, 200.0 / ms(kw["tau_m"])
        pop = nest.Create("iaf_cond_exp", N, params=dict(
            C_m=C, g_L=gl, E_L=ms(kw["E_L"]), V_th=ms(kw["v_th"]), V_reset=ms(kw["v_reset"]),
            t_ref=ms(kw["refractory"]), tau_syn_ex=ms(kw["tau_e"]),
            tau_syn_in=ms(kw["tau_i"]), E_ex=ms(kw["E_e"]), E_in=ms(kw["E_i"]),
            I_e=ms(kw["I"]) * gl))
        scale = lambda w: w * gl                      # noqa: E731
    ne, p = int(0.8 * N), min(1.0, 80.0 / N)
    if conn:
        pop.V_m = list(ms(np.asarray(kw["v0"])))
    elif model == "cuba":
        pop.V_m = nest.random.uniform(ms(kw["v_reset"]), ms(kw["v_th"]))
    else:
        pop.V_m = nest.random.normal(-55.0, 5.0)
    for n, proj in enumerate(kw["synapses"]):
        # COBA: NEST tells inhibitory conductances by their negative sign.
        w = scale(float(proj.weight)) * (-1 if (model == "coba" and proj.target == "i") else 1)
        syn = {"weight": w, "delay": dt * 1e3}
        if conn:
            # Arrays of node ids (NodeCollections may not repeat an id).
            first = pop[0].global_id
            if len(proj.pre):
                n_syn = len(proj.pre)
                nest.Connect(np.asarray(proj.pre, np.int64) + first,
                             np.asarray(proj.post, np.int64) + first, "one_to_one",
                             syn_spec={"weight": np.full(n_syn, syn["weight"]),
                                       "delay": np.full(n_syn, syn["delay"])})
        else:
            src = pop[:ne] if n == 0 else pop[ne:]
            nest.Connect(src, pop, {"rule": "pairwise_bernoulli", "p": p,
                                    "allow_autapses": True}, syn_spec=syn)
    rec = nest.Create("spike_recorder")
    nest.Connect(pop, rec)
    nest.Prepare()
    t1 = time.perf_counter()
    nest.Run(T * dt * 1e3)
    t2 = time.perf_counter()
    nest.Cleanup()
    ev = rec.get("events")
    first = pop[0].global_id
    return dict(spike_i=np.asarray(ev["senders"]) - first, spike_t=np.asarray(ev["times"]) / 1e3,
                build_s=t1 - t0, run_s=t2 - t1)


def nest_net_worker(model, N, threads, out):
    import nest
    kw = net_params(model, N)
    res = nest_network(nest, model, kw, NET_T, DT, threads, conn=False)
    np.savez(out, i=res["spike_i"], t=res["spike_t"])
    print("RESULT " + json.dumps(dict(build_s=res["build_s"], run_s=res["run_s"],
                                      version=nest.__version__)), flush=True)


def _net_worker_proc(kind, model, N, threads, out, conn=False, env=None):
    cmd = [sys.executable, "-m", "bench.bench_sim", "--net-worker", kind, "--model", model,
           "--n", str(N), "--threads", str(threads), "--out", out] + (["--conn"] if conn else [])
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=NET_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {NET_TIMEOUT_S} s (build + run)")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        return dict(error=(proc.stderr.strip().splitlines() or ["failed"])[-1][:300])
    return json.loads(line[-1][7:])


def _run_b2_binary(directory, env):
    """One run of a compiled Brian2 standalone network: its own timing of the network loop
    (results/last_run_info.txt) and its spikes."""
    subprocess.run(["./main"], cwd=directory, env=env, check=True, capture_output=True,
                   timeout=NET_TIMEOUT_S)
    with open(os.path.join(directory, "results", "last_run_info.txt")) as f:
        run_s = float(f.read().split()[0])
    return run_s


def _b2_binary_spikes(directory):
    res = Path(directory) / "results"
    fi = [f for f in res.iterdir() if f.name.startswith("_dynamic_array_spikemonitor_i")]
    ft = [f for f in res.iterdir() if f.name.startswith("_dynamic_array_spikemonitor_t")]
    return np.fromfile(fi[0], np.int32), np.fromfile(ft[0], np.float64)


def network_main(sizes, models, rounds_override=None, nest_max_n=40_000):
    from tqdm import tqdm

    from fastlif.sim import simulate_network

    have_b2 = importlib.util.find_spec("brian2") is not None
    have_nest = importlib.util.find_spec("nest") is not None
    if not have_b2:
        print("brian2 is not installed: Brian2 rows skipped")
    if not have_nest:
        print("nest-simulator is not installed (pip install nest-simulator): NEST rows skipped")
    device, rows, table = cpu_name(), [], []
    t_start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    for N in sizes:
        for model in models:
            R = rounds_override or NET_ROUNDS.get(N, 2)
            print(f"\n{model.upper()} N={N}: {R} rounds of 1 s (T={NET_T} steps)", flush=True)
            load = os.getloadavg()[0]        # other jobs on a shared machine inflate times
            print(f"  load average {load:.1f} on {os.cpu_count()} cores", flush=True)
            kw = net_params(model, N)
            n_syn = sum(len(p.pre) for p in kw["synapses"])
            simulate_network(T=10, dt=DT, **kw)             # Numba compile, excluded
            if N >= 40_000:
                simulate_network(T=10, dt=DT, threads=2, **kw)
            times = {}
            stats = {}
            b2dirs = {}
            tmp = tempfile.TemporaryDirectory(prefix=f"b2net_{model}_{N}_")
            for nt in (2, 1) if have_b2 else ():
                name = f"brian2 cpp_standalone {nt} thread" + ("s" if nt > 1 else "")
                print(f"  {name}: build and compile ...", flush=True)
                d = os.path.join(tmp.name, f"cpp{nt}")
                info = _net_worker_proc("cpp_standalone", model, N, nt if nt > 1 else 0, d,
                                        env=env)
                if "error" in info:
                    print(f"  {name} failed: {info['error']}")
                else:
                    b2dirs[name] = d
                    stats[name + " build_s"] = info["build_s"]
            slow = set()

            def too_slow(name):
                return name in slow

            def note(name, run_s):
                if run_s > NET_SLOW_S:
                    slow.add(name)
            for r in tqdm(range(R), desc=f"  {model} {N} rounds", leave=False):
                res = simulate_network(T=NET_T, dt=DT, **kw)
                times.setdefault("fastlif", []).append(res.run_s)
                stats["fastlif"] = (res.spike_i, res.spike_t, res.threads, res.build_s)
                if N >= 40_000 and not too_slow("fastlif 2 threads"):
                    # Opt-in threads: one parallel region a step (see network.py).
                    res = simulate_network(T=NET_T, dt=DT, threads=2, **kw)
                    times.setdefault("fastlif 2 threads", []).append(res.run_s)
                    note("fastlif 2 threads", res.run_s)
                    stats["fastlif 2 threads"] = (res.spike_i, res.spike_t, 2, res.build_s)
                for name, d in b2dirs.items():
                    if too_slow(name):
                        continue
                    try:
                        run_s = _run_b2_binary(d, env)
                    except subprocess.TimeoutExpired:
                        print(f"  {name}: over {NET_TIMEOUT_S} s, stopped")
                        slow.add(name)
                        continue
                    times.setdefault(name, []).append(run_s)
                    note(name, run_s)
                if have_nest and N <= nest_max_n and not too_slow("nest 2 threads"):
                    out = os.path.join(tmp.name, f"nest{r}.npz")
                    info = _net_worker_proc("nest", model, N, 2, out, env=env)
                    if "error" in info:
                        print(f"  NEST failed: {info['error']}")
                    else:
                        times.setdefault("nest 2 threads", []).append(info["run_s"])
                        note("nest 2 threads", info["run_s"])
                        d = np.load(out)
                        stats["nest 2 threads"] = (d["i"], d["t"], 2, info["build_s"])
                        stats["nest version"] = info["version"]
                if have_b2 and N == 4000 and r < 2:
                    out = os.path.join(tmp.name, f"numpy{r}.npz")
                    info = _net_worker_proc("numpy", model, N, 1, out, conn=True, env=env)
                    if "error" in info:
                        print(f"  brian2 numpy failed: {info['error']}")
                    else:
                        times.setdefault("brian2 numpy", []).append(info["run_s"])
                        d = np.load(out)
                        stats["brian2 numpy"] = (d["i"], d["t"], 1, info["build_s"])
            for name, d in b2dirs.items():
                if name in times:
                    i, t = _b2_binary_spikes(d)
                    stats[name] = (i, t, 2 if "2 threads" in name else 1,
                                   stats[name + " build_s"])
            ref = float(np.median(times["fastlif"]))
            f_i, f_t = stats["fastlif"][:2]
            for prov, ts in times.items():
                i, t, nthreads, build_s = stats[prov]
                rate, cv = rate_cv(i, t, N, NET_T * DT)
                med = float(np.median(ts))
                ex = dict(threads=nthreads, rate_Hz=rate, cv_isi=cv, build_s=build_s,
                          rounds=len(ts), synapses=n_syn, loadavg_1min=load)
                if prov == "brian2 numpy":
                    order = np.lexsort((i, np.round(t / DT)))
                    ex["same_spikes"] = bool(
                        len(i) == len(f_i) and np.array_equal(np.asarray(i)[order], f_i)
                        and np.array_equal(np.round(np.asarray(t)[order] / DT),
                                           np.round(f_t / DT)))
                if prov.startswith("nest"):
                    ex["version"] = f"nest-{stats['nest version']}"
                    ex["note"] = "delay 1 step"
                rows.append(dict(bench="sim_network", case=f"{model} N={N}",
                                 shape=f"T={NET_T} N={N}", dtype="float64", provider=prov,
                                 direction="spikes", median_ms=f"{med * 1e3:.4g}",
                                 q20_ms=f"{min(ts) * 1e3:.4g}", q80_ms=f"{max(ts) * 1e3:.4g}",
                                 ratio_vs_fastlif=f"{med / ref:.4g}",
                                 throughput=f"{N * NET_T / med:.4g}",
                                 throughput_unit="neuron-steps/s", device=device,
                                 extra=extra(**ex)))
                table.append((model, N, prov, med, min(ts), max(ts), med / ref, ex))
                print(f"  {prov:<32} {med * 1e3:9.1f} ms (min {min(ts) * 1e3:.1f}, max "
                      f"{max(ts) * 1e3:.1f}, {len(ts)} runs) {med / ref:6.2f}x fastlif  "
                      f"{rate:5.2f} Hz CV {cv:.2f}"
                      + (f"  same spikes: {ex['same_spikes']}" if "same_spikes" in ex else ""),
                      flush=True)
            tmp.cleanup()
    path = append_rows("sim_network.csv", rows)
    print(f"\nwrote {len(rows)} rows to {path} ({time.perf_counter() - t_start:.0f} s in all)")
    print("\n| model | N | provider | median s (min-max) | vs fastlif | rate Hz | CV ISI |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for model, N, prov, med, lo, hi, ratio, ex in table:
        same = " (same spikes)" if ex.get("same_spikes") else ""
        print(f"| {model.upper()} | {N} | {prov}{same} | {med:.3f} ({lo:.3f}-{hi:.3f}) | "
              f"{ratio:.1f}x | {ex['rate_Hz']:.2f} | {ex['cv_isi']:.2f} |")


def network_figure(path):
    """Raster (200 neurons) and population rate of fastlif's CUBA and COBA, 4000 neurons."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastlif.sim import simulate_network

    fig, axes = plt.subplots(2, 2, figsize=(10, 5), sharex=True,
                             gridspec_kw=dict(height_ratios=[3, 1]))
    for col, model in enumerate(("cuba", "coba")):
        kw = net_params(model, 4000)
        res = simulate_network(T=NET_T, dt=DT, **kw)
        sel = res.spike_i < 200
        ax = axes[0, col]
        ax.plot(res.spike_t[sel] * 1e3, res.spike_i[sel], ",k")
        rate, cv = rate_cv(res.spike_i, res.spike_t, 4000, NET_T * DT)
        ax.set_title(f"{model.upper()}, 4000 neurons: {rate:.1f} Hz, CV {cv:.2f}")
        ax.set_ylabel("neuron")
        counts = np.bincount(res.spike_step // 10, minlength=NET_T // 10)
        axes[1, col].plot(np.arange(len(counts)) * 1.0, counts / 4000 / 1e-3, lw=0.7)
        axes[1, col].set_xlabel("time (ms)")
        axes[1, col].set_ylabel("rate (Hz)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def network_fastlif_only():
    """fastlif alone on the same networks (5/3/1 runs at 4k/40k/400k), rows with provider
    "fastlif (final code, run alone)": for re-measuring fastlif after a change without the
    peers' builds and minutes-long runs."""
    from fastlif.sim import simulate_network
    rows = []
    for N, R in ((4000, 5), (40_000, 3), (400_000, 1)):
        for model in ("cuba", "coba"):
            kw = net_params(model, N)
            simulate_network(T=10, dt=DT, **kw)
            load = os.getloadavg()[0]
            ts = []
            for _ in range(R):
                res = simulate_network(T=NET_T, dt=DT, **kw)
                ts.append(res.run_s)
            rate, cv = rate_cv(res.spike_i, res.spike_t, N, NET_T * DT)
            med = float(np.median(ts))
            print(f"{model} N={N}: {med:.4f} s ({min(ts):.4f}-{max(ts):.4f}), {rate:.2f} Hz, "
                  f"CV {cv:.2f}, load {load:.1f}", flush=True)
            rows.append(dict(bench="sim_network", case=f"{model} N={N}",
                             shape=f"T={NET_T} N={N}", dtype="float64",
                             provider="fastlif (final code, run alone)", direction="spikes",
                             median_ms=f"{med * 1e3:.4g}", q20_ms=f"{min(ts) * 1e3:.4g}",
                             q80_ms=f"{max(ts) * 1e3:.4g}", ratio_vs_fastlif="",
                             throughput=f"{N * NET_T / med:.4g}",
                             throughput_unit="neuron-steps/s", device=cpu_name(),
                             extra=extra(threads=1, rate_Hz=rate, cv_isi=cv,
                                         build_s=res.build_s, rounds=R, loadavg_1min=load)))
    append_rows("sim_network.csv", rows)


def network_cli(argv):
    ap = argparse.ArgumentParser(description="CUBA and COBA networks: fastlif, Brian2, NEST")
    ap.add_argument("--network", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(NET_SIZES))
    ap.add_argument("--models", nargs="+", default=["cuba", "coba"])
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--nest-max-n", type=int, default=40_000,
                    help="NEST above this size is skipped (it needs minutes a run)")
    ap.add_argument("--figure", action="store_true", help="only write the figure")
    ap.add_argument("--fastlif-only", action="store_true",
                    help="time fastlif alone (no Brian2, no NEST)")
    ap.add_argument("--net-worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--conn", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.net_worker == "nest":
        return nest_net_worker(args.model, args.n, args.threads, args.out)
    if args.net_worker:
        return brian2_net_worker(args.net_worker, args.model, args.n, args.threads,
                                 args.conn, args.out)
    if args.fastlif_only:
        return network_fastlif_only()
    fig = ROOT / "bench" / "results" / "sim_network.png"
    if not args.figure:
        network_main(args.sizes, args.models, args.rounds or None, args.nest_max_n)
    network_figure(fig)


if __name__ == "__main__":
    if any(a in sys.argv for a in ("--network", "--net-worker", "--figure", "--fastlif-only")):
        network_cli(sys.argv[1:])
    else:
        main()

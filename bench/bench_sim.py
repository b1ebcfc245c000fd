"""fastlif.sim.simulate_lif against Brian2 (numpy, cython, C++ standalone) and a NumPy loop.

    python -m bench.bench_sim             # small and large case, ~2 minutes on a quiet 2-core box
    python -m bench.bench_sim --case small

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


if __name__ == "__main__":
    main()

"""CPU benchmark of the fused LIF family (fp32, forward and forward+backward), side by side
with snnTorch's Python loop, SpikingJelly 2.0's multi-step LIF (Leaky only), fastlif's
reference loop and ``torch.compile`` of that reference (Leaky only).

Run from the repository root:  ``python -m bench.bench_cpu``  (``make bench`` runs exactly that).
Rows go to ``bench/results/cpu.csv`` (columns: ``bench.common.FIELDS``); ``python -m bench.report
cpu`` renders them. See bench/README.md for what is measured and how.

Every provider runs snnTorch's default ``Leaky``: beta=0.95 (learnable), threshold=1,
subtract reset, delayed reset, atan surrogate (alpha=2), on the same inputs
x ~ N(0.1, 0.5^2) ``[T, B, N]`` and the same random upstream gradients on spikes and
membrane. The fastlif and reference spikes are asserted bit-identical to snnTorch's in every
run where snnTorch is timed.

The other families run the same layout (snnTorch's loop, the reference, fastlif; tutorial
and large sizes): ``Synaptic`` (alpha=0.9, beta=0.95 learnable; upstream gradients on spikes,
current and membrane), ``RLeaky(all_to_all=False)`` (beta=0.95 learnable, V=0.5 learnable per
layer) and ``RLeaky(linear_features=N)`` (the dense recurrent layer: fastlif's is event-driven,
its sums run in another order than snnTorch's GEMM, so its spikes are compared and reported,
not asserted).
"""
import argparse
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from importlib import metadata

import torch

from fastlif.testing import run_per_step
from fastlif.timing import summarize, time_samples

from bench.common import Spinners, append_rows, cpu_name, extra, time_cpu, torch_version

BETA = 0.95
THRESHOLD = 1.0
SEED = 0
# Bytes that must move per neuron-step in fp32 (csrc/lif_kernel.h): forward reads x and writes
# spk and mem; backward reads grad_spk, grad_mem and the saved mem (mem[t-1] is the previous
# iteration's mem[t], still in cache) and writes grad_x.
# Synaptic adds the current: forward writes syn too, backward reads its upstream gradient
# (36). RLeaky's one-to-one feedback needs nothing more than Leaky (the previous spikes are
# recomputed from the saved membrane). The dense RLeaky is dominated by its matrix work: no
# byte count, no roofline.
BYTES_PER_NS = {"forward": 12, "forward+backward": 28}
# SpikingJelly's pair, family: (parametric, surrogate). sj_lif and sj_plif use ATan(alpha=2),
# snnTorch's atan; sj_*_sigmoid SpikingJelly's default surrogate, Sigmoid(alpha=4), which a user
# who sets none gets.
SJ_FAMILIES = {"sj_lif": (False, "ATan"), "sj_plif": (True, "ATan"), "sj_lif_sigmoid": (False, "Sigmoid"),
               "sj_plif_sigmoid": (True, "Sigmoid")}
SPEC_FAMILIES = ("lapicque", "alpha", "rsynaptic", *SJ_FAMILIES)
FAMILY_BYTES = {"leaky": BYTES_PER_NS, "synaptic": {"forward": 16, "forward+backward": 36},
                "rleaky": BYTES_PER_NS, "rleaky_dense": None,
                # the neurons added on the family spec (issue 20): ratios only, at the tutorial size
                **dict.fromkeys(SPEC_FAMILIES)}
# the provider each family's results are checked against (and its ratio target is taken from)
FAMILY_PEER = {f: "spikingjelly_plif" if parametric else "spikingjelly_lif"
               for f, (parametric, _) in SJ_FAMILIES.items()}
ALPHA, V = 0.9, 0.5
COPY_MB = 256
FB, FWD = "forward+backward", "forward"

SJ_TAU = 1.0 / (1.0 - BETA)
SJ_SETTINGS = (f"tau:{SJ_TAU:g} (1/(1-beta)) decay_input:False (H = v - v/tau + x = beta*v + x) "
               "v_threshold:1 v_reset:None (soft reset: subtract) detach_reset:True "
               "surrogate:{surrogate} step_mode:m store_v_seq:True; CPU runs SJ's torch-reference "
               "(eager ops in a Python loop; cupy/triton are CUDA-only); differs from snnTorch: "
               "resets in the same step and fires at h>=thr so spikes are not compared")


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def cpu_busy(interval=0.5):
    """Fraction of all cores busy over ``interval`` seconds (from /proc/stat); nan if unknown."""
    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return vals[3] + vals[4], sum(vals)  # idle + iowait, total
    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


class OthersBusy:
    """Fraction of the cores that *other* processes kept busy while the block ran: all busy CPU
    time from /proc/stat minus this process's own (os.times, all its threads)."""

    def __enter__(self):
        self.stat0, self.own0, self.t0 = self._stat(), self._own(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        stat1, own1, wall = self._stat(), self._own(), time.perf_counter() - self.t0
        try:
            hz = os.sysconf("SC_CLK_TCK")
            busy_s = ((stat1[1] - stat1[0]) - (self.stat0[1] - self.stat0[0])) / hz
            self.value = max(0.0, (busy_s - (own1 - self.own0)) / ((os.cpu_count() or 1) * wall))
        except (TypeError, ValueError, ZeroDivisionError):
            self.value = float("nan")
        return False

    @staticmethod
    def _stat():
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
            return vals[3] + vals[4], sum(vals)  # idle + iowait, total (jiffies)
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system


def _solo_events():
    """fastlif's count of regions that went to one thread for a stalled team (0 without C++)."""
    from fastlif import backends
    mod = backends._cpp_status()[0]
    return mod._team_policy()["solo_events"] if mod is not None else 0


def wait_idle(max_s, busy_below=0.15):
    """Wait up to ``max_s`` seconds for the other processes to leave the cores; returns the last
    busy fraction seen."""
    deadline = time.perf_counter() + max_s
    busy = cpu_busy()
    while busy >= busy_below and time.perf_counter() < deadline:
        busy = cpu_busy(1.0)
    return busy


def make_inputs(T, B, N, seed=SEED):
    """x and one upstream gradient per output (spikes, then the states: at most three; Alpha has three)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, N, generator=g) * 0.5 + 0.1
    return x, [torch.randn(T, B, N, generator=g) for _ in range(4)]


# --- providers: each, given N, is a callable x_seq -> (spk_seq, *state_seqs) -----------------

def provider_snntorch(N=None):
    import snntorch as snn
    lif = snn.Leaky(beta=BETA, threshold=THRESHOLD, learn_beta=True)

    def run(x):
        return run_per_step(lif, x)
    return run, "snn.Leaky(beta 0.95 learn_beta) stepped in Python; spk/mem stacked"


def provider_fastlif(N=None):
    import fastlif
    lif = fastlif.Leaky(BETA, threshold=THRESHOLD, learn_beta=True)
    lif.sequence(torch.zeros(1, 1, 1))  # fail early if the C++ backend is missing
    return lif.sequence, "fastlif.Leaky(0.95 learn_beta).sequence backend auto (cpp)"


def step_loop(layer, init_states, x_seq, spikes_are_state=False):
    """snnTorch's way: step ``layer(x_t, *states) -> (spk, *new states)`` over time, stack.
    ``spikes_are_state``: RLeaky's, whose spikes are its first state (``spk, mem = lif(x, spk, mem)``)."""
    states, outs = list(init_states), []
    for x in x_seq:
        out = layer(x, *states)
        states = list(out) if spikes_are_state else list(out[1:])
        outs.append(out)
    return tuple(torch.stack(seq) for seq in zip(*outs))


def dense_recurrent(N):
    """The dense providers' common recurrent weights (nn.Linear's initialisation, seeded)."""
    gen = torch.Generator().manual_seed(SEED + 1)
    bound = 1.0 / N ** 0.5
    return ((torch.rand(N, N, generator=gen) * 2 - 1) * bound, (torch.rand(N, generator=gen) * 2 - 1) * bound)


def _set_dense(layer, N):
    weight, bias = dense_recurrent(N)
    with torch.no_grad():
        layer.recurrent.weight.copy_(weight)
        layer.recurrent.bias.copy_(bias)
    return layer


def family_layer(lib, family, N):
    """The same layer built by snnTorch (``lib`` = snntorch) or fastlif."""
    if family == "synaptic":
        return lib.Synaptic(alpha=ALPHA, beta=BETA, threshold=THRESHOLD, learn_beta=True)
    if family == "lapicque":
        return lib.Lapicque(beta=BETA, threshold=THRESHOLD, learn_threshold=True)
    if family == "alpha":
        return lib.Alpha(alpha=BETA, beta=ALPHA, threshold=THRESHOLD, learn_beta=True)  # alpha > beta
    if family == "rsynaptic":
        return lib.RSynaptic(alpha=ALPHA, beta=BETA, V=V, all_to_all=False, threshold=THRESHOLD, learn_beta=True)
    if family == "rleaky":
        return lib.RLeaky(beta=BETA, V=V, all_to_all=False, threshold=THRESHOLD, learn_beta=True)
    return _set_dense(lib.RLeaky(beta=BETA, linear_features=N, threshold=THRESHOLD, learn_beta=True), N)


FAMILY_WHAT = {"synaptic": "Synaptic(alpha 0.9, beta 0.95 learn_beta)",
               "lapicque": "Lapicque(beta 0.95, learn_threshold)",
               "alpha": "Alpha(alpha 0.95, beta 0.9 learn_beta)",
               "rsynaptic": "RSynaptic(alpha 0.9, beta 0.95 learn_beta, V 0.5 learnable, all_to_all False)",
               "rleaky": "RLeaky(beta 0.95 learn_beta, V 0.5 learnable, all_to_all False)",
               "rleaky_dense": "RLeaky(beta 0.95 learn_beta, linear_features N: dense nn.Linear recurrent)"}


def family_snntorch(family, N):
    import snntorch as snn
    layer = family_layer(snn, family, N)
    init = getattr(layer, "init_rleaky" if family.startswith("rleaky") else f"init_{family}")

    def states():
        zeros = init()
        return zeros if isinstance(zeros, tuple) else (zeros,)
    return ((lambda x: step_loop(layer, states(), x, family in ("rleaky", "rleaky_dense", "rsynaptic"))),
            f"snn.{FAMILY_WHAT[family]} stepped in Python; stacked")


def family_fastlif(family, N):
    import fastlif
    layer = family_layer(fastlif, family, N)
    layer.sequence(torch.zeros(1, 1, N))  # fail early if the C++ backend is missing
    return layer.sequence, f"fastlif.{FAMILY_WHAT[family]}.sequence backend auto (cpp)"


def family_reference(family, N):
    import fastlif
    layer = family_layer(fastlif, family, N)
    layer.backend = "reference"
    return layer.sequence, f"fastlif.{FAMILY_WHAT[family]}.sequence backend reference (the plain loop)"


# surrogate name: (how to build it from a surrogate module, SpikingJelly's or
# fastlif.spikingjelly's; how the settings note spells it)
SJ_SURROGATES = {"ATan": (lambda module: module.ATan(alpha=2.0), "ATan(alpha 2)"),
                 "Sigmoid": (lambda module: module.Sigmoid(), "Sigmoid(alpha 4, SJ's default)")}


def sj_surrogate(module, name):
    return SJ_SURROGATES[name][0](module)


def sj_settings(name):
    return SJ_SETTINGS.format(surrogate=SJ_SURROGATES[name][1])


def sj_family_providers(parametric, surrogate="ATan"):
    """SpikingJelly's neuron in SpikingJelly and in fastlif.spikingjelly, the same settings."""
    def fastlif_node(backend, N=None):
        import fastlif.spikingjelly as fsj
        common = dict(decay_input=False, v_threshold=1.0, v_reset=None, detach_reset=True,
                      surrogate_function=sj_surrogate(fsj.surrogate, surrogate), step_mode="m", store_v_seq=True,
                      backend=backend)
        node = fsj.ParametricLIFNode(init_tau=SJ_TAU, **common) if parametric else fsj.LIFNode(tau=SJ_TAU, **common)

        def run(x):
            node.reset()
            spk = node(x)
            return spk, node.v_seq
        return run, f"fastlif.spikingjelly.{type(node).__name__} backend {backend}; {sj_settings(surrogate)}"
    peer = FAMILY_PEER["sj_plif" if parametric else "sj_lif"]
    return {"fastlif": lambda N: fastlif_node("auto"), peer: lambda N: _sj_provider(parametric, surrogate),
            "reference": lambda N: fastlif_node("reference"),
            "fastlif_1thread": lambda N: _one_thread(fastlif_node("auto"))}


def family_providers(family):
    if family in SJ_FAMILIES:
        return sj_family_providers(*SJ_FAMILIES[family])
    return {"fastlif": lambda N: family_fastlif(family, N), "snntorch_loop": lambda N: family_snntorch(family, N),
            "reference": lambda N: family_reference(family, N),
            "fastlif_1thread": lambda N: _one_thread(family_fastlif(family, N))}


def _one_thread(provider):
    fn, what = provider
    return fn, what + " with torch.set_num_threads(1)"


def provider_reference(N=None):
    import fastlif
    from fastlif.reference import lif_sequence_reference
    beta = torch.nn.Parameter(torch.tensor(BETA))
    sg = fastlif.surrogate.atan()
    return (lambda x: lif_sequence_reference(x, beta, THRESHOLD, spike_fn=sg),
            "fastlif.reference.lif_sequence_reference with a learnable beta tensor")


def _sj_provider(parametric, surrogate_name="ATan"):
    from spikingjelly.activation_based import functional, neuron, surrogate
    common = dict(decay_input=False, v_threshold=1.0, v_reset=None, detach_reset=True,
                  surrogate_function=sj_surrogate(surrogate, surrogate_name), step_mode="m", store_v_seq=True)
    if parametric:
        node = neuron.ParametricLIFNode(init_tau=SJ_TAU, **common)
    else:
        node = neuron.LIFNode(tau=SJ_TAU, **common)

    def run(x):
        functional.reset_net(node)
        spk = node(x)
        return spk, node.v_seq
    what = ("ParametricLIFNode (learnable tau = the learnable-decay analogue)" if parametric
            else "LIFNode (fixed tau: SJ's LIFNode has no learnable decay)")
    return run, f"{what}; {sj_settings(surrogate_name)}"


def provider_fastlif_1thread(N=None):
    fn, what = provider_fastlif()
    return fn, what + " with torch.set_num_threads(1) (its OpenMP team size)"


# providers run with their own thread count (the case sets it around each of their calls)
THREADS = {"fastlif_1thread": 1}

PROVIDERS = {
    "fastlif": provider_fastlif,
    "fastlif_1thread": provider_fastlif_1thread,
    "snntorch_loop": provider_snntorch,
    "spikingjelly_lif": lambda N: _sj_provider(False),
    "spikingjelly_plif": lambda N: _sj_provider(True),
    "reference": provider_reference,
}
FAMILY_PROVIDERS = {"leaky": PROVIDERS, **{f: family_providers(f) for f in ("synaptic", "rleaky", "rleaky_dense")},
                    **{f: family_providers(f) for f in SPEC_FAMILIES}}
# families whose fused results must equal snnTorch's bit for bit (the dense RLeaky's sums run in
# another order: its spikes are reported, not asserted)
EXACT_FAMILIES = ("leaky", "synaptic", "rleaky", *SPEC_FAMILIES)
# compared bit for bit with snnTorch (same model); SpikingJelly's model differs (see SJ_SETTINGS)
SAME_MODEL = ("fastlif", "fastlif_1thread", "reference", "reference_compiled")


# --- measurements -------------------------------------------------------------------------

def forward_backward(fn, x, grads):
    """Forward, then backward with one upstream gradient per output; returns (outputs, grad x)."""
    xx = x.detach().requires_grad_()
    outs = fn(xx)
    torch.autograd.backward(list(outs), grads[:len(outs)])
    return outs, xx.grad


def forward_only(fn, x):
    with torch.no_grad():
        return fn(x)


class _Packed:
    """What the pack hook hands autograd: it lives exactly as long as autograd keeps the tensor."""
    __slots__ = ("t", "__weakref__")

    def __init__(self, t):
        self.t = t


def saved_bytes(fn, x):
    """Bytes of the unique storages autograd keeps for backward after one forward of ``fn``.

    Tensors saved by graph branches that are dropped during the forward (e.g. a detached
    reset) are not counted: only packs still referenced by the graph when the forward returns.
    """
    packs = []

    def pack(t):
        p = _Packed(t)
        packs.append(weakref.ref(p))
        return p

    xx = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda p: p.t):
        out = fn(xx)
    storages = {}
    for ref in packs:
        p = ref()
        if p is not None:
            st = p.t.untyped_storage()
            storages[st.data_ptr()] = max(storages.get(st.data_ptr(), 0), st.nbytes())
    del out
    return sum(storages.values())


def sample_plan(est_s, heavy):
    """``(repeat, min_time_s)``: how many samples of a call, or how long, fit its cost (est_s: one
    call, in seconds)."""
    if est_s < 0.05:
        return 20, 1.5
    return max(3, min(15, int((4.0 if heavy else 2.0) / est_s))), 0.0


def timed(fn, est_s, heavy):
    """time_cpu with a repeat count that fits the call's cost (sample_plan)."""
    repeat, min_time_s = sample_plan(est_s, heavy)
    return time_cpu(fn, warmup=3 if min_time_s else 1, repeat=repeat, min_time_s=min_time_s)


# Pass 2 of a case times its providers in ROUNDS rounds, each provider taking a share of its
# samples per round in an order that rotates from round to round: a phase of the VM (its speed
# drifts by up to 2x within seconds) or of a competing load then falls on every provider alike,
# where timing each provider in one block let it fall on one (the busy ratios swung from 0.5x to
# 1.8x between runs that way).
ROUNDS = 5


def copy_bandwidth():
    """Achievable memory bandwidth in GB/s: dst.copy_(src) of COPY_MB MiB moves twice that."""
    n = COPY_MB * 2**20 // 4
    src = torch.ones(n)
    dst = torch.zeros(n)
    med, q20, q80 = time_cpu(lambda: dst.copy_(src), warmup=3, repeat=15, min_time_s=1.0)
    nbytes = 2 * src.nbytes
    del src, dst
    return nbytes / (med * 1e-3) / 1e9, (med, q20, q80)


# --- torch.compile of the reference, in a subprocess with a time limit ----------------------

def compiled_worker(T, B, N):
    """Runs in a child process: cold-compile and time the compiled reference; one JSON line per
    stage on stdout, so that what finished before a timeout is still reported."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    import fastlif
    from fastlif.reference import lif_sequence_reference

    def emit(**kv):
        print(json.dumps(kv), flush=True)

    x, grads = make_inputs(T, B, N)
    beta = torch.nn.Parameter(torch.tensor(BETA))
    sg = fastlif.surrogate.atan()
    compiled = torch.compile(lif_sequence_reference)

    def fn(xx):
        return compiled(xx, beta, THRESHOLD, spike_fn=sg)

    t0 = time.perf_counter()
    (spk, mem), gx = forward_backward(fn, x, grads)
    compile_fb = time.perf_counter() - t0
    (ref_spk, ref_mem), ref_gx = forward_backward(provider_fastlif()[0], x, grads)
    est = time.perf_counter()
    forward_backward(fn, x, grads)
    est = time.perf_counter() - est
    with OthersBusy() as during:
        med = timed(lambda: forward_backward(fn, x, grads), est, heavy=True)
    emit(direction=FB, compile_s=compile_fb, timing=med, saved=saved_bytes(fn, x),
         busy_during=during.value,
         spikes_equal=bool(torch.equal(spk, ref_spk)), mem_equal=bool(torch.equal(mem, ref_mem)),
         grad_x_maxdiff=float((gx - ref_gx).abs().max()))
    t0 = time.perf_counter()
    forward_only(fn, x)  # no_grad is a different graph: compiles again
    compile_f = time.perf_counter() - t0
    est = time.perf_counter()
    forward_only(fn, x)
    est = time.perf_counter() - est
    with OthersBusy() as during:
        med = timed(lambda: forward_only(fn, x), est, heavy=True)
    emit(direction=FWD, compile_s=compile_f, timing=med, busy_during=during.value)


def run_compiled(T, B, N, timeout_s, threads):
    """Start compiled_worker in a new session; on timeout kill its process group (it and the
    inductor compile workers it started). Returns (list of stage dicts, error or '', wall s)."""
    cache = tempfile.mkdtemp(prefix="fastlif_bench_inductor_")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, BENCH_THREADS=str(threads))
    cmd = [sys.executable, "-m", "bench.bench_cpu", "--compiled-worker", f"{T},{B},{N}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            start_new_session=True)
    error = ""
    try:
        out, err = proc.communicate(timeout=timeout_s)
        if proc.returncode:
            tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["?"]
            error = f"worker exit {proc.returncode}: {tail[0][:200]}"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        error = f"timed out after {timeout_s:.0f} s (compile of the unrolled T={T} loop)"
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    stages = []
    for line in out.splitlines():
        try:
            stages.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return stages, error, time.perf_counter() - t0


# --- one benchmark case -------------------------------------------------------------------

class Run:
    def __init__(self, threads, csv_rows, wait_idle_s=0.0):
        self.threads = threads
        self.wait_idle_s = wait_idle_s  # the whole run's budget for waiting on other processes
        self.rows = csv_rows
        self.device = cpu_name()
        self.torch = torch_version()
        self.copy_gbps = None
        self.results = {}   # (case, shape, provider, direction) -> dict
        self.checks = []    # (case, shape, provider, spikes_equal): exact families, asserted
        self.inexact = []   # (case, shape, provider, spikes differing, of how many): reported
        self.versions = {"snntorch": _version("snntorch"), "spikingjelly": _version("spikingjelly"),
                         "fastlif": _version("fastlif")}

    def add(self, case, T, B, N, provider, direction, timing, family="leaky", **info):
        nsteps = T * B * N
        med = timing[0] if timing else float("nan")
        shape = f"{T}x{B}x{N}"
        res = dict(case=case, shape=shape, provider=provider, direction=direction, median_ms=med,
                   q20_ms=timing[1] if timing else float("nan"),
                   q80_ms=timing[2] if timing else float("nan"),
                   nsteps=nsteps, throughput=nsteps / (med * 1e-3) if timing else float("nan"),
                   info=info, family=family)
        nbytes = FAMILY_BYTES[family]
        if nbytes:
            res["bytes_per_ns"] = nbytes[direction]
        if timing and self.copy_gbps and nbytes:
            res["roofline"] = nbytes[direction] * nsteps / (med * 1e-3) / 1e9 / self.copy_gbps
        self.results[(case, shape, provider, direction)] = res
        return res

    def case(self, case, T, B, N, providers, directions, heavy, compile_timeout=None, family="leaky"):
        x, grads = make_inputs(T, B, N)
        busy = self.wait()
        load = loadavg()
        print(f"\n== {case} ({family}): T={T} B={B} N={N} ({T * B * N / 1e6:.2f} M neuron-steps), "
              f"cores busy before: {busy * 100:.0f}%, load average {load:.2f}", flush=True)
        # Pass 1, checks: one forward+backward of each provider (also its warm-up), snnTorch's
        # first so that the others are compared with it; and the bytes kept for backward.
        base, infos, first = None, {}, {}
        fns = {name: FAMILY_PROVIDERS[family][name](N) for name in providers}
        peer = FAMILY_PEER.get(family, "snntorch_loop")
        for name in sorted(providers, key=lambda n: n != peer):
            fn, what = fns[name]
            torch.set_num_threads(THREADS.get(name, self.threads))
            t0 = time.perf_counter()
            outs, gx = forward_backward(fn, x, grads)
            first[name] = time.perf_counter() - t0
            torch.set_num_threads(self.threads)
            spk = outs[0]
            info = dict(what=what, spike_rate=float(spk.detach().float().mean()), load1=load)
            if name == peer:
                base = (outs, gx)
            elif base is not None and name in SAME_MODEL:
                info["spikes_equal"] = bool(torch.equal(spk, base[0][0]))
                info["mem_equal"] = all(torch.equal(a, b) for a, b in zip(outs[1:], base[0][1:]))
                info["grad_x_maxdiff"] = float((gx - base[1]).abs().max())
                if family in EXACT_FAMILIES:
                    self.checks.append((case, f"{T}x{B}x{N}", name, info["spikes_equal"]))
                else:
                    info["spikes_differ"] = int((spk != base[0][0]).sum())
                    self.inexact.append((case, f"{T}x{B}x{N}", name, info["spikes_differ"], spk.numel()))
            del outs, gx, spk
            info["saved_B_per_ns"] = saved_bytes(fn, x) / (T * B * N)
            infos[name] = info
        compared, base = base is not None, None
        # Pass 2, timings, in rounds (ROUNDS): the median and spread of each provider are over its
        # samples from every round.
        plans = {}
        for name in providers:
            fn = fns[name][0]
            torch.set_num_threads(THREADS.get(name, self.threads))
            t0 = time.perf_counter()
            forward_backward(fn, x, grads)
            est = min(first[name], time.perf_counter() - t0)
            for direction in directions:
                if direction == FB:
                    call = functools.partial(forward_backward, fn, x, grads)
                    est_d = est
                else:
                    call = functools.partial(forward_only, fn, x)
                    call()
                    t0 = time.perf_counter()
                    call()
                    est_d = time.perf_counter() - t0
                repeat, min_time_s = sample_plan(est_d, heavy)
                plans[name, direction] = dict(call=call, repeat=-(-repeat // ROUNDS), min_time_s=min_time_s / ROUNDS,
                                              samples=[], before=[], during=[], solo=0)
            torch.set_num_threads(self.threads)
        for r in range(ROUNDS):
            for name in providers[r % len(providers):] + providers[:r % len(providers)]:
                torch.set_num_threads(THREADS.get(name, self.threads))
                for direction in directions:
                    plan = plans[name, direction]
                    # With --wait-idle, a block during which other processes took the cores is
                    # timed again (at most 3 times) after waiting for them to leave.
                    for attempt in range(3):
                        before = self.wait()
                        solo_before = _solo_events()
                        with OthersBusy() as during:
                            # a warm-up call each round for the fast calls (caches the provider
                            # before left cold); the slow ones only in the first round
                            warmup = 1 if r == 0 or plan["min_time_s"] else 0
                            samples = time_samples(plan["call"], warmup=warmup, repeat=plan["repeat"],
                                                   min_time_s=plan["min_time_s"])
                        # how often fastlif's regions saw a thread held off its core and sent the
                        # following calls to one thread (csrc/common.h, Team)
                        solo = _solo_events() - solo_before
                        if not during.value > 0.15 or self.wait_idle_s <= 0:
                            break
                        print(f"   ({name} {direction}: other processes took {during.value * 100:.0f}% "
                              f"of the cores during the timing"
                              f"{'; again' if attempt < 2 and self.wait_idle_s > 0 else ''})",
                              flush=True)
                    plan["samples"] += samples
                    plan["before"].append(before)
                    plan["during"].append(during.value)
                    plan["solo"] += solo
                torch.set_num_threads(self.threads)
        for name in providers:
            for direction in directions:
                plan = plans[name, direction]
                info = dict(infos[name], busy_before=max(plan["before"]),
                            busy_during=sum(plan["during"]) / len(plan["during"]), solo_events=plan["solo"])
                self.report(self.add(case, T, B, N, name, direction, summarize(plan["samples"]), family=family,
                                     **info))
        plans.clear()
        fns.clear()
        if compile_timeout:
            print(f"   reference_compiled: cold torch.compile in a subprocess "
                  f"(limit {compile_timeout:.0f} s) ...", flush=True)
            stages, error, wall = run_compiled(T, B, N, compile_timeout, self.threads)
            done = {s["direction"]: s for s in stages}
            for direction in directions:
                s = done.get(direction)
                info = dict(what="torch.compile(fastlif.reference.lif_sequence_reference) "
                                 "default mode inductor; cold cache; compile time excluded from "
                                 "the timings", load1=load, busy_before=busy)
                if s is None:
                    info["error"] = error or "no result"
                    info["compile_s"] = f">{wall:.0f}" if "timed out" in error else "na"
                    self.report(self.add(case, T, B, N, "reference_compiled", direction, None, **info))
                    continue
                info["compile_s"] = s["compile_s"]
                info["busy_during"] = s.get("busy_during", float("nan"))
                if "saved" in s:
                    info["saved_B_per_ns"] = s["saved"] / (T * B * N)
                if "spikes_equal" in s:  # against fastlif, itself asserted equal to snnTorch
                    info.update(spikes_equal=s["spikes_equal"], mem_equal=s["mem_equal"],
                                grad_x_maxdiff=s["grad_x_maxdiff"])
                    if compared:
                        self.checks.append((case, f"{T}x{B}x{N}", "reference_compiled",
                                            s["spikes_equal"]))
                self.report(self.add(case, T, B, N, "reference_compiled", direction,
                                     tuple(s["timing"]), **info))

    def wait(self):
        """Wait (out of the run's --wait-idle budget, at most 60 s at a time) for the other
        processes to leave the cores; returns the busy fraction seen last."""
        if self.wait_idle_s <= 0:
            return cpu_busy()
        t0 = time.perf_counter()
        busy = wait_idle(min(60.0, self.wait_idle_s))
        self.wait_idle_s -= time.perf_counter() - t0
        return busy

    def report(self, res):
        ratio = self.ratio(res)
        info = res["info"]
        notes = []
        if "spikes_equal" in info:
            if "spikes_differ" in info:
                notes.append(f"{info['spikes_differ']} spikes differ from snnTorch's (sums in another order)")
            else:
                peer = "SpikingJelly" if res["family"] in FAMILY_PEER else "snnTorch"
                notes.append(f"spikes=={peer}" if info["spikes_equal"] else "SPIKES DIFFER")
        if "compile_s" in info:
            notes.append(f"compile {info['compile_s']:.0f} s" if isinstance(info["compile_s"], float)
                         else f"compile {info['compile_s']} s")
        if "error" in info:
            notes.append(info["error"])
        if info.get("solo_events"):
            notes.append(f"went to one thread {info['solo_events']}x (a stalled thread seen)")
        print(f"   {res['provider']:<19} {res['direction']:<17} {_fmt_ms(res['median_ms']):>10} ms "
              f"{_fmt(res['throughput'] / 1e6, '.1f'):>8} M/s "
              f"{_fmt(ratio, '.1f', 'x'):>8} {_fmt(res.get('roofline', float('nan')) * 100, '.0f', '%'):>5} "
              f"{_fmt(info.get('saved_B_per_ns', float('nan')), '.2f'):>6} B  {'; '.join(notes)}",
              flush=True)

    def ratio(self, res):
        ref = self.results.get((res["case"], res["shape"], "fastlif", res["direction"]))
        if ref is None or not math.isfinite(res["median_ms"]):
            return float("nan")
        return res["median_ms"] / ref["median_ms"]

    def csv_rows(self):
        rows = []
        for res in self.results.values():
            info = res["info"]
            ex = {"threads": THREADS.get(res["provider"], self.threads)}
            if res.get("roofline") is not None:
                ex.update(roofline_frac=res["roofline"], bytes_per_ns=res["bytes_per_ns"])
            if self.copy_gbps:
                ex["copy_GBps"] = self.copy_gbps
            ex["family"] = res["family"]
            for key in ("saved_B_per_ns", "spikes_equal", "spikes_differ", "mem_equal", "grad_x_maxdiff", "spike_rate",
                        "compile_s", "error", "busy_before", "busy_during", "solo_events", "load1"):
                if key in info:
                    ex[key] = info[key]
            lib = {"snntorch_loop": "snntorch", "spikingjelly_lif": "spikingjelly",
                   "spikingjelly_plif": "spikingjelly"}.get(res["provider"], "fastlif")
            ex["version"] = f"{lib}-{self.versions[lib]}"
            ex["settings"] = info["what"]
            ex["malloc_mmap_threshold"] = os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default")
            ratio = self.ratio(res)
            rows.append(dict(
                bench="cpu", case=res["case"], shape=res["shape"], dtype="float32",
                provider=res["provider"], direction=res["direction"],
                median_ms=_csv(res["median_ms"]), q20_ms=_csv(res["q20_ms"]),
                q80_ms=_csv(res["q80_ms"]), ratio_vs_fastlif=_csv(ratio),
                throughput=_csv(res["throughput"]), throughput_unit="neuron-steps/s",
                device=self.device, torch=self.torch,
                extra=extra(**{k: _clean(v) for k, v in ex.items()})))
        return rows


def _clean(v):
    if isinstance(v, str):
        return v.replace(";", ",").replace("=", ":")
    return v


def _csv(v):
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.6g}"


def _fmt(v, spec, suffix=""):
    return "-" if v is None or not math.isfinite(v) else f"{v:{spec}}{suffix}"


def _fmt_ms(v):
    if not math.isfinite(v):
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


# --- targets ------------------------------------------------------------------------------

def summarize_targets(run):
    r = run.results
    lines = []

    def get(case, shape, provider, direction=FB):
        return r.get((case, shape, provider, direction))

    def line(ok, text):
        lines.append(f"  [{'met' if ok else 'NOT met'}] {text}")
        return ok

    tut, large = "50x64x128", "100x64x1024"
    fl = get("tutorial", tut, "fastlif")
    sn = get("tutorial", tut, "snntorch_loop")
    if fl and sn:
        ratio = sn["median_ms"] / fl["median_ms"]
        line(ratio >= 25, f"tutorial fwd+bwd: fastlif {ratio:.1f}x snnTorch's loop "
                          f"(target >= 25x, aim 30x{', aim reached' if ratio >= 30 else ''}); "
                          f"{fl['median_ms']:.2f} ms vs {sn['median_ms']:.1f} ms")
    for sj in ("spikingjelly_lif", "spikingjelly_plif"):
        s = get("tutorial", tut, sj)
        if fl and s:
            ratio = s["median_ms"] / fl["median_ms"]
            line(ratio >= 5, f"tutorial fwd+bwd: fastlif {ratio:.1f}x SpikingJelly {sj.split('_')[1]} "
                             f"(target >= 5x); {s['median_ms']:.1f} ms")
    fll = get("large", large, "fastlif")
    if fll and fll.get("roofline") is not None:
        frac = fll["roofline"]
        gbps = BYTES_PER_NS[FB] * fll["nsteps"] / (fll["median_ms"] * 1e-3) / 1e9
        line(frac >= 0.7, f"large fwd+bwd: fastlif at {frac * 100:.0f}% of the copy roofline "
                          f"(target >= 70%, aim 90%): {BYTES_PER_NS[FB]} B/neuron-step x "
                          f"{fll['nsteps'] / 1e6:.2f} M in {fll['median_ms']:.2f} ms = {gbps:.1f} GB/s "
                          f"vs copy {run.copy_gbps:.1f} GB/s")
    flf = get("large", large, "fastlif", FWD)
    if flf and flf.get("roofline") is not None:
        lines.append(f"  [info] large forward only: {flf['roofline'] * 100:.0f}% of the roofline "
                     f"({BYTES_PER_NS[FWD]} B/neuron-step, {flf['median_ms']:.2f} ms)")
    # Leaky's target (one fp32 state per neuron-step); Synaptic keeps two states, the dense RLeaky
    # its spikes as events too, each shown in its own table
    saved = [res["info"]["saved_B_per_ns"] for res in r.values()
             if res["provider"] == "fastlif" and res.get("family", "leaky") == "leaky"
             and "saved_B_per_ns" in res["info"]]
    if saved:
        line(max(saved) <= 4.0 + 1e-3, f"saved for backward: fused Leaky keeps at most {max(saved):.4f} "
                                       f"B/neuron-step (target <= 4 in fp32)")
    fl_checks = [c for c in run.checks if c[2] in ("fastlif", "fastlif_1thread", "reference")]
    bad = [c for c in fl_checks if not c[3]]
    if fl_checks:
        line(not bad, f"fp32 spikes bit-identical to the peer (snnTorch; SpikingJelly for sj_*): fastlif and reference in "
                      f"{len(fl_checks) - len(bad)}/{len(fl_checks)} compared runs"
                      + (f"; differ: {bad}" if bad else ""))
    for family, target in (("synaptic", 15), ("rleaky", 15), ("rleaky_dense", 5),
                           *((f, 15) for f in SPEC_FAMILIES)):
        peer = FAMILY_PEER.get(family, "snntorch_loop")
        ff, fs = get(f"{family}_tutorial", tut, "fastlif"), get(f"{family}_tutorial", tut, peer)
        if ff and fs:
            ratio = fs["median_ms"] / ff["median_ms"]
            whose = "SpikingJelly's own module" if family.startswith("sj_") else "snnTorch's loop"
            line(ratio >= target, f"{family} tutorial fwd+bwd: fastlif {ratio:.1f}x {whose} "
                                  f"(target >= {target}x); {ff['median_ms']:.2f} ms vs {fs['median_ms']:.1f} ms")
        if FAMILY_BYTES[family] is None:
            continue
        for case, shape in (("tutorial", tut), ("large", large)):
            lk, fam = get(case, shape, "fastlif"), get(f"{family}_{case}", shape, "fastlif")
            if lk and fam:
                per_byte = (fam["median_ms"] / fam["bytes_per_ns"]) / (lk["median_ms"] / lk["bytes_per_ns"])
                ok = per_byte <= 1.3
                text = (f"{family} {case} fwd+bwd: {per_byte:.2f}x fused Leaky's time per byte moved "
                        f"(target <= 1.3x; {fam['bytes_per_ns']} vs {lk['bytes_per_ns']} B/neuron-step, "
                        f"{fam['median_ms']:.2f} vs {lk['median_ms']:.2f} ms)")
                if case == "tutorial":
                    line(ok, text)
                else:
                    lines.append(f"  [info] {text}")
    for case, shape, name, n_diff, n in run.inexact:
        lines.append(f"  [info] {case} {shape} {name}: {n_diff} of {n} spikes differ from snnTorch's "
                     f"(the event-driven recurrent sums run in another order than its GEMM)")
    comp = [c for c in run.checks if c[2] == "reference_compiled"]
    if comp:
        lines.append(f"  [info] torch.compile'd reference spikes equal snnTorch's in "
                     f"{sum(c[3] for c in comp)}/{len(comp)} runs")
    return lines


def busy_main(run, families, args):
    """--busy: each case beside n = 1, then 2 processes that spin on a core each. What is
    compared: fastlif on the default threads against fastlif on one thread under the same load
    (target: within 1.5x), and snnTorch's loop on Leaky's tutorial size."""
    run.wait_idle_s = 0  # the load is the point
    sizes = {"tutorial": (10, 16, 128), "large": (10, 16, 1024)} if args.quick else \
        {"tutorial": (50, 64, 128), "large": (100, 64, 1024)}
    for n in (1, 2):
        print(f"\n##### beside {n} spinning process{'es' if n > 1 else ''} "
              f"({n} of {os.cpu_count()} cores busy)", flush=True)
        with Spinners(n):
            for family in families:
                for case, (T, B, N) in sizes.items():
                    if case == "large" and family != "leaky":
                        continue
                    providers = ["fastlif", "fastlif_1thread"]
                    if case == "tutorial" and family == "leaky":
                        providers.append("snntorch_loop")
                    name = case if family == "leaky" else f"{family}_{case}"
                    run.case(f"busy{n}_{name}", T, B, N, providers, (FB,), heavy=False, family=family)
    print("\nBusy machine (target: fastlif within 1.5x of its 1-thread time under the same load):")
    worst = 0.0
    for (case, shape, provider, direction), res in run.results.items():
        if provider != "fastlif":
            continue
        one = run.results.get((case, shape, "fastlif_1thread", direction))
        sn = run.results.get((case, shape, "snntorch_loop", direction))
        ratio = res["median_ms"] / one["median_ms"]
        worst = max(worst, ratio)
        print(f"  [{'met' if ratio <= 1.5 else 'NOT met'}] {case} {shape}: {res['median_ms']:.3f} ms on "
              f"{run.threads} threads, {one['median_ms']:.3f} ms on 1: {ratio:.2f}x"
              + (f"; snnTorch's loop {sn['median_ms']:.1f} ms = {sn['median_ms'] / res['median_ms']:.1f}x" if sn else ""))
    csv_name = args.csv or (None if args.quick else "cpu_busy.csv")
    if csv_name:
        rows = run.csv_rows()
        print(f"{len(rows)} rows appended to {append_rows(csv_name, rows)}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch.set_num_threads (default: all cores)")
    p.add_argument("--compile-timeout", type=float, default=240.0,
                   help="seconds allowed for each torch.compile case (compile + timing), default 240")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    p.add_argument("--no-sweep", action="store_true", help="only the tutorial and large sizes")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="on a shared machine: spend up to S seconds in all waiting for other "
                        "processes to leave the cores (busy < 15%%) before each timing, and redo "
                        "a timing they disturbed (at most twice); default 0 (never wait)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: small sizes, no compile, nothing written unless --csv is given")
    p.add_argument("--families", default="leaky,synaptic,rleaky,rleaky_dense," + ",".join(SPEC_FAMILIES),
                   help="comma-separated neuron families to run (default: all; the spec'd ones added by "
                        "issue 20 at the tutorial size only)")
    p.add_argument("--csv", default=None, help="CSV name under bench/results/ (default cpu.csv)")
    p.add_argument("--case-suffix", default="", help="appended to every case name (make bench-tuned: "
                   "_tuned_malloc, so that its rows sit beside the default allocator's)")
    p.add_argument("--busy", action="store_true",
                   help="only the busy-machine cases: every family's tutorial size (and Leaky's large) "
                        "on the default threads and on 1 thread, beside 1 and then 2 spinning processes "
                        "(cases busy1_*, busy2_*); rows go to cpu_busy.csv")
    p.add_argument("--compiled-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.compiled_worker:
        compiled_worker(*map(int, args.compiled_worker.split(",")))
        return 0

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    run = Run(threads, [], args.wait_idle)
    t_start = time.perf_counter()
    print(f"fastlif CPU benchmark: {run.device}, {threads} threads, torch {run.torch}, "
          f"snntorch {run.versions['snntorch']}, spikingjelly {run.versions['spikingjelly']}, "
          f"load average {loadavg():.2f}")
    busy = cpu_busy()
    if busy > 0.15:
        print(f"   warning: other processes keep {busy * 100:.0f}% of the cores busy; timings will be "
              f"noisy (--wait-idle S waits for a quiet moment before each case)")
    print("columns: provider, direction, median, neuron-steps/s, time / fastlif's, "
          "% of copy roofline (against the first copy; the summary and CSV use the better of "
          "two), bytes kept for backward per neuron-step, notes")

    run.wait()
    bw1, copy_t1 = copy_bandwidth()
    print(f"\ncopy bandwidth ({COPY_MB} MiB dst.copy_(src), moves 2x): {bw1:.1f} GB/s "
          f"(median {copy_t1[0]:.2f} ms)")
    run.copy_gbps = bw1

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(families) - set(FAMILY_PROVIDERS)
    if unknown:
        p.error(f"unknown families {sorted(unknown)}; choose from {sorted(FAMILY_PROVIDERS)}")
    if args.busy:
        return busy_main(run, families, args)
    main_providers = ["fastlif", "fastlif_1thread", "snntorch_loop", "spikingjelly_lif", "spikingjelly_plif", "reference"]
    compile_timeout = None if (args.no_compile or args.quick) else args.compile_timeout
    family_providers_ = ["fastlif", "snntorch_loop", "reference"]
    sizes = {"tutorial": (10, 16, 128), "large": (10, 16, 1024)} if args.quick else \
        {"tutorial": (50, 64, 128), "large": (100, 64, 1024)}
    for family in families:
        for case, (T, B, N) in sizes.items():
            if family == "leaky":
                run.case(case + args.case_suffix, T, B, N, main_providers, (FWD, FB), heavy=not args.quick,
                         compile_timeout=compile_timeout)
            elif family in SPEC_FAMILIES and case != "tutorial":
                continue
            else:
                peer = FAMILY_PEER.get(family, "snntorch_loop")
                run.case(f"{family}_{case}{args.case_suffix}", T, B, N, [p if p != "snntorch_loop" else peer
                                                                         for p in family_providers_], (FWD, FB),
                         heavy=not args.quick, family=family)
    if not args.quick and "leaky" in families:
        if not args.no_sweep:
            sweep = ["fastlif", "snntorch_loop", "spikingjelly_lif"]
            for T in (25, 50, 100, 200):
                run.case("sweep_T", T, 64, 128, sweep, (FB,), heavy=False)
            for N in (128, 512, 2048, 8192):
                run.case("sweep_N", 50, 64, N, sweep, (FB,), heavy=False)

    run.wait()
    bw2, copy_t2 = copy_bandwidth()
    print(f"\ncopy bandwidth again at the end: {bw2:.1f} GB/s")
    if bw2 > bw1:  # use the better of the two (the conservative roofline fraction)
        run.copy_gbps = bw2
        for res in run.results.values():
            if "roofline" in res:
                res["roofline"] = (res["bytes_per_ns"] * res["nsteps"]
                                   / (res["median_ms"] * 1e-3) / 1e9 / bw2)
    best = max((bw1, copy_t1), (bw2, copy_t2))

    print(f"\nTargets (this machine, {threads} threads, copy roofline {run.copy_gbps:.1f} GB/s):")
    for line in summarize_targets(run):
        print(line)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")

    csv_name = args.csv or (None if args.quick else "cpu.csv")
    if csv_name:
        rows = run.csv_rows()
        n = COPY_MB * 2**20
        rows.append(dict(bench="cpu", case="copy_bandwidth", shape=f"{n // 4}", dtype="float32",
                         provider="torch_copy", direction="copy", median_ms=_csv(best[1][0]),
                         q20_ms=_csv(best[1][1]), q80_ms=_csv(best[1][2]),
                         throughput=_csv(best[0]), throughput_unit="GB/s", device=run.device,
                         torch=run.torch,
                         extra=extra(threads=threads, start_GBps=bw1, end_GBps=bw2,
                                     settings=f"dst.copy_(src) of {COPY_MB} MiB fp32, "
                                              f"counted as 2x{COPY_MB} MiB moved")))
        path = append_rows(csv_name, rows)
        print(f"{len(rows)} rows appended to {path}")
    differ = [c for c in run.checks
              if c[2] in ("fastlif", "fastlif_1thread", "reference") and not c[3]]
    assert not differ, f"fp32 spikes differ from snnTorch's in {differ}"
    return 0


if __name__ == "__main__":
    sys.exit(main())

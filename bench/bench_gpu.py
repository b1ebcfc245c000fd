"""GPU benchmarks of the Triton backend: ``python -m bench.bench_gpu`` (rows to bench/results/gpu.csv).

Sections (all in one run, so that the peers share the machine state):
  copy    the bandwidth of a device-to-device copy (the roofline the LIF kernels are judged by)
  lif     fused LIF over [T, B, N]: fastlif (triton) against snnTorch's Leaky stepped in a
          Python loop, the reference loop (fastlif.reference), torch.compile of that loop and
          SpikingJelly 2.0's Triton LIF; forward, backward and both; peak memory; for fastlif
          the fraction of the copy bandwidth its bytes reach. Sizes: T=100, B=64, N=65536
          in fp32 and bf16, and SpikingJelly's setting T=32, B=64, N=65536 in fp16.
  lowmem  low_memory=True against the fp32 path at T=100, B=64, N=65536: time, memory kept
          for backward, and the gradient error it causes (normwise max|a-b|/max|b|).
  tinysnn the tutorial's TinySNN training step (T=50, B=64, 784-128-10, Adam, count CE):
          snnTorch's per-step loop against fastlif's fused layers (eager and CUDA graph).

SpikingJelly: ``LIFNode(tau=2.0, decay_input=False, v_reset=None, detach_reset=True,
surrogate_function=ATan(), step_mode="m")`` with SJ_LIF_CUDA_IMPLEMENTATION=triton (its Triton
implementation, set before spikingjelly is imported): decay 1 - 1/tau = 0.5, threshold 1,
soft (subtract) reset, the closest to snnTorch's subtract reset; fastlif runs beta=0.5,
threshold 1, reset "subtract", atan, with reset_delay True (snnTorch's default) and False.
Same work per neuron-step, not the same numbers: SpikingJelly subtracts the threshold before
the next step's decay, snnTorch after it.

``--smoke`` runs every code path at tiny sizes on the CPU (Triton interpreter, CPU timer),
writing nothing: a check of this script on a machine without a GPU.
"""
import argparse
import os
import sys
import time
import traceback

SMOKE = "--smoke" in sys.argv
if SMOKE:  # must precede the first import of triton / fastlif.kernels
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("SJ_LIF_CUDA_IMPLEMENTATION", "triton")  # read when spikingjelly loads

import torch  # noqa: E402

from bench.common import append_rows, extra, time_cpu, torch_version  # noqa: E402

CSV = "gpu.csv"
DEVICE = "cpu" if SMOKE else "cuda"
ROWS = []        # not yet written to the CSV (flushed after every section)
TABLE = []       # everything measured, for the final table
FASTLIF_BASE = {}  # (case, dtype) -> fastlif's (fwd, bwd, both) medians, for the ratios


# ------------------------------------------------------------------------------------------
# timing and bookkeeping


def bench(fn, rep_ms=200, grad_to_none=None):
    """(median, q20, q80) in ms: triton.testing.do_bench on the GPU, a CPU timer in --smoke."""
    if SMOKE:
        return time_cpu(fn, warmup=1, repeat=2)
    import triton.testing
    med, q20, q80 = triton.testing.do_bench(fn, warmup=25, rep=rep_ms, grad_to_none=grad_to_none,
                                            quantiles=[0.5, 0.2, 0.8])
    return med, q20, q80


def peak_memory_mb(fn):
    """Peak memory allocated while ``fn`` runs, above what was allocated before, in MiB."""
    if SMOKE:
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def device_name():
    return "cpu (smoke)" if SMOKE else torch.cuda.get_device_name()


def record(case, shape, dtype, provider, direction, timing, *, ratio=None, throughput=None,
           unit="", **kv):
    med, q20, q80 = timing
    row = dict(bench="gpu", case=case, shape=shape, dtype=str(dtype).replace("torch.", ""),
               provider=provider, direction=direction, median_ms=f"{med:.4f}",
               q20_ms=f"{q20:.4f}", q80_ms=f"{q80:.4f}",
               ratio_vs_fastlif="" if ratio is None else f"{ratio:.3f}",
               throughput="" if throughput is None else f"{throughput:.4g}", throughput_unit=unit,
               device=device_name(), torch=torch_version(), extra=extra(**kv))
    ROWS.append(row)
    TABLE.append(row)


def failed(case, shape, dtype, provider, direction, err):
    msg = f"{type(err).__name__}: {err}".replace(";", ",").replace("\n", " ")[:200]
    print(f"  [{provider} {direction}] failed: {msg}", flush=True)
    ROWS.append(dict(bench="gpu", case=case, shape=shape, dtype=str(dtype).replace("torch.", ""),
                     provider=provider, direction=direction, device=device_name(),
                     torch=torch_version(), extra=extra(error=msg)))


def best_config(kernel):
    """The autotuner's pick for the last launch, as text (empty when not autotuned)."""
    k = kernel
    while k is not None and not hasattr(k, "best_config"):
        k = getattr(k, "fn", None)
    cfg = getattr(k, "best_config", None)
    if cfg is None:
        return ""
    kw = dict(cfg.kwargs)
    return f"BLOCK{kw.get('BLOCK')}/w{cfg.num_warps}/pf{int(bool(kw.get('PREFETCH')))}"


# ------------------------------------------------------------------------------------------
# copy bandwidth


def copy_bandwidth():
    n = (1 << 28) if not SMOKE else (1 << 16)  # 1 GiB of fp32 each way
    src = torch.randn(n, device=DEVICE)
    dst = torch.empty_like(src)
    timing = bench(lambda: dst.copy_(src))
    gbs = 2 * src.numel() * src.element_size() / (timing[0] * 1e-3) / 1e9
    record("copy", f"{n}", torch.float32, "torch-copy", "copy", timing, throughput=gbs, unit="GB/s")
    print(f"device-to-device copy: {gbs:.0f} GB/s", flush=True)
    del src, dst
    return gbs


# ------------------------------------------------------------------------------------------
# LIF providers: each returns a function x -> (spk, mem) (mem may be None) and its params


def provider_fastlif(beta, *, reset_delay=True, low_memory=False):
    import fastlif
    b = torch.full((), beta, device=DEVICE, requires_grad=True)
    thr = torch.ones((), device=DEVICE)
    graded = torch.ones((), device=DEVICE)

    def f(x):
        return fastlif.lif_sequence(x, b, thr, graded_spikes_factor=graded, reset_delay=reset_delay,
                                    surrogate=fastlif.surrogate.atan(), backend="triton",
                                    low_memory=low_memory)
    return f, [b]


def provider_snntorch(beta):
    import snntorch as snn
    lif = snn.Leaky(beta=beta, learn_beta=True).to(DEVICE)

    from fastlif.testing import run_per_step

    def f(x):
        return run_per_step(lif, x)
    return f, list(lif.parameters())


def provider_reference(beta, compiled=False):
    from fastlif import surrogate
    from fastlif.reference import lif_sequence_reference
    b = torch.full((), beta, device=DEVICE, requires_grad=True)
    sg = surrogate.atan()

    def f(x):
        return lif_sequence_reference(x, b, 1.0, spike_fn=sg)
    if compiled:
        f = torch.compile(f)
    return f, [b]


def provider_spikingjelly(tau):
    from spikingjelly.activation_based import neuron, surrogate
    node = neuron.LIFNode(tau=tau, decay_input=False, v_reset=None, detach_reset=True,
                          surrogate_function=surrogate.ATan(), step_mode="m").to(DEVICE)

    def f(x):
        node.reset()
        return node(x), None
    return f, []


def run_lif_case(case, T, B, N, dtype, providers, copy_gbs, *, rep_ms=200):
    """Time every provider on x [T, B, N]: forward (with autograd recording, as in training),
    backward (random upstream gradients on spikes and membrane) and both."""
    shape = f"{T}x{B}x{N}"
    print(f"\n== {case}: T={T} B={B} N={N} {str(dtype).replace('torch.', '')}", flush=True)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = (torch.randn(T, B, N, generator=gen, device=DEVICE) * 0.8 + 0.3).to(dtype)
    x.requires_grad_()
    g_spk = torch.randn(T, B, N, generator=gen, device=DEVICE).to(dtype)
    g_mem = (torch.randn(T, B, N, generator=gen, device=DEVICE) * 0.1).to(dtype)
    times = {}
    for name, make in providers:
        try:
            fn, params = make()
            leaves = [x, *params]

            def fwd():
                return fn(x)

            def backward(outs):
                spk, mem = outs
                if mem is None:
                    torch.autograd.backward([spk], [g_spk], retain_graph=True)
                else:
                    torch.autograd.backward([spk, mem], [g_spk, g_mem], retain_graph=True)

            def both():
                spk, mem = fn(x)
                if mem is None:
                    torch.autograd.backward([spk], [g_spk])
                else:
                    torch.autograd.backward([spk, mem], [g_spk, g_mem])

            start = time.perf_counter()
            both()  # first call: compiles / autotunes
            first_s = time.perf_counter() - start
            for p in leaves:
                p.grad = None
            t_fwd = bench(fwd, rep_ms)
            outs = fwd()
            t_bwd = bench(lambda: backward(outs), rep_ms, grad_to_none=leaves)
            del outs
            t_both = bench(both, rep_ms, grad_to_none=leaves)
            for p in leaves:
                p.grad = None
            mem_mb = peak_memory_mb(both)
            for p in leaves:
                p.grad = None
            times[name] = (t_fwd, t_bwd, t_both, mem_mb, first_s)
        except Exception as err:  # noqa: BLE001 - one provider failing must not stop the run
            traceback.print_exc()
            failed(case, shape, dtype, name, "both", err)
    if "fastlif" in times:
        FASTLIF_BASE[(case, dtype)] = tuple(t[0] for t in times["fastlif"][:3])
    base = FASTLIF_BASE.get((case, dtype))
    for name, (t_fwd, t_bwd, t_both, mem_mb, first_s) in times.items():
        for direction, timing, k in (("fwd", t_fwd, 0), ("bwd", t_bwd, 1), ("both", t_both, 2)):
            ratio = timing[0] / base[k] if base else None
            kv = dict(peak_mem_mb=round(mem_mb, 1), first_call_s=round(first_s, 2))
            throughput = T * B * N / (timing[0] * 1e-3) / 1e9
            unit = "Gneuron-steps/s"
            if name.startswith("fastlif"):
                nbytes = traffic_bytes(T * B * N, dtype, direction, "immediate" in name,
                                       "lowmem" in name)
                gbs = nbytes / (timing[0] * 1e-3) / 1e9
                kv.update(gbytes=round(nbytes / 1e9, 3), gbs=round(gbs, 1),
                          copy_frac=round(gbs / copy_gbs, 3) if copy_gbs else "")
                if direction != "bwd":
                    kv.update(cfg_fwd=best_config(_kernels()[0]))
                if direction != "fwd":
                    kv.update(cfg_bwd=best_config(_kernels()[1]))
            record(case, shape, dtype, name, direction, timing, ratio=ratio, throughput=throughput,
                   unit=unit, **kv)
    del x, g_spk, g_mem
    if not SMOKE:
        torch.cuda.empty_cache()


def _kernels():
    from fastlif.kernels import lif
    return lif.lif_fwd_kernel, lif.lif_bwd_kernel


def traffic_bytes(n, dtype, direction, immediate=False, low_memory=False):
    """Bytes the fastlif kernels must move for n neuron-steps (the roofline numerator)."""
    e = torch.empty((), dtype=dtype).element_size()
    if low_memory:
        state = 2
    elif immediate or dtype in (torch.float16, torch.bfloat16):
        state = 4  # fp32 membrane / pre-reset membrane
    else:
        state = 0  # backward reads the mem output itself
    flags = 1 if immediate else 0
    saved = state if state else e  # what backward reads per step besides the gradients
    fwd = e + 2 * e + state + flags          # x in; spk, mem (and state, flags) out
    bwd = 2 * e + saved + flags + e          # grad_spk, grad_mem, saved (flags) in; grad_x out
    per = {"fwd": fwd, "bwd": bwd, "both": fwd + bwd}[direction]
    return n * per


# ------------------------------------------------------------------------------------------
# low_memory: time, memory kept for backward, gradient error


def low_memory_section(T, B, N):
    import fastlif
    case, shape = "lowmem", f"{T}x{B}x{N}"
    print(f"\n== low_memory: T={T} B={B} N={N} fp32", flush=True)
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    x = torch.randn(T, B, N, generator=gen, device=DEVICE) * 0.8 + 0.3
    g_spk = torch.randn(T, B, N, generator=gen, device=DEVICE)
    g_mem = torch.randn(T, B, N, generator=gen, device=DEVICE) * 0.1
    for delay in (True, False):
        grads, kept = {}, {}
        for low in (False, True):
            xl = x.clone().requires_grad_()
            beta = torch.full((N,), 0.9, device=DEVICE, requires_grad=True)
            thr = torch.ones(N, device=DEVICE, requires_grad=True)
            graded = torch.ones((), device=DEVICE, requires_grad=True)
            if not SMOKE:
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
            spk, mem = fastlif.lif_sequence(xl, beta, thr, graded_spikes_factor=graded,
                                            reset_delay=delay, backend="triton", low_memory=low)
            loss = (spk * g_spk).sum() + (mem * g_mem).sum()
            del spk, mem  # what stays allocated now is what backward keeps
            if not SMOKE:
                torch.cuda.synchronize()
                kept[low] = (torch.cuda.memory_allocated() - before) / (T * B * N)
            loss.backward()
            grads[low] = {"x": xl.grad, "beta": beta.grad, "threshold": thr.grad,
                          "graded": graded.grad}
            del loss
        errs = {f"err_{k}": normwise(grads[True][k], grads[False][k]) for k in grads[False]}
        name = "fastlif-lowmem" + ("" if delay else "-immediate")
        print(f"  reset_delay={delay}: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items())
              + (f"; bytes kept per neuron-step {kept[False]:.2f} -> {kept[True]:.2f}"
                 if kept else ""), flush=True)
        provider_make = (lambda d=delay: provider_fastlif(0.9, reset_delay=d, low_memory=True))
        try:
            fn, params = provider_make()
            xl = x.clone().requires_grad_()

            def both():
                spk, mem = fn(xl)
                torch.autograd.backward([spk, mem], [g_spk, g_mem])
            both()
            timing = bench(both, grad_to_none=[xl, *params])
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            failed(case, shape, torch.float32, name, "both", err)
            continue
        kv = {k: f"{v:.3e}" for k, v in errs.items()}
        if kept:
            kv.update(kept_bytes_per_step=round(kept[True], 3),
                      kept_bytes_per_step_fp32_path=round(kept[False], 3))
        record(case, shape, torch.float32, name, "both", timing, **kv)
    del x, g_spk, g_mem


def normwise(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


# ------------------------------------------------------------------------------------------
# the tutorial's TinySNN training step


def tiny_snn(kind):
    """The tutorial's TinySNN (fastlif.tutorial.model): snnTorch's step loop, or fastlif fused."""
    import functools

    from fastlif.tutorial.model import TinySNN
    if kind == "snntorch":
        import snntorch as snn
        from snntorch import surrogate as ssg
        return functools.partial(TinySNN, lif_cls=snn.Leaky, spike_grad=ssg.fast_sigmoid(), fused=False)
    return functools.partial(TinySNN, fused=True)


def count_ce(spk_out, targets):
    """snnTorch's ce_count_loss(): cross entropy of the spike counts."""
    return torch.nn.functional.cross_entropy(spk_out.sum(0), targets)


def tinysnn_section(T, B):
    case, shape = "tinysnn-train-step", f"{T}x{B}x784-128-10"
    print(f"\n== TinySNN training step: T={T} B={B} 784-128-10, Adam", flush=True)
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    images = torch.rand(B, 784, generator=gen, device=DEVICE) ** 3
    spikes = torch.rand(T, B, 784, generator=gen, device=DEVICE) < images * 0.1
    labels = torch.randint(0, 10, (B,), generator=gen, device=DEVICE)
    torch.manual_seed(0)
    state = tiny_snn("snntorch")().state_dict()
    times = {}
    for name in ("snntorch", "fastlif", "fastlif-cudagraph"):
        try:
            model = tiny_snn(name)().to(DEVICE)
            model.load_state_dict(state)
            graphed = name.endswith("cudagraph")
            if graphed and SMOKE:
                continue
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5,
                                   capturable=graphed)

            def step():
                out = model(spikes)
                loss = count_ce(out, labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss

            start = time.perf_counter()
            if graphed:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                opt.zero_grad(set_to_none=True)
                with torch.cuda.graph(graph):
                    out = model(spikes)
                    loss = count_ce(out, labels)
                    loss.backward()
                    opt.step()
                run = graph.replay
            else:
                step()
                run = step
            first_s = time.perf_counter() - start
            timing = bench(run, rep_ms=300)
            times[name] = (timing, peak_memory_mb(run), first_s)
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            failed(case, shape, torch.float32, name, "train-step", err)
    base = times.get("fastlif")
    for name, (timing, mem_mb, first_s) in times.items():
        ratio = timing[0] / base[0][0] if base else None
        speedup = times["snntorch"][0][0] / timing[0] if "snntorch" in times else None
        record(case, shape, torch.float32, name, "train-step", timing, ratio=ratio,
               throughput=1e3 / timing[0], unit="steps/s", peak_mem_mb=round(mem_mb, 1),
               first_call_s=round(first_s, 2),
               speedup_vs_snntorch=round(speedup, 2) if speedup else "")


# ------------------------------------------------------------------------------------------


def print_table():
    print("\n" + "=" * 110)
    print(f"{'case':<22}{'dtype':<9}{'provider':<28}{'dir':<11}{'median ms':>11}"
          f"{'x fastlif':>11}{'peak MiB':>10}{'copy frac':>11}")
    for r in TABLE:
        kv = dict(p.split("=", 1) for p in r["extra"].split(";") if "=" in p)
        print(f"{r['case']:<22}{r['dtype']:<9}{r['provider']:<28}{r['direction']:<11}"
              f"{float(r['median_ms']):>11.3f}{r['ratio_vs_fastlif'] or '':>11}"
              f"{kv.get('peak_mem_mb', ''):>10}{kv.get('copy_frac', ''):>11}")
    print("x fastlif: provider time / fastlif time (> 1: fastlif is faster). copy frac: "
          "fastlif's bytes / time as a fraction of the device-to-device copy bandwidth.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, nothing written")
    ap.add_argument("--sections", default="copy,lif,sj,tinysnn,lowmem,compile",
                    help="comma-separated subset of copy,lif,sj,tinysnn,lowmem,compile "
                         "(compile: torch.compile of the reference loop, minutes of compiling)")
    args = ap.parse_args(argv)
    if not SMOKE and not torch.cuda.is_available():
        sys.exit("bench_gpu needs a CUDA GPU (or --smoke for a CPU check of the script)")
    sections = set(args.sections.split(","))
    import triton
    print(f"fastlif bench_gpu on {device_name()}; torch {torch.__version__}, triton "
          f"{triton.__version__}, FASTLIF_AUTOTUNE={os.environ.get('FASTLIF_AUTOTUNE', '1')}",
          flush=True)
    torch.manual_seed(0)
    big = (100, 64, 65536) if not SMOKE else (5, 2, 64)
    sj = (32, 64, 65536) if not SMOKE else (4, 2, 48)
    copy_gbs = copy_bandwidth() if "copy" in sections else None
    flush()

    def section(name, fn):
        if name not in sections:
            return
        start = time.perf_counter()
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - keep the other sections
            traceback.print_exc()
            print(f"section {name} failed: {err}", flush=True)
        print(f"[section {name}: {time.perf_counter() - start:.0f} s]", flush=True)
        flush()

    def lif():
        for dtype in (torch.float32, torch.bfloat16):
            providers = [("fastlif", lambda: provider_fastlif(0.9)),
                         ("snntorch-loop", lambda: provider_snntorch(0.9)),
                         ("reference-loop", lambda: provider_reference(0.9)),
                         ("spikingjelly-triton", lambda: provider_spikingjelly(10.0))]
            run_lif_case("lif", *big, dtype, providers, copy_gbs)

    def sj_setting():
        providers = [("fastlif", lambda: provider_fastlif(0.5)),
                     ("fastlif-immediate", lambda: provider_fastlif(0.5, reset_delay=False)),
                     ("spikingjelly-triton", lambda: provider_spikingjelly(2.0)),
                     ("snntorch-loop", lambda: provider_snntorch(0.5))]
        run_lif_case("sj-setting", *sj, torch.float16, providers, copy_gbs)

    def compiled():  # last: inductor compiles the 100-step loop (minutes)
        if SMOKE:
            return
        run_lif_case("lif", *big, torch.float32,
                     [("torch.compile(reference)", lambda: provider_reference(0.9, compiled=True))],
                     copy_gbs)

    try:
        section("lif", lif)
        section("sj", sj_setting)
        section("tinysnn", lambda: tinysnn_section(*((50, 64) if not SMOKE else (4, 8))))
        section("lowmem", lambda: low_memory_section(*big))
        section("compile", compiled)
    except KeyboardInterrupt:  # cut at the time budget (gpu_check.sh sends SIGINT): keep the rows
        print("\ninterrupted: keeping the rows measured so far", flush=True)
        flush()
    print_table()
    if SMOKE:
        print("\n--smoke: nothing written")
    else:
        print(f"\nrows appended to {RESULTS_PATH}")


RESULTS_PATH = None


def flush():
    """Append the rows measured so far to the CSV (a run cut short keeps what it measured)."""
    global RESULTS_PATH
    if ROWS and not SMOKE:
        RESULTS_PATH = append_rows(CSV, ROWS)
    ROWS.clear()


if __name__ == "__main__":
    main()

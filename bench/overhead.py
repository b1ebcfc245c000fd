"""Where a tutorial-size fused call's time goes besides its kernels (CPU, fp32, T=50, B=64, N=128):

* ``python``: the whole forward+backward of fastlif's ``Leaky.sequence`` (learnable beta) and
  ``fastlif.spikingjelly.LIFNode`` with the C++ kernels replaced by no-ops, so that what is left
  is Python, autograd and the output allocations, against an empty ``autograd.Function`` with
  the same outputs (the floor torch sets); all with warm caches (nothing else runs);
* ``evicted``: the same kernel-less LIFNode forward (Python only) right after this process
  streamed ``MB`` megabytes through the core (a ``copy_``, as a kernel's reads and writes do),
  against right after nothing: a working set evicted from the caches makes the same Python
  several times slower, which is how a call whose kernels take 0.4 ms costs 1 ms and more;
* ``kernels``: the real call, and its C++ kernels alone (timed inside it), beside a minimal
  ``autograd.Function`` that launches Leaky's same kernels with nothing else (the floor of a
  Python autograd Function around them), and beside the call as eager code makes it, through
  Leaky's C++ autograd Function (csrc/lif_autograd.cpp: no Python between the kernels; its
  kernels are not timed apart). The other rows run ``Leaky.sequence`` through LifFunction;
* ``timeline``: the real call cut at its kernels' edges: the Python before the forward kernel,
  the kernel, the Python after it (the forward's return, then ``torch.autograd.backward`` up to
  the backward kernel: torch's engine and fastlif's backward), the backward kernel, and what
  follows it (fastlif's return, torch's gradient accumulation and graph release). Every part
  after a kernel runs with the caches that kernel left.

    python -m bench.overhead            # rows in bench/results/overhead.csv
"""
import argparse
import statistics
import time

import torch

from bench.common import append_rows, cpu_name, extra, torch_version

T, B, N = 50, 64, 128
KERNELS = ("lif_fwd", "lif_bwd", "family_fwd", "family_bwd")


class _Stubbed:
    """The extension with the fused kernels replaced: by no-ops, or by timers around the real
    ones (``times``: seconds per kernel call)."""

    def __init__(self, real, timed):
        self._real, self.times = real, {k: [] for k in KERNELS}
        for name in KERNELS:  # set once: a call costs what the real attribute lookup does
            setattr(self, name, self._timer(name) if timed else (lambda *a, **k: None))

    def _timer(self, name):
        fn, times = getattr(self._real, name), self.times[name]

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            t1 = time.perf_counter()
            times.append(t1 - t0)
            self.last_span = (t0, t1)
            return out
        return timed

    def __getattr__(self, name):  # everything but the kernels: the extension's own
        return getattr(self._real, name)


def _install(stub):
    from fastlif import family
    from fastlif.ops import lif

    def module():
        return stub
    family._C = lif._C = module


def _providers():
    import fastlif
    import fastlif.spikingjelly as fsj

    leaky = fastlif.Leaky(beta=0.95, learn_beta=True)
    node = fsj.LIFNode(tau=2.0, decay_input=False, v_reset=None, detach_reset=True,
                       surrogate_function=fsj.surrogate.ATan(alpha=2.0), step_mode="m", store_v_seq=True)

    def lif_node(x):
        node.reset()
        return node(x), node.v_seq

    class Empty(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, beta):
            a, b = torch.empty_like(x), torch.empty_like(x)
            ctx.save_for_backward(b, beta)
            return a, b

        @staticmethod
        def backward(ctx, ga, gb):
            return torch.empty_like(ga), None

    beta = torch.nn.Parameter(torch.tensor(0.95))
    from fastlif.ops import common

    def leaky_cpp_function(x):  # the C++ autograd Function: its kernels cannot be timed from here
        common.CPP_AUTOGRAD = True
        try:
            return leaky.sequence(x)
        finally:
            common.CPP_AUTOGRAD = False
    return {"Leaky.sequence": leaky.sequence, "Leaky.sequence, C++ autograd Function": leaky_cpp_function,
            "spikingjelly.LIFNode": lif_node,
            "minimal Function, Leaky's kernels": lambda x: _Minimal.apply(x, leaky.beta),
            "empty autograd.Function": lambda x: Empty.apply(x, beta)}


class _Minimal(torch.autograd.Function):
    """Leaky's C++ kernels (delayed subtract reset, atan, learnable one-value beta, T=50 B=64
    N=128 fp32 contiguous) with nothing around them: no checks, no dispatch, no options. What
    fastlif's call would cost if its Python did nothing but launch (the same pool allocations
    and clamp): the floor of this design, which the ``kernels`` rows compare against."""

    @staticmethod
    def forward(ctx, x, beta):
        from fastlif.ops import lif
        from fastlif.ops.common import cpu_empty, num_threads
        b = beta.clamp(0, 1)
        spk, mem = cpu_empty(x.shape, x.dtype), cpu_empty(x.shape, x.dtype)
        ctx.save_for_backward(mem, b)
        lif._C().lif_fwd(0, T, B, N, x.data_ptr(), 0, [(b.data_ptr(), 1, 0.0), (0, 1, 1.0), (0, 1, 1.0)],
                         spk.data_ptr(), mem.data_ptr(), 0, 0, 0, False, num_threads())
        return spk, mem

    @staticmethod
    def backward(ctx, grad_spk, grad_mem):
        from fastlif.ops import lif
        from fastlif.ops.common import cpu_empty, num_threads
        mem, b = ctx.saved_tensors
        grad_x, grad_b = cpu_empty(mem.shape, mem.dtype), torch.empty_like(b)
        lif._C().lif_bwd(0, T, B, N, grad_spk.data_ptr(), grad_mem.data_ptr(), mem.data_ptr(), 0, 0, 0,
                         [(b.data_ptr(), 1, 0.0), (0, 1, 1.0), (0, 1, 1.0)], grad_x.data_ptr(), 0,
                         [grad_b.data_ptr(), 0, 0], 0, False, 0, 2.0, num_threads())
        return grad_x, grad_b


def _fwd_bwd_us(fn, x, grads, rounds, calls):
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            xx = x.detach().requires_grad_()
            torch.autograd.backward(list(fn(xx)), grads)
        per.append((time.perf_counter() - t0) / calls * 1e6)
    return per


TIMELINE = ("before the forward kernel", "forward kernel", "forward kernel to backward kernel",
            "backward kernel", "after the backward kernel")


def _timeline_us(fn, x, grads, stub, calls):
    """Median microseconds of each TIMELINE part over ``calls`` forward+backward calls."""
    parts = [[] for _ in TIMELINE]
    for _ in range(calls):
        xx = x.detach().requires_grad_()
        t0 = time.perf_counter()
        outs = fn(xx)
        f0, f1 = stub.last_span
        torch.autograd.backward(list(outs), grads)
        t2 = time.perf_counter()
        b0, b1 = stub.last_span
        for part, us in zip(parts, (f0 - t0, f1 - f0, b0 - f1, b1 - b0, t2 - b1)):
            part.append(us * 1e6)
        del outs, xx
    return [statistics.median(p) for p in parts]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--mb", default="0,0.5,1,2,4,8", help="megabytes streamed before each call (evicted)")
    args = ap.parse_args()
    from fastlif import backends
    from fastlif.ops import common
    real = backends.cpp_module()
    # Leaky.sequence and LIFNode as the Python Functions run them (Python between the kernels,
    # which the stubs time); Leaky's C++ autograd Function, which eager calls take, has a
    # kernels row of its own
    common.CPP_AUTOGRAD = False
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, N, generator=gen) * 0.5 + 0.3
    grads = [torch.randn(T, B, N, generator=gen), torch.randn(T, B, N, generator=gen)]
    rows, common = [], dict(bench="overhead", shape=f"{T}x{B}x{N}", dtype="float32", device=cpu_name(),
                            torch=torch_version())

    def row(case, provider, per, unit_us=True, **kv):
        med = statistics.median(per)
        q = statistics.quantiles(per, n=5) if len(per) > 1 else [med] * 4
        rows.append(dict(common, case=case, provider=provider, direction="forward+backward",
                         median_ms=med / 1e3, q20_ms=q[0] / 1e3, q80_ms=q[3] / 1e3, extra=extra(**kv)))
        print(f"  {case:8s} {provider:44s} {med:8.1f} us  ({q[0]:.1f}-{q[3]:.1f})")

    print(f"fastlif call overhead, T={T} B={B} N={N}, {torch.get_num_threads()} threads, {cpu_name()}")
    # kernels: the real call, and its kernels alone
    timed = _Stubbed(real, True)
    _install(timed)
    providers = _providers()
    for name in ("Leaky.sequence", "Leaky.sequence, C++ autograd Function", "minimal Function, Leaky's kernels",
                 "spikingjelly.LIFNode"):
        for k in timed.times.values():
            k.clear()
        per = _fwd_bwd_us(providers[name], x, grads, args.rounds, 40)
        if any(timed.times.values()):
            kernel_us = sum(statistics.median(v) for v in timed.times.values() if v) * 1e6
            row("kernels", name, per, kernels_us=kernel_us)
            print(f"           of which its C++ kernels {kernel_us:.1f} us")
        else:  # the C++ Function calls its kernels from C++
            row("kernels", name, per)
    # timeline: the real call cut at its kernels' edges
    for name in ("Leaky.sequence", "spikingjelly.LIFNode"):
        _timeline_us(providers[name], x, grads, timed, 20)
        per_part = [_timeline_us(providers[name], x, grads, timed, 40) for _ in range(args.rounds)]
        for i, part in enumerate(TIMELINE):
            row("timeline", f"{name}: {part}", [p[i] for p in per_part])
    # python: kernels replaced by no-ops, warm
    _install(_Stubbed(real, False))
    for name, fn in providers.items():
        if "C++ autograd" in name:  # its kernels are not the stub's to replace
            continue
        _fwd_bwd_us(fn, x, grads, 1, 50)
        row("python", name, _fwd_bwd_us(fn, x, grads, args.rounds, 300))
    # evicted: one kernel-less forward after streaming MB megabytes through this core
    node_fwd = providers["spikingjelly.LIFNode"]
    src = torch.randn((8 << 20) // 4)
    dst = torch.empty_like(src)
    for mb in [float(v) for v in args.mb.split(",")]:
        n = int(mb * (1 << 20) / 4)
        per = []
        for _ in range(args.rounds):
            times = []
            for _ in range(200):
                if n:
                    dst[:n].copy_(src[:n])
                t0 = time.perf_counter()
                node_fwd(x)
                times.append((time.perf_counter() - t0) * 1e6)
            per.append(statistics.median(times))
        row("evicted", f"LIFNode forward after {mb:g} MB streamed", per, streamed_mb=mb)
    path = append_rows("overhead.csv", rows)
    print(f"{len(rows)} rows appended to {path}")


if __name__ == "__main__":
    main()

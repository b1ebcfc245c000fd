"""The Triton backend on a CUDA GPU at real sizes: equivalence with the reference and with
snnTorch, fp16/bf16, the tutorial's network training, torch.compile, CUDA graphs, and no
recompilation when the sequence length changes.

Oracles are those of tests/test_triton.py: fp32 spikes bit-identical to the fp32 reference,
membrane within 1e-6, gradients normwise within 1e-5 of the reference run in fp64. At these
sizes a membrane can land within fp32 rounding of the threshold, so that the fp64 reference
spikes differently; gradients are then compared with the fp32 reference instead (whose own
error is the same order, except on the graded-factor gradient with an immediate reset, where
its autograd sums two terms that cancel exactly: that one is compared only against fp64).

On the GPU machine run through bench/gpu_check.sh (which sets FASTLIF_AUTOTUNE=0 for the
tests, so that every kernel variant compiles once instead of once per autotune config;
test_every_config_gives_identical_results in test_triton.py covers the other configs).
"""
import os

import pytest
import torch

from fastlif import testing

# A dry run of this suite's own code without a GPU: FASTLIF_GPU_DRY_RUN=1 with
# TRITON_INTERPRET=1 runs it on CPU tensors through Triton's interpreter at small sizes (tests
# that need a real GPU, CUDA graphs or compiled PTX skip), so that a mistake in a test is
# found before device time is spent on it. It checks the tests' logic, not the GPU.
DRY_RUN = os.environ.get("FASTLIF_GPU_DRY_RUN", "0") not in ("", "0")
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if DRY_RUN:
    pytestmark = pytest.mark.skipif(not INTERPRET, reason="FASTLIF_GPU_DRY_RUN needs TRITON_INTERPRET=1")
    DEVICE = "cpu"
else:
    pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    if torch.cuda.is_available() and INTERPRET:
        pytestmark = pytest.mark.skip(reason="TRITON_INTERPRET is set: these tests time compiled "
                                             "GPU kernels (run them without it)")
    DEVICE = "cuda"
needs_real_gpu = pytest.mark.skipif(DRY_RUN, reason="needs a real CUDA GPU (dry run)")
PARAMS = ("beta", "threshold", "graded")

if torch.cuda.is_available() or DRY_RUN:
    import triton

    import fastlif
    from fastlif import surrogate as S
    from fastlif.kernels import lif as K

    SURROGATES = {"atan": S.atan(), "fast_sigmoid": S.fast_sigmoid(), "sigmoid": S.sigmoid(5),
                  "triangular": S.triangular(), "straight_through": S.straight_through_estimator(),
                  "disabled": S.no_grad()}
else:
    SURROGATES = {}


# ------------------------------------------------------------------------------------------
# helpers: fastlif.testing's, at this suite's sizes and device


def make_case(T, shape, *, seed=0, scale=1.5, mem0=True):
    return testing.make_case(T, shape, per_neuron=(True, True, False), mem0=mem0, seed=seed,
                             scale=scale, beta_range=(0.0, 1.0), threshold_range=(0.5, 1.5))


def run(backend, case, dtype, *, reset="subtract", delay=True, sg="atan", low_memory=False):
    return testing.run(case, backend, dtype=dtype, device=DEVICE, reset_mechanism=reset,
                       reset_delay=delay, surrogate=SURROGATES[sg], low_memory=low_memory)


def normwise(a, b, floor=1e-6):
    return testing.normwise(a, b, floor)


def oracle_grads(case, dtype_in, **kw):
    """fp64-reference gradients when its spikes equal the fp32 reference's, else fp32's;
    returns (spk32, mem32, grads, which)."""
    spk32, mem32, g32 = run("reference", case, torch.float32, **kw)
    spk64, _, g64 = run("reference", case, torch.float64, **kw)
    if torch.equal(spk32.double(), spk64):
        return spk32, mem32, g64, "fp64"
    return spk32, mem32, g32, "fp32"


def check_grads(got, want, which, *, immediate, rtol=1e-5, only=None):
    for name in only or want:
        if which == "fp32" and immediate and name == "graded":
            continue  # the fp32 reference is not accurate there (see the module docstring)
        err = normwise(got[name], want[name])
        assert err <= rtol, f"grad {name}: normwise error {err:.2e} vs the {which} reference"


def n_compiled(kernel):
    """Number of compiled binaries a kernel's JITFunction holds (Triton 3.1 ... 3.x)."""
    fn = kernel.jit
    if hasattr(fn, "device_caches"):  # Triton >= 3.2
        return sum(len(c[0]) for c in fn.device_caches.values())
    return sum(len(c) for c in fn.cache.values())


def count_ce(spk_out, targets):
    """snnTorch's ce_count_loss(): cross entropy of spike counts (log_softmax + nll_loss)."""
    return torch.nn.functional.cross_entropy(spk_out.sum(0), targets)


# ------------------------------------------------------------------------------------------
# equivalence at size

SIZE = (6, (3, 301)) if DRY_RUN else (50, (64, 2001))  # T, [B, N]: 128064 neurons, no multiple of any block size


@pytest.mark.parametrize("reset, delay, sg", [
    ("subtract", True, "atan"), ("subtract", False, "fast_sigmoid"),
    ("zero", True, "sigmoid"), ("zero", False, "triangular"),
    ("none", True, "straight_through"), ("none", False, "disabled"),
    ("subtract", True, "fast_sigmoid"), ("zero", False, "atan"),
])
def test_matches_reference_at_size(reset, delay, sg):
    case = make_case(SIZE[0], SIZE[1], seed=1)
    spk, mem, grads = run("triton", case, torch.float32, reset=reset, delay=delay, sg=sg)
    spk32, mem32, want, which = oracle_grads(case, torch.float32, reset=reset, delay=delay, sg=sg)
    assert torch.equal(spk, spk32), f"{(spk != spk32).sum().item()} spikes differ"
    torch.testing.assert_close(mem, mem32, rtol=0, atol=1e-6)
    check_grads(grads, want, which, immediate=not delay and reset != "none")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("delay", [True, False], ids=["delay", "immediate"])
def test_half_precision_at_size(dtype, delay):
    c = make_case(SIZE[0], SIZE[1], seed=2)
    r = lambda t: t.to(dtype).float()  # noqa: E731 - the same inputs, rounded to dtype
    case = testing.Case(r(c.x), r(c.mem0), c.params, r(c.grad_spk), r(c.grad_mem))
    spk, mem, grads = run("triton", case, dtype, delay=delay)
    spk32, mem32, want, which = oracle_grads(case, dtype, delay=delay)
    assert spk.dtype == mem.dtype == grads["x"].dtype == dtype
    assert torch.equal(spk, spk32.to(dtype))
    assert torch.equal(mem, mem32.to(dtype))
    check_grads(grads, want, which, immediate=not delay, only=PARAMS)
    eps = torch.finfo(dtype).eps
    assert normwise(grads["x"], want["x"]) <= eps and normwise(grads["mem0"], want["mem0"]) <= eps


def test_low_memory_gradient_error():
    """bf16-saved membrane: forward unchanged, gradient error bounded (bench_gpu.py records
    the numbers at T=100, B=64, N=65536)."""
    case = make_case(*((10, (2, 300)) if DRY_RUN else (100, (16, 4096))), seed=3, scale=0.5)
    spk, mem, grads = run("triton", case, torch.float32)
    spk_lm, mem_lm, grads_lm = run("triton", case, torch.float32, low_memory=True)
    assert torch.equal(spk, spk_lm) and torch.equal(mem, mem_lm)
    for k in ("x", *PARAMS):
        assert normwise(grads_lm[k], grads[k]) < 0.05, k


# ------------------------------------------------------------------------------------------
# snnTorch on the GPU


SNN_CONFIGS = {
    "default": dict(beta=0.9),
    "zero-learn": dict(beta=0.8, reset_mechanism="zero", learn_beta=True, learn_threshold=True),
    "none-per-neuron": dict(beta="per-neuron", reset_mechanism="none", learn_beta=True),
    "immediate-subtract": dict(beta=0.7, reset_delay=False, learn_threshold=True,
                               spike_grad="fast_sigmoid"),
    "immediate-zero": dict(beta=0.95, threshold=0.8, reset_mechanism="zero", reset_delay=False,
                           spike_grad="sigmoid"),
    "graded": dict(beta=0.85, graded_spikes_factor=1.5, learn_graded_spikes_factor=True,
                   spike_grad="triangular"),
    "ste": dict(beta=0.9, spike_grad="straight_through_estimator"),
    "disabled": dict(beta=0.9, surrogate_disable=True),
}


def _leaky_pair(cfg, n):
    import snntorch as snn
    from snntorch import surrogate as ssg
    kw = dict(cfg)
    if kw.get("beta") == "per-neuron":
        kw["beta"] = torch.linspace(0.3, 0.99, n)
    if "spike_grad" in kw:
        name = kw.pop("spike_grad")
        factory = getattr(ssg, name)
        kw["spike_grad"] = factory() if name != "sigmoid" else factory(slope=5)
    ref = snn.Leaky(**kw).to(DEVICE)
    fast = fastlif.Leaky(**kw).to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.mark.parametrize("name", list(SNN_CONFIGS))
def test_snntorch_equivalence(name):
    pytest.importorskip("snntorch")
    T, B, n = (5, 3, 77) if DRY_RUN else (40, 32, 777)
    ref, fast = _leaky_pair(SNN_CONFIGS[name], n)
    gen = torch.Generator(device=DEVICE).manual_seed(4)
    x = torch.randn(T, B, n, generator=gen, device=DEVICE) + 0.3
    gs, gm = torch.randn_like(x), torch.randn_like(x)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    mem = ref.init_leaky()
    spikes, mems = [], []
    for t in range(T):
        s, mem = ref(xr[t], mem)
        spikes.append(s)
        mems.append(mem)
    spk_r, mem_r = torch.stack(spikes), torch.stack(mems)
    spk_f, mem_f = fast.sequence(xf)
    assert torch.equal(spk_f, spk_r), f"{(spk_f != spk_r).sum().item()} spikes differ"
    torch.testing.assert_close(mem_f, mem_r, rtol=0, atol=1e-6)
    for outs in ((spk_r, mem_r), (spk_f, mem_f)):  # surrogate_disable: spikes carry no grad
        pairs = [(o, g) for o, g in zip(outs, (gs, gm)) if o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    assert normwise(xf.grad, xr.grad) <= 1e-5
    for pname, p in ref.named_parameters():
        q = dict(fast.named_parameters())[pname]
        assert normwise(q.grad, p.grad) <= 1e-5, pname


def _family_pair(family, n):
    snn = pytest.importorskip("snntorch")
    g = torch.Generator().manual_seed(7)
    if family == "synaptic":
        kw = dict(alpha=torch.rand(n, generator=g) * 0.5 + 0.4, beta=torch.rand(n, generator=g) * 0.5 + 0.5,
                  learn_alpha=True, learn_beta=True, learn_threshold=True, reset_delay=False)
        return snn.Synaptic(**kw).to(DEVICE), fastlif.Synaptic(**kw).to(DEVICE)
    kw = dict(beta=torch.rand(n, generator=g) * 0.5 + 0.5, V=torch.rand(n, generator=g) - 0.5, all_to_all=False,
              learn_beta=True, learn_threshold=True, reset_mechanism="zero")
    return snn.RLeaky(**kw).to(DEVICE), fastlif.RLeaky(**kw).to(DEVICE)


@pytest.mark.parametrize("family", ["synaptic", "rleaky"])
def test_family_matches_snntorch_at_size(family):
    """Synaptic and the one-to-one RLeaky, fused by Triton, against snnTorch stepping on the same
    GPU: spikes bit-identical, states within 1e-6, every gradient within 1e-5."""
    T, B, n = (5, 3, 77) if DRY_RUN else (40, 32, 777)
    ref, fast = _family_pair(family, n)
    gen = torch.Generator(device=DEVICE).manual_seed(5)
    x = torch.randn(T, B, n, generator=gen, device=DEVICE) + 0.3
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    if family == "synaptic":
        states, outs = list(ref.init_synaptic()), []
        for t in range(T):
            spk, *states = ref(xr[t], *states)
            outs.append((spk, *states))
    else:
        states, outs = list(ref.init_rleaky()), []
        for t in range(T):
            states = list(ref(xr[t], *states))
            outs.append(tuple(states))
    want = [torch.stack(o) for o in zip(*outs)]
    got = fast.sequence(xf)
    assert torch.equal(got[0], want[0]), f"{(got[0] != want[0]).sum().item()} spikes differ"
    for a, b in zip(got[1:], want[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    upstream = [torch.randn(x.shape, generator=gen, device=DEVICE) for _ in got]
    for outs_ in (want, got):
        torch.autograd.backward(list(outs_), upstream)
    assert normwise(xf.grad, xr.grad) <= 1e-5
    for pname, p in ref.named_parameters():
        q = dict(fast.named_parameters())[pname]
        assert normwise(q.grad, p.grad, floor=1e-3) <= 1e-5, pname


@needs_real_gpu
def test_rleaky_dense_on_cuda_runs_the_reference_with_a_warning():
    """The dense recurrent layer is fused on the CPU only: on CUDA, the per-step loop, said once."""
    from fastlif.ops import common
    common._warned.clear()
    layer = fastlif.RLeaky(beta=0.9, linear_features=16).to(DEVICE)
    x = torch.rand(4, 2, 16, device=DEVICE)
    with pytest.warns(UserWarning, match="dense recurrent layer"):
        spk, mem = layer.sequence(x)
    assert spk.shape == x.shape and spk.device == x.device


def test_single_step_drop_in():
    """fastlif.Leaky called one step at a time, as in the tutorial's loop: same numbers."""
    pytest.importorskip("snntorch")
    ref, fast = _leaky_pair(dict(beta=0.9, spike_grad="fast_sigmoid"), 128)
    x = torch.randn(*((4, 3) if DRY_RUN else (30, 16)), 128, device=DEVICE) + 0.4
    m_r, m_f = ref.init_leaky(), fast.init_leaky()
    for t in range(x.shape[0]):
        s_r, m_r = ref(x[t], m_r)
        s_f, m_f = fast(x[t], m_f)
        assert torch.equal(s_r, s_f) and torch.equal(m_r, m_f)


# ------------------------------------------------------------------------------------------
# the tutorial's network (TinySNN, /work/shared/seed/snn_lif_mnist_tutorial.md section 5.1)


def _tiny_snn(kind):
    """kind: "snntorch" (the tutorial's code), "drop-in" (same loop, fastlif.Leaky) or
    "fused" (one Linear over all steps, fastlif.Leaky over the whole sequence)."""
    import functools

    import snntorch as snn
    from snntorch import surrogate as ssg

    from fastlif.tutorial.model import TinySNN
    return functools.partial(TinySNN, lif_cls=snn.Leaky if kind == "snntorch" else fastlif.Leaky,
                             spike_grad=ssg.fast_sigmoid(), fused=kind == "fused")


def _train(kind, state, batches):
    """Adam steps on ``batches``; returns the losses, the first step's output spikes and
    gradients (before the optimizer touches them)."""
    model = _tiny_snn(kind)().to(DEVICE)
    model.load_state_dict(state)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    losses, first = [], None
    for x, y in batches:
        out = model(x)
        loss = count_ce(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if first is None:
            first = (out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()})
        opt.step()
        losses.append(loss.item())
    return losses, first


def _tutorial_batches(n, T=50, B=64, seed=5):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    out = []
    for _ in range(n):
        images = torch.rand(B, 784, generator=gen, device=DEVICE) ** 3  # MNIST-like sparsity
        p = torch.clamp(images * 100.0 * 1e-3, 0.0, 1.0)  # the tutorial's poisson_encode
        spikes = torch.rand(T, B, 784, generator=gen, device=DEVICE) < p
        out.append((spikes, torch.randint(0, 10, (B,), generator=gen, device=DEVICE)))
    return out


def test_tutorial_network_trains_identically():
    """Same initial weights, same batches: snnTorch's TinySNN and fastlif's. With the same
    per-step loop the first step's spikes and loss are identical and the gradients equal to
    rounding; later steps agree to rounding too (Adam's first steps are sign-like, so weights
    whose gradient is pure rounding noise may move differently: losses are compared)."""
    pytest.importorskip("snntorch")
    torch.manual_seed(0)
    state = _tiny_snn("snntorch")().state_dict()
    batches = _tutorial_batches(3, **(dict(T=4, B=8) if DRY_RUN else {}))
    ref_losses, (ref_out, ref_grads) = _train("snntorch", state, batches)
    losses, (out, grads) = _train("drop-in", state, batches)
    assert torch.equal(out, ref_out)
    assert losses[0] == ref_losses[0]
    for name in ref_grads:
        assert normwise(grads[name], ref_grads[name]) <= 1e-5, name
    for a, b in zip(losses, ref_losses):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (losses, ref_losses)
    # fused over time: the Linear runs once on [T*B, 784] (cuBLAS may round differently)
    losses_f, (out_f, grads_f) = _train("fused", state, batches)
    agree = (out_f == ref_out).float().mean().item()
    assert agree > 0.999, agree
    for a, b in zip(losses_f, ref_losses):
        assert abs(a - b) <= 1e-3 * max(1.0, abs(b)), (losses_f, ref_losses)


# ------------------------------------------------------------------------------------------
# torch.compile, CUDA graphs, recompilation


@needs_real_gpu
def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    lin = torch.nn.Linear(64, 96).to(DEVICE)
    beta = torch.full((96,), 0.9, device=DEVICE, requires_grad=True)

    def step(x):
        spk, mem = fastlif.lif_sequence(lin(x), beta, 1.0, surrogate=S.fast_sigmoid(),
                                        backend="auto")
        return spk.sum(0).logsumexp(-1).mean() + 0.01 * mem.pow(2).mean()

    x = torch.randn(25, 32, 64, device=DEVICE)
    eager = step(x)
    eager.backward()
    want = [lin.weight.grad.clone(), beta.grad.clone()]
    lin.weight.grad, beta.grad = None, None
    compiled = torch.compile(step, fullgraph=True)
    out = compiled(x)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    assert normwise(lin.weight.grad, want[0]) <= 1e-5 and normwise(beta.grad, want[1]) <= 1e-5


@needs_real_gpu
def test_cuda_graph_capture_and_replay():
    T, B, n = 20, 16, 1000
    beta = torch.rand(n, device=DEVICE, requires_grad=True)
    # parameters as device tensors: a Python float becomes torch.tensor(value, device=...)
    # in fastlif.functional, a host-to-device copy that a capture does not allow
    thr, graded = torch.ones((), device=DEVICE), torch.ones((), device=DEVICE)
    static_x = torch.randn(T, B, n, device=DEVICE, requires_grad=True)
    g_spk = torch.randn(T, B, n, device=DEVICE)

    def fwd_bwd():
        spk, mem = fastlif.lif_sequence(static_x, beta, thr, graded_spikes_factor=graded,
                                        reset_delay=False, backend="triton")
        torch.autograd.backward([spk, mem], [g_spk, torch.ones_like(mem)])
        return spk, mem

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up: compiles (and autotunes) outside the capture
        for _ in range(2):
            fwd_bwd()
            static_x.grad, beta.grad = None, None
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        spk_g, mem_g = fwd_bwd()
    for seed in (6, 7):
        gen = torch.Generator(device=DEVICE).manual_seed(seed)
        new_x = torch.randn(T, B, n, device=DEVICE, generator=gen)
        with torch.no_grad():
            static_x.copy_(new_x)
        static_x.grad.zero_()
        beta.grad.zero_()
        graph.replay()
        torch.cuda.synchronize()
        x_e = new_x.clone().requires_grad_()
        b_e = beta.detach().clone().requires_grad_()
        spk, mem = fastlif.lif_sequence(x_e, b_e, thr, graded_spikes_factor=graded,
                                        reset_delay=False, backend="triton")
        torch.autograd.backward([spk, mem], [g_spk, torch.ones_like(mem)])
        assert torch.equal(spk_g, spk) and torch.equal(mem_g, mem)
        assert torch.equal(static_x.grad, x_e.grad) and torch.equal(beta.grad, b_e.grad)


@needs_real_gpu
def test_no_recompilation_when_T_changes():
    B, n = 8, 300
    beta = torch.full((n,), 0.9, device=DEVICE, requires_grad=True)

    def go(T):
        x = torch.randn(T, B, n, device=DEVICE, requires_grad=True)
        spk, mem = fastlif.lif_sequence(x, beta, 1.0, backend="triton")
        (spk.sum() + mem.sum()).backward()

    go(7)  # compiles (and autotunes) the forward and backward once
    before = (n_compiled(K.LIF_FWD), n_compiled(K.LIF_BWD))
    for T in (1, 2, 16, 33, 100, 257):
        go(T)
    torch.cuda.synchronize()
    assert (n_compiled(K.LIF_FWD), n_compiled(K.LIF_BWD)) == before


@needs_real_gpu
def test_fp32_forward_has_no_fma_contraction():
    """The compiled forward (fp32) contains no fused multiply-add: enable_fp_fusion=False
    reached the compiler (a contraction would make spikes differ from PyTorch eager)."""
    x = torch.randn(5, 4, 300, device=DEVICE)
    p = torch.full((300,), 0.9, device=DEVICE)
    K.lif_fwd(x, None, p, p, p, steps=5, reset_mode=0, reset_delay=False, low_memory=False,
              mem_fp32=False)
    fn = K.LIF_FWD.jit
    caches = ([c[0] for c in fn.device_caches.values()] if hasattr(fn, "device_caches")
              else list(fn.cache.values()))
    ptx = [k.asm["ptx"] for c in caches for k in c.values() if "ptx" in getattr(k, "asm", {})]
    assert ptx, "no compiled forward kernel found"
    assert all("fma.rn.f32" not in p for p in ptx)


def test_leaky_bf16_reaches_the_triton_half_path():
    """fp16/bf16 input to a Leaky runs the Triton kernels on the half tensor itself (no fp32
    copy of the input first), and the membrane it keeps as its state is fp32."""
    lif = fastlif.Leaky(0.9, step_mode="multi", backend="triton").to(DEVICE)
    x = (torch.randn(6, 4, 96, device=DEVICE) + 0.5).to(torch.bfloat16)
    seen = []
    real = K.lif_fwd

    def spy(x_in, *args, **kwargs):
        seen.append(x_in.dtype)
        return real(x_in, *args, **kwargs)

    from fastlif import backends
    launchers = backends.launchers("lif", "triton")
    backends._launchers[("lif", "triton")] = ((spy, launchers[1]), "")
    try:
        spk, mem = lif(x)
    finally:
        backends._launchers[("lif", "triton")] = (launchers, "")
    assert seen == [torch.bfloat16]
    assert spk.dtype == torch.bfloat16 and mem.dtype == torch.float32
    want_spk, want_mem = fastlif.lif_sequence(x.float(), 0.9, backend="reference")
    assert torch.equal(spk.float(), want_spk) and torch.equal(mem, want_mem)

"""fastlif.encode.poisson(method="fast"): the tutorial's law (each (t, b, i) fires independently
with p = clamp(x * rate * dt, 0, 1)), drawn by geometric skips in C++ (csrc/poisson.cpp).

The statistical tests run on fixed seeds, so each is deterministic; each compares a sample with
the law it must follow and fails below a p-value of ALPHA = 1e-4 (or beyond Z = 4.5 standard
errors, two-sided p ~ 7e-6). For a correct sampler a p-value is uniform on (0, 1), so a new
seed or a change that redraws the spikes fails a given test with probability 1e-4 (about
0.2 % for the ~20 tests here together); the samples are sized so that a bias in p of a few
per cent, or a correlation of 0.005 between neighbours, would fail by a wide margin.
"""
import math

import numpy as np
import pytest
import torch

import fastlif
from conftest import needs_cpp, needs_cuda
from fastlif import encode
from fastlif.events import SpikeEvents, from_dense

pytestmark = needs_cpp

ALPHA = 1e-4
Z = 4.5
RATE, DT = 100.0, 1e-3


def fast(images, num_steps, seed=0, **kw):
    return encode.poisson(images, num_steps, rng=torch.Generator().manual_seed(seed), method="fast", **kw)


def images_for(p, rows, rate=RATE, dt=DT):
    """[rows, len(p)] float64 images whose pixel i fires with p[i] (up to rounding), and the p
    the kernel computes from them: (x * rate) * dt in double."""
    x = (torch.tensor(p, dtype=torch.float64) / (rate * dt)).expand(rows, -1).contiguous()
    return x, ((x[0] * rate) * dt).clamp(0, 1)


def chi2_sf(stat, df):
    """P(chi2_df >= stat): scipy when it is installed, else the regularised upper incomplete gamma."""
    try:
        from scipy.stats import chi2
        return float(chi2.sf(stat, df))
    except ImportError:
        return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                             torch.tensor(stat / 2, dtype=torch.float64)))


def chi2_test(observed, expected_prob, min_expected=5.0):
    """Pearson's chi-square p-value of counts ``observed`` against cell probabilities
    ``expected_prob`` (summing to 1), pooling the smallest cells until each expects >= 5."""
    obs = np.asarray(observed, dtype=np.float64)
    exp = np.asarray(expected_prob, dtype=np.float64) * obs.sum()
    order = np.argsort(exp)  # pool the rarest cells together
    pooled_o, pooled_e, acc_o, acc_e = [], [], 0.0, 0.0
    for i in order:
        acc_o, acc_e = acc_o + obs[i], acc_e + exp[i]
        if acc_e >= min_expected:
            pooled_o.append(acc_o)
            pooled_e.append(acc_e)
            acc_o = acc_e = 0.0
    if acc_e > 0:  # what is left joins the last cell
        pooled_o[-1] += acc_o
        pooled_e[-1] += acc_e
    o, e = np.array(pooled_o), np.array(pooled_e)
    assert len(o) >= 2, "too few cells for a chi-square test"
    return chi2_sf(float(((o - e) ** 2 / e).sum()), len(o) - 1)


def binomial_pmf(n, p):
    k = torch.arange(n + 1, dtype=torch.float64)
    if p in (0.0, 1.0):
        return (k == n * p).double().numpy()
    logc = torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    return torch.exp(logc + k * math.log(p) + (n - k) * math.log1p(-p)).numpy()


# --- the law ------------------------------------------------------------------------------------

P_VALUES = [1e-3, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999]


def test_counts_per_pixel_are_binomial():
    """Spikes per pixel over T steps ~ Binomial(T, p), for p across (0, 1) (40000 trains each)."""
    T, rows = 20, 40000
    x, p = images_for(P_VALUES, rows)
    counts = fast(x, T, seed=1).sum(0)  # [rows, len(p)]
    for i, pi in enumerate(p.tolist()):
        c = counts[:, i]
        observed = torch.bincount(c, minlength=T + 1).numpy()
        pval = chi2_test(observed, binomial_pmf(T, pi))
        assert pval > ALPHA, f"p={pi}: counts are not Binomial({T}, p) (chi-square p-value {pval:.2e})"
        z = (c.double().mean() - T * pi) / math.sqrt(T * pi * (1 - pi) / rows)
        assert abs(z) < Z, f"p={pi}: mean count off by {z:.1f} standard errors"


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_joint_law_of_short_trains(p):
    """The 16 patterns of 4 steps of one pixel: P(pattern) = p^k (1-p)^(4-k), which is the law of
    4 independent Bernoulli(p) trials (marginals and independence together)."""
    T, rows = 4, 50000
    x, pk = images_for([p] * 4, rows)
    spk = fast(x, T, seed=2)  # [4, rows, 4 pixels]
    code = (spk.long() * torch.tensor([1, 2, 4, 8]).view(4, 1, 1)).sum(0).flatten()
    ones = torch.tensor([bin(c).count("1") for c in range(16)], dtype=torch.float64)
    q = float(pk[0])
    probs = (q ** ones * (1 - q) ** (4 - ones)).numpy()
    pval = chi2_test(torch.bincount(code, minlength=16).numpy(), probs)
    assert pval > ALPHA, f"p={p}: 4-step patterns off their law (chi-square p-value {pval:.2e})"


@pytest.mark.parametrize("p", [0.02, 0.3, 0.97])
def test_inter_spike_intervals_are_geometric(p):
    """Within a train, ISI - 1 ~ Geometric(p) (failures before a success), and so is the first
    spike's step (the truncation at T is part of the expected law)."""
    T, rows = 400, 400
    x, pk = images_for([p], rows)
    q = float(pk[0])
    spk = fast(x, T, seed=3)[:, :, 0].T  # [rows, T]
    isi, first = [], []
    for row in spk:
        steps = row.nonzero().flatten()
        if steps.numel():
            first.append(int(steps[0]))
            isi.append(torch.diff(steps) - 1)
    gaps = torch.cat(isi)
    kmax = int(gaps.max()) + 1
    pmf = q * (1 - q) ** np.arange(kmax, dtype=np.float64)
    probs = np.append(pmf, (1 - q) ** kmax)  # the tail cell (never observed)
    observed = np.append(torch.bincount(gaps, minlength=kmax).numpy(), 0)
    pval = chi2_test(observed, probs)
    assert pval > ALPHA, f"p={p}: ISIs not geometric (chi-square p-value {pval:.2e}, {gaps.numel()} ISIs)"
    # first spike: P(first = k) = q (1-q)^k for k < T, and "none" with (1-q)^T
    observed = np.bincount(np.array(first), minlength=T).astype(np.float64)
    observed = np.append(observed, rows - len(first))
    probs = np.append(q * (1 - q) ** np.arange(T, dtype=np.float64), (1 - q) ** T)
    pval = chi2_test(observed, probs)
    assert pval > ALPHA, f"p={p}: first-spike steps not geometric (p-value {pval:.2e})"


def _corr(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt(float((a * a).sum() * (b * b).sum()))), a.numel()


def test_no_correlation_between_pixels_batch_entries_steps_or_calls():
    """Pearson correlation of neighbours (adjacent pixels, including across the kernel's work
    items of 256 pixels, batch entries, steps, and two successive calls) within Z standard errors
    (1/sqrt(n)) of 0."""
    T, B, N = 40, 64, 600
    x = torch.full((B, N), 0.3 / (RATE * DT), dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    spk = encode.poisson(x, T, rng=g, method="fast")
    again = encode.poisson(x, T, rng=g, method="fast")
    pairs = {
        "adjacent pixels": (spk[:, :, :-1], spk[:, :, 1:]),
        "pixels 255/256 (work items)": (spk[:, :, 255], spk[:, :, 256]),
        "batch entries": (spk[:, :-1], spk[:, 1:]),
        "steps": (spk[:-1], spk[1:]),
        "steps, lag 2": (spk[:-2], spk[2:]),
        "successive calls": (spk, again),
        "pixel j and j + 1, one step later": (spk[:-1, :, :-1], spk[1:, :, 1:]),
    }
    for what, (a, b) in pairs.items():
        r, n = _corr(a, b)
        assert abs(r) * math.sqrt(n) < Z, f"{what}: correlation {r:.4f} is {abs(r) * math.sqrt(n):.1f} SE from 0"


def test_mean_rate_matches_tutorial_images():
    """MNIST-like images through the public call: the spike fraction is the mean p."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(64, 1, 28, 28, generator=g) ** 3
    spk = encode.poisson(x, 50, rng=g, method="fast")
    assert spk.shape == (50, 64, 784) and spk.dtype == torch.bool
    p = ((x.reshape(64, -1).double() * RATE) * DT).clamp(0, 1)
    n, mean = spk.numel(), float(p.mean())
    var = float((p * (1 - p)).mean())
    assert abs(spk.double().mean() - mean) < Z * math.sqrt(var / n)


def test_p0_never_p1_always():
    x = torch.tensor([[0.0, -0.5, 1e-300, 10.0, 20.0, 1.0]], dtype=torch.float64).expand(3000, -1)
    spk = encode.poisson(x, 30, max_rate_hz=100.0, dt=0.1, rng=torch.Generator().manual_seed(6), method="fast")
    # p = 0, 0 (clamped), 1e-301 (some 1e-296 expected spikes), 1 (x*rate*dt = 100), 1 (clamped), p = 1
    assert not spk[:, :, :3].any()
    assert spk[:, :, 3:].all()


def test_p_close_to_one_and_close_to_zero():
    """p = 1 - 1e-6: misses ~ Poisson(n * 1e-6); p = 1e-6: spikes ~ Poisson(n * 1e-6)."""
    T, rows = 100, 20000
    x, p = images_for([1 - 1e-6, 1e-6], rows)
    spk = fast(x, T, seed=7)  # 2e6 trials each: 2 expected; P(Poisson(2) > 12) < 1e-6
    assert int((~spk[:, :, 0]).sum()) <= 12
    assert int(spk[:, :, 1].sum()) <= 12


# --- determinism ---------------------------------------------------------------------------------

def test_same_generator_state_same_spikes_and_the_state_advances():
    x = torch.rand(8, 300, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    before = g1.get_state()
    a, b = encode.poisson(x, 25, rng=g1, method="fast"), encode.poisson(x, 25, rng=g2, method="fast")
    assert torch.equal(a, b)
    assert not torch.equal(g1.get_state(), before)  # the seed was drawn from the generator
    assert torch.equal(g1.get_state(), g2.get_state())
    assert not torch.equal(encode.poisson(x, 25, rng=g1, method="fast"), a)  # the next call: new spikes


def test_global_generator_reproducible_under_manual_seed_and_fresh_otherwise():
    x = torch.full((4, 200), 0.5)
    torch.manual_seed(3)
    a = encode.poisson(x, 30, method="fast")
    b = encode.poisson(x, 30, method="fast")
    torch.manual_seed(3)
    assert torch.equal(encode.poisson(x, 30, method="fast"), a)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("events", [False, True])
def test_identical_with_1_and_2_threads(restore_threads, events):
    x = torch.rand(5, 1000, generator=torch.Generator().manual_seed(1)) ** 2  # 20 work items
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out.append(fast(x, 60, seed=11, max_rate_hz=300.0, return_events=events))
    if events:
        (s1, e1), (s2, e2) = out
        assert torch.equal(s1, s2) and torch.equal(e1.indptr, e2.indptr) and torch.equal(e1.indices, e2.indices)
    else:
        assert torch.equal(*out)


def test_events_do_not_change_the_spikes():
    x = torch.rand(6, 700, generator=torch.Generator().manual_seed(2))
    spikes, _ = fast(x, 20, seed=5, return_events=True)
    assert torch.equal(spikes, fast(x, 20, seed=5))


# --- events --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, num_steps, rate", [
    ((64, 1, 28, 28), 50, 100.0),   # the tutorial's size
    ((3, 1000), 13, 400.0),         # several work items per row
    ((2, 10), 9, 2000.0),           # some p clamped at 1
    ((4, 6), 0, 100.0),             # no steps
    ((0, 5), 4, 100.0),             # no images
    ((3, 0), 4, 100.0),             # no pixels
    ((5, 3), 7, 0.0),               # no spikes at all
])
def test_events_equal_from_dense(shape, num_steps, rate):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    spikes, ev = fast(x, num_steps, seed=4, max_rate_hz=rate, return_events=True)
    B, N = shape[0], math.prod(shape[1:])
    if spikes.numel():
        ref = from_dense(spikes)
    else:  # (from_dense cannot reshape an empty [T, B, 0])
        ref = SpikeEvents(spikes, torch.zeros(num_steps * B + 1, dtype=torch.int64),
                          torch.zeros(0, dtype=torch.int32), None)
    assert spikes.shape == (num_steps, B, N) and spikes.dtype == torch.bool
    assert ev.dense is spikes and ev.values is None
    assert ev.indptr.dtype == torch.int64 and ev.indices.dtype == torch.int32
    assert ev.rows == num_steps * B
    assert torch.equal(ev.indptr, ref.indptr) and torch.equal(ev.indices, ref.indices)


def test_events_of_the_tutorial_method():
    x = torch.rand(4, 50, generator=torch.Generator().manual_seed(0))
    spikes, ev = encode.poisson(x, 10, rng=torch.Generator().manual_seed(1), return_events=True)
    assert torch.equal(spikes, encode.poisson(x, 10, rng=torch.Generator().manual_seed(1)))
    ref = from_dense(spikes)
    assert torch.equal(ev.indptr, ref.indptr) and torch.equal(ev.indices, ref.indices)


# --- inputs --------------------------------------------------------------------------------------

def test_default_is_the_tutorial_draw():
    x = torch.rand(3, 40, generator=torch.Generator().manual_seed(0))
    a = encode.poisson(x, 10, rng=torch.Generator().manual_seed(2))
    b = encode.poisson(x, 10, rng=torch.Generator().manual_seed(2), method="tutorial")
    rand = torch.rand((10, 3, 40), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and torch.equal(a, rand < torch.clamp(x * 100.0 * 1e-3, 0, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8])
def test_dtypes_and_layouts(dtype):
    """Every input dtype and a non-contiguous view give the spikes of the same values in fp32/fp64."""
    base = torch.rand(4, 28, 28, generator=torch.Generator().manual_seed(0))
    x = (base * 255).to(dtype) if dtype == torch.uint8 else base.to(dtype)
    rate = 100.0 / 255 if dtype == torch.uint8 else 100.0
    want_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    ref = fast(x.to(want_dtype), 12, seed=3, max_rate_hz=rate)
    assert torch.equal(fast(x, 12, seed=3, max_rate_hz=rate), ref)
    nc = x.permute(0, 2, 1).contiguous().permute(0, 2, 1)  # same values, other strides
    assert not nc.is_contiguous()
    assert torch.equal(fast(nc, 12, seed=3, max_rate_hz=rate), ref)


def test_validation():
    x = torch.rand(2, 4)
    for method in ("tutorial", "fast"):
        with pytest.raises(ValueError, match="num_steps"):
            encode.poisson(x, -1, method=method)
        with pytest.raises(TypeError, match="num_steps"):
            encode.poisson(x, 2.0, method=method)
        with pytest.raises(ValueError, match="max_rate_hz"):
            encode.poisson(x, 3, max_rate_hz=-1.0, method=method)
        with pytest.raises(ValueError, match="max_rate_hz"):
            encode.poisson(x, 3, max_rate_hz=float("nan"), method=method)
        with pytest.raises(TypeError, match="max_rate_hz"):
            encode.poisson(x, 3, max_rate_hz="100", method=method)
        with pytest.raises(ValueError, match="dt"):
            encode.poisson(x, 3, dt=-1e-3, method=method)
        with pytest.raises(ValueError, match="dt"):
            encode.poisson(x, 3, dt=float("inf"), method=method)
        for bad in (float("nan"), float("inf"), float("-inf")):
            y = x.clone()
            y[1, 2] = bad
            with pytest.raises(ValueError, match="non-finite"):
                encode.poisson(y, 3, method=method)
        with pytest.raises(TypeError, match="images"):
            encode.poisson([[0.1]], 3, method=method)
        with pytest.raises(TypeError, match="images"):
            encode.poisson(np.zeros((2, 3)), 3, method=method)
        with pytest.raises(ValueError, match="batch"):
            encode.poisson(torch.rand(4), 3, method=method)
        with pytest.raises(TypeError, match="rng"):
            encode.poisson(x, 3, rng=0, method=method)
        with pytest.raises(TypeError, match="rng"):
            encode.poisson(x, 3, rng=np.random.default_rng(0), method=method)
    with pytest.raises(ValueError, match="method"):
        encode.poisson(x, 3, method="Fast")
    with pytest.raises(ValueError, match="method"):
        encode.poisson(x, 3, method=None)


def test_zero_rate_or_dt_is_allowed():
    x = torch.rand(2, 4)
    assert not encode.poisson(x, 5, max_rate_hz=0.0, method="fast").any()
    assert not encode.poisson(x, 5, dt=0.0, method="fast").any()


def test_compiled_step_calls_the_custom_op():
    """torch.compile(fullgraph=True) traces the call (the custom op with its fake implementation,
    events of data-dependent length included) and gives eager's spikes for the same seed."""
    x = torch.rand(4, 300, generator=torch.Generator().manual_seed(0))

    def step(x):
        spikes, ev = encode.poisson(x, 10, method="fast", return_events=True)
        return spikes.float().sum(), spikes, ev.indptr, ev.indices

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    torch.manual_seed(1)
    got = compiled(x)
    torch.manual_seed(1)
    want = step(x)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@needs_cuda
def test_cuda_falls_back_to_the_vectorised_draw():
    x = torch.rand(4, 300, device="cuda")
    a = encode.poisson(x, 10, rng=torch.Generator("cuda").manual_seed(0), method="fast")
    b = encode.poisson(x, 10, rng=torch.Generator("cuda").manual_seed(0))
    assert a.device.type == "cuda" and torch.equal(a, b)


def test_public_names():
    assert fastlif.encode.poisson is encode.poisson

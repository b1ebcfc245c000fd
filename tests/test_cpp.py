"""The fused C++ CPU kernels against the reference loop: every option, awkward shapes."""
import pytest
import torch

import fastlif
from fastlif.testing import assert_grads_close, layout, make_case, run
from lif_cases import SURROGATES, option_grid
from conftest import needs_cpp, sigmoid_not_vectorised

pytestmark = needs_cpp


def compare(shape, reset, delay, sg_name, param_layout, with_mem0=True, dtype=torch.float32,
            seed=0, x=None, grad_tol=1e-5, case=None):
    case = case or make_case(shape[0], shape[1:], per_neuron=layout(param_layout), mem0=with_mem0,
                             seed=seed)
    opts = dict(dtype=dtype, x=x, reset_mechanism=reset, reset_delay=delay,
                surrogate=SURROGATES[sg_name])
    fast = run(case, "cpp", **opts)
    ref = run(case, "reference", **opts)
    assert torch.equal(fast.spk, ref.spk), "spikes differ"
    assert torch.equal(fast.mem, ref.mem), f"membrane differs (max {(fast.mem - ref.mem).abs().max():.3g})"
    assert fast.spk.dtype == dtype and fast.mem.shape == ref.mem.shape
    assert_grads_close(fast.grads, ref.grads, grad_tol, floor=0.0, param_floor="sum")
    return fast.spk


@pytest.mark.parametrize("reset,delay,sg_name,layout_name", option_grid())
def test_every_option_fp32(reset, delay, sg_name, layout_name):
    spk = compare((17, 3, 37), reset, delay, sg_name, layout_name)
    assert 0 < spk.count_nonzero() < spk.numel(), "inputs should make some, not all, neurons spike"


@pytest.mark.parametrize("reset,delay,sg_name,layout_name", option_grid()[::5])
def test_every_option_fp64(reset, delay, sg_name, layout_name):
    compare((9, 2, 21), reset, delay, sg_name, layout_name, dtype=torch.float64, grad_tol=1e-10)


@pytest.mark.parametrize("shape", [(1, 4, 5), (63, 2, 7), (5, 300), (4, 2, 513), (6, 3, 2, 5),
                                   (3, 2, 3, 4, 5), (2, 1, 1)])
@pytest.mark.parametrize("layout_name", ["scalar", "per_neuron"])
@pytest.mark.parametrize("delay", [True, False])
def test_shapes(shape, layout_name, delay):
    """T=1 and T=63; neuron counts that are no multiple of the kernel's 256-neuron chunk;
    1-D to 4-D neuron shapes."""
    compare(shape, "subtract", delay, "atan", layout_name)


@pytest.mark.parametrize("with_mem0", [True, False])
def test_without_initial_membrane(with_mem0):
    compare((8, 4, 9), "zero", False, "fast_sigmoid", "per_neuron", with_mem0=with_mem0)


def test_non_contiguous_input():
    big = make_case(12, (5, 40))
    x = big.x[::2, :, 3:30:2]  # strided in time and neurons
    assert not x.is_contiguous()
    case = make_case(*x.shape[:1], x.shape[1:], seed=1)
    compare(tuple(x.shape), "subtract", True, "atan", "per_neuron", x=x, case=case)
    compare(tuple(x.shape), "zero", False, "sigmoid", "scalar", x=x.transpose(1, 2).transpose(1, 2),
            case=make_case(*x.shape[:1], x.shape[1:], per_neuron=layout("scalar"), seed=2))


def test_only_some_parameters_learnable():
    case = make_case(6, (3, 8), per_neuron=(False, False, False))
    fast = run(case, "cpp", learn=("beta",))
    ref = run(case, "reference", learn=("beta",))
    torch.testing.assert_close(fast.grads["x"], ref.grads["x"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.grads["beta"], ref.grads["beta"], rtol=1e-5, atol=1e-5)
    assert set(fast.grads) == {"x", "mem0", "beta"}


def test_spikes_only_or_membrane_only_gradient():
    """An unused output gets no upstream gradient: backward must treat it as zeros."""
    case = make_case(7, (2, 6), per_neuron=(False, False, False))
    for upstream in (("spk",), ("mem",)):
        fast = run(case, "cpp", upstream=upstream)
        ref = run(case, "reference", upstream=upstream)
        torch.testing.assert_close(fast.grads["x"], ref.grads["x"], rtol=1e-5, atol=1e-6)


def test_threshold_on_the_spike_edge():
    """Values that land exactly on the threshold: strict z > 0 fires nothing there."""
    x = torch.tensor([[1.0, 0.5, 0.25]] * 4).unsqueeze(1)  # [T=4, B=1, 3]
    case = make_case(4, (1, 3), per_neuron=(False, False, False))
    case.params = {"beta": torch.tensor(0.85), "threshold": torch.tensor(1.0), "graded": torch.tensor(1.0)}
    compare(tuple(x.shape), "subtract", True, "atan", "scalar", x=x, case=case)
    assert fastlif.lif_sequence(torch.ones(1, 1), 1.0)[0].item() == 0  # mem == threshold: no spike


def sigmoid_inputs():
    """2^22 float32 bit patterns spread over [-120, 120], a normal sample, the limits; a multiple
    of 32768 long (see torch_sigmoid_by_chunks)."""
    import numpy as np
    hi = np.float32(120.0).view(np.int32)
    neg = np.linspace(np.float32(-0.0).view(np.int32), np.float32(-120.0).view(np.int32), 2 ** 21).astype(np.int32)
    pos = np.linspace(0, hi, 2 ** 21).astype(np.int32)
    special = np.array([88.72283, 88.72284, 100.0, 100.5, 103.9, 104.1, 1e30, np.inf, -np.inf, np.nan, 0.0, -0.0,
                        -1e30, -88.7, -104.1], dtype=np.float32)
    normal = (np.random.default_rng(3).standard_normal(2 ** 20 - special.size) * 8).astype(np.float32)
    return np.concatenate([neg.view(np.float32), pos.view(np.float32), normal, special])


def torch_sigmoid_by_chunks(x):
    """torch.sigmoid in 32768-float pieces: under torch's parallel grain, and a multiple of its
    vector loop's step, so no element takes its scalar tail (std::exp, other bits)."""
    import numpy as np
    t = torch.from_numpy(x)
    return np.concatenate([torch.sigmoid(piece).numpy() for piece in t.split(32768)])


def sj_sigmoid_against_torch():
    """The inputs, the kernels' sj_sigmoid of them and torch.sigmoid's."""
    import numpy as np
    x = sigmoid_inputs()
    got = np.empty_like(x)
    fastlif.backends.cpp_module()._sj_sigmoid(x.ctypes.data, got.ctypes.data, x.size)
    return x, got, torch_sigmoid_by_chunks(x)


def test_sj_sigmoid_within_four_ulp_of_torch_sigmoid():
    """SpikingJelly's sigmoid in the step loops (csrc/common.h: sj_sigmoid on exp_sleef) against
    torch.sigmoid, which SpikingJelly's Sigmoid surrogate calls: within 4 ulp on any build (0 with
    FMA, below; without, Sleef's steps rounded twice: 3 ulp at most over these inputs)."""
    import numpy as np
    x, got, want = sj_sigmoid_against_torch()
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    ulps = np.abs(got[ok].view(np.int32).astype(np.int64) - want[ok].view(np.int32).astype(np.int64))
    assert ulps.max() <= 4
    assert got[x == np.inf][0] == 1.0 and got[x == -np.inf][0] == 0.0


def test_sj_sigmoid_bit_identical_to_torch_sigmoid():
    """Where torch's CPU kernels run Sleef's vector exp and the build has FMA, exp_sleef follows
    Sleef's expf_u10 step for step and sj_sigmoid torch's sigmoid: the same bits everywhere."""
    import numpy as np
    reason = sigmoid_not_vectorised()
    if reason:
        pytest.skip(f"no bit-identity expected: {reason}")
    x, got, want = sj_sigmoid_against_torch()
    same = (got.view(np.int32) == want.view(np.int32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{int((~same).sum())} differ, e.g. at {x[~same][:5]}"


@needs_cpp
def test_step_loops_exp_is_correctly_rounded_to_one_ulp():
    """The kernels' own exp (csrc/common.h, exp_lanes: evaluated in double so that the sigmoid
    surrogates' loops vectorise) against the correctly rounded exp (NumPy's fp64 exp rounded to
    fp32), over 2^22 float32 bit patterns spread across [-120, 100]: at most one ulp apart, and
    equal for all but a few in ten thousand; inf above 89, 0 below -110, NaN stays NaN."""
    import numpy as np
    lo, hi = np.float32(-120.0).view(np.int32), np.float32(100.0).view(np.int32)
    neg = np.linspace(np.float32(-0.0).view(np.int32), lo, 2 ** 21).astype(np.int32)
    pos = np.linspace(0, hi, 2 ** 21).astype(np.int32)
    x = np.concatenate([neg.view(np.float32), pos.view(np.float32),
                        np.array([88.72283, 88.72284, 89.0, 89.5, 1e30, np.inf, -103.97, -104.0, -110.0, -110.5,
                                  -1e30, -np.inf, np.nan, 0.0, -0.0], dtype=np.float32)])
    got = np.empty_like(x)
    fastlif.backends.cpp_module()._exp_lanes(x.ctypes.data, got.ctypes.data, x.size)
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(np.float32)
    finite = np.isfinite(want) & np.isfinite(got)
    ulps = np.abs(got[finite].view(np.int32).astype(np.int64) - want[finite].view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    assert (ulps > 0).mean() < 1e-3
    assert np.array_equal(np.isinf(got), np.isinf(want)) and np.array_equal(np.isnan(got), np.isnan(x))
    at = {float(v): float(g) for v, g in zip(x[-15:], got[-15:]) if not np.isnan(v)}
    assert at[89.0] == np.inf and at[np.inf] == np.inf and at[-np.inf] == 0.0
    assert at[-110.5] == 0.0 and at[0.0] == 1.0 and at[float(np.float32(88.72283))] < np.inf
    assert 0 < at[float(np.float32(-103.97))] < np.finfo(np.float32).tiny  # a subnormal, as exp gives

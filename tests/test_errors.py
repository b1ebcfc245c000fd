"""Bad input gets an exception that names the problem (issue 2's list; issue 6 adds more)."""
import pytest
import torch

import fastlif
from fastlif.backends import BackendUnavailable


def test_sequence_needs_a_time_dimension():
    with pytest.raises(ValueError, match=r"x_seq must be \[T, \.\.\.neurons\]"):
        fastlif.lif_sequence(torch.randn(5), 0.9)


def test_initial_membrane_shape():
    with pytest.raises(ValueError, match=r"mem \(the initial membrane\) must have shape \(3, 4\)"):
        fastlif.lif_sequence(torch.randn(2, 3, 4), 0.9, mem=torch.zeros(4, 3))


@pytest.mark.parametrize("name,kw", [("beta", {"beta": torch.rand(5)}),
                                     ("threshold", {"threshold": torch.rand(3)}),
                                     ("graded_spikes_factor", {"graded_spikes_factor": torch.rand(2, 4)})])
def test_per_neuron_parameter_length(name, kw):
    args = dict(beta=0.9, threshold=1.0)
    args.update(kw)
    with pytest.raises(ValueError, match=f"{name} must be a scalar or hold one value per neuron "
                                         r"along the last dimension \(4\)"):
        fastlif.lif_sequence(torch.randn(2, 3, 4), args.pop("beta"), args.pop("threshold"), **args)


def test_unknown_reset_mechanism():
    with pytest.raises(ValueError, match="unknown reset_mechanism 'subtrakt'"):
        fastlif.lif_sequence(torch.randn(2, 3), 0.9, reset_mechanism="subtrakt")
    with pytest.raises(ValueError, match="unknown reset_mechanism"):
        fastlif.Leaky(0.9, reset_mechanism="hard")


def test_unknown_surrogate():
    with pytest.raises(TypeError, match="spike_grad must be"):
        fastlif.Leaky(0.9, spike_grad="atan")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        fastlif.lif_sequence(torch.randn(2, 3), 0.9, backend="cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        fastlif.Leaky(0.9, backend="fast")


def test_unfused_options_say_so(monkeypatch):
    """snnTorch's inhibition and state_quant work, on the reference loop, and say so once."""
    from fastlif.ops import common
    monkeypatch.setattr(common, "_warned", set())  # once per process: another test may have heard it
    with pytest.warns(UserWarning, match="inhibition is not fused"):
        fastlif.Leaky(0.9, inhibition=True)
    with pytest.raises(ValueError, match="step_mode"):
        fastlif.Leaky(0.9, step_mode="both")


def test_explicit_unavailable_backend_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        fastlif.lif_sequence(torch.randn(2, 3), 0.9, backend="triton")


def test_auto_falls_back_with_one_warning(monkeypatch):
    from fastlif import backends
    monkeypatch.setattr(backends, "_cpp_status", lambda: (None, "pretend it is not built"))
    monkeypatch.setattr(backends, "_warned", set())
    x = torch.randn(4, 2, 3)
    with pytest.warns(UserWarning, match="falling back to the reference backend.*pretend"):
        spk, mem = fastlif.lif_sequence(x, 0.9)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlif.lif_sequence(x, 0.9)  # the second call is silent
    with pytest.raises(BackendUnavailable, match="pip install --no-build-isolation -e|pretend"):
        fastlif.lif_sequence(x, 0.9, backend="cpp")
    ref = fastlif.lif_sequence(x, 0.9, backend="reference")
    assert torch.equal(spk, ref[0]) and torch.equal(mem, ref[1])


def test_binding_and_launcher_checks():
    """The C++ binding takes data pointers (the launcher in fastlif/ops/lif.py checks tensors and
    allocates every output); what it is given besides those, it checks, whoever calls it."""
    ext = pytest.importorskip("fastlif._C", reason="the C++ extension is not built")
    from fastlif.ops.lif import cpp_fwd
    x = torch.zeros(2, 3, 4)
    out = torch.zeros_like(x)
    p = torch.ones(1)

    def call(**kw):
        args = dict(dtype=0, T=2, R=3, L=4, x=x.data_ptr(), mem0=0, params=[(p.data_ptr(), 1, 0.0)] * 3,
                    spk=out.data_ptr(), mem=out.data_ptr(), u_saved=0, r_saved=0, reset_mode=0, immediate=False,
                    num_threads=1)
        args.update(kw)
        return ext.lif_fwd(**args)

    call()
    with pytest.raises(ValueError, match="dtype: unexpected value 5"):
        call(dtype=5)
    with pytest.raises(ValueError, match="beta: expected 1 or 4 values, got 3"):
        call(params=[(p.data_ptr(), 3, 0.0)] + [(p.data_ptr(), 1, 0.0)] * 2)
    with pytest.raises(ValueError, match="lif: expected 3 parameters, got 2"):
        call(params=[(p.data_ptr(), 1, 0.0)] * 2)
    with pytest.raises(ValueError, match="reset_mode: unexpected value 7"):
        call(reset_mode=7)
    with pytest.raises(ValueError, match="an immediate reset needs u_saved and r_saved"):
        call(immediate=True)
    with pytest.raises(ValueError, match="x, spk and mem are required"):
        call(x=0)
    with pytest.raises(ValueError, match="bad grid"):
        call(L=0)
    with pytest.raises(TypeError, match="computes in float32 or float64, got torch.int32"):
        cpp_fwd(x.int(), None, 0.9, 1.0, 1.0, steps=2, reset_mode=0, reset_delay=True,
                low_memory=False, mem_fp32=False)

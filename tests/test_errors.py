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


def test_unsupported_options_say_so():
    with pytest.raises(NotImplementedError, match="inhibition"):
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


def test_binding_layer_checks():
    """The C++ binding checks what it is given, whoever calls it."""
    ext = pytest.importorskip("fastlif._C", reason="the C++ extension is not built")
    import numpy as np
    x = np.zeros((2, 3, 4), np.float32)
    out = np.zeros_like(x)
    p = np.ones(1, np.float32)
    with pytest.raises(TypeError, match="x: expected dtype float32"):
        ext.lif_fwd(x.astype(np.float16), None, p, p, p, out, out.copy(), None, None, 0, True, 1)
    with pytest.raises(ValueError, match="spk: shape \\[2, 3, 5\\] does not match"):
        ext.lif_fwd(x, None, p, p, p, np.zeros((2, 3, 5), np.float32), out, None, None, 0, True, 1)
    with pytest.raises(ValueError, match="must be C-contiguous"):
        ext.lif_fwd(np.zeros((2, 4, 3), np.float32).transpose(0, 2, 1), None, p, p, p, out,
                    out.copy(), None, None, 0, True, 1)
    with pytest.raises(ValueError, match="beta: expected 1 value or one per neuron"):
        ext.lif_fwd(x, None, np.ones(3, np.float32), p, p, out, out.copy(), None, None, 0, True, 1)
    with pytest.raises(ValueError, match="reset_mode must be"):
        ext.lif_fwd(x, None, p, p, p, out, out.copy(), None, None, 7, True, 1)
    with pytest.raises(ValueError, match="u_saved and r_saved are required"):
        ext.lif_fwd(x, None, p, p, p, out, out.copy(), None, None, 0, False, 1)

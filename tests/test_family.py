"""Every spec'd neuron family (fastlif/family.py, fastlif/families/) through the one generic
path, built from its spec: the C++ scan and the Triton scan (interpreter, in a child process)
against the family's reference step, every option, random upstream gradients on every output,
fp64 gradcheck, opcheck of the custom-op pair, single steps against the sequence, awkward
shapes and bad arguments. A family added to fastlif/families/ is tested here with no new code.

Oracles: fp32 spikes and states equal the fp32 reference bit for bit; gradients are compared
with the reference run in fp64 on the same inputs, normwise within 1e-5 (parameter gradients:
above the fp32 summation floor, as tests/test_triton.py explains).
"""
import importlib
import itertools
import os
import pkgutil
from pathlib import Path

import pytest
import torch

import fastlif.families
from fastlif import surrogate as S
from fastlif.family import FAMILIES, run_family
from fastlif.testing import compare_family, family_case, normwise, sum_floor
from conftest import needs_cpp, run_child_suite

for _module in pkgutil.iter_modules(fastlif.families.__path__):
    importlib.import_module(f"fastlif.families.{_module.name}")

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
BACKEND = "triton" if INTERPRET else "cpp"
NAMES = sorted(FAMILIES)
SURROGATES = {"atan": S.atan(), "fast_sigmoid": S.fast_sigmoid(), "sigmoid": S.sigmoid(5),
              "triangular": S.triangular(), "sj_sigmoid": S.sj_sigmoid(), "sj_atan": S.sj_atan()}


def option_sets(spec):
    return [dict(zip(spec.options, values)) for values in itertools.product(*spec.choices)]


def cases(small=False):
    out = []
    for name in NAMES:
        spec = FAMILIES[name]
        for options in option_sets(spec):
            tag = "-".join(f"{k}{v}" for k, v in options.items())
            for sg in (spec.surrogates[:1] if small else spec.surrogates):
                out.append(pytest.param(name, options, sg, id=f"{name}-{tag}-{sg}"))
    return out


def make(spec, T, neurons, dtype=torch.float32, seed=0, scale=1.2):
    return family_case(spec, T, neurons, seed, scale)


def call(spec, backend, x, states, params, options, sg, dtype, single_step=False):
    """The family on ``backend`` in ``dtype``, with fresh leaves; returns outputs and the leaves."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    xl = x.to(dtype).requires_grad_()
    sl = [None if s is None else s.to(compute).requires_grad_() for s in states]
    pl = [p.to(compute).requires_grad_() for p in params]
    outs = run_family(spec, xl, sl, pl, single_step=single_step, options=options, spike_fn=SURROGATES[sg],
                      surrogate=SURROGATES[sg], backend=backend)
    return outs, [xl, *sl, *pl]


def grads_of(outs, leaves, seed=1):
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]
    leaves = [leaf for leaf in leaves if leaf is not None]
    got = torch.autograd.grad(outs, leaves, ups, allow_unused=True)
    return [torch.zeros_like(leaf) if v is None else v for v, leaf in zip(got, leaves)]


needs_backend = needs_cpp if not INTERPRET else pytest.mark.skipif(False, reason="")


@needs_cpp
@pytest.mark.skipif(INTERPRET, reason="runs in the parent process")
def test_every_spec_has_its_registered_cpp_kernels():
    """Each csrc/families/<name>.cpp registers its kernels by name (FASTLIF_FAMILY): the build's
    registry holds exactly the spec'd families, and an unknown name is refused by name."""
    from fastlif import backends
    C = backends.cpp_module()
    assert set(C.families) == set(FAMILIES)
    with pytest.raises(ValueError, match="no C\\+\\+ kernels for the neuron family 'nonesuch'"):
        C.family_fwd("nonesuch", 0, 1, 1, 1, 0, [], [], 0, [], [], 1)


@needs_backend
@pytest.mark.parametrize("name,options,sg", cases(small=INTERPRET))
@pytest.mark.parametrize("neurons", [(3, 7), (2, 2, 5)], ids=["3x7", "2x2x5"])
def test_matches_reference(name, options, sg, neurons):
    """fastlif.testing.compare_family, what `fastlif check` runs: fp32 outputs bit for bit,
    gradients within 1e-5 of the fp64 reference's."""
    problems, _ = compare_family(FAMILIES[name], BACKEND, options, SURROGATES[sg], neurons=neurons)
    assert not problems, f"{name} {options} {sg}: {problems}"


@needs_backend
@pytest.mark.parametrize("name", NAMES)
def test_single_steps_equal_the_sequence(name):
    spec = FAMILIES[name]
    options = option_sets(spec)[0]
    x, states, params = make(spec, 6, (4, 9))
    seq, _ = call(spec, BACKEND, x, states, params, options, spec.surrogates[0], torch.float32)
    carried = [s.float() for s in states]
    for t in range(x.shape[0]):
        outs, _ = call(spec, BACKEND, x[t], carried, params, options, spec.surrogates[0], torch.float32, single_step=True)
        assert torch.equal(outs[0], seq[0][t])
        returned = list(outs[1:])
        carried = ([outs[0].detach()] if spec.spike_state else []) + [o.detach() for o in returned]
        for k, o in enumerate(returned):
            assert torch.equal(o, seq[1 + k][t]), f"{name} step {t} state {k}"


@needs_backend
@pytest.mark.parametrize("name", NAMES)
def test_awkward_shapes(name):
    """T=1, one neuron, a non-contiguous input, fp16 input (computed in fp32), no initial states."""
    spec = FAMILIES[name]
    options = option_sets(spec)[-1]
    for T, neurons in ((1, (3, 5)), (4, (1,)), (5, (2, 3, 1))):
        x, states, params = make(spec, T, neurons)
        outs, _ = call(spec, BACKEND, x, states, params, options, spec.surrogates[0], torch.float32)
        ref, _ = call(spec, "reference", x, states, params, options, spec.surrogates[0], torch.float32)
        assert all(torch.equal(a, b) for a, b in zip(outs, ref)), (name, T, neurons)
    x, states, params = make(spec, 5, (6, 4))
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # same values, non-contiguous
    assert not xt.is_contiguous()
    outs, _ = call(spec, BACKEND, xt, states, params, options, spec.surrogates[0], torch.float32)
    ref, _ = call(spec, "reference", x, states, params, options, spec.surrogates[0], torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref))
    half, _ = call(spec, BACKEND, x, [None] * len(states), params, options, spec.surrogates[0], torch.float16)
    ref, _ = call(spec, "reference", x.half().double(), [None] * len(states), params, options, spec.surrogates[0], torch.float32)
    assert half[0].dtype == torch.float16 and all(o.dtype == torch.float32 for o in half[1:])
    assert torch.equal(half[0], ref[0].half()) and all(torch.equal(a, b) for a, b in zip(half[1:], ref[1:]))


@needs_cpp
@pytest.mark.skipif(INTERPRET, reason="the C++ kernels run in the parent process")
@pytest.mark.parametrize("name,options,sg", cases(small=True))
def test_fixed_parameters_give_the_same_input_gradients(name, options, sg):
    """A backward computes only the parameter gradients a call wants (csrc/static_switch.h,
    grads_switch: each family's GradMasks): with every parameter fixed, and with each one
    learnable alone, x's and the initial states' gradients are the same bits as with every
    parameter learnable, and so is the learnable one's (one value each: the kernels' scalar-
    parameter variants, where the masks apply)."""
    spec = FAMILIES[name]
    x, states, params = make(spec, 7, (3, 5))
    values = [float(p.reshape(-1)[0]) for p in params]

    def grads(learn):
        xl = x.float().requires_grad_()
        sl = [s.float().requires_grad_() for s in states]
        pl = [torch.tensor(v, requires_grad=True) if k in learn else v for k, v in enumerate(values)]
        outs = run_family(spec, xl, sl, pl, single_step=False, options=options, spike_fn=SURROGATES[sg],
                          surrogate=SURROGATES[sg], backend="cpp")
        return grads_of(outs, [xl, *sl, *(p for p in pl if isinstance(p, torch.Tensor))])

    n = 1 + len(states)
    every = grads(range(len(values)))
    for learn in ((), *((k,) for k in range(len(values)))):
        got = grads(learn)
        assert all(torch.equal(a, b) for a, b in zip(got[:n], every[:n])), f"{name} {options} {sg} learn {learn}"
        for k, g in zip(learn, got[n:]):
            assert torch.equal(g, every[n + k]), f"{name} {options} {sg}: {spec.params[k]}'s gradient"


def call_none_states(spec, backend, x, params, options):
    return run_family(spec, x, [None] * len(spec.states), params, single_step=False, options=options,
                      spike_fn=S.atan(), surrogate=S.atan(), backend=backend)


@needs_cpp
@pytest.mark.skipif(INTERPRET, reason="fp64 gradcheck of the C++ kernels runs in the parent process")
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_fp64(name):
    spec = FAMILIES[name]
    x, states, params = make(spec, 4, (2, 3), scale=0.6)
    for options in option_sets(spec):
        # no gradient through the spike: what finite differences see of a Heaviside (away from
        # its jump); every other path (the states, the parameters) is checked exactly
        def fn(x, *rest):
            n = len(spec.states)
            return run_family(spec, x, rest[:n], rest[n:], single_step=False, options=options,
                              spike_fn=S.no_grad(), surrogate=S.no_grad(), backend="cpp")
        inputs = [x.clone().requires_grad_(), *(s.clone().requires_grad_() for s in states),
                  *(p.clone().requires_grad_() for p in params)]
        torch.autograd.gradcheck(fn, inputs, atol=1e-7, rtol=1e-6)


@needs_cpp
@pytest.mark.skipif(INTERPRET, reason="runs in the parent process")
@pytest.mark.parametrize("name", NAMES)
def test_opcheck(name):
    spec = FAMILIES[name]
    x, states, params = make(spec, 3, (2, 5))
    options = list(option_sets(spec)[0].values())
    xs, ss, ps = x.float(), [s.float() for s in states], [p.float().reshape(-1) for p in params]
    torch.library.opcheck(torch.ops.fastlif.family_fwd.default, (name, xs, ss, ps, 3, options, "cpp"))
    outs = torch.ops.fastlif.family_fwd(name, xs, ss, ps, 3, options, "cpp")
    seqs = [outs[0], *outs[1:]] if spec.spike_state else list(outs[1:])
    grads = [None] + [torch.randn_like(s) for s in seqs[1:]] if spec.spike_state else [torch.randn_like(s) for s in seqs]
    torch.library.opcheck(torch.ops.fastlif.family_bwd.default,
                          (name, torch.randn_like(xs), grads, xs, ss, seqs, ps, 3, options,
                           SURROGATES[spec.surrogates[0]].kind, 2.0, torch.float32, "cpp"))


@needs_cpp
@pytest.mark.skipif(INTERPRET, reason="runs in the parent process")
@pytest.mark.parametrize("name", NAMES)
def test_compiles_without_graph_breaks(name):
    spec = FAMILIES[name]
    x, states, params = make(spec, 5, (3, 4))
    options = option_sets(spec)[0]

    sg = SURROGATES[spec.surrogates[0]]

    def fn(x, *rest):
        n = len(spec.states)
        outs = run_family(spec, x, rest[:n], rest[n:], single_step=False, options=options, spike_fn=sg,
                          surrogate=sg, backend="cpp")
        return sum(o.sum() for o in outs)

    leaves = [t.float().requires_grad_() for t in (x, *states, *params)]
    eager = torch.autograd.grad(fn(*leaves), leaves)
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    leaves2 = [t.detach().clone().requires_grad_() for t in leaves]
    got = torch.autograd.grad(compiled(*leaves2), leaves2)
    for a, b in zip(got, eager):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)


@needs_cpp
@pytest.mark.skipif(INTERPRET, reason="runs in the parent process")
def test_bad_arguments_name_the_problem():
    spec = FAMILIES["lapicque"]
    x, states, params = make(spec, 3, (2, 5))
    x, states, params = x.float(), [s.float() for s in states], [p.float() for p in params]
    kw = dict(single_step=False, spike_fn=S.atan(), surrogate=S.atan(), backend="cpp")
    with pytest.raises(ValueError, match="mem"):
        run_family(spec, x, [states[0][:1]], params, options=dict(reset_mode=0), **kw)
    with pytest.raises(ValueError, match="threshold"):
        run_family(spec, x, states, [*params[:4], torch.ones(3), params[5]], options=dict(reset_mode=0), **kw)
    with pytest.raises(ValueError, match="reset_mode=7"):
        run_family(spec, x, states, params, options=dict(reset_mode=7), **kw)
    import fastlif._C as C
    with pytest.raises(ValueError, match="no C\\+\\+ kernels for the neuron family 'nope'"):
        C.family_fwd("nope", 0, 1, 1, 1, x.data_ptr(), [0], [], x.data_ptr(), [x.data_ptr()], [0], 1)
    with pytest.raises(ValueError, match="expected 6 parameters"):
        C.family_fwd("lapicque", 0, 1, 1, 1, x.data_ptr(), [0], [], x.data_ptr(), [x.data_ptr()], [0], 1)


@pytest.mark.skipif(INTERPRET, reason="this is the child run")
def test_triton_interpreter_suite():
    """The same checks on the Triton scan, through Triton's interpreter, in a child process (the
    interpreter is chosen when a kernel is defined; see tests/test_triton.py)."""
    pytest.importorskip("triton")
    run_child_suite(Path(__file__), {"TRITON_INTERPRET": "1"}, "family interpreter suite", "-k",
                    "matches_reference or single_steps or awkward")


@needs_cpp
@pytest.mark.skipif(INTERPRET, reason="runs in the parent process")
def test_compare_family_finds_a_wrong_kernel(monkeypatch):
    """The comparison `fastlif check` and the tests rely on reports a kernel that is off."""
    import fastlif.family as family_mod
    real = family_mod._launchers

    def broken(spec, backend):
        fwd, bwd = real(spec, backend)
        if backend == "reference":
            return fwd, bwd

        def bad_fwd(*args, **kwargs):
            spk, states = fwd(*args, **kwargs)
            return spk, [states[0] * 1.0000001, *states[1:]]
        return bad_fwd, bwd
    monkeypatch.setattr(family_mod, "_launchers", broken)
    from fastlif.ops import common
    monkeypatch.setattr(common, "CPP_AUTOGRAD", False)  # the launchers, not the C++ Function's
    spec = FAMILIES["synaptic"]
    problems, _ = compare_family(spec, "cpp", option_sets(spec)[0], S.atan())
    assert any("output 1 differs" in p for p in problems), problems

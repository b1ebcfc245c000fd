"""Ahead-of-time compile checks of the Triton kernels for an H100/H200 (sm_90), no GPU needed
(Triton ships ptxas): every kernel variant the launchers can build is compiled as they would
build it, and its PTX must have

* only correctly rounded fp32 divisions (``div.rn.f32``; never ``div.full``/``div.approx``,
  which Triton 3.6 emits for ``tl.fdiv(..., ieee_rounding=True)``),
* no fused multiply-add (``fma.rn.f32``, ``fma.rn.f64``): ``enable_fp_fusion=False`` reached
  the compiler, so forward values round like PyTorch eager's (the one exception: libdevice's
  ``exp``, made of FMAs, in the sigmoid surrogate's backward),
* no barrier (``bar.sync``) inside the time loop, for every config autotuning can pick
  (kernels that mix element widths get one from a shared-memory layout conversion when a
  thread holds a different number of elements in two tensors).

The neuron count is taken divisible by 16, as Triton specialises it at run time for such
counts (other counts lose vector accesses: the README's GPU section says so).

This runs under the Triton of this process, and ``test_under_oldest_triton`` reruns it in a
child process under the oldest supported Triton (3.6, which ``make test`` installs beside the
venv into ``.triton-3.6``; ``FASTLIF_OLDEST_TRITON`` names another folder). The default set
crosses every flag that changes arithmetic with every dtype layout (at the fixed config), and
every autotune config with ten mixed-width layouts; ``FASTLIF_PTX_FULL=1`` crosses everything
(about a thousand compiles).
"""
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_child_suite

ROOT = Path(__file__).resolve().parents[1]
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
FULL = os.environ.get("FASTLIF_PTX_FULL", "0") not in ("", "0")
OLDEST = Path(os.environ.get("FASTLIF_OLDEST_TRITON", ROOT / ".triton-3.6"))

pytestmark = [pytest.mark.skipif(INTERPRET, reason="compiles the real kernels; not under TRITON_INTERPRET"),
              pytest.mark.xdist_group("ptx")]

DTYPES = {"fp32": "fp32", "fp64": "fp64", "fp16": "fp16", "bf16": "bf16"}
# (x dtype, mem dtype): a mem in the compute dtype is what the neuron modules ask for
DTYPE_PAIRS = [("fp32", "fp32"), ("fp64", "fp64"), ("fp16", "fp16"), ("fp16", "fp32"),
               ("bf16", "bf16"), ("bf16", "fp32")]
RESETS = [(0, False), (0, True), (1, False), (1, True), (2, False)]  # (code, immediate)
SURROGATE_KINDS = range(6)


def compute(xdt):
    return "fp64" if xdt == "fp64" else "fp32"


def lif_state(xdt, mdt, immediate, low_memory):
    """saved_layout's decision, in Triton type names: (state dtype or None, flags?)."""
    if immediate:
        return ("bf16" if low_memory else compute(xdt)), True
    if low_memory:
        return "bf16", False
    return (None if mdt == compute(xdt) else compute(xdt)), False


def lif_variants():
    """(name, kernel, pointer types, constexprs) of every LIF variant in the checked set."""
    from fastlif.kernels import lif as K
    layouts = [(xdt, mdt, reset, imm, lm) for (xdt, mdt), (reset, imm), lm
               in itertools.product(DTYPE_PAIRS, RESETS, (False, True))
               if not (lm and xdt == "fp64")]
    loads = dict(BETA_PN=True, THR_PN=False, G_PN=True, HAS_MEM0=True)
    for xdt, mdt, reset, imm, lm in layouts:
        state, flags = lif_state(xdt, mdt, imm, lm)
        types = {"x_ptr": xdt, "spk_ptr": xdt, "mem_ptr": mdt, "state_ptr": state or compute(xdt),
                 "flags_ptr": "u8", "mem0_ptr": compute(xdt)}
        yield (f"fwd-{xdt}-{mdt}-r{reset}{'i' if imm else 'd'}{'-lm' if lm else ''}", K.LIF_FWD, types,
               dict(loads, RESET=reset, IMMEDIATE=imm, X_CONTIG=True, SAVE_STATE=state is not None,
                    STATE_Z=state == "bf16" and not imm))
        saved = state or mdt
        bwd_types = {"gspk_ptr": xdt, "gmem_ptr": mdt, "saved_ptr": saved, "flags_ptr": "u8",
                     "gx_ptr": xdt, "mem0_ptr": compute(xdt), "gmem0_ptr": compute(xdt)}
        kinds = SURROGATE_KINDS if (FULL or (xdt, mdt) in (("fp32", "fp32"), ("fp64", "fp64"))) else (0,)
        for sg in kinds:
            yield (f"bwd-{xdt}-{mdt}-r{reset}{'i' if imm else 'd'}-sg{sg}{'-lm' if lm else ''}", K.LIF_BWD,
                   bwd_types, dict(loads, RESET=reset, IMMEDIATE=imm, SG=sg, HAS_GSPK=True,
                                   HAS_GMEM=True, SAVED_Z=saved == "bf16" and lm))


# The mixed-width layouts that are compiled with every autotune config (the others with the
# fixed config): half input with an fp32 state, bf16 state with uint8 flags, fp64.
EVERY_CONFIG = {"fwd-bf16-fp32-r0d", "fwd-fp16-fp16-r1i-lm", "fwd-fp32-fp32-r0i", "fwd-bf16-bf16-r0i-lm",
                "bwd-bf16-fp32-r0d-sg0", "bwd-fp16-fp16-r1i-sg0-lm", "bwd-fp32-fp32-r0i-sg0",
                "bwd-bf16-bf16-r0i-sg0-lm", "fwd-fp64-fp64-r1i", "bwd-fp64-fp64-r1i-sg2",
                "scanfwd-synaptic-bf16-o01", "scanbwd-synaptic-bf16-o11-sg0", "scanbwd-synaptic-fp32-o01-sg0",
                "rlkfwd-bf16-r0i", "rlkbwd-fp16-r1i-sg0", "rlkbwd-fp32-r0i-sg1"}


def rleaky_variants():
    """RLeaky with one-to-one feedback: the previous spikes rebuilt from the saved membrane."""
    from fastlif.kernels import rleaky as K
    loads = dict(BETA_PN=True, V_PN=True, THR_PN=False, G_PN=False, HAS_SPK0=True, HAS_MEM0=True)
    for xdt, (reset, imm) in itertools.product(("fp32", "fp64", "fp16", "bf16"), RESETS):
        cdt = compute(xdt)
        tag = f"{xdt}-r{reset}{'i' if imm else 'd'}"
        types = {"x_ptr": xdt, "spk_ptr": xdt, "mem_ptr": cdt, "state_ptr": cdt, "flags_ptr": "u8"}
        yield f"rlkfwd-{tag}", K.RLEAKY_FWD, types, dict(loads, RESET=reset, IMMEDIATE=imm)
        bwd_types = {"gspk_ptr": xdt, "gmem_ptr": cdt, "saved_ptr": cdt, "flags_ptr": "u8", "gx_ptr": xdt}
        for sg in SURROGATE_KINDS if (FULL or xdt in ("fp32", "fp64")) else (0,):
            yield (f"rlkbwd-{tag}-sg{sg}", K.RLEAKY_BWD, bwd_types,
                   dict(loads, RESET=reset, IMMEDIATE=imm, SG=sg, HAS_GSPK=True, HAS_GMEM=True))


def scan_variants():
    """Every spec'd family on the Triton scan (kernels/scan.py): its steps as compiled arguments,
    each dtype layout, each option set with atan (all surrogates in fp32)."""
    import importlib
    import pkgutil
    import fastlif.families
    from fastlif.family import FAMILIES
    from fastlif.kernels import scan as K
    for module in pkgutil.iter_modules(fastlif.families.__path__):
        importlib.import_module(f"fastlif.families.{module.name}")
    for name in FAMILIES:  # every family has its Triton step (test_family checks they run)
        importlib.import_module(f"fastlif.kernels.{name}")
    for name, (fwd_step, bwd_step) in sorted(K._STEPS.items()):
        spec = FAMILIES[name]
        for xdt, values in itertools.product(("fp32", "fp64", "bf16"), itertools.product(*spec.choices)):
            cdt = compute(xdt)
            opts = dict(zip(("O0", "O1", "O2", "O3"), (*values, 0, 0, 0, 0)))
            pn = {f"PN{k}": k % 2 == 0 for k in range(K.MAX_PARAMS)}
            const = dict(opts, **pn, NS=len(spec.states), NP=len(spec.params))
            tag = f"{name}-{xdt}-o{''.join(map(str, values))}"
            types = {"x_ptr": xdt, "spk_ptr": xdt}
            yield f"scanfwd-{tag}", K._FWD, types, dict(const, STEP=fwd_step)
            bwd_types = {"gspk_ptr": xdt, "gx_ptr": cdt, "x_ptr": xdt}
            for sg in SURROGATE_KINDS if (FULL or xdt == "fp32") else (0,):
                yield (f"scanbwd-{tag}-sg{sg}", K._BWD, bwd_types,
                       dict(const, STEP=bwd_step, SPIKE_STATE=spec.spike_state, SG=sg))


def configs_for(name):
    import torch
    from fastlif.kernels import common as KC
    configs = KC.AUTOTUNE_CONFIGS if (FULL or name in EVERY_CONFIG) else [KC.FIXED_CONFIG]
    compute_dtype = torch.float64 if "-fp64" in name else torch.float32
    return [(KC.block_size(c.num_warps, compute_dtype), c.kwargs["PREFETCH"], c.num_warps) for c in configs]


def variants():
    out = []
    for name, kernel, types, const in itertools.chain(lif_variants(), rleaky_variants(),
                                                     scan_variants()):
        for block, prefetch, warps in configs_for(name):
            out.append((f"{name}-b{block}w{warps}{'p' if prefetch else ''}", kernel, types,
                        dict(const, BLOCK=block, PREFETCH=prefetch), warps))
    return out


def _variant_ids():
    try:
        return [v[0] for v in variants()]
    except ImportError:  # no Triton: the test below skips
        return ["no-triton"]


def loop_bodies(lines):
    """Line ranges of the loops: from a label to a branch back to it."""
    labels = {m.group(1): i for i, line in enumerate(lines)
              if (m := re.match(r"^(\$L__\w+):", line.strip()))}
    bodies = []
    for i, line in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$L__\w+);", line)
        if m and labels.get(m.group(1), i) < i:
            bodies.append((labels[m.group(1)], i))
    return bodies


def problems(ptx, fma_allowed=False):
    """What is wrong with a kernel's PTX. ``fma_allowed``: libdevice's exp (the sigmoid
    surrogate's backward) is made of FMAs; no exact (forward) value goes through it."""
    found = []
    bad_ops = ["div.full.f32", "div.approx.f32", "div.approx.ftz.f32"]
    if not fma_allowed:
        bad_ops += ["fma.rn.f32", "fma.rn.f64", "fma.rn.ftz.f32"]
    for bad in bad_ops:
        if bad in ptx:
            found.append(f"{ptx.count(bad)} x {bad}")
    lines = ptx.splitlines()
    bodies = loop_bodies(lines)
    if not bodies:
        found.append("no loop found in the PTX (the time loop was not recognised)")
    barriers = [i for i, line in enumerate(lines) if re.search(r"\bbar(rier)?\.sync\b", line)]
    inside = [i for i in barriers if any(a <= i <= b for a, b in bodies)]
    if inside:
        found.append(f"{len(inside)} bar.sync inside the time loop")
    return found


def compile_ptx(kernel, types, const, warps):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = kernel.jit
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in const:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + types.get(name, "fp64" if "fp64" in types.values() else "fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif fn.params[i].annotation_type:  # declared scalar types (the fp64 surrogate constants)
            sig[name] = fn.params[i].annotation_type
        else:
            sig[name] = "i32"
            if name in ("N", "L", "sx_t", "sx_r"):  # what Triton specialises for counts % 16 == 0
                attrs[(i,)] = [["tt.divisibility", 16]]
    params = {k: v for k, v in const.items() if k in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, sig, params, attrs), target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=warps, enable_fp_fusion=False))
    return compiled.asm["ptx"]


@pytest.mark.parametrize("variant", _variant_ids())
def test_variant_ptx(variant):
    pytest.importorskip("triton")
    pytest.importorskip("triton.backends.compiler", reason="this Triton has no ahead-of-time compile API")
    name, kernel, types, const, warps = next(v for v in variants() if v[0] == variant)
    ptx = compile_ptx(kernel, types, const, warps)
    found = problems(ptx, fma_allowed=const.get("SG") == 2)
    assert not found, f"{name}: {found}"
    divides = const.get("IMMEDIATE") or const.get("SG") in (0, 1, 2)
    if divides and "fp64" not in (types.get("x_ptr"), types.get("gx_ptr")):
        assert "div.rn.f32" in ptx, f"{name}: expected a correctly rounded division"


def test_problems_are_found():
    """The PTX scan itself: approximate divisions, FMAs and barriers in a loop are reported."""
    ptx = "\n".join(["$L__BB0_1:", "\tdiv.full.f32 \t%f1, %f2, %f3;", "\tbar.sync \t0;",
                     "\tfma.rn.f32 \t%f4, %f1, %f2, %f3;", "\t@%p1 bra \t$L__BB0_1;", "\tret;"])
    found = problems(ptx)
    assert any("div.full" in p for p in found) and any("fma.rn.f32" in p for p in found)
    assert any("bar.sync inside" in p for p in found)
    assert problems("$L__BB0_1:\n\tdiv.rn.f32 %f1, %f2, %f3;\n\t@%p1 bra $L__BB0_1;\n\tbar.sync 0;") == []


def test_under_oldest_triton():
    """The same checks under the oldest supported Triton, in a child process."""
    if os.environ.get("FASTLIF_PTX_CHILD"):
        pytest.skip("this is the child run")
    triton = pytest.importorskip("triton")
    if triton.__version__.startswith("3.6"):
        pytest.skip(f"this process runs Triton {triton.__version__} already: the tests above are that check")
    if not (OLDEST / "triton").is_dir():
        pytest.skip(f"the oldest supported Triton is not installed in {OLDEST} (make test installs it)")
    env = {"FASTLIF_PTX_CHILD": "1", "PYTHONPATH": os.pathsep.join([str(OLDEST), str(ROOT)]),
           "TRITON_CACHE_DIR": os.environ.get("FASTLIF_OLDEST_TRITON_CACHE", str(ROOT / ".triton-3.6-cache"))}
    version = subprocess.run([sys.executable, "-c", "import triton; print(triton.__version__)"],
                             env=dict(os.environ, **env), capture_output=True, text=True,
                             timeout=120).stdout.strip()
    assert version.startswith("3.6"), f"{OLDEST} holds Triton {version!r}, not 3.6"
    run_child_suite(Path(__file__), env, f"the PTX checks under Triton {version}", "-n", "2",
                    "-k", "variant_ptx or problems_are_found", timeout=1500)

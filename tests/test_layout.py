"""The package's layers, as the code has them: the core (torch and NumPy only) never imports
the applications above it, ``import fastlif`` loads no application dependency, and the one
table of codes (fastlif/codes.py) is what the C++ and Triton kernels use."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fastlif
from fastlif import codes

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastlif"
APPLICATIONS = ("fastlif.sim", "fastlif.tutorial", "fastlif.cli")
CORE_MAY_IMPORT = {"torch", "numpy", "triton", "snntorch", "spikingjelly", "fastlif"}  # optional: triton and
# the peers whose neurons fastlif's subclass (snntorch, spikingjelly)


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(("fastlif",) + parts if parts[0] == "kernels" else parts)  # kernels/: fastlif.kernels


def imports_of(path):
    """Absolute names of every module a file imports, anywhere in it (also inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


def core_files():
    kernels = [p for p in (ROOT / "kernels").glob("*.py")]
    package = [p for p in PACKAGE.rglob("*.py")
               if not module_name(p).startswith(APPLICATIONS) and p.name != "__main__.py"]
    return package + kernels


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_application(path):
    for name in imports_of(path):
        assert not name.startswith(APPLICATIONS), f"{path.name} imports {name}, an application"
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names:
            assert top in CORE_MAY_IMPORT, f"{path.name} imports {name}: not a core dependency"


def test_import_fastlif_loads_no_application_dependency():
    # (not tqdm: torch.hub imports it when it is installed)
    code = ("import sys, fastlif; heavy = [m for m in ('numba', 'matplotlib', 'torchvision', "
            "'sklearn', 'triton', 'fastlif.sim', 'fastlif.tutorial', 'fastlif.cli') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.strip()
    assert out == "[]", f"import fastlif loaded {out}"


def test_cpp_codes_mirror_the_table():
    ext = pytest.importorskip("fastlif._C", reason="the C++ extension is not built")
    mirrored = ext.codes()
    for name in ("RESET_SUBTRACT", "RESET_ZERO", "RESET_NONE", "ATAN", "FAST_SIGMOID", "SIGMOID",
                 "TRIANGULAR", "STRAIGHT_THROUGH", "NO_GRAD", "SJ_SIGMOID", "SJ_ATAN", "FLOAT32", "FLOAT64"):
        assert mirrored.pop(name) == getattr(codes, name), name
    assert not mirrored, f"C++ codes with no Python entry: {mirrored}"


def test_triton_codes_come_from_the_table():
    common = pytest.importorskip("fastlif.kernels.common", reason="Triton is not installed")
    for name in ("RESET_SUBTRACT", "RESET_ZERO", "RESET_NONE", "ATAN", "FAST_SIGMOID", "SIGMOID",
                 "TRIANGULAR", "STRAIGHT_THROUGH", "SJ_SIGMOID", "SJ_ATAN"):
        assert getattr(common, name).value == getattr(codes, name), name


def test_python_names_follow_the_table():
    assert fastlif.surrogate.KIND_NAMES == dict(enumerate(codes.SURROGATE_NAMES))
    assert fastlif.Leaky.reset_dict == codes.RESET_CODES
    assert [codes.RESET_CODES[n] for n in codes.RESET_MECHANISMS] == [0, 1, 2]

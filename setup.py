"""Build fastlif: the Python package, the Triton kernels (``kernels/`` installed as
``fastlif.kernels``) and the optional pybind11 CPU extension ``fastlif._C`` from every
``csrc/*.cpp`` (each op family's file registers its own functions).

The extension is optional on purpose: without a C++ compiler the package still installs
and runs on the reference backend, and says so once. Without OpenMP it builds
single-threaded. Set FASTLIF_NATIVE=0 to build without -march=native (portable wheels), and
FASTLIF_SANITIZE=address,undefined for a sanitizer build (CI's, see .ci/run).
"""
import glob
import os
import sys
import tempfile

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
    # one compiler per family file at once (FASTLIF_BUILD_JOBS, default: every CPU)
    ParallelCompile("FASTLIF_BUILD_JOBS", default=0).install()
except ImportError:  # no pybind11: the package still installs, on the reference backend
    Pybind11Extension = None


def _compiler_accepts(compiler, flags):
    """Compile a tiny file with ``flags`` to find out whether this compiler supports them."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
                    if "-fopenmp" in flags else "int main() { return 0; }\n")
        try:
            compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            return True
        except Exception:
            return False


class OptionalBuildExt(build_ext):
    """Adds OpenMP and native-arch flags when the compiler takes them, and turns a failed
    build into a clear message instead of a failed install."""

    def build_extensions(self):
        super().build_extensions()
        # an extension that did not build is not installed (an editable install would try to
        # copy its missing file and fail)
        self.extensions = [ext for ext in self.extensions if os.path.exists(self.get_ext_fullpath(ext.name))]

    def build_extension(self, ext):
        if not _compiler_accepts(self.compiler, []):
            print("\nfastlif: no working C++ compiler, so no C++ CPU extension; fastlif will run on "
                  "its reference backend. Install one (e.g. `apt-get install g++`) and reinstall "
                  "to get the fused CPU kernels.\n", file=sys.stderr)
            return
        flags = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
        sanitize = os.environ.get("FASTLIF_SANITIZE", "")
        if sanitize:  # a debugging build: sanitizers, frame pointers, no native tuning
            flags = ["-O1", "-g", "-fno-omit-frame-pointer", "-ffp-contract=off", f"-fsanitize={sanitize}",
                     "-fno-sanitize-recover=all"]
            ext.extra_link_args = list(ext.extra_link_args or []) + [f"-fsanitize={sanitize}"]
        elif os.environ.get("FASTLIF_NATIVE", "1") != "0" and _compiler_accepts(self.compiler, ["-march=native"]):
            flags.append("-march=native")
        if _compiler_accepts(self.compiler, ["-fopenmp"]):
            flags.append("-fopenmp")
            ext.extra_link_args = list(ext.extra_link_args or []) + ["-fopenmp"]
        else:
            print("fastlif: the compiler has no OpenMP; the CPU kernels will run on one thread.",
                  file=sys.stderr)
        ext.extra_compile_args = list(ext.extra_compile_args or []) + flags
        try:
            super().build_extension(ext)
            return
        except Exception as err:  # noqa: BLE001 - any compiler failure means "no extension"
            if sanitize:
                raise
            error = err
        if any(src in TORCH_SOURCES for src in ext.sources):  # the rest may still build
            print(f"\nfastlif: could not build the C++ autograd Functions ({error}); building the "
                  "extension without them (the Python autograd Functions serve every call).\n", file=sys.stderr)
            ext.sources = [src for src in ext.sources if src not in TORCH_SOURCES]
            try:
                super().build_extension(ext)
                return
            except Exception as err:  # noqa: BLE001
                error = err
        print(f"\nfastlif: could not build the C++ CPU extension ({error}).\n"
              "fastlif will run on its reference backend. Install a C++ compiler "
              "(e.g. `apt-get install g++`) and pybind11, then reinstall to get the fused "
              "CPU kernels.\n", file=sys.stderr)


TORCH_SOURCES = ["csrc/autograd.cpp"]  # need torch's headers and libraries


def _torch_build():
    """What the sources that use libtorch (the C++ autograd Functions) need to build: torch's
    include and library directories, its libraries and its C++ ABI; None when torch is not
    importable here (pip's isolated build): the extension then builds without them, and
    LifFunction serves every call. Torch's headers come first, so the whole module compiles
    against the pybind11 that torch's tensor casters were written for."""
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("fastlif: torch is not importable at build time (use pip install --no-build-isolation); "
              "building the C++ extension without its C++ autograd Functions (csrc/autograd.cpp).", file=sys.stderr)
        return None
    libs = cpp_extension.library_paths()
    return dict(include_dirs=cpp_extension.include_paths(), library_dirs=libs, runtime_library_dirs=libs,
                libraries=["c10", "torch", "torch_cpu", "torch_python"],
                define_macros=[("TORCH_API_INCLUDE_EXTENSION_H", None),
                               ("_GLIBCXX_USE_CXX11_ABI", str(int(torch._C._GLIBCXX_USE_CXX11_ABI)))])


ext_modules = []
if Pybind11Extension is not None:
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/families/*.cpp"))  # each family registers itself
    torch_build = _torch_build()
    if torch_build is None:
        sources = [s for s in sources if s not in TORCH_SOURCES]
        torch_build, cxx_std = {}, 17
    else:
        cxx_std = 20  # what torch's headers need
    ext_modules.append(Pybind11Extension(
        "fastlif._C", sources, include_dirs=torch_build.pop("include_dirs", []) + ["csrc"],
        depends=sorted(glob.glob("csrc/*.h")), cxx_std=cxx_std, **torch_build))
else:
    print("fastlif: pybind11 is not installed; skipping the C++ CPU extension.", file=sys.stderr)

DEMO = ["matplotlib", "tqdm", "torchvision", "scikit-learn"]
SIM = ["numba"]

setup(
    name="fastlif",
    version="0.2.0",
    description="snnTorch's exact neurons, run by fused CPU (C++) and GPU (Triton) kernels",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["fastlif", "fastlif.*"]) + ["fastlif.kernels"],
    package_dir={"fastlif.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
    python_requires=">=3.10",
    # The core: torch and NumPy only. The applications on top of it have extras.
    install_requires=["torch>=2.5", "numpy"],
    extras_require={
        "sim": SIM,
        "demo": DEMO,
        "dev": [*SIM, *DEMO, "pytest", "pytest-xdist", "hypothesis", "snntorch", "spikingjelly",
                "brian2", "pybind11", "nir", "nirtorch",
                # The simulator's test and benchmark peer; pip installs it from a wheel here
                # (3.10.0, manylinux x86_64); elsewhere its tests skip and say why.
                'nest-simulator; platform_system == "Linux" and platform_machine == "x86_64"'],
    },
    entry_points={"console_scripts": ["fastlif=fastlif.cli:main"]},
)

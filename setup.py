"""Build fastlif: the Python package, the Triton kernels (``kernels/`` installed as
``fastlif.kernels``) and the optional pybind11 CPU extension ``fastlif._C`` from ``csrc/``.

The extension is optional on purpose: without a C++ compiler the package still installs
and runs on the reference backend, and says so once. Without OpenMP it builds
single-threaded. Set FASTLIF_NATIVE=0 to build without -march=native (portable wheels).
"""
import os
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import Pybind11Extension
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

    def build_extension(self, ext):
        if not _compiler_accepts(self.compiler, []):
            print("\nfastlif: no working C++ compiler, so no C++ CPU extension; fastlif will run on "
                  "its reference backend. Install one (e.g. `apt-get install g++`) and reinstall "
                  "to get the fused CPU kernels.\n", file=sys.stderr)
            return
        flags = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
        if os.environ.get("FASTLIF_NATIVE", "1") != "0" and _compiler_accepts(self.compiler, ["-march=native"]):
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
        except Exception as err:  # noqa: BLE001 - any compiler failure means "no extension"
            print(f"\nfastlif: could not build the C++ CPU extension ({err}).\n"
                  "fastlif will run on its reference backend. Install a C++ compiler "
                  "(e.g. `apt-get install g++`) and pybind11, then reinstall to get the fused "
                  "CPU kernels.\n", file=sys.stderr)


ext_modules = []
if Pybind11Extension is not None:
    ext_modules.append(Pybind11Extension("fastlif._C", ["csrc/lif_binding.cpp"],
                                         include_dirs=["csrc"], cxx_std=17))
else:
    print("fastlif: pybind11 is not installed; skipping the C++ CPU extension.", file=sys.stderr)

setup(
    name="fastlif",
    version="0.1.0",
    description="snnTorch's exact Leaky neuron, run by fused CPU (C++) and GPU (Triton) kernels",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=["fastlif", "fastlif.kernels"],
    package_dir={"fastlif": "fastlif", "fastlif.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
    python_requires=">=3.9",
    install_requires=["torch>=2.5", "numpy", "numba", "matplotlib", "tqdm"],
    extras_require={
        # The demo: MNIST through torchvision, the offline digits through scikit-learn.
        "demo": ["torchvision", "scikit-learn"],
        "dev": ["torchvision", "scikit-learn", "pytest", "pytest-xdist", "hypothesis",
                "snntorch", "spikingjelly", "brian2", "numpy<2.4", "pybind11"],
    },
    entry_points={"console_scripts": ["fastlif=fastlif.cli:main"]},
)

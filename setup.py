"""Build of spyre_ops: the C++ kernels as the extension module spyre_ops._C,
and the emulated spyre device (a test instrument) as spyre_ops.emulator._C.

Install with `pip install .` (pyproject.toml's build backend,
build_backend/torch_matched_build.py, builds against the torch release already
installed) or `pip install --no-build-isolation .` next to an installed torch
(the Makefile does the latter, editable). A torch C++ extension runs only with
the torch release it was built against, so the wheel requires that release
(``torch>=X.Y.0,<X.Y+1``), and the build records it in spyre_ops/_build_info.py,
which ``import spyre_ops`` checks before loading the kernels. Build flags: -O3, -g0 (no
debug information: Python's own flags ask for -g, which costs about a quarter of
the compile time and makes the objects many times larger), and one SIMD capability for the CPU
kernels, chosen by SPYRE_OPS_CPU_CAPABILITY:

* ``auto`` (the default): the best the build machine has, of ``avx512`` and ``avx2``;
* ``avx512``, ``avx2``: ATen's Vectorized<> on 512- or 256-bit registers (the same
  instruction sets PyTorch compiles its own AVX512/AVX2 kernels for);
* ``default``: no SIMD flags; runs on any x86-64 (or non-x86) CPU.

With ``avx512``, AVX512-BF16 is used too when the build machine has it
(SPYRE_OPS_AVX512_BF16=0 turns that off, =1 forces it).

The built module refuses to load its kernels, with a clear error, on a CPU that
lacks the capability it was built for. SPYRE_OPS_NATIVE=0 still means ``default``.
"""

import glob
import os
import sys

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension


# Compiler flags per capability: ATen's Vectorized<> uses SIMD only when
# CPU_CAPABILITY_AVX2/AVX512 is defined, whatever -m flags are given.
CAPABILITY_FLAGS: dict[str, list[str]] = {
    "avx512": ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512",
               "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
    "avx2": ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c"],
    "default": ["-DCPU_CAPABILITY=DEFAULT"],
}
CAPABILITY_CPU_FLAGS: dict[str, set[str]] = {
    "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma", "f16c"},
    "avx2": {"avx2", "fma", "f16c"},
}


def cpu_flags() -> set[str]:
    """The build machine's CPU flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def build_machine_capability() -> str:
    """The best capability the build machine's CPU has."""
    flags = cpu_flags()
    for capability in ("avx512", "avx2"):
        if CAPABILITY_CPU_FLAGS[capability] <= flags:
            return capability
    return "default"


def cpu_capability() -> str:
    if os.environ.get("SPYRE_OPS_NATIVE") == "0":
        return "default"
    wanted = os.environ.get("SPYRE_OPS_CPU_CAPABILITY", "auto").lower()
    if wanted == "auto":
        return build_machine_capability()
    if wanted not in CAPABILITY_FLAGS:
        raise SystemExit(f"SPYRE_OPS_CPU_CAPABILITY must be auto, {', '.join(CAPABILITY_FLAGS)}; got {wanted!r}")
    return wanted


def cxx_flags() -> list[str]:
    capability = cpu_capability()
    # -g0 after Python's -g (the compiler takes the last one): no debug information.
    flags = ["-O3", "-g0", "-fvisibility=hidden", "-Wno-unknown-pragmas", *CAPABILITY_FLAGS[capability]]
    # bfloat16 rounding in one instruction, when the build machine has it (the
    # built module then checks for it at load, like the rest of the capability).
    if capability == "avx512" and os.environ.get("SPYRE_OPS_AVX512_BF16", "auto") != "0":
        if os.environ.get("SPYRE_OPS_AVX512_BF16") == "1" or "avx512_bf16" in cpu_flags():
            flags.append("-mavx512bf16")
    return flags + openmp_flags()


def openmp_flags() -> list[str]:
    """-fopenmp where torch itself is built with OpenMP (Linux wheels).

    at::parallel_for is a header template that uses ``#pragma omp parallel``:
    compiled without -fopenmp it silently runs on one thread. The module then
    needs libgomp.so.1, which is the copy torch has already loaded.
    """
    import torch

    if sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info():
        return ["-fopenmp"]
    return []


def torch_release() -> tuple[int, int]:
    """(major, minor) of the torch this build compiles against."""
    import torch

    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def build_info() -> str:
    """The text of spyre_ops/_build_info.py: the torch the extension is compiled against."""
    import torch

    return (
        '"""Written by setup.py at build time: the torch spyre_ops._C was compiled against."""\n\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
    )


class BuildExtensionRecordingTorch(BuildExtension):
    """torch's BuildExtension, which also writes _build_info.py next to spyre_ops._C."""

    def run(self) -> None:
        super().run()
        # Next to the built module (a wheel's build dir, or the source tree for
        # --inplace), and in the source tree (where an editable install reads it).
        here = os.path.dirname(os.path.abspath(__file__))
        for package_dir in {os.path.dirname(self.get_ext_fullpath("spyre_ops._C")), os.path.join(here, "spyre_ops")}:
            with open(os.path.join(package_dir, "_build_info.py"), "w") as f:
                f.write(build_info())


def sources(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join("csrc", folder, "*.cpp")))


ext_modules = [
    CppExtension(
        name="spyre_ops._C",
        sources=sources("") + sources("cpu"),
        extra_compile_args={"cxx": cxx_flags()},
    ),
    # The emulated spyre device, a test instrument: its own module, which
    # spyre_ops._C never loads or links.
    CppExtension(
        name="spyre_ops.emulator._C",
        sources=sources("emulator"),
        extra_compile_args={"cxx": cxx_flags()},
        extra_link_args=openmp_flags(),
    ),
]

MAJOR, MINOR = torch_release()

setup(
    packages=find_packages(include=["spyre_ops", "spyre_ops.*"]),
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtensionRecordingTorch},
    # The wheel runs only with the torch release it was compiled against.
    install_requires=[f"torch>={MAJOR}.{MINOR}.0,<{MAJOR}.{MINOR + 1}"],
)

"""Build of spyre_ops: the C++ kernels as the extension module spyre_ops._C,
and the emulated spyre device (a test instrument) as spyre_ops.emulator._C.

Install with `pip install --no-build-isolation -e .` next to an installed torch
(the Makefile does this). Build flags: -O3, and the vector instruction set of the
build machine when SPYRE_OPS_NATIVE=1 (the default for local builds).
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension


def cxx_flags() -> list[str]:
    flags = ["-O3", "-fvisibility=hidden", "-Wno-unknown-pragmas"]
    if os.environ.get("SPYRE_OPS_NATIVE", "1") == "1":
        flags.append("-march=native")
    return flags


def sources(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join("csrc", folder, "*.cpp")))


ext_modules = [
    CppExtension(
        name="spyre_ops._C",
        sources=sources("") + sources("cpu") + sources("spyre"),
        extra_compile_args={"cxx": cxx_flags()},
    ),
    # The emulated spyre device, a test instrument: its own module, which
    # spyre_ops._C never loads or links.
    CppExtension(
        name="spyre_ops.emulator._C",
        sources=sources("emulator"),
        extra_compile_args={"cxx": cxx_flags()},
    ),
]

setup(
    packages=find_packages(include=["spyre_ops", "spyre_ops.*"]),
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtension},
)

"""Hand-written vector kernels: LLVM IR compiled for this CPU by llvmlite (the compiler numba
uses), once per process and kernel.

The IR spells out the vector registers (``<16 x float>``, ``<8 x double>``) and the intrinsics
(fused multiply-add, masked loads, gathers), so the machine code does what the kernel's docstring
says instead of what a general compiler makes of a loop.  :func:`compile_ir` returns a ctypes
function; the caller passes raw pointers of CPU tensors.  Where llvmlite is missing or a
compilation fails, :func:`available` turns False and the callers keep their torch or numba path.
"""

from __future__ import annotations

import ctypes
import importlib.util

_AVAILABLE = importlib.util.find_spec("llvmlite") is not None
_compiled: dict = {}   # key → (ctypes function, the execution engine that owns its code)
_failed: list = []     # a compilation failed here: the callers' other paths from then on


def available() -> bool:
    """Whether the kernels can run here (llvmlite installed, no failed compilation)."""
    return _AVAILABLE and not _failed


def compile_ir(key, make_ir, name: str, argtypes: tuple):
    """The function ``name`` of the IR ``make_ir()`` returns, compiled for this CPU and cached
    under ``key``; None (and :func:`available` False from then on) where compilation fails."""
    if key in _compiled:
        return _compiled[key][0]
    try:
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        module = llvm.parse_assembly(make_ir())
        module.verify()
        machine = llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)
        builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3))
        builder.getModulePassManager().run(module, builder)
        engine = llvm.create_mcjit_compiler(module, machine)
        engine.finalize_object()
        fn = ctypes.CFUNCTYPE(None, *argtypes)(engine.get_function_address(name))
    except Exception:  # pragma: no cover - a CPU or llvmlite the kernels do not suit
        _failed.append(True)
        return None
    _compiled[key] = (fn, engine)
    return fn


def splat(name: str, scalar_type: str, value: str, lanes: int) -> list[str]:
    """IR lines that broadcast ``value`` (an IR scalar) to the vector ``%name``."""
    vec = f"<{lanes} x {scalar_type}>"
    return [f"  %{name}.i = insertelement {vec} undef, {scalar_type} {value}, i32 0",
            f"  %{name} = shufflevector {vec} %{name}.i, {vec} undef, "
            f"<{lanes} x i32> zeroinitializer"]


__all__ = ["available", "compile_ir", "splat"]

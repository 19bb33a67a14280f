"""Hand-written vector kernels: LLVM IR compiled for this CPU by llvmlite (the compiler numba
uses), once per process and kernel; the machine code is kept in an on-disk cache (like numba's)
keyed by the IR, the CPU and llvmlite's version, so a later process loads it (0.02 s instead of
0.5 s for the C×C step with C = 10).

The IR spells out the vector registers (``<16 x float>``, ``<8 x double>``) and the intrinsics
(fused multiply-add, masked loads, gathers), so the machine code does what the kernel's docstring
says instead of what a general compiler makes of a loop.  :func:`compile_ir` returns a ctypes
function; the caller passes raw pointers of CPU tensors.  Where llvmlite is missing or a
compilation fails, :func:`available` turns False and the callers keep their torch or numba path.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import tempfile

_AVAILABLE = importlib.util.find_spec("llvmlite") is not None
_compiled: dict = {}   # key → (ctypes function, the execution engine that owns its code)
_failed: list = []     # a compilation failed here: the callers' other paths from then on


def available() -> bool:
    """Whether the kernels can run here (llvmlite installed, no failed compilation)."""
    return _AVAILABLE and not _failed


def cache_dir() -> str:
    """Where compiled kernels are kept: ``FISHERMASK_KERNEL_CACHE``, else the user's cache folder
    (``$XDG_CACHE_HOME`` or ~/.cache) /fishermask/kernels."""
    return os.environ.get("FISHERMASK_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "fishermask", "kernels")


def _cached_object(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _keep_object(path: str, data: bytes) -> None:
    """Write the object file atomically (processes compiling at once each write a whole file);
    an unwritable cache only costs the next process the compilation."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        pass


def compile_ir(key, make_ir, name: str, argtypes: tuple):
    """The function ``name`` of the IR ``make_ir()`` returns, compiled for this CPU (or loaded
    from the on-disk cache) and kept under ``key`` for the process; None (and :func:`available`
    False from then on) where compilation fails."""
    if key in _compiled:
        return _compiled[key][0]
    try:
        import llvmlite
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        ir = make_ir()
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        digest = hashlib.sha256("\0".join((ir, cpu, features, llvmlite.__version__)).encode())
        path = os.path.join(cache_dir(), f"{name}-{digest.hexdigest()[:32]}.o")
        cached = _cached_object(path)
        module = llvm.parse_assembly(ir)
        module.verify()
        machine = llvm.Target.from_default_triple().create_target_machine(
            cpu=cpu, features=features, opt=3)
        if cached is None:  # optimise only what is compiled here
            builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3))
            builder.getModulePassManager().run(module, builder)
        engine = llvm.create_mcjit_compiler(module, machine)
        engine.set_object_cache(lambda _module, data: _keep_object(path, data),
                                lambda _module: cached)
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


__all__ = ["available", "cache_dir", "compile_ir", "splat"]

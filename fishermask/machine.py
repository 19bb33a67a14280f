"""Facts about the CPU this process runs on (for the kernels' BLAS choices and for reports)."""

from __future__ import annotations

import functools
import platform


@functools.lru_cache(maxsize=None)
def cpu_field(name: str) -> str | None:
    """The first ``name : value`` of /proc/cpuinfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``Intel(R) Xeon(R) …``), else what :mod:`platform` knows."""
    return cpu_field("model name") or platform.processor() or platform.machine()


def intel_cpu() -> bool:
    """Whether the CPU is Intel's (known on Linux; False where it cannot be read)."""
    return cpu_field("vendor_id") == "GenuineIntel"


__all__ = ["cpu_field", "cpu_model", "intel_cpu"]

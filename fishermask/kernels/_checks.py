"""Argument checks of the public kernels (and of the strategies' public edge): one integer test,
one message style.  Private functions below the public edge trust their input."""

from __future__ import annotations

import math
import numbers

WEIGHTINGS = ("bait", "uniform")


def is_int(value) -> bool:
    """An integer that is not a bool (numpy integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) \
        and type(value).__name__ != "bool_"


def check_count(name: str, value, low: int = 0) -> int:
    """``value`` as an int ≥ ``low``; a TypeError (not an integer) or ValueError (too small)
    naming ``name``."""
    kind = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
    if not is_int(value):
        raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def check_n(n, available: int, what: str = "candidates") -> int:
    """The batch size: an integer in [0, available]."""
    n = check_count("n", n)
    if n > available:
        raise ValueError(f"cannot select n={n} points from {available} {what}")
    return n


def check_options(lam, weighting: str) -> None:
    """Raise ValueError unless lam is a finite number > 0 and weighting is known."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) \
            or lam <= 0:
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid choices: {', '.join(WEIGHTINGS)}")


__all__ = ["WEIGHTINGS", "check_count", "check_n", "check_options", "is_int"]

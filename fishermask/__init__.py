"""fishermask: batch active learning with Fisher-information masks, BAIT and baselines."""

import os as _os
import sys as _sys


def _is_command(argv: list, orig_argv: list) -> bool:
    """Whether this process is the ``fishermask`` command (console script, ``python -m
    fishermask``)."""
    script = _os.path.basename(argv[0]) if argv else ""
    return script == "fishermask" or any(a == "-m" and b == "fishermask"
                                         for a, b in zip(orig_argv, orig_argv[1:]))


# The command's OpenMP threads sleep at barriers instead of spinning (unless the user chose):
# torch's libgomp reads OMP_WAIT_POLICY once, when torch loads, so this comes before any import
# of torch.  The Ray actors the command starts get the same setting (execution/ray/executor.py).
if _is_command(_sys.argv, getattr(_sys, "orig_argv", [])):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fishermask import _compat  # noqa: E402,F401  (must run before any torchvision import)

__version__ = "0.1.0"

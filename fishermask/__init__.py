"""fishermask: batch active learning with Fisher-information masks, BAIT and baselines."""

from fishermask import _compat  # noqa: F401  (must run before any torchvision import)

__version__ = "0.1.0"

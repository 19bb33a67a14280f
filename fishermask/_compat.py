"""Import torchvision safely on CPU-only torch builds.

PyPI's torchvision wheels for recent releases are CUDA builds.  With a CPU build of torch their
meta registrations for ``torchvision::nms``/``qnms`` fail at import time because the compiled
operators are missing ("operator torchvision::nms does not exist").  Defining the two operator
schemas in a fragment of torch's operator library before the import lets models, transforms and datasets
work (the detection ops themselves stay unavailable, which fishermask never uses).

Import :func:`import_torchvision` (or this module) before the first ``import torchvision``.
"""

from __future__ import annotations

import sys

_FRAGMENT = None


def _define_missing_ops() -> None:
    global _FRAGMENT
    import torch

    _FRAGMENT = getattr(torch, "library").Library("torchvision", "FRAGMENT")
    for schema in (
        "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    ):
        try:
            _FRAGMENT.define(schema)
        except RuntimeError:  # already defined (e.g. by the real extension)
            pass


def import_torchvision():
    """Return the ``torchvision`` module, applying the CPU-torch fix when it is needed."""
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc) and "torchvision::qnms" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _define_missing_ops()
        import torchvision
    return torchvision


import_torchvision()

"""The greedy's thread count: one torch thread for its many short parallel regions unless OpenMP's
threads sleep at barriers (OMP_WAIT_POLICY=PASSIVE)."""

from __future__ import annotations

import contextlib
import os

import torch


@contextlib.contextmanager
def step_threads():
    """torch on one thread inside, unless OMP_WAIT_POLICY=PASSIVE (then torch's threads).

    The greedy's steps and the driver's k×k work are many short parallel regions.  OpenMP threads
    that spin at the end of each region (the default) stall every region for the thread another
    job has descheduled, and burn the core it needed: measured here at load 7 on 2 cores, a
    40-step round took 53 s on two spinning threads and 6 s on one.  The ``fishermask`` command
    and its Ray actors set PASSIVE; the shards' initialisation (long GEMMs) keeps torch's threads.
    """
    before = torch.get_num_threads()
    serial = before > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
    if serial:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if serial:
            torch.set_num_threads(before)


__all__ = ["step_threads"]

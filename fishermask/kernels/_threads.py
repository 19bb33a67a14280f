"""The greedy's thread count: torch's threads for its many short parallel regions only where
OpenMP's threads cannot stall at the barriers: they sleep there (OMP_WAIT_POLICY=PASSIVE), or the
machine has a free core for every thread."""

from __future__ import annotations

import contextlib
import os

import torch


def spare_cores(load: float | None = None, cores: int | None = None) -> float:
    """Cores the rest of the machine leaves free: ``cores`` (the CPUs this process may use) minus
    the 1-minute load average less this process's own share (one runnable thread, as in the
    greedy's serial phases); ``load`` and ``cores`` default to the machine's."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average on this platform
            return 0.0
    return float(cores or 1) - max(0.0, float(load) - 1.0)


def threaded_steps(threads: int, load: float | None = None, cores: int | None = None) -> bool:
    """Whether the steps may use ``threads`` threads: OMP_WAIT_POLICY=PASSIVE, or every thread
    has a core the rest of the machine leaves free (:func:`spare_cores`, half a core of slack)."""
    if threads <= 1 or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return True
    return spare_cores(load, cores) >= threads - 0.5


@contextlib.contextmanager
def step_threads():
    """torch on one thread inside, unless :func:`threaded_steps` allows torch's threads.

    The greedy's steps and the driver's k×k work are many short parallel regions.  OpenMP threads
    that spin at the end of each region (the default) stall every region for the thread another
    job has descheduled, and burn the core it needed: measured here at load 7 on 2 cores, a
    40-step round took 53 s on two spinning threads and 6 s on one.  On an otherwise idle machine
    the spinning costs nothing and the threads pay.  The ``fishermask`` command and its Ray
    actors set PASSIVE; the shards' initialisation (long GEMMs) keeps torch's threads.
    """
    before = torch.get_num_threads()
    serial = before > 1 and not threaded_steps(before)
    if serial:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if serial:
            torch.set_num_threads(before)


__all__ = ["spare_cores", "step_threads", "threaded_steps"]

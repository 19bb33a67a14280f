"""The greedy's thread count: torch's threads for its many short parallel regions only where
OpenMP's threads cannot stall at the barriers: they sleep there (OMP_WAIT_POLICY=PASSIVE), or the
machine has a free core for every thread.

Whether a core is free is measured, where it can be, over the round's initialisation (its long
GEMMs run on torch's threads anyway): :class:`BusyProbe` takes the CPU time the whole machine
spent (``/proc/stat``) less this process's own over that window.  The 1-minute load average is
the fallback: it lags by up to a minute, so right after another job ended it still counts it.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

_BLAS = []  # threadpoolctl's controller of numpy's BLAS, made on first use

MIN_WINDOW = 0.1
"""Shortest window (seconds) :class:`BusyProbe` measures over; /proc/stat counts in ticks of
10 ms per CPU."""


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - platforms without affinity


def _busy_ticks() -> int | None:
    """Busy clock ticks of all CPUs since boot (user, nice, system, irq, softirq, steal), or None
    where /proc/stat cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        if not fields or fields[0] != "cpu":
            return None
        ticks = [int(x) for x in fields[1:9]]
    except (OSError, ValueError):
        return None
    return sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # less idle and iowait


class BusyProbe:
    """How many cores the rest of the machine kept busy since the probe was made:
    (Δ busy CPU time of the machine − Δ CPU time of this process) / Δ wall time."""

    def __init__(self):
        self._t0, self._own0, self._ticks0 = time.perf_counter(), time.process_time(), _busy_ticks()

    def others(self) -> float | None:
        """Cores the rest of the machine used over the window; None when it cannot tell (no
        /proc/stat, or a window shorter than ``MIN_WINDOW``)."""
        wall = time.perf_counter() - self._t0
        ticks = _busy_ticks()
        if self._ticks0 is None or ticks is None or wall < MIN_WINDOW:
            return None
        busy = (ticks - self._ticks0) / os.sysconf("SC_CLK_TCK")
        return max(0.0, (busy - (time.process_time() - self._own0)) / wall)


def spare_cores(load: float | None = None, cores: int | None = None,
                others: float | None = None) -> float:
    """Cores the rest of the machine leaves free: ``cores`` (the CPUs this process may use) less
    ``others`` (the cores other processes use, as :meth:`BusyProbe.others` measures) or, without
    it, less the 1-minute load average minus this process's own share (one runnable thread, as in
    the greedy's serial phases); ``load`` and ``cores`` default to the machine's."""
    if cores is None:
        cores = _cores()
    if others is not None:
        return float(cores) - float(others)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average on this platform
            return 0.0
    return float(cores or 1) - max(0.0, float(load) - 1.0)


def threaded_steps(threads: int, load: float | None = None, cores: int | None = None,
                   others: float | None = None) -> bool:
    """Whether the steps may use ``threads`` threads: OMP_WAIT_POLICY=PASSIVE, or every thread
    has a core the rest of the machine leaves free (:func:`spare_cores`, half a core of slack)."""
    if threads <= 1 or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return True
    return spare_cores(load, cores, others) >= threads - 0.5


def blas_threads(threads: int):
    """A context in which numpy's BLAS (the driver's float64 products on the CPU) runs on
    ``threads`` threads, as torch does; a no-op without threadpoolctl."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS.append(ThreadpoolController())
        except Exception:  # pragma: no cover - threadpoolctl missing or failing
            _BLAS.append(None)
    if _BLAS[0] is None:  # pragma: no cover
        return contextlib.nullcontext()
    return _BLAS[0].limit(limits=int(threads), user_api="blas")


@contextlib.contextmanager
def step_threads(others: float | None = None):
    """torch on one thread inside, unless :func:`threaded_steps` allows torch's threads
    (``others``: the other processes' cores as a :class:`BusyProbe` measured them; None: the
    load average decides).

    The greedy's steps and the driver's k×k work are many short parallel regions.  OpenMP threads
    that spin at the end of each region (the default) stall every region for the thread another
    job has descheduled, and burn the core it needed: measured here at load 7 on 2 cores, a
    40-step round took 53 s on two spinning threads and 6 s on one.  On an otherwise idle machine
    the spinning costs nothing and the threads pay.  The ``fishermask`` command and its Ray
    actors set PASSIVE; the shards' initialisation (long GEMMs) keeps torch's threads.
    """
    before = torch.get_num_threads()
    serial = before > 1 and not threaded_steps(before, others=others)
    if serial:
        torch.set_num_threads(1)
    try:
        with blas_threads(1):
            yield
    finally:
        if serial:
            torch.set_num_threads(before)


__all__ = ["BusyProbe", "blas_threads", "spare_cores", "step_threads", "threaded_steps"]

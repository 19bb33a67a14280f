"""Threads that do not spin: the ``fishermask`` command sets OMP_WAIT_POLICY=PASSIVE before torch
loads (unless the user chose), and the greedy's steps run on one thread when OpenMP may spin and
the rest of the machine leaves no core free for the other threads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fishermask
from fishermask.kernels._threads import BusyProbe, spare_cores, step_threads, threaded_steps

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_is_recognised_by_its_script_or_module_name():
    assert fishermask._is_command(["/venv/bin/fishermask", "run", "x.yaml"], [])
    assert fishermask._is_command(["-m"], ["python", "-m", "fishermask", "sweep", "s.yaml"])
    assert not fishermask._is_command(["-c"], ["python", "-c", "import fishermask"])
    assert not fishermask._is_command(["/venv/bin/pytest"], ["python", "-m", "pytest"])
    assert not fishermask._is_command(["x"], ["python", "-m", "fishermask.sweeps"])
    assert not fishermask._is_command([], [])


def _env_after_import(argv0: str, **env) -> str:
    """OMP_WAIT_POLICY in a fresh Python whose argv[0] is ``argv0``, after ``import fishermask``,
    and whether torch was still unloaded when the package set it."""
    code = (f"import sys; sys.argv[0] = {argv0!r}; import os, fishermask; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    base.update(env, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=base,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_the_command_sets_passive_waits_unless_the_user_chose():
    assert _env_after_import("/venv/bin/fishermask") == "PASSIVE"
    assert _env_after_import("/venv/bin/fishermask", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    assert _env_after_import("/venv/bin/python") == "None"  # a library user's process: untouched


def test_the_package_sets_it_before_torch_loads():
    init = (ROOT / "fishermask" / "__init__.py").read_text()
    assert init.index('setdefault("OMP_WAIT_POLICY"') < init.index("from fishermask import _compat")
    assert "import torch" not in init[: init.index("from fishermask import _compat")]


def test_threads_need_a_free_core_each_unless_waits_are_passive(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert spare_cores(load=1.0, cores=2) == 2.0      # this process alone
    assert spare_cores(load=3.2, cores=2) == pytest.approx(-0.2)  # another job or two
    assert spare_cores(load=0.2, cores=4) == 4.0      # no negative share of its own
    assert threaded_steps(2, load=1.1, cores=2)       # a quiet 2-core machine
    assert not threaded_steps(2, load=2.0, cores=2)   # one other busy process
    assert not threaded_steps(8, load=4.0, cores=8)   # 5 cores free for 8 threads
    assert threaded_steps(4, load=4.0, cores=8)
    assert threaded_steps(1, load=50.0, cores=2)      # one thread: nothing to decide
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert threaded_steps(8, load=50.0, cores=2)      # sleeping threads cost nothing


def test_steps_run_on_one_thread_unless_waits_are_passive(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(os, "getloadavg", lambda: (40.0, 40.0, 40.0))  # a busy machine
    try:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        with step_threads():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
        with step_threads():
            assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        try:
            with step_threads():
                raise RuntimeError("inside")
        except RuntimeError:
            pass
        assert torch.get_num_threads() == 2  # restored on an error too
    finally:
        torch.set_num_threads(before)


def test_steps_keep_torchs_threads_on_an_idle_machine(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    try:
        with step_threads():
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_measured_share_of_the_other_processes_overrides_the_load_average(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert spare_cores(load=40.0, cores=2, others=0.1) == pytest.approx(1.9)
    assert threaded_steps(2, load=40.0, cores=2, others=0.2)      # a stale load average
    assert not threaded_steps(2, load=1.0, cores=2, others=1.0)   # a job that just started
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with step_threads(others=1.0):
            assert torch.get_num_threads() == 1
        with step_threads(others=0.0):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_probe_counts_another_busy_process():
    assert BusyProbe().others() is None  # a window too short to tell
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nt = time.time()\nwhile time.time() - t < 30: pass"])
    try:
        time.sleep(0.5)  # the child is running
        probe = BusyProbe()
        time.sleep(0.6)
        others = probe.others()
    finally:
        busy.kill()
        busy.wait()
    assert others is not None and others >= 0.6  # about one core: the child's


def test_the_probe_subtracts_this_process_own_cpu_time(monkeypatch):
    from fishermask.kernels import _threads
    clock = {"wall": 100.0, "own": 5.0, "ticks": 1000}
    monkeypatch.setattr(_threads.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(_threads.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(_threads, "_busy_ticks", lambda: clock["ticks"])
    hz = os.sysconf("SC_CLK_TCK")
    probe = BusyProbe()
    # 0.5 s of wall: this process used 0.9 s of CPU (two threads), the machine 1.4 s in all
    clock.update(wall=100.5, own=5.9, ticks=1000 + round(1.4 * hz))
    assert probe.others() == pytest.approx(1.0)
    short = BusyProbe()
    clock.update(wall=100.5 + _threads.MIN_WINDOW / 2)
    assert short.others() is None

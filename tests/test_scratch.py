"""Scratch folders of killed processes are swept by the next process that makes one; a live
process's folder and other files are left alone."""

from __future__ import annotations

import subprocess
import sys

from fishermask.locks import scratch_dir


def test_a_killed_processs_scratch_folder_is_swept_by_the_next(tmp_path):
    code = ("import sys, time; from fishermask.locks import scratch_dir; "
            f"d = scratch_dir('trial-', {str(tmp_path)!r}); (d / 'state.pt').write_bytes(b'x' * 99);"
            "print(d, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    left = proc.stdout.readline().strip()
    live = scratch_dir("trial-", tmp_path)       # the other process is still running: kept
    assert (tmp_path / left.split("/")[-1]).exists() and live.exists()
    proc.kill()                                  # SIGKILL: no clean-up of its own
    proc.wait()
    (tmp_path / "notes.txt").write_text("not a scratch folder")
    (tmp_path / "other-99999999-abc").mkdir()    # another prefix: not this caller's to judge
    mine = scratch_dir("trial-", tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert left.split("/")[-1] not in names      # swept
    assert {live.name, mine.name, "notes.txt", "other-99999999-abc"} <= names
    assert mine.name.startswith("trial-") and mine != live

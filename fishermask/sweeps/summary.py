"""The end-of-sweep trial table (the parent's ``sweep/trials.md``): one row per trial, MLflow run
statuses, and the Tune + MLflow overhead.

Overhead is measured two ways:

* **in-trial**: a trial's wall time (trainable entry to exit) minus its active-learning work (data,
  training, queries; see ``sweeps.trial``): imports, MLflow calls, Tune reports and checkpoints;
* **sweep-level**: ``wall × parallel slots − Σ AL work``, per trial: adds actor start-up,
  scheduling and idle slots at the end (meaningful for an uninterrupted sweep).
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional

from fishermask.sweeps.trial import trial_resources


def _slots(results, cluster: dict[str, float]) -> int:
    need = []
    for r in results:
        if not r.config:
            continue
        try:
            need.append(trial_resources(r.config).required_resources.get("CPU", 1) or 1)
        except Exception:
            need.append(1)
    if not need:
        return 1
    return max(1, min(len(need), int(cluster.get("CPU", 1) // max(need))))


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals (a trial's start and end, wall-clock) that overlap at one moment."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    now = most = 0
    for _, step in events:  # at a tie an end comes first: back-to-back trials do not overlap
        now += step
        most = max(most, now)
    return most


def _num(x: Any, fmt: str = "{:.4f}") -> str:
    return fmt.format(x) if isinstance(x, (int, float)) and not math.isnan(x) else "–"


def _label(result, labels: dict[str, str]) -> str:
    if result.config:
        return result.config["trial"]["label"]
    key = os.path.basename(str(result.path or "")).removeprefix("trial_")  # never started
    return labels.get(key, key or "?")


def summarize(results, wall: float, children: dict[str, int], cluster: dict[str, float],
              labels: dict[str, str], resumed: bool = False,
              max_concurrent: Optional[int] = None) -> tuple[str, bool]:
    """Markdown summary and whether every trial finished (``labels``: trial key -> label).  The
    trials at a time are those that ran at once (their start and end times); without them, what
    the cluster's CPUs and ``max_concurrent`` (the sweep's --max-concurrent) allow."""
    rows, trial_s, loop_s, inside, parts, spans = [], [], [], [], [], []
    ok = True
    for r in sorted(results, key=lambda r: _label(r, labels)):
        m = r.metrics or {}
        done = bool(m.get("done")) and r.error is None
        ok &= done
        status = "done" if done else ("error" if r.error is not None else "unfinished")
        t, lp = m.get("trial_seconds"), m.get("loop_seconds")
        if done and t is not None and lp is not None:
            trial_s.append(t)
            loop_s.append(lp)
            inside.append(t - lp)
            parts.append((m.get("mlflow_seconds", math.nan), m.get("tune_seconds", math.nan)))
            if m.get("trial_start") is not None and m.get("trial_end") is not None:
                spans.append((m["trial_start"], m["trial_end"]))
        rows.append(f"| {_label(r, labels)} | {status} | {m.get('n_labels', '–')} | "
                    f"{_num(m.get('accuracy'))} | {_num(m.get('balanced_accuracy'))} | "
                    f"{_num(t, '{:.1f}')} | {_num(lp, '{:.1f}')} | `{m.get('run_id', '–')}` |")
    n = len(rows)
    lines = ["## Trials (per-trial table; the comparison is `fishermask report`)", "",
             "| trial | status | labels | accuracy | balanced acc. | trial s | AL work s | MLflow run |",
             "|---|---|---|---|---|---|---|---|", *rows, "",
             "MLflow child runs: " + (", ".join(f"{v} {k}" for k, v in sorted(children.items()))
                                       or "none"), ""]
    if spans and len(spans) == n:  # what ran (another sweep may have shared the cluster)
        slots = most_at_once(spans)
    else:  # trials of an older version, or unfinished ones: what the resources allow
        slots = _slots(results, cluster)
        if max_concurrent is not None:
            slots = min(slots, max_concurrent)
    lines.append(f"Wall time {wall:.1f} s for {n} trials ({slots} at a time).")
    if loop_s:
        mean_t = sum(trial_s) / len(trial_s)
        mean_in = sum(inside) / len(inside)
        ml = sum(p[0] for p in parts) / len(parts)
        tn = sum(p[1] for p in parts) / len(parts)
        lines.append(f"Overhead in a trial: {mean_in:.2f} s per trial = {100 * mean_in / mean_t:.1f} "
                     f"% of trial time ({mean_t:.1f} s): MLflow logging {ml:.2f} s, Tune reports "
                     f"and checkpoints {tn:.2f} s, imports and set-up {mean_in - ml - tn:.2f} s.")
        if len(loop_s) == n and not resumed:
            per = (wall * slots - sum(loop_s)) / n
            mean_l = sum(loop_s) / n
            lines.append(f"Overhead over the sweep (adds actor start-up, scheduling, idle slots): "
                         f"{per:.2f} s per trial = {100 * per / (mean_l + per):.1f} % of trial "
                         f"time.")
    return "\n".join(lines) + "\n", ok

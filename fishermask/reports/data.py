"""Report data: a sweep's child runs from MLflow, and the statistics the report shows.

Everything the report computes is here as plain functions over :class:`RunData` (tested without
MLflow): mean ± std curves over seeds, the normalised area under the budget curve (AUBC), paired
differences to a baseline with a 95 % t-interval over seeds, labels needed to reach a target, the
class balance of the picks and the FisherMask mask profile.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fishermask.data.params import SETTINGS
from fishermask.errors import FishermaskError
from fishermask.strategies import STRATEGIES
from fishermask.tracking.run_meta import aubc  # noqa: F401  (runs log it; the report uses it)

PARENT_TAG = "mlflow.parentRunId"
ROLE_TAGS = ("mlflow.fishermask.role", "fishermask.role")  # newer first; older stores: the second
METRICS = ("accuracy", "balanced_accuracy")
# params that say where or how a run ran, not what it computed (left out of the config a run is
# grouped by)
NOT_CONFIG = ("seed", "data.data_dir", "data.data_dir_resolved", "data.download", "execution.",
              "tracking.")


@dataclass
class RunData:
    run_id: str
    variant: str                      # what is compared (strategy + non-seed axes)
    strategy: str
    seed: int
    status: str
    context: dict[str, str]           # non-strategy, non-seed axes (to pair with the baseline)
    steps: np.ndarray                 # number of labels per round
    curves: dict[str, np.ndarray]     # metric -> values per round
    labels_per_class: list[float] = field(default_factory=list)   # at the end of the run
    labels_by_step: dict[int, list[float]] = field(default_factory=dict)  # labels -> per class
    mask_profiles: list[list[dict]] = field(default_factory=list)  # one per round (FisherMask)
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> seconds summed over rounds
    config: dict[str, str] = field(default_factory=dict)  # params but the seed and the location
    start_time: int = 0               # ms since the epoch (the newest run of a seed is kept)
    epochs: list[int] = field(default_factory=list)  # training epochs per round


# ----------------------------------------------------------------------------- MLflow

def find_parent(client, experiment: Optional[str] = None, run_id: Optional[str] = None):
    """The sweep's parent run (``--run``) or the newest sweep of ``--experiment``; ``None`` when
    the experiment has no sweep (then its top-level runs are reported)."""
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            raise FishermaskError(f"--run {run_id}: no such run at {client.tracking_uri} "
                                  f"({type(exc).__name__})") from None
        return run, run.info.experiment_id
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise FishermaskError(f"--experiment {experiment!r} not found at {client.tracking_uri}; "
                              f"experiments there: {', '.join(names) or 'none'}")
    runs = [r for tag in ROLE_TAGS
            for r in client.search_runs([exp.experiment_id], f"tags.`{tag}` = 'sweep'",
                                        order_by=["attributes.start_time DESC"], max_results=1)]
    runs.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    return (runs[0] if runs else None), exp.experiment_id


def is_sweep(run) -> bool:
    return any(run.data.tags.get(t) == "sweep" for t in ROLE_TAGS)


def child_runs(client, experiment_id: str, parent) -> list:
    if parent is not None:
        flt = f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
        return client.search_runs([experiment_id], flt, max_results=50000)
    return [r for r in client.search_runs([experiment_id], max_results=50000)
            if not is_sweep(r) and "seed" in r.data.params]


def _history(client, run_id: str, key: str) -> dict[int, float]:
    hist = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {int(m.step): float(m.value) for m in hist}  # a re-logged step keeps its last value


def _mask_profiles(client, run_id: str) -> list[list[dict]]:
    try:
        files = [f.path for f in client.list_artifacts(run_id, "rounds")
                 if f.path.endswith("_mask_profile.json")]
    except Exception:
        return []
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(files):
            local = client.download_artifacts(run_id, path, tmp)
            with open(local) as f:
                out.append(json.load(f))
            os.remove(local)
    return out


def _class_counts(metrics: dict[str, float]) -> list[float]:
    """Labels per class at the end: ``class_labels/<c>`` (older stores: ``labels_class_<c>``)."""
    for prefix in ("class_labels/", "labels_class_"):
        n = sum(1 for k in metrics if k.startswith(prefix) and k[len(prefix):].isdigit())
        if n:
            return [metrics.get(f"{prefix}{c}", 0.0) for c in range(n)]
    return []


def _labels_by_step(client, run_id: str, metrics: dict[str, float]) -> dict[int, list[float]]:
    """Labels per class after each round, keyed by the number of labels (the histories of
    ``class_labels/<c>``; empty for older stores, which logged only the end)."""
    n = sum(1 for k in metrics if k.startswith("class_labels/") and k[len("class_labels/"):].isdigit())
    hist = [_history(client, run_id, f"class_labels/{c}") for c in range(n)]
    return {s: [h.get(s, 0.0) for h in hist] for s in sorted(set().union(*hist))} if hist else {}


def pool_class_counts(config: dict[str, str]) -> list[int]:
    """Pool images per class, from ``data.class_counts`` or the paper's ``data.setting`` (empty
    when the run has neither)."""
    if config.get("data.setting", "").isdigit() and int(config["data.setting"]) in SETTINGS:
        return list(SETTINGS[int(config["data.setting"])])
    try:
        return [int(c) for c in config.get("data.class_counts", "").strip("[]").split(",")]
    except ValueError:
        return []


def run_config(params: dict[str, str]) -> dict[str, str]:
    """What a run computed: its params without the seed, paths, execution and tracking."""
    return {k: v for k, v in params.items()
            if v != "None" and not any(k == n or (n.endswith(".") and k.startswith(n))
                                       for n in NOT_CONFIG)}


def load_run(client, run) -> RunData:
    tags, params = run.data.tags, run.data.params
    strategy = params.get("strategy.name", "?")
    curves_by_step = {key: _history(client, run.info.run_id, key) for key in METRICS}
    steps = np.array(sorted(curves_by_step["accuracy"]), dtype=np.int64)
    curves = {k: np.array([v.get(int(s), np.nan) for s in steps], dtype=float)
              for k, v in curves_by_step.items()}
    config = run_config(params)
    context = {k: v for k, v in config.items() if not k.startswith("strategy.")}
    profiles = _mask_profiles(client, run.info.run_id) if "fishermask" in strategy else []
    seconds = {_phase_name(k): float(sum(_history(client, run.info.run_id, k).values()))
               for k in run.data.metrics if _phase_name(k) is not None}
    if run.info.end_time and run.info.start_time:  # the whole run, evaluation and logging included
        seconds["run (wall)"] = (run.info.end_time - run.info.start_time) / 1000.0
    variant = tags.get("variant") or tags.get("fishermask.variant") or strategy
    epochs = [int(v) for _, v in sorted(_history(client, run.info.run_id, "train/epochs").items())]
    return RunData(run_id=run.info.run_id, variant=variant,
                   strategy=strategy, seed=int(params.get("seed", 0)), status=run.info.status,
                   context=context, steps=steps, curves=curves,
                   labels_per_class=_class_counts(run.data.metrics), mask_profiles=profiles,
                   labels_by_step=_labels_by_step(client, run.info.run_id, run.data.metrics),
                   seconds=seconds, config=config, start_time=int(run.info.start_time or 0),
                   epochs=epochs)


def _phase_name(metric: str) -> Optional[str]:
    """``time/train_seconds`` -> ``train``, ``time/phase_greedy_seconds`` -> ``query: greedy``
    (older stores: the same names without ``time/``); None for other metrics."""
    if metric.startswith("time/"):
        metric = metric[len("time/"):]
    elif "/" in metric:
        return None
    if not metric.endswith("_seconds") or metric.startswith("sweep_"):
        return None
    name = metric[:-len("_seconds")]
    return "query: " + name[len("phase_"):] if name.startswith("phase_") else name


def split_configs(runs: list[RunData]) -> tuple[list[RunData], list[str]]:
    """Runs ready to average over seeds: runs of one variant label but different configs become
    variants of their own (named by the keys that differ), and a seed run more than once (after
    ``--restart``, a double launch) counts once, the newest run.  Returns the runs and notes."""
    notes: list[str] = []
    by_label: dict[str, dict[tuple, list[RunData]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by_label[r.variant][tuple(sorted(r.config.items()))].append(r)
    out: list[RunData] = []
    for label, configs in by_label.items():
        if len(configs) > 1:
            keys = sorted(k for k in {k for cfg in configs for k, _ in cfg}
                          if len({dict(c).get(k) for c in configs}) > 1)
            notes.append(f"'{label}' runs differ in {', '.join(keys)}; reported as "
                         f"{len(configs)} variants")
        for cfg, rs in configs.items():
            d = dict(cfg)
            name = label if len(configs) == 1 else (
                label + " [" + ", ".join(f"{k}={d.get(k, '–')}" for k in keys) + "]")
            newest: dict[int, RunData] = {}
            for r in sorted(rs, key=lambda r: r.start_time):
                newest[r.seed] = r
            if len(newest) < len(rs):
                notes.append(f"'{name}': {len(rs)} runs of {len(newest)} seeds; each seed counted "
                             f"once (its newest finished run)")
            for r in newest.values():
                r.variant = name
                out.append(r)
    return out, notes


# ----------------------------------------------------------------------------- statistics

def t_quantile(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else math.nan


def ci95(values) -> float:
    """Half-width of the 95 % t-interval of the mean of ``values`` (NaN for fewer than 2)."""
    if len(values) < 2:
        return math.nan
    return t_quantile(len(values)) * float(np.std(values, ddof=1)) / math.sqrt(len(values))


def diff_ci(values: dict[int, float], baseline: dict[int, float]) -> dict[str, Any]:
    """Mean difference to the baseline ± the 95 % CI half-width over seeds: paired by seed over
    the seeds both have when there are at least two of them (or both sides are the same single
    seed), else Welch's two-sample interval over all seeds (one shared seed is no pairing)."""
    common = sorted(set(values) & set(baseline))
    if len(common) >= 2 or (common and len(values) == len(baseline) == 1):
        d = np.array([values[s] - baseline[s] for s in common])
        n = len(d)
        half = t_quantile(n) * d.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        return {"diff": float(d.mean()), "ci": float(half), "n": n, "paired": True}
    a, b = np.array(list(values.values())), np.array(list(baseline.values()))
    if len(a) == 0 or len(b) == 0:
        return {"diff": math.nan, "ci": math.nan, "n": 0, "paired": False}
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "ci": math.nan, "n": min(len(a), len(b)), "paired": False}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1)) + (vb ** 2 / (len(b) - 1))) if se else 1.0
    from scipy import stats

    return {"diff": diff, "ci": float(stats.t.ppf(0.975, dof) * se), "n": min(len(a), len(b)),
            "paired": False}


def labels_to_reach(steps: np.ndarray, values: np.ndarray, target: float) -> Optional[int]:
    hit = np.nonzero(np.asarray(values) >= target)[0]
    return int(steps[hit[0]]) if len(hit) else None


def group(runs: list[RunData]) -> dict[str, list[RunData]]:
    """Runs by variant, in the strategies' registry order, then by name."""
    order = {name: i for i, name in enumerate(STRATEGIES)}
    by: dict[str, list[RunData]] = defaultdict(list)
    for r in runs:
        by[r.variant].append(r)
    keys = sorted(by, key=lambda v: (order.get(by[v][0].strategy, len(order)), v))
    return {k: sorted(by[k], key=lambda r: r.seed) for k in keys}


def shared_steps(runs: list[RunData]) -> list[int]:
    """The label counts every run has a point at, ascending."""
    return sorted(set.intersection(*(set(r.steps.tolist()) for r in runs))) if runs else []


def mean_curve(runs: list[RunData], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps shared by all runs, mean and std (ddof=0 for one seed) over seeds."""
    steps = shared_steps(runs)
    vals = np.array([[r.curves[metric][list(r.steps).index(s)] for s in steps] for r in runs])
    if not steps:
        return np.array([]), np.array([]), np.array([])
    std = vals.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))
    return np.array(steps), vals.mean(axis=0), std


def baseline_for(variant_runs: list[RunData], groups: dict[str, list[RunData]],
                 baseline: str) -> Optional[str]:
    """The baseline variant to compare with: the one with the same non-strategy axes (budget,
    sparsity …); None when there is none (a baseline of another configuration is no baseline)."""
    ctx = variant_runs[0].context
    same = [v for v, rs in groups.items() if rs[0].strategy == baseline and rs[0].context == ctx]
    return same[0] if same else None


def phase_seconds(runs: list[RunData]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Phases in the order they run (train, query, then the query's parts) and, per variant, the
    mean over the seeds that have it of each phase's seconds summed over a run's rounds (NaN: not
    a phase of it)."""
    by = group(runs)
    order = ["run (wall)", "train", "query", "query: mask", "query: gradients", "query: fisher",
             "query: greedy"]
    names = sorted({k for r in runs for k in r.seconds},
                   key=lambda k: (order.index(k) if k in order else len(order), k))
    return names, {v: {k: (float(np.mean([r.seconds[k] for r in rs if k in r.seconds]))
                           if any(k in r.seconds for r in rs) else math.nan) for k in names}
                   for v, rs in by.items()}


def accuracy_table(runs: list[RunData], metric: str) -> tuple[list[int], dict[str, list]]:
    """Label counts shared by every run and, per variant, (mean, std) over seeds at each (std
    NaN for a single seed: there is no spread to report)."""
    by = group(runs)
    steps = shared_steps(runs)
    table = {}
    for v, rs in by.items():
        s, mean, std = mean_curve(rs, metric)
        at = {int(a): (float(m), float(d) if len(rs) > 1 else math.nan)
              for a, m, d in zip(s, mean, std)}
        table[v] = [at[t] for t in steps]
    return steps, table


def mask_layers(runs: list[RunData]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Layer names and the mean/std (over seeds and rounds) fraction of each tensor in the mask."""
    profiles = [p for r in runs for p in r.mask_profiles]
    if not profiles:
        return [], np.array([]), np.array([])
    names = [p["name"] for p in profiles[0]]
    frac = np.array([[next((q["fraction"] for q in p if q["name"] == n), 0.0) for n in names]
                     for p in profiles])
    return names, frac.mean(axis=0), frac.std(axis=0)


def mask_rounds(runs: list[RunData]) -> tuple[list[str], dict[int, np.ndarray]]:
    """Tensor names and, per round (1 = the first query), the mean over seeds of the fraction of
    each tensor in the mask."""
    have = [r for r in runs if r.mask_profiles]
    if not have:
        return [], {}
    names = [p["name"] for p in have[0].mask_profiles[0]]
    by: dict[int, list[list[float]]] = defaultdict(list)
    for r in have:
        for i, prof in enumerate(r.mask_profiles):
            by[i + 1].append([next((q["fraction"] for q in prof if q["name"] == n), 0.0)
                              for n in names])
    return names, {k: np.mean(np.array(v), axis=0) for k, v in sorted(by.items())}

"""What a run tells a reader of the MLflow UI: params, tags, provenance, descriptions, dataset
inputs, metric names and end-of-run summary metrics.

* **params** are the resolved config of that run only: no ``None`` values, lists written
  ``a, b, c``, the budget resolved to numbers, ``data.data_dir`` as the user gave it plus
  ``data.data_dir_resolved`` (absolute);
* **tags** say only what params do not (``variant``, ``seed``, ``sweep``), plus provenance
  (MLflow's own context tags ``mlflow.user``/``mlflow.source.*``/``mlflow.source.git.commit``,
  ``version.*``, ``device``); bookkeeping keys start with ``mlflow.`` so the UI hides them;
* **descriptions** are ``mlflow.note.content`` (shown as the run's / experiment's description);
* **metrics** are grouped by the prefix before ``/`` (the UI's chart sections).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import numpy as np

from fishermask.config import flatten
from fishermask.data.params import resolve_dataset
from fishermask.models import resolve_model
from fishermask.plugins import Plugin
from fishermask.strategies import strategy_spec
from fishermask.execution.base import resolve_device

NOTE_TAG = "mlflow.note.content"
KIND_TAG = "mlflow.experimentKind"  # MLflow 3.x UIs that read it open the runs view, not GenAI
KIND = "custom_model_development"
UI_PORT = 5000
MAIN_METRICS = ("accuracy", "balanced_accuracy")


# ----------------------------------------------------------------------------- values

def fmt_value(value: Any) -> str:
    """A param value as a reader wants it: ``12, 12, 40`` rather than ``[12, 12, 40]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value)
    return str(value)


def resolved_path(path: str) -> str:
    return str(Path(os.path.expanduser(path)).resolve())


def _clean(flat: dict[str, Any]) -> dict[str, str]:
    return {k: fmt_value(v)[:6000] for k, v in flat.items() if v is not None}


def run_params(cfg, given: Optional[dict[str, Any]] = None) -> dict[str, str]:
    """Params of one run.  ``given``: config paths as the user wrote them (a sweep makes
    ``data.data_dir`` absolute for its workers; the run shows the user's spelling)."""
    flat = cfg.flat()
    try:
        initial, query, rounds = cfg.budget.resolved()
        flat.update({"budget.initial": initial, "budget.query": query, "budget.rounds": rounds,
                     "budget.total": initial + rounds * query})
    except Exception:  # an invalid budget fails later, with its own message
        pass
    data_dir = flat["data.data_dir"]
    flat["data.data_dir"] = (given or {}).get("data.data_dir", data_dir)
    flat["data.data_dir_resolved"] = resolved_path(data_dir)
    return _clean(flat)


def sweep_params(sweep) -> dict[str, str]:
    """Params of a sweep's parent: each axis once (``sweep.<axis>`` = its values) and the base
    config without the axes; strategy parameters only when the strategy is not an axis."""
    axes = dict(sweep.axes)
    params = {f"sweep.{k}": fmt_value(v) for k, v in axes.items()}
    strategy_axis = any(k == "strategy" or k.startswith("strategy.") for k in axes)
    base = flatten(sweep.base.to_dict())
    for k, v in base.items():
        if k in axes or (strategy_axis and k.startswith("strategy.")):
            continue
        if v is not None:
            params[k] = fmt_value(v)[:6000]
    if "data.data_dir" in params:
        params["data.data_dir_resolved"] = resolved_path(str(base["data.data_dir"]))
    return params


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


# ----------------------------------------------------------------------------- provenance

def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("fishermask", "torch", "ray", "mlflow"):
        try:
            out[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def plugins_of(cfg) -> dict[str, Plugin]:
    """The config's plug-ins (not built in): ``{config key: Plugin}``."""
    found = {"data.dataset": resolve_dataset(cfg.data.dataset),
             "model.name": resolve_model(cfg.model.name),
             "strategy.name": strategy_spec(cfg.strategy.name).plugin}
    return {k: p for k, p in found.items() if p is not None and p.source != "builtin"}


def plugin_tags(cfg) -> dict[str, str]:
    """What ran, for every plug-in of the config: ``plugin.<key>`` = its import path, and
    ``plugin.<key>.distribution`` = its distribution and version where it has one."""
    tags = {}
    for key, plugin in plugins_of(cfg).items():
        tags[f"plugin.{key}"] = plugin.path
        if plugin.distribution:
            tags[f"plugin.{key}.distribution"] = f"{plugin.distribution} {plugin.version}"
    return tags


def device_name(setting: str = "auto") -> str:
    import torch

    device = resolve_device(setting)
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return str(device)


def context_tags() -> dict[str, str]:
    """MLflow's own context tags (user, source, git commit when run from a checkout), with the
    commit of the checkout fishermask is installed from when MLflow finds none."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = dict(resolve_tags({}))
    if "mlflow.source.git.commit" not in tags:
        try:
            from mlflow.utils.git_utils import get_git_commit

            commit = get_git_commit(str(Path(__file__).resolve().parent))
            if commit:
                tags["mlflow.source.git.commit"] = commit
        except Exception:  # no git: no commit tag
            pass
    return tags


# ----------------------------------------------------------------------------- descriptions

def setting_text(cfg) -> str:
    d = cfg.data
    if d.setting is not None:
        return f"Setting {d.setting}"
    if d.class_counts is not None:
        return "pool class counts " + fmt_value(d.class_counts)
    return "the full pool"


def budget_text(cfg) -> str:
    try:
        initial, query, rounds = cfg.budget.resolved()
    except Exception:
        return "budget unresolved"
    return f"{initial} + {rounds} × {query} = {initial + rounds * query} labels"


def run_description(cfg, variant: Optional[str] = None, sweep: Optional[str] = None) -> str:
    head = f"**{variant or cfg.strategy.name}**, seed {cfg.seed}"
    own = ", ".join(f"{k}={fmt_value(v)}" for k, v in cfg.strategy.params.items())
    lines = [head + (f" (sweep `{sweep}`)" if sweep else ""), "",
             f"- strategy: {cfg.strategy.name}" + (f" ({own})" if own else ""),
             f"- data: {cfg.data.dataset}, {setting_text(cfg)}; model {cfg.model.name}",
             f"- budget: {budget_text(cfg)}",
             "", "Metric step = number of labels. `aubc/*` = normalised area under the "
                 "budget curve (mean accuracy over the budget), `final/*` = the last round."]
    return "\n".join(lines)


def sweep_description(sweep, best: Optional[str] = None) -> str:
    axes = "; ".join(f"`{k}`: {fmt_value(v)}" for k, v in sweep.axes.items()) or "no axes"
    lines = [f"Sweep **{sweep.name}**: {len(sweep.trials)} trials (one child run each) over {axes}.",
             "", f"Base: {sweep.base.data.dataset}, {setting_text(sweep.base)}, model "
                 f"{sweep.base.model.name}, budget {budget_text(sweep.base)}. "
                 "Metric step = number of labels.",
             "", "Compare strategies: Chart view, *Group by* the tag `variant` (mean ± band over "
                 "seeds); in the table sort by `aubc/accuracy`. `fishermask report` writes "
                 "`report/report.html` here."]
    if best:
        lines += ["", best]
    return "\n".join(lines)


EXPERIMENT_NOTE = (
    "Active-learning runs of **fishermask**. A sweep is a parent run `sweep <name>` with one child "
    "run per trial; every metric's step is the number of labels.\n\n"
    "- Runs view, *Group by* the tag `variant`: one row per strategy (mean over seeds);\n"
    "- Chart view grouped the same way: `accuracy` and `balanced_accuracy` curves as mean ± band;\n"
    "- columns `aubc/accuracy` (area under the budget curve) and `final/accuracy` rank the "
    "strategies as `fishermask report` does.")


def describe_experiment(client, experiment_id: str) -> None:
    """Open the experiment on its runs, with a description (kept if someone wrote one)."""
    exp = client.get_experiment(experiment_id)
    tags = exp.tags or {}
    if tags.get(KIND_TAG) != KIND:
        client.set_experiment_tag(experiment_id, KIND_TAG, KIND)
    if not tags.get(NOTE_TAG):
        client.set_experiment_tag(experiment_id, NOTE_TAG, EXPERIMENT_NOTE)


def ui_base(tracking_uri: str) -> str:
    """Where the MLflow UI of ``tracking_uri`` answers (a server, else ``mlflow ui`` here)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{UI_PORT}"


def runs_url(tracking_uri: str, experiment_id: str, chart: bool = False) -> str:
    q = "workflowType=machine_learning" + ("&compareRunsMode=CHART" if chart else "")
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?{q}"


def ui_command(tracking_uri: str) -> Optional[str]:
    """The command that serves ``tracking_uri``'s UI on the one port, or None for a server."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return None
    return f"mlflow ui --backend-store-uri {tracking_uri} --port {UI_PORT}"


# ----------------------------------------------------------------------------- metrics

def round_metrics(rec) -> dict[str, float]:
    """A round's metrics under grouped names (the UI makes one chart section per prefix)."""
    values: dict[str, float] = {
        "accuracy": rec.accuracy, "balanced_accuracy": rec.balanced_accuracy,
        "time/query_seconds": rec.query_seconds, "time/train_seconds": rec.train_seconds,
        "train/epochs": rec.epochs, "progress/round": rec.round}
    for k, v in rec.metrics.items():
        if k.startswith("phase_"):
            name = k[len("phase_"):].removesuffix("_seconds")
            values[f"time/phase_{name}_seconds"] = v
        else:
            values[f"query/{k}"] = v
    for c, (a, n) in enumerate(zip(rec.per_class_accuracy, rec.labels_per_class)):
        values[f"class_accuracy/{c}"] = a
        values[f"class_labels/{c}"] = n
    return values


def aubc(steps: np.ndarray, values: np.ndarray) -> float:
    """Area under the curve over the labels axis, divided by its width (a mean accuracy in [0, 1])."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    if len(steps) == 0:
        return math.nan
    if len(steps) == 1 or steps[-1] == steps[0]:
        return float(values[-1])
    area = np.sum((values[1:] + values[:-1]) * np.diff(steps)) / 2.0
    return float(area / (steps[-1] - steps[0]))


def summary_metrics(records) -> dict[str, float]:
    """End-of-run summary: AUBC and final value of each main metric, and the labels used."""
    steps = [r.n_labels for r in records]
    out: dict[str, float] = {"final/labels": float(steps[-1])}
    for m in MAIN_METRICS:
        values = [getattr(r, m) for r in records]
        out[f"aubc/{m}"] = aubc(steps, values)
        out[f"final/{m}"] = float(values[-1])
    return out


def metric_key(text: str) -> str:
    """``text`` as one segment of an MLflow metric key (no ``/``, only allowed characters)."""
    return re.sub(r"[^A-Za-z0-9_.\- ]+", "_", text).strip() or "_"


# ----------------------------------------------------------------------------- datasets

def dataset_descriptions(cfg, data) -> list[dict[str, str]]:
    """The pool and the test set as plain values (name, digest, source type, source, profile,
    role): what :func:`dataset_inputs` turns into MLflow's dataset inputs, computed where the data
    is (a sweep's trial) without importing MLflow."""
    if cfg.data.dataset == "digits":
        source, stype = {"uri": "sklearn.datasets.load_digits"}, "code"
    elif cfg.data.dataset == "features":
        source, stype = {"uri": resolved_path(cfg.data.features)}, "local"
    else:
        source, stype = {"uri": resolved_path(cfg.data.data_dir)}, "local"
    out = []
    for role, part in (("pool", data.pool), ("test", data.test)):
        counts = [int(c) for c in part.class_counts()]
        h = hashlib.sha1(json.dumps([cfg.data.dataset, role, counts]).encode())
        if role == "pool" and getattr(data, "pool_source_index", None) is not None:
            h.update(np.asarray(data.pool_source_index, dtype=np.int64).tobytes())
        else:
            h.update(part.targets.numpy().astype(np.int64).tobytes())
        profile = {"num_rows": len(part), "class_counts": counts,
                   "image_shape": list(part.image_shape)}
        out.append({"name": f"{cfg.data.dataset}-{role}", "digest": h.hexdigest()[:12],
                    "source_type": stype, "source": json.dumps(source),
                    "profile": json.dumps(profile), "role": role})
    return out


def dataset_inputs(descriptions: list[dict[str, str]]) -> list:
    """MLflow ``DatasetInput``s of :func:`dataset_descriptions`."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return [DatasetInput(Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                                 source=d["source"], profile=d["profile"]),
                         tags=[InputTag("mlflow.data.context", d["role"])])
            for d in descriptions]

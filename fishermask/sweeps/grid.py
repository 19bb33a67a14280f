"""Sweep files → trials: grid expansion, per-trial configs, stable trial keys, storage and URIs.

A sweep file is a config plus a ``sweep:`` block ``{dotted key: [values]}``.  The grid is the
Cartesian product of the axes, in file order.  A value that is a mapping is merged into the
section at that key (``strategy: [{name: bait}, {name: fishermask, sparsity: 0.01}]``).
Strategy parameters that a trial's strategy does not take are dropped for that trial (so a base
``strategy.sparsity`` only reaches FisherMask), and grid points that then resolve to the same
config run once.  Nothing here imports Ray or torch.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fishermask.config import (Config, all_strategy_params, apply_overrides, from_dict,
                               read_yaml, set_dotted, strategy_params_for)
from fishermask.errors import ConfigError
from fishermask.plugins import search_folders
from fishermask.strategies import STRATEGIES

DEFAULT_STORAGE = ".fishermask/sweeps"


@dataclass
class TrialSpec:
    key: str                       # stable: hash of the resolved config (tracking excluded)
    label: str                     # readable: "fishermask sparsity=0.005 seed=1"
    variant: str                   # the label without the seed (what the report groups by)
    axes: dict[str, Any]           # this trial's grid coordinates (after dropping unused ones)
    config: dict[str, Any]         # the resolved, validated config (JSON-able)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "variant": self.variant,
                "axes": self.axes, "config": self.config}


@dataclass
class Sweep:
    path: Path
    name: str                      # Tune experiment folder name
    experiment: str                # MLflow experiment
    base: Config
    axes: dict[str, list[Any]]
    trials: list[TrialSpec]
    points: int                    # grid points before de-duplication
    raw_text: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        blob = json.dumps([t.key for t in self.trials])
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _drop_foreign_strategy_params(raw: dict[str, Any], also: tuple[str, ...] = ()) -> list[str]:
    """Drop the parameters of other strategies (built in, or named in ``also``: the sweep's
    plug-ins) from a raw trial (in place); their names."""
    strat = raw.get("strategy")
    if not isinstance(strat, dict):
        return []
    kept, dropped = strategy_params_for(strat.get("name", "random"), strat, also)
    raw["strategy"] = kept
    return dropped


def _strategy_names(raw: dict[str, Any], grid: dict[str, Any]) -> tuple[str, ...]:
    """Every strategy the sweep names that is not built in (plug-ins), in order."""
    base = raw.get("strategy") if isinstance(raw.get("strategy"), dict) else {}
    names = [base.get("name", "random")] + list(grid.get("strategy.name", []))
    names += [v.get("name") for v in grid.get("strategy", []) if isinstance(v, dict)]
    return tuple(dict.fromkeys(n for n in names if isinstance(n, str) and n not in STRATEGIES))


def _absolute_data_dir(raw: dict[str, Any]) -> None:
    """Trials run in Tune's trial folders: a relative ``data.data_dir`` (default ``./data``) is
    taken relative to the driver's working directory; ``~/...`` stays (expanded on each node)."""
    data = raw.setdefault("data", {})
    if not isinstance(data, dict):
        return
    path = str(data.get("data_dir") or "./data")
    if not path.startswith("~") and not Path(path).is_absolute():
        data["data_dir"] = str((Path.cwd() / path).resolve())


def _check_strategy_axes(grid: dict[str, Any], plugins: tuple[str, ...] = ()) -> None:
    """An axis over a strategy parameter that no strategy takes is a typo: stop (as ``run`` does)
    instead of silently dropping it from every trial."""
    known = all_strategy_params(plugins)
    named = [k.split(".", 1)[1] for k in grid if k.startswith("strategy.")]
    named += [p for k, vs in grid.items() if k == "strategy"
              for v in vs if isinstance(v, dict) for p in v]
    unknown = sorted({p for p in named if p != "name" and p not in known})
    if unknown:
        raise ConfigError(f"sweep: no strategy takes the parameter(s) "
                          f"{', '.join(repr(p) for p in unknown)}; strategy parameters are: "
                          f"{', '.join(sorted(known))}")


def trial_key(cfg: Config) -> str:
    """Stable key of a validated trial config (tracking settings excluded)."""
    return cfg.fingerprint(drop=("tracking",))[:16]


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def _labels(axes: dict[str, Any], config: dict[str, Any]) -> tuple[str, str]:
    parts = [config["strategy"]["name"]]
    for k, v in axes.items():
        if k in ("seed", "strategy.name"):
            continue
        if k == "strategy" and isinstance(v, dict):
            # a strategy variant reads as its name and its own parameters
            parts.extend(f"{pk}={_fmt(pv)}" for pk, pv in v.items() if pk != "name")
            continue
        parts.append(f"{k.split('.')[-1]}={_fmt(v)}")
    variant = " ".join(parts)
    return f"{variant} seed={config['seed']}", variant


def expand(raw: dict[str, Any]) -> tuple[list[TrialSpec], int, list[str]]:
    """All distinct trials of a raw sweep mapping (validated)."""
    raw = copy.deepcopy(raw)
    grid = raw.pop("sweep", None) or {}
    if not isinstance(grid, dict):
        raise ConfigError("sweep: must be a mapping of dotted config keys to lists of values, "
                          "e.g. sweep: {strategy.name: [random, fishermask], seed: [0, 1, 2]}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: give a non-empty list of values (got {values!r})")
    plugins = _strategy_names(raw, grid)
    _check_strategy_axes(grid, plugins)
    keys = list(grid)
    trials: dict[str, TrialSpec] = {}
    notes: list[str] = []
    points = 0
    for combo in itertools.product(*(grid[k] for k in keys)):
        points += 1
        point = dict(zip(keys, combo))
        trial_raw = copy.deepcopy(raw)
        for k, v in point.items():
            set_dotted(trial_raw, k.split("."), v, where=f"sweep.{k}", merge=True)
        dropped = _drop_foreign_strategy_params(trial_raw, plugins)
        _absolute_data_dir(trial_raw)
        where = ", ".join(f"{k}={_fmt(v)}" for k, v in point.items()) or "the base config"
        try:
            cfg = from_dict(trial_raw)
        except ConfigError as exc:
            raise ConfigError(f"sweep point ({where}): {exc}") from None
        config = cfg.to_dict()
        axes = {k: v for k, v in point.items()
                if not (k.startswith("strategy.") and k.split(".", 1)[1] in dropped)}
        key = trial_key(cfg)
        if key in trials:
            continue
        if dropped:
            notes.append(f"{config['strategy']['name']}: ignores {', '.join(sorted(dropped))}")
        label, variant = _labels(axes, config)
        trials[key] = TrialSpec(key=key, label=label, variant=variant, axes=axes, config=config)
    return list(trials.values()), points, sorted(set(notes))


def load_sweep(path: str | Path, overrides: Optional[list[str]] = None) -> Sweep:
    """Read, override (``--set``, including ``sweep.<axis>=[...]``), validate and expand."""
    path = Path(path)
    raw = apply_overrides(read_yaml(path), overrides or [])
    search_folders(path.resolve().parent, Path.cwd())  # plug-in modules next to the sweep file
    base_raw = {k: v for k, v in raw.items() if k != "sweep"}
    grid = raw.get("sweep") if isinstance(raw.get("sweep"), dict) else {}
    _drop_foreign_strategy_params(base_raw, _strategy_names(raw, grid))
    try:
        base = from_dict(base_raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    trials, points, notes = expand(raw)
    experiment = base.experiment
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)
    name = experiment if stem == experiment else f"{experiment}-{stem}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return Sweep(path=path, name=name, experiment=experiment, base=base,
                 axes=dict(raw.get("sweep") or {}), trials=trials, points=points,
                 raw_text=path.read_text(), notes=notes)


def absolute_tracking_uri(uri: Optional[str]) -> str:
    """A tracking URI every Ray worker can use: relative sqlite paths and plain paths made
    absolute (workers do not share the driver's working directory)."""
    import mlflow

    if not uri:
        uri = mlflow.get_tracking_uri()  # MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db
    m = re.match(r"^sqlite:///(.*)$", uri)
    if m:
        rest = m.group(1)
        if rest and not rest.startswith("/") and rest != ":memory:":
            return "sqlite:///" + str((Path.cwd() / rest).resolve())
        return uri
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri).resolve().as_uri()
    return uri


def storage_root(storage: Optional[str]) -> str:
    """Absolute storage root for Tune (a local path) or a URI (s3://, gs://) passed through."""
    storage = storage or DEFAULT_STORAGE
    if "://" in storage:
        return storage.rstrip("/")
    return str(Path(storage).expanduser().resolve())

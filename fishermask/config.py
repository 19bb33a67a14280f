"""Typed, validated experiment configuration (YAML + ``--set key.sub=value`` overrides).

A config file is a mapping with the sections below; a sweep file is the same plus a ``sweep:``
block of grid axes (``fishermask run`` ignores it).  Every error is a :class:`ConfigError` whose
message says what is wrong, where (the dotted key), and the valid choices or the fix.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fishermask.data.params import BudgetParams, DataParams
from fishermask.errors import ConfigError
from fishermask.execution.base import ExecutionParams
from fishermask.models import ModelParams
from fishermask.plugins import search_folders
from fishermask.strategies import STRATEGIES, StrategySpec, strategy_spec
from fishermask.tracking.params import TrackingParams
from fishermask.training import TrainParams

CONFIG_KEYS = {"max_memory_gb": "execution.max_memory_gb", "shards": "execution.shards",
               "sparsity": "strategy.sparsity", "fisher_target": "strategy.fisher_target",
               "fisher_classes": "strategy.fisher_classes", "top_c": "strategy.top_c"}
"""Library parameter names → the config keys that set them (for messages raised under the CLI)."""

# The layers' parameter models, composed below under their config section names.
DataConfig, BudgetConfig = DataParams, BudgetParams
ModelConfig, TrainConfig = ModelParams, TrainParams
ExecutionConfig, TrackingConfig = ExecutionParams, TrackingParams


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class StrategyConfig(BaseModel):
    """``name`` plus the strategy's own parameters (validated against the strategy's schema)."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)
    name: str = "random"

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any):
        if not isinstance(data, dict):
            raise ValueError("strategy must be a mapping with at least a 'name'")
        data = dict(data)
        name = data.pop("name", "random")
        spec = get_strategy_spec(name)  # raises ConfigError naming the valid strategies
        data, _ = strategy_params_for(name, data)
        try:
            params = spec.params(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, prefix=f"strategy ({name})")) from None
        for key, value in params.model_dump().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"strategy.{key}: must be a finite number (got {value!r})")
        return {"name": name, **params.model_dump()}

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Config(_Section):
    experiment: str = Field("fishermask", description="MLflow experiment name (not blank)")
    seed: int = 0
    data: DataConfig = DataConfig()
    budget: BudgetConfig = BudgetConfig(regime="low")
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    execution: ExecutionConfig = ExecutionConfig()
    tracking: TrackingConfig = TrackingConfig()
    sweep: Optional[dict[str, list[Any]]] = None

    @field_validator("experiment")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the MLflow experiment needs a name; e.g. --set experiment=my_study")
        return v

    def to_dict(self, *, with_sweep: bool = False) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        if not with_sweep:
            d.pop("sweep", None)
        return d

    def flat(self) -> dict[str, Any]:
        """Flat ``{dotted.key: value}`` view (MLflow params)."""
        return flatten(self.to_dict())

    def fingerprint(self, *, drop: tuple[str, ...] = ()) -> str:
        """SHA-1 of the settings that differ from their defaults (sections in ``drop`` and the
        data's location left out).  Hashing only non-defaults keeps keys stable when a later
        version adds an option whose default reproduces the old behaviour."""
        d = self.to_dict()
        for k in drop:
            d.pop(k, None)
        d["data"].pop("data_dir", None)  # where the files are, not what they are
        d["data"].pop("download", None)
        defaults = Config(strategy={"name": self.strategy.name}).to_dict()
        minimal = _without_defaults(d, defaults)
        minimal = {} if minimal is _DEFAULT else minimal
        minimal.setdefault("strategy", {})["name"] = self.strategy.name
        return hashlib.sha1(json.dumps(minimal, sort_keys=True).encode()).hexdigest()

    def result_key(self) -> str:
        """Key of everything that determines the results (not tracking or execution layout)."""
        return self.fingerprint(drop=("tracking", "execution"))[:12]


# ----------------------------------------------------------------------------- helpers

_DEFAULT = object()


def _without_defaults(value: Any, default: Any) -> Any:
    """``value`` with every entry equal to ``default``'s dropped (recursively in mappings);
    ``_DEFAULT`` when nothing is left."""
    if isinstance(value, dict) and isinstance(default, dict):
        out = {}
        for k, v in value.items():
            v = _without_defaults(v, default[k]) if k in default else v
            if v is not _DEFAULT:
                out[k] = v
        return out or _DEFAULT
    return _DEFAULT if value == default else value


def get_strategy_spec(name: str) -> StrategySpec:
    """The strategy ``strategy.name`` names: built in, or a plug-in (an import path or an
    installed entry point); a :class:`ConfigError` naming the valid strategies otherwise."""
    return strategy_spec(name, key="strategy.name")


def all_strategy_params(also: tuple[str, ...] = ()) -> set[str]:
    """The parameter names of the built-in strategies and of the strategies ``also`` names."""
    specs = list(STRATEGIES.values()) + [get_strategy_spec(n) for n in also
                                         if n not in STRATEGIES]
    return {f for spec in specs for f in spec.params.model_fields}


def strategy_params_for(name: str, params: dict[str, Any],
                        also: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """``params`` without the parameters of *other* strategies (built in, or named in ``also``:
    a sweep over ``strategy.name`` shares one base config), and the names dropped.  A name no
    strategy knows is kept, so that it fails as an unknown key."""
    own = get_strategy_spec(name).params.model_fields
    known = all_strategy_params(also)
    dropped = [k for k in params if k not in own and k != "name" and k in known]
    return {k: v for k, v in params.items() if k not in dropped}, dropped


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None) if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            break
    return sorted(model.model_fields)


def format_validation_error(exc: ValidationError, prefix: str = "", model=None) -> str:
    """Turn a pydantic error into one line per problem: ``key: what is wrong``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not isinstance(p, int) or True)
        key = ".".join(str(p) for p in loc)
        where = f"{prefix}.{key}" if prefix and key else (prefix or key or "config")
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(model, loc[:-1]) if model is not None else []
            hint = f"; valid keys here: {', '.join(valid)}" if valid else ""
            lines.append(f"unknown key '{where}'{hint}")
        else:
            got = err.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg}{got_s}")
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE with a dotted key (e.g. strategy.name=entropy), got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"--set: bad key {key!r}; use a dotted key such as seed or train.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_dotted(raw: dict[str, Any], path: list[str], value: Any, *, where: str,
               merge: bool = False) -> None:
    """``raw[path[0]][path[1]]... = value`` in place, creating missing sections; with ``merge`` a
    mapping value updates an existing mapping instead of replacing it. ``where`` names the
    setting in the error raised when a prefix of ``path`` is a value, not a section."""
    node = raw
    for part in path[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: '{part}' is a value, not a section")
        node = nxt
    old = node.get(path[-1])
    if merge and isinstance(value, dict) and isinstance(old, dict):
        value = {**old, **value}
    node[path[-1]] = copy.deepcopy(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        path, value = parse_override(item)
        if path[0] == "sweep" and len(path) > 1:  # a sweep axis is one dotted key: sweep.<a.b>
            sweep = raw.get("sweep")
            if sweep is None:
                sweep = raw["sweep"] = {}
            if not isinstance(sweep, dict):
                raise ConfigError(f"--set {item}: the file's sweep: is not a mapping of axes")
            sweep[".".join(path[1:])] = copy.deepcopy(value)
            continue
        set_dotted(raw, path, value, where=f"--set {item}")
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); save the file as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; write the settings to change (e.g. "
                          f"strategy: {{name: entropy}}), or copy sweeps/quickstart.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, ...)")
    return raw


def from_dict(raw: dict[str, Any]) -> Config:
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model=Config)) from None
    cfg.budget.resolved()  # raises on an impossible budget
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or sweep) file, apply ``--set`` overrides and validate (plug-in modules
    are also looked for next to the file and in the working folder)."""
    search_folders(Path(path).expanduser().resolve().parent, Path.cwd())
    return from_dict(apply_overrides(read_yaml(path), overrides or []))

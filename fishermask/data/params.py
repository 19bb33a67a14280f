"""Parameter models of the data layer: the dataset and pool (``data:``) and the budget (``budget:``).

:class:`~fishermask.config.Config` composes them; nothing here imports the config.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fishermask.errors import ConfigError
from fishermask.plugins import Plugin, PluginError, resolve

DATASETS = ("digits", "fashion_mnist", "cifar10", "image_folder", "features")
SETTINGS: dict[int, list[int]] = {1: [250, 5000, 250, 250], 2: [250] * 9 + [5000]}
"""Imbalance settings: class counts of the pool (Setting 1: one majority class among four;
Setting 2: nine minority classes and one majority class)."""
REGIMES = {
    # name: (initial labels, labels per round, total budget)
    "low": (15, 70, 575),
    "high": (250, 250, 5750),
    "setting2": (500, 500, 6500),
}


def resolve_dataset(name: str) -> Plugin:
    """The dataset ``data.dataset`` names: a built-in (``obj`` is its name) or a factory (an
    import path or an installed entry point of ``fishermask.datasets``), checked callable."""
    plugin = resolve("datasets", name, "data.dataset", {n: n for n in DATASETS})
    if plugin.source != "builtin" and not callable(plugin.obj):
        raise PluginError(f"data.dataset: {name!r} is a {type(plugin.obj).__name__}, not a "
                          f"callable dataset factory (returning (train, test) ImageData)")
    return plugin


class DataParams(BaseModel):
    """Which dataset, where its files are, and the pool's class imbalance.

    ``dataset`` is a built-in name or a **dataset factory** (an import path
    ``package.module:attribute`` or an installed plug-in's name): a callable called with the
    mapping ``args`` as keyword arguments that returns ``(train, test)``, each a
    :class:`fishermask.data.ImageData` (or a :class:`~fishermask.data.FeatureData` or
    :class:`~fishermask.data.ImageFiles`, read when used) with the same ``classes``.  The pool is drawn from its
    train split as from a built-in's (``class_counts``, ``setting``, the seeded draw)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    dataset: str = "digits"
    args: dict[str, Any] = Field(default_factory=dict, description="a factory's arguments")
    data_dir: str = "./data"
    download: bool = False
    setting: Optional[Literal[1, 2]] = None
    class_counts: Optional[list[int]] = None
    augment: bool = False
    image_size: int = Field(32, ge=4, le=1024,
                            description="image_folder only: images are resized to this")
    in_memory: bool = Field(True, description="image_folder: false decodes each image file when "
                                              "it is used (each shard its own files)")
    test_fraction: float = Field(0.3, gt=0, lt=1,
                                 description="digits, image_folder, features: stratified hold-out")
    features: Optional[str] = Field(None, description="features: .npy of float32/float16 [N, d]")
    labels: Optional[str] = Field(None, description="features: .npy of int labels [N]")
    test_features: Optional[str] = None
    test_labels: Optional[str] = None

    @field_validator("class_counts")
    @classmethod
    def _counts(cls, v):
        if v is not None and (not v or any(c < 0 for c in v) or sum(v) == 0):
            raise ValueError("class_counts must be a non-empty list of non-negative counts, "
                             "position i = number of pool images of class i")
        return v

    @model_validator(mode="after")
    def _one_imbalance(self):
        if self.setting is not None and self.class_counts is not None:
            raise ValueError("give either data.setting or data.class_counts, not both")
        return self

    @model_validator(mode="after")
    def _files_of_a_folder(self):
        if not self.in_memory and self.dataset != "image_folder":
            raise ValueError(f"data.in_memory=false reads the files of an image folder "
                             f"(data.dataset=image_folder); {self.dataset!r} is read into memory"
                             + (" (a features pool always stays in its file)"
                                if self.dataset == "features" else ""))
        return self

    @model_validator(mode="after")
    def _feature_files(self):
        files = ("features", "labels", "test_features", "test_labels")
        if self.dataset != "features":
            given = [f"data.{k}" for k in files if getattr(self, k)]
            if given:
                raise ValueError(f"{', '.join(given)} belong to data.dataset=features")
            return self
        if not self.features:
            raise ValueError("data.dataset=features needs data.features (the .npy file of the "
                             "pool's [N, d] features) and, to simulate labeling, data.labels")
        if bool(self.test_features) != bool(self.test_labels):
            raise ValueError("give both data.test_features and data.test_labels, or neither "
                             "(then data.test_fraction of the pool is held out)")
        if self.augment:
            raise ValueError("data.augment crops and flips images; features take none")
        return self

    @model_validator(mode="after")
    def _factory_binds(self):
        plugin = resolve_dataset(self.dataset)
        if plugin.source == "builtin":
            if self.args:
                raise ConfigError(f"data.args is for dataset factories; the built-in dataset "
                                  f"{self.dataset!r} takes data.data_dir, data.download, ...")
            return self
        try:
            inspect.signature(plugin.obj).bind(**self.args)
        except TypeError as exc:
            raise PluginError(f"data.args: the dataset factory {plugin.path} cannot be called "
                              f"with {self.args or 'no arguments'}: {exc}") from None
        except ValueError:  # no signature to check (a builtin callable)
            pass
        return self


class BudgetParams(BaseModel):
    """The labeling budget: initial labels, labels per round, rounds (or a preset regime)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    regime: Optional[Literal["low", "high", "setting2"]] = None
    initial: Optional[int] = Field(None, ge=1)
    query: Optional[int] = Field(None, ge=1)
    rounds: Optional[int] = Field(None, ge=0)
    total: Optional[int] = Field(None, ge=1)

    def resolved(self) -> tuple[int, int, int]:
        """Return ``(initial, query, rounds)`` after applying the regime preset."""
        initial, query, total = REGIMES.get(self.regime or "", (None, None, None))
        initial = self.initial if self.initial is not None else initial
        query = self.query if self.query is not None else query
        total = self.total if self.total is not None else total
        if initial is None or query is None:
            raise ConfigError("budget: set budget.regime (low | high | setting2) or both "
                              "budget.initial and budget.query")
        if self.rounds is not None:
            rounds = self.rounds
            if self.total is not None and initial + rounds * query != self.total:
                raise ConfigError(f"budget.total={self.total} disagrees with budget.initial "
                                  f"({initial}) + budget.rounds ({rounds}) × budget.query "
                                  f"({query}) = {initial + rounds * query}; give one of them")
        elif total is not None:
            if total < initial or (total - initial) % query:
                raise ConfigError(f"budget.total={total} must equal budget.initial ({initial}) "
                                  f"plus a whole number of rounds of budget.query ({query})")
            rounds = (total - initial) // query
        else:
            raise ConfigError("budget: set budget.rounds or budget.total")
        return initial, query, rounds

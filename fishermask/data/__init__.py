"""The data layer: datasets read into memory (:mod:`~fishermask.data.readers`), the imbalanced
pool and test split (:mod:`~fishermask.data.pool`), and the ``data:``/``budget:`` parameter
models (:mod:`~fishermask.data.params`)."""

from fishermask.data.params import DATASETS, REGIMES, SETTINGS, BudgetParams, DataParams
from fishermask.data.pool import (CROP_PADDING, ExperimentData, ImageData, initial_labeled,
                                  load_experiment_data)

__all__ = ["BudgetParams", "CROP_PADDING", "DATASETS", "DataParams", "ExperimentData",
           "ImageData", "REGIMES", "SETTINGS", "initial_labeled", "load_experiment_data"]

"""The data layer: datasets read into memory (:mod:`~fishermask.data.readers`), pools of
precomputed features that stay on disk (:mod:`~fishermask.data.features`), image folders read
when used (:mod:`~fishermask.data.files`), the imbalanced pool and
test split (:mod:`~fishermask.data.pool`), and the ``data:``/``budget:`` parameter models
(:mod:`~fishermask.data.params`)."""

from fishermask.data.features import FeatureData
from fishermask.data.files import ImageFiles
from fishermask.data.params import DATASETS, REGIMES, SETTINGS, BudgetParams, DataParams
from fishermask.data.pool import ExperimentData, ImageData, initial_labeled, load_experiment_data
from fishermask.data.transforms import CROP_PADDING

__all__ = ["BudgetParams", "CROP_PADDING", "DATASETS", "DataParams", "ExperimentData",
           "FeatureData", "ImageData", "ImageFiles", "REGIMES", "SETTINGS", "initial_labeled", "load_experiment_data"]

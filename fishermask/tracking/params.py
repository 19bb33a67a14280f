"""Parameter model of the tracking layer (``tracking:``); the config composes it."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class TrackingParams(BaseModel):
    """Where results go (``tracking:``): the MLflow store, the run name, checkpoints, and how
    long (``patience_s``) a tracking server may not answer before the run or sweep stops."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    tracking_uri: Optional[str] = None
    run_name: Optional[str] = None
    checkpoint_dir: str = ".fishermask/checkpoints"
    patience_s: float = Field(60.0, gt=0)

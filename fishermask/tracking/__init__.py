"""Tracking: the MLflow tracker (:mod:`~fishermask.tracking.tracker`), what a run records and how
it reads in the UI (:mod:`~fishermask.tracking.run_meta`), per-run plots
(:mod:`~fishermask.tracking.plots`), and the ``tracking:`` parameter model
(:mod:`~fishermask.tracking.params`).  The package itself imports nothing, so the config can
compose the parameter model without loading MLflow."""

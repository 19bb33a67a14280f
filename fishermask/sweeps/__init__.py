"""Sweeps: a grid of configs run as Ray Tune trials (``fishermask sweep``), resumable, each trial
one active-learning run logged as an MLflow child run of the sweep's parent run."""

"""The active-learning loop (:class:`ActiveLearningLoop`), its run lock and checkpoints."""

from fishermask.loop.loop import ActiveLearningLoop, RoundRecord, round_seed

__all__ = ["ActiveLearningLoop", "RoundRecord", "round_seed"]

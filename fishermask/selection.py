"""The greedy Fisher-trace selection of BAIT and FisherMask: public entry points.

:func:`fisher_greedy` chooses n candidates minimising tr(M_S⁻¹ F) (see
:mod:`fishermask.kernels.greedy` for the objective, the per-candidate C×C state and the verified
picks); candidates may be dense ``[U, C, k]`` tensors or
:class:`~fishermask.kernels.embeddings.FisherEmbeddings` with a factored last-layer block.
"""

from fishermask.kernels.embeddings import FisherEmbeddings
from fishermask.kernels.greedy import (WEIGHTINGS, GreedyDriver, LocalShards, fisher_greedy,
                                       greedy_steps, run_greedy)
from fishermask.kernels.greedy_shard import CHUNK, GreedyShard, shard_bounds

__all__ = ["FisherEmbeddings", "fisher_greedy"]

"""Alias of the stable public greedy entry point (it lives in :mod:`fishermask.kernels.greedy`).

:func:`fisher_greedy` chooses n candidates minimising tr(M_S⁻¹ F) (see
:mod:`fishermask.kernels.greedy` for the objective, the per-candidate C×C state and the verified
picks); candidates may be dense ``[U, C, k]`` tensors or
:class:`~fishermask.kernels.embeddings.FisherEmbeddings` with a factored last-layer block.
"""

from fishermask.kernels.embeddings import FisherEmbeddings
from fishermask.kernels.greedy import fisher_greedy

__all__ = ["FisherEmbeddings", "fisher_greedy"]

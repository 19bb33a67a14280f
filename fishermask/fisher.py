"""Alias of the stable public Fisher kernels (they live in :mod:`fishermask.kernels.fisher`):
``fishermask.fisher.fisher_diagonal`` and friends keep working as documented."""

from fishermask.kernels.fisher import (fisher_diagonal, last_layer_embeddings,
                                       last_layer_embeddings_from, masked_embeddings, top_k_mask)

__all__ = ["fisher_diagonal", "last_layer_embeddings", "last_layer_embeddings_from",
           "masked_embeddings", "top_k_mask"]

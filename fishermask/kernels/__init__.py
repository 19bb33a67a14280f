"""Math kernels: per-sample Fisher embeddings, the Fisher diagonal and mask, the greedy engine,
k-center and BADGE seeding, canonical float64 reductions.

They import only torch, numpy and :mod:`fishermask.errors` (no Ray, MLflow, pydantic or YAML),
so they can be used and tested on their own.  One calling style: the model kernels take
``(model, inputs, …)`` (:func:`fisher_diagonal`, :func:`masked_embeddings`,
:func:`last_layer_embeddings`) and leave every module's train/eval mode as they found it; the
selection kernels take tensors and return picks as a torch ``LongTensor`` of positions in pick
order (:func:`fisher_greedy`, :func:`kcenter_greedy`, :func:`badge_seeding`; :func:`top_k_mask`
returns ``{parameter name: LongTensor of flat indices}``).  The maths is in ``docs/design.md``
§2–§4.
"""

from fishermask.kernels.diversity import badge_seeding, kcenter_greedy
from fishermask.kernels.embeddings import FisherEmbeddings, cat_embeddings
from fishermask.kernels.fisher import (fisher_diagonal, last_layer_embeddings,
                                       last_layer_embeddings_from, masked_embeddings, top_k_mask)
from fishermask.kernels.greedy import (GreedyDriver, LocalShards, check_memory, fisher_greedy,
                                       greedy_memory_gb, run_greedy)
from fishermask.kernels.greedy_shard import CHUNK, GreedyShard, shard_bounds
from fishermask.kernels.reduction import (FISHER_BLOCK, TreeSum, leaf_count, tree_combine,
                                          tree_cover)

__all__ = ["CHUNK", "FISHER_BLOCK", "FisherEmbeddings", "GreedyDriver", "GreedyShard",
           "LocalShards", "TreeSum", "badge_seeding", "cat_embeddings", "check_memory",
           "fisher_diagonal", "fisher_greedy", "greedy_memory_gb", "kcenter_greedy",
           "last_layer_embeddings", "last_layer_embeddings_from", "leaf_count",
           "masked_embeddings", "run_greedy", "shard_bounds", "top_k_mask", "tree_combine",
           "tree_cover"]

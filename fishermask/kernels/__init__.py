"""Math kernels: per-sample Fisher embeddings, the Fisher diagonal and mask, the greedy, k-center
and BADGE seeding.

They import only torch, numpy and :mod:`fishermask.errors` (no Ray, MLflow, pydantic or YAML),
so they can be used and tested on their own.  One calling style: the model kernels take
``(model, inputs, …)`` (:func:`fisher_diagonal`, :func:`masked_embeddings`,
:func:`last_layer_embeddings`) and leave every module's train/eval mode as they found it; the
selection kernels take tensors and return picks as a torch ``LongTensor`` of positions in pick
order (:func:`fisher_greedy`, :func:`kcenter_greedy`, :func:`badge_seeding`; :func:`top_k_mask`
returns ``{parameter name: LongTensor of flat indices}``).  :class:`FisherEmbeddings` is the
structured embedding the greedy also accepts.  The maths is in ``docs/design.md`` §2.

The engine's internals live in the private modules (``_driver``, ``_shard``, ``_group``,
``_reduction``, ``_persample``, ``_checks``): the strategies and executors of this package use them;
they are not a public API.
"""

from fishermask.kernels.diversity import badge_seeding, kcenter_greedy
from fishermask.kernels.embeddings import FisherEmbeddings
from fishermask.kernels.fisher import (fisher_diagonal, last_layer_embeddings,
                                       last_layer_embeddings_from, masked_embeddings, top_k_mask)
from fishermask.kernels.greedy import fisher_greedy

__all__ = ["FisherEmbeddings", "badge_seeding", "fisher_diagonal", "fisher_greedy",
           "kcenter_greedy", "last_layer_embeddings", "last_layer_embeddings_from",
           "masked_embeddings", "top_k_mask"]

"""Math kernels: per-sample Fisher embeddings, the Fisher diagonal and mask, the greedy engine,
k-center and BADGE seeding.  They import only torch, numpy and :mod:`fishermask.errors`."""

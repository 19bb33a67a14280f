"""The Ray executor: the driver side (:mod:`~fishermask.execution.ray.executor`,
:mod:`~fishermask.execution.ray.group`), the pool-shard actor (:mod:`~fishermask.execution.ray.actor`)
and joining a cluster (:mod:`~fishermask.execution.ray.cluster`).  Ray is imported on use."""

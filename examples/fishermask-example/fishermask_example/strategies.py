"""A strategy: margin sampling balanced over the predicted classes.

The contract: a subclass of :class:`fishermask.strategies.Strategy` with a ``Params`` model (a
pydantic model of its parameters: the other ``strategy.*`` keys) and a ``query(ctx, n)`` that
returns a :class:`fishermask.strategies.Selection` of ``n`` indices from ``ctx.unlabeled``.  The
per-sample work goes through ``ctx.executor`` (``map`` a batch function over pool indices), so the
strategy runs unchanged in this process or on Ray shards.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fishermask.strategies import Selection, Strategy
from fishermask.strategies.inference import probs


class BalancedMarginParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the margins")


class BalancedMargin(Strategy):
    """Smallest top-2 margins, taken round-robin over the predicted classes (so a rare predicted
    class gets its share of the batch)."""

    name = "balanced_margin"
    Params = BalancedMarginParams

    def query(self, ctx, n: int) -> Selection:
        unl = np.sort(ctx.unlabeled)
        p = ctx.executor.map(probs, unl).double()
        if self.params.temperature != 1.0:
            p = (p.log() / self.params.temperature).softmax(1)
        top2 = p.topk(2, dim=1).values
        margin = (top2[:, 0] - top2[:, 1]).numpy()
        pred = p.argmax(1).numpy()
        queues = [list(np.flatnonzero(pred == c)[np.argsort(margin[pred == c], kind="stable")])
                  for c in range(ctx.num_classes)]
        picks: list[int] = []
        while len(picks) < n:
            for q in queues:
                if q and len(picks) < n:
                    picks.append(q.pop(0))
        pos = np.asarray(picks)
        return Selection(unl[pos], scores=-margin[pos])

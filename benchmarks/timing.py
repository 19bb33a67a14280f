"""A shard group that times each operation (the benchmarks' view into the greedy's phases:
``reset`` is the initialisation, P and Q from A; ``advance`` a step's streaming update;
``contenders`` the reads of the candidates near a winner).  ``times[operation]`` lists the
seconds of each call."""

from __future__ import annotations

import collections
import time

from fishermask.kernels._group import ShardGroup


class TimedGroup(ShardGroup):
    """Forwards every operation to ``group``; ``seconds[operation]`` sums the time spent in it."""

    def __init__(self, group: ShardGroup, seconds=None):
        self.group = group
        self.seconds = seconds if seconds is not None else collections.defaultdict(float)
        self.times = collections.defaultdict(list)
        self.forms = []  # the form of A each reset was given ("A", "Eigen", "Woodbury")

    def _timed(self, op, *args):
        t0 = time.perf_counter()
        out = op(*args)
        spent = time.perf_counter() - t0
        self.seconds[op.__name__] += spent
        self.times[op.__name__].append(spent)
        return out

    def gram_nodes(self, n_leaves, diagonal):
        return self._timed(self.group.gram_nodes, n_leaves, diagonal)

    def start(self, fisher, w_s, compute_dtype=None):
        return self._timed(self.group.start, fisher, w_s, *([compute_dtype] if compute_dtype else []))

    def reset(self, a_mat, forward, compute_dtype=None, form=None):
        self.forms.append(type(form).__name__ if form is not None else "A")
        return self._timed(self.group.reset, a_mat, forward, compute_dtype, form)

    def advance(self, update, forward):
        return self._timed(self.group.advance, update, forward)

    def override(self, g, score, forward):
        return self._timed(self.group.override, g, score, forward)

    def contenders(self, threshold, forward):
        return self._timed(self.group.contenders, threshold, forward)

    def close(self):
        self.group.close()

    @property
    def bounds(self):
        return self.group.bounds

    @property
    def stacked_rows(self):
        return self.group.stacked_rows

    @property
    def steps(self):
        return self.group.steps

    @property
    def recoveries(self):
        return self.group.recoveries

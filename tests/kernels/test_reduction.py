"""The canonical float64 reductions: a pairwise tree whose root does not depend on how its leaves
are split between shards."""

from __future__ import annotations

import numpy as np
import torch

from fishermask.kernels._reduction import (TreeSum, merge_nodes, tree_combine, tree_cover,
                                           tree_node_range, tree_nodes)


def test_tree_reduction_is_the_same_for_any_split():
    rng = np.random.default_rng(0)
    for n in list(range(1, 20)) + [37, 64, 100]:
        leaves = [torch.as_tensor(rng.standard_normal(5) * 10.0 ** rng.integers(-8, 8, 5))
                  for _ in range(n)]
        whole = TreeSum()
        for leaf in leaves:
            whole.add(leaf)
        for _ in range(5):
            cuts = sorted({0, n, *rng.integers(0, n + 1, size=rng.integers(0, 4)).tolist()})
            nodes = {}
            for p, q in zip(cuts[:-1], cuts[1:]):
                cover = tree_cover(p, q, n)
                assert len(cover) <= 2 * max(1, n - 1).bit_length()
                assert [i for node in cover for i in tree_node_range(node, n)] == list(range(p, q))
                for node in cover:
                    part = TreeSum()
                    for i in tree_node_range(node, n):
                        part.add(leaves[i])
                    nodes[node] = part.result()
            assert torch.equal(tree_combine(nodes, n), whole.result())


def test_tree_nodes_of_split_ranges_combine_to_the_whole_sum():
    rng = np.random.default_rng(1)
    n = 23
    leaves = [{"w": torch.as_tensor(rng.standard_normal(3))} for _ in range(n)]
    whole = TreeSum()
    for leaf in leaves:
        whole.add(leaf)
    parts = []
    for p, q in ((0, 8), (8, 16), (16, 23)):
        parts.append(tree_nodes(tree_cover(p, q, n), n, iter(leaves[p:q])))
    root = tree_combine(merge_nodes(parts), n)
    assert torch.equal(root["w"], whole.result()["w"])

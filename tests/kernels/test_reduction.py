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


def test_take_rows_equals_cat_outputs_and_releases_each_part():
    from fishermask.kernels._reduction import cat_outputs, take_rows
    from fishermask.kernels.embeddings import FisherEmbeddings

    g = torch.Generator().manual_seed(0)
    sizes = (3, 1, 5)
    tensors = [torch.randn(m, 4, generator=g) for m in sizes]
    dicts = [{"probs": torch.rand(m, 3, generator=g), "features": torch.randn(m, 2, generator=g)}
             for m in sizes]
    embs = [FisherEmbeddings(torch.randn(m, 2, generator=g), torch.rand(m, 3, generator=g),
                             torch.randn(m, 3, 4, generator=g)) for m in sizes]
    for parts in (tensors, dicts, embs):
        want = cat_outputs(list(parts))
        held = list(parts)
        got = take_rows(held, "cpu")
        assert held == [None, None, None]  # every part released once copied
        if isinstance(want, FisherEmbeddings):
            for name in ("features", "probs", "dense"):
                assert torch.equal(getattr(got, name), getattr(want, name))
            assert got.top is None and got.prob_scaling == want.prob_scaling
        elif isinstance(want, dict):
            assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
        else:
            assert torch.equal(got, want)

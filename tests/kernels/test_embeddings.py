"""FisherEmbeddings: the structured products (factored last layer, dense block, both) against the
same products on the dense V, computed explicitly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fishermask.kernels.fisher import last_layer_embeddings_from
from fishermask.kernels.embeddings import FisherEmbeddings, as_embeddings
from tests.greedy_reference import dense_from_parts


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: threads only cost


def _parts(seed, n=7, c=3, d=4, k_dense=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype) * 3
    p = torch.softmax(torch.randn(n, c, generator=g, dtype=dtype) * 2, 1)
    r = torch.randn(n, c, k_dense, generator=g, dtype=dtype)
    return h, p, r


def _emb(form, prob_scaling, seed=0, dtype=torch.float64):
    h, p, r = _parts(seed, dtype=dtype)
    if form == "factored":
        return FisherEmbeddings(h, p, prob_scaling=prob_scaling)
    if form == "dense":
        return FisherEmbeddings(dense=r, prob_scaling=prob_scaling)
    return FisherEmbeddings(h, p, r, prob_scaling=prob_scaling)


def _dense(emb):
    f = lambda t: None if t is None else t.double().numpy()  # noqa: E731
    return torch.tensor(dense_from_parts(f(emb.features), f(emb.probs), f(emb.dense),
                                         emb.prob_scaling))


FORMS = [(form, scaling) for form in ("factored", "dense", "mixed") for scaling in (True, False)]


def test_to_dense_of_the_factored_block_is_last_layer_embeddings():
    for dtype, tol in ((torch.float64, 1e-14), (torch.float32, 1e-6)):
        h, p, _ = _parts(1, dtype=dtype)
        emb = FisherEmbeddings(h, p)
        want = last_layer_embeddings_from(h, p)
        torch.testing.assert_close(emb.to_dense(dtype), want, rtol=tol, atol=tol)
    h, p, _ = _parts(2)
    # row c = √p_c (e_c − p) ⊗ h, column c'·d + j ↔ W[c', j]
    v = FisherEmbeddings(h, p).to_dense(torch.float64)
    x, c, c2, j = 3, 1, 2, 0
    assert v[x, c, c2 * 4 + j] == pytest.approx(float(p[x, c].sqrt() * (-p[x, c2]) * h[x, j]))
    assert v[x, c, c * 4 + j] == pytest.approx(float(p[x, c].sqrt() * (1 - p[x, c]) * h[x, j]))
    plain = FisherEmbeddings(h, p, prob_scaling=False).to_dense(torch.float64)
    torch.testing.assert_close(plain * p.sqrt()[:, :, None], v)


@pytest.mark.parametrize("form,scaling", FORMS)
def test_products_equal_the_dense_computations(form, scaling):
    emb = _emb(form, scaling)
    v = _dense(emb)
    n, c, k = v.shape
    assert (len(emb), emb.num_classes, emb.k) == (n, c, k)
    assert emb.k == emb.k_factored + emb.k_dense
    torch.testing.assert_close(emb.to_dense(torch.float64), v)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(k, 2 * c, generator=g, dtype=torch.float64)
    torch.testing.assert_close(emb.matmul(x), torch.einsum("nck,km->ncm", v, x))
    z = torch.randn(n, 2, k, generator=g, dtype=torch.float64)
    torch.testing.assert_close(emb.rowdot(z), torch.einsum("nak,nck->nac", z, v))
    gram = torch.einsum("nck,ncj->kj", v, v)
    torch.testing.assert_close(emb.gram(), gram)
    torch.testing.assert_close(emb.gram(diagonal=True), gram.diagonal())
    # rows, cat and empty rows keep the algebra
    idx = torch.tensor([4, 0, 6])
    torch.testing.assert_close(emb.rows(idx).to_dense(torch.float64), v[idx])
    both = FisherEmbeddings.cat([emb.rows(slice(0, 3)), emb.rows(slice(3, None))])
    torch.testing.assert_close(both.gram(), gram)
    assert len(emb.empty_like()) == 0 and emb.empty_like().k == k


@pytest.mark.parametrize("form", ["factored", "mixed"])
def test_float32_storage_products_in_float64(form):
    emb = _emb(form, True, seed=3, dtype=torch.float32)
    v = _dense(emb)  # float64 from the stored float32 numbers
    x = torch.randn(emb.k, 4, dtype=torch.float64)
    torch.testing.assert_close(emb.matmul(x), torch.einsum("nck,km->ncm", v, x),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(emb.gram(), torch.einsum("nck,ncj->kj", v, v), rtol=1e-12,
                               atol=1e-12)
    bf = emb.to(storage_dtype=torch.bfloat16)
    assert bf.features.dtype == torch.bfloat16 and bf.probs.dtype == torch.float32
    assert bf.nbytes() < emb.nbytes()
    assert emb.nbytes() == sum(t.numel() * 4 for t in (emb.features, emb.probs, emb.dense)
                               if t is not None)
    torch.testing.assert_close(bf.matmul(x), torch.einsum("nck,km->ncm", _dense(bf), x),
                               rtol=1e-12, atol=1e-12)


def test_as_embeddings_and_errors():
    v = as_embeddings(np.zeros((4, 3, 5), dtype=np.int64), "candidates")
    assert v.dense.dtype == torch.float32 and v.k == 5 and v.k_factored == 0
    dense = torch.zeros(4, 3, 5)
    assert as_embeddings(dense, "x").dense is dense  # no copy
    emb = FisherEmbeddings(dense=dense)
    assert as_embeddings(emb, "x") is emb
    with pytest.raises(ValueError, match=r"x must have shape \[n, C, k\], got \(4, 15\)"):
        as_embeddings(torch.zeros(4, 15), "x")
    with pytest.raises(ValueError, match="x must be real"):
        as_embeddings(torch.zeros(4, 3, 5, dtype=torch.complex64), "x")
    h, p, r = _parts(4)
    with pytest.raises(ValueError, match="features and probs come together"):
        FisherEmbeddings(features=h)
    with pytest.raises(ValueError, match="needs a factored block"):
        FisherEmbeddings()
    with pytest.raises(ValueError, match=r"expected features \[n, d\] and probs \[n, C\]"):
        FisherEmbeddings(h, p[:3])
    with pytest.raises(ValueError, match=r"dense must have shape \[n, C, k\]"):
        FisherEmbeddings(dense=r[0])
    with pytest.raises(ValueError, match="does not match probs"):
        FisherEmbeddings(h, p, r[:, :2])
    bad = FisherEmbeddings(h, p, r.clone())
    bad.dense[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="labeled contains NaN or infinite values"):
        bad.check_finite("labeled")

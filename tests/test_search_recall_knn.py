"""Approximate-index recall on 20k random points, and the PML AccuracyCalculator knn_func."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator  # noqa: E402

from fgsbir_plugin.search import GalleryIndex, GalleryKNN  # noqa: E402


def recall_at(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["cosine", "holef"])
def test_hnsw_recall_at_10_default_ef_search(metric):
    rng = np.random.default_rng(0)
    d, n, nq = 24, 20_000, 200
    x, q = rng.standard_normal((n, d)), rng.standard_normal((nq, d))
    # a learned HOLEF matrix starts near the identity; asymmetric here
    W = np.eye(d) + 0.1 * rng.standard_normal((d, d)) / np.sqrt(d) if metric == "holef" else None
    exact = GalleryIndex(d, metric, W=W)
    exact.add(x)
    hnsw = GalleryIndex(d, metric, W=W, spec="HNSW32")
    assert hnsw.search_params["efSearch"] == 128  # the default being tested
    hnsw.add(x)
    _, truth = exact.search(q, 10)
    dist, ids = hnsw.search(q, 10)
    assert recall_at(ids, truth) >= 0.95
    # distances of whatever HNSW returns are still the true ones for those photos
    if metric == "holef":
        r, c = W.sum(1), W.sum(0)
        true = (q * q) @ r
        p = x[ids]  # [nq, 10, d]
        true = true[:, None] + np.einsum("qkd,d->qk", p * p, c) - 2 * np.einsum("qd,de,qke->qk", q, W, p)
        np.testing.assert_allclose(dist, true, rtol=1e-3, atol=1e-3 * np.abs(true).max())


def test_pml_accuracy_calculator_with_holef_knn():
    rng = np.random.default_rng(1)
    d, n_classes = 8, 40
    photos = rng.standard_normal((n_classes, d))
    sketches = photos + 0.05 * rng.standard_normal((n_classes, d))
    W = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    labels = torch.arange(n_classes)
    calc = AccuracyCalculator(include=("precision_at_1",), knn_func=GalleryKNN(metric="holef", W=W))
    got = calc.get_accuracy(torch.from_numpy(sketches), labels, torch.from_numpy(photos), labels)
    r, c = W.sum(1), W.sum(0)
    D = ((sketches**2) @ r)[:, None] + ((photos**2) @ c)[None] - 2 * sketches @ W @ photos.T
    expected = float((D.argmin(1) == np.arange(n_classes)).mean())
    assert got["precision_at_1"] == pytest.approx(expected)
    assert 0.0 < expected < 1.0  # the indefinite perturbation makes HOLEF get some wrong


def test_knn_func_ref_includes_query_drops_self_and_returns_tensors():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((30, 5)))
    knn = GalleryKNN(metric="l2")
    dist, idx = knn(x[:10], 3, x, ref_includes_query=True)
    assert isinstance(dist, torch.Tensor) and idx.dtype == torch.int64 and idx.shape == (10, 3)
    assert not (idx == torch.arange(10)[:, None]).any()
    full = torch.cdist(x[:10], x) ** 2
    full[torch.arange(10), torch.arange(10)] = float("inf")
    torch.testing.assert_close(dist.double(), full.topk(3, largest=False).values, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs a reference set"):
        knn(x, 3)
    prebuilt = GalleryIndex(5, "l2")
    prebuilt.add(x)
    _, idx = GalleryKNN(index=prebuilt)(x[:4], 1)
    assert idx[:, 0].tolist() == [0, 1, 2, 3]

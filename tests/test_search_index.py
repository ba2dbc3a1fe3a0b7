"""GalleryIndex: exact HOLEF / cosine / l2 search against float64 brute force, ids, persistence, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from fgsbir_plugin.search import (  # noqa: E402
    GalleryIndex,
    holef_gallery_vectors,
    holef_query_vectors,
    inputs,
)


def naive_holef(s: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """D_W(s, p) = sum_ij W_ij (s_i - p_j)^2 straight from the definition: [Nq, Np] float64."""
    diff = s[:, None, :, None] - p[None, :, None, :]  # [Nq, Np, i, j] = s_i - p_j
    return np.einsum("ij,qpij->qp", W, diff**2)


def random_indefinite(d: int, rng: np.random.Generator) -> np.ndarray:
    W = rng.standard_normal((d, d)) / np.sqrt(d)
    eig = np.linalg.eigvalsh((W + W.T) / 2)
    assert not np.allclose(W, W.T) and eig.min() < 0 < eig.max()  # asymmetric and indefinite
    return W


def assert_topk_matches(dist, ids, full, k, rtol=1e-4):
    """Returned distances equal the brute-force ones of the same ids and the true sorted top-k;
    ids equal the brute-force top-k wherever the brute-force order has no near tie."""
    order = np.argsort(full, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(full, order, axis=1)
    scale = np.abs(full).max()
    np.testing.assert_allclose(np.take_along_axis(full, ids, axis=1), dist, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(dist, best, rtol=rtol, atol=rtol * scale)
    srt = np.sort(full, axis=1)[:, : k + 1]
    clear = (np.diff(srt, axis=1) > 1e-5 * scale).all(axis=1)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ids[clear], order[clear])


@pytest.mark.parametrize("d", [7, 16])
def test_naive_reference_matches_closed_form(d):
    rng = np.random.default_rng(d)
    s, p, W = rng.standard_normal((3, d)), rng.standard_normal((4, d)), random_indefinite(d, rng)
    closed = ((s * s) @ W.sum(1))[:, None] + ((p * p) @ W.sum(0))[None] - 2 * s @ W @ p.T
    np.testing.assert_allclose(naive_holef(s, p, W), closed, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_inner_product_vectors_give_the_holef_energy(alpha):
    rng = np.random.default_rng(8)
    d = 9
    s, p, W = rng.standard_normal((5, d)), rng.standard_normal((7, d)), random_indefinite(d, rng)
    q, const = holef_query_vectors(s, W, alpha)
    v = holef_gallery_vectors(p, W, alpha)
    assert q.shape == (5, d + 1) and v.shape == (7, d + 1) and const.shape == (5,)
    np.testing.assert_allclose(const[:, None] - q @ v.T, naive_holef(s, p, W), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("as_type", ["numpy", "torch", "weight_matrix"])
def test_holef_flat_is_exact_for_indefinite_asymmetric_W(as_type):
    rng = np.random.default_rng(0)
    d, n, nq, k = 12, 400, 25, 10
    W = random_indefinite(d, rng)
    p, s = rng.standard_normal((n, d)), rng.standard_normal((nq, d))
    w_arg = {
        "numpy": W,
        "torch": torch.from_numpy(W).float(),
        "weight_matrix": type("FakeHOLEF", (), {"weight_matrix": lambda self: torch.from_numpy(W)})(),
    }[as_type]
    index = GalleryIndex(d, "holef", W=w_arg)
    index.add(p)
    dist, ids = index.search(s, k)
    assert dist.shape == ids.shape == (nq, k) and dist.dtype == np.float64 and ids.dtype == np.int64
    full = naive_holef(s, p.astype(np.float32).astype(np.float64), W)
    # a float32 W rounds the matrix itself; compare against what was given
    if as_type == "torch":
        full = naive_holef(s, p, W.astype(np.float32).astype(np.float64))
    assert_topk_matches(dist, ids, full, k)
    assert (dist[:, 0] < 0).any()  # an indefinite W really gives negative energies here


def test_holef_ranking_differs_from_l2_and_from_transposed_W():
    # guards against a W / W^T mix-up: with the wrong side the top-1 would differ
    rng = np.random.default_rng(1)
    d, n = 10, 300
    W = random_indefinite(d, rng)
    p, s = rng.standard_normal((n, d)), rng.standard_normal((40, d))
    index = GalleryIndex(d, "holef", W=W)
    index.add(p)
    _, ids = index.search(s, 1)
    np.testing.assert_array_equal(ids[:, 0], naive_holef(s, p, W).argmin(1))
    assert (ids[:, 0] != naive_holef(s, p, W.T).argmin(1)).any()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_cosine_and_l2_match_brute_force(metric):
    rng = np.random.default_rng(2)
    d, n, nq, k = 9, 500, 30, 7
    p, s = rng.standard_normal((n, d)), rng.standard_normal((nq, d))
    index = GalleryIndex(d, metric)
    index.add(torch.from_numpy(p))
    dist, ids = index.search(torch.from_numpy(s), k)
    if metric == "cosine":
        pn, sn = p / np.linalg.norm(p, axis=1, keepdims=True), s / np.linalg.norm(s, axis=1, keepdims=True)
        full = 1.0 - sn @ pn.T
    else:
        full = ((s[:, None, :] - p[None]) ** 2).sum(-1)
    assert_topk_matches(dist, ids, full, k)


def test_string_ids_remove_and_contains():
    rng = np.random.default_rng(3)
    d = 5
    p = rng.standard_normal((6, d))
    names = [f"photo_{i}.png" for i in range(6)]
    index = GalleryIndex(d, "l2")
    index.add(p[:4], names[:4])
    index.add(p[4:], names[4:])
    assert len(index) == 6 and "photo_5.png" in index and index.ids == names
    dist, ids = index.search(p[[2, 5]], 1)
    assert ids.tolist() == [["photo_2.png"], ["photo_5.png"]] and np.allclose(dist, 0, atol=1e-6)
    assert index.remove(["photo_2.png"]) == 1
    assert len(index) == 5 and "photo_2.png" not in index
    _, ids = index.search(p[[2]], 6)
    assert "photo_2.png" not in ids[0].tolist() and ids[0, -1] is None  # only 5 left
    with pytest.raises(ValueError, match="already in the index"):
        index.add(p[:1], ["photo_0.png"])
    with pytest.raises(TypeError, match="uses str ids"):
        index.add(p[:1], [7])
    with pytest.raises(ValueError, match="not in the index"):
        index.remove(["nope"])
    with pytest.raises(ValueError, match="repeat"):
        index.add(p[:2], ["a", "a"])


def test_int_ids_and_missing_results():
    rng = np.random.default_rng(4)
    index = GalleryIndex(4, "cosine")
    index.add(rng.standard_normal((3, 4)), np.array([10, 20, 30]))
    dist, ids = index.search(rng.standard_normal((2, 4)), 5)
    assert (
        set(ids[0, :3].tolist()) == {10, 20, 30} and (ids[:, 3:] == -1).all() and np.isinf(dist[:, 3:]).all()
    )
    assert index.remove([20]) == 1 and sorted(index.ids) == [10, 30]
    with pytest.raises(ValueError, match="non-negative"):
        index.add(rng.standard_normal((1, 4)), [-3])


def test_input_errors():
    with pytest.raises(ValueError, match="metric must be one of"):
        GalleryIndex(4, "dot")
    with pytest.raises(ValueError, match="needs W"):
        GalleryIndex(4, "holef")
    with pytest.raises(ValueError, match=r"shape \[4, 4\]"):
        GalleryIndex(4, "holef", W=np.eye(3))
    with pytest.raises(ValueError, match="only used with metric 'holef'"):
        GalleryIndex(4, "l2", W=np.eye(4))
    with pytest.raises(ValueError, match="leave out IDMap"):
        GalleryIndex(4, spec="IDMap,Flat")
    with pytest.raises(
        ValueError, match="faiss cannot build index spec 'NotAnIndex' for 4-d embeddings: could not parse"
    ):
        GalleryIndex(4, spec="NotAnIndex")
    # faiss's reason without its C++ location, and what the index adds to the embedding's width
    with pytest.raises(
        ValueError,
        match=r"for 4-d embeddings \(indexed as 6-d: 2 added by HOLEF's MIPS form\): "
        r"could not parse index string NotAnIndex; see",
    ) as err:
        GalleryIndex(4, "holef", W=np.eye(4), spec="NotAnIndex")
    assert ".cpp" not in str(err.value)
    index = GalleryIndex(4)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        index.add(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="one id per embedding"):
        index.add(np.ones((2, 4)), ["a"])
    with pytest.raises(ValueError, match="efSearch applies to HNSW"):
        GalleryIndex(4, efSearch=10)
    with pytest.raises(TypeError, match="unknown search parameter"):
        GalleryIndex(4, spec="HNSW8", ef=10)
    with pytest.raises(ValueError, match="cannot remove"):
        GalleryIndex(4, spec="HNSW8").remove([0])


def test_ivf_needs_training_with_enough_points():
    rng = np.random.default_rng(5)
    d = 8
    x = rng.standard_normal((300, d))
    for metric, W in [("l2", None), ("holef", random_indefinite(d, rng))]:
        index = GalleryIndex(d, metric, W=W, spec="IVF8,Flat")
        assert index.search_params == {"nprobe": 8}
        with pytest.raises(ValueError, match="must be trained before add"):
            index.add(x)
        with pytest.raises(ValueError, match="at least 8 training embeddings"):
            index.train(x[:5])
        index.train(x)
        index.add(x, [f"p{i}" for i in range(len(x))])
        _, ids = index.search(x[:3], 1)
        assert ids[:, 0].tolist() == ["p0", "p1", "p2"] or metric == "holef"
    pq = GalleryIndex(d, "holef", W=np.eye(d), spec="IVF4,PQ4")
    assert pq.index_dim == 12 and pq.min_training_points == 256  # d + 2 padded to a multiple of 4


def test_ivf_holef_with_all_lists_probed_is_exact():
    rng = np.random.default_rng(6)
    d, k = 8, 5
    W = random_indefinite(d, rng)
    p, s = rng.standard_normal((400, d)), rng.standard_normal((20, d))
    index = GalleryIndex(d, "holef", W=W, spec="IVF4,Flat", nprobe=4)
    index.train(p)
    index.add(p)
    dist, ids = index.search(s, k)
    # the Euclidean reduction adds float32 error on |q|^2 + M^2; exact up to that
    assert_topk_matches(dist, ids, naive_holef(s, p, W), k, rtol=1e-3)


@pytest.mark.parametrize("spec", ["Flat", "IVF2,Flat"])
def test_chunked_conversion_gives_the_same_index(monkeypatch, spec):
    rng = np.random.default_rng(7)
    d = 6
    W = random_indefinite(d, rng)
    p, s = rng.standard_normal((50, d)).astype(np.float32), rng.standard_normal((5, d))

    def build():
        params = {"nprobe": 2} if spec.startswith("IVF") else {}
        index = GalleryIndex(d, "holef", W=W, spec=spec, mips="l2", **params)
        index.train(p)
        index.add(torch.from_numpy(p))
        return index

    whole = build()
    monkeypatch.setattr(inputs, "CHUNK", 7)
    chunked = build()
    assert (chunked._holef.alpha, chunked._holef.max_sq_norm) == pytest.approx(
        (whole._holef.alpha, whole._holef.max_sq_norm), rel=1e-12
    )
    for a, b in zip(whole.search(s, 4), chunked.search(s, 4)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(ValueError, match="far larger than those"):
        chunked.add(100 * p[:20], list(range(1000, 1020)))
    assert len(chunked) == 50  # a refused add() adds nothing, whatever the chunk

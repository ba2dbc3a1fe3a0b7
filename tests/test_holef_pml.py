"""HOLEF inside pytorch-metric-learning: loss dict, reducers, miners, ref_emb, CrossBatchMemory, k-NN accuracy."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses, miners, reducers
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from fgsbir_plugin.holef import (
    HOLEFCrossBatchMemory,
    HOLEFDistance,
    HOLEFLoss,
    holef_distance_matrix,
    holef_regularizer,
)

F64 = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _distance(d, seed=1, scale=0.3, **kw):
    """A float64 HOLEFDistance whose W is I plus an asymmetric perturbation."""
    W = torch.eye(d, dtype=F64) + scale * _rand(d, d, seed=seed)
    return HOLEFDistance.from_weight_matrix(W, normalize_embeddings=False, **kw)


def _sketch_photo_batch(n_classes=4, d=6, seed=0):
    """Two sketches per class (queries) and one photo per class (references)."""
    s = _rand(2 * n_classes, d, seed=seed)
    ls = torch.arange(n_classes).repeat_interleave(2)
    p = _rand(n_classes, d, seed=seed + 50)
    lp = torch.arange(n_classes)
    return s, ls, p, lp


def _manual_triplet(mat, triplets, margin):
    a, pos, neg = triplets
    return torch.relu(mat[a, pos] - mat[a, neg] + margin)


def test_loss_dict_has_the_regulariser_as_its_own_sub_loss():
    dist = _distance(6)
    loss_fn = HOLEFLoss(distance=dist, margin=0.5, reg_weight=0.01)
    s, ls, p, lp = _sketch_photo_batch()
    out = loss_fn.compute_loss(s, ls, None, p, lp)
    assert set(out) == {"loss", "holef_reg"} == set(loss_fn.sub_loss_names())
    assert out["loss"]["reduction_type"] == "triplet"
    reg = out["holef_reg"]
    assert reg["reduction_type"] == "already_reduced" and reg["indices"] is None
    torch.testing.assert_close(reg["losses"], 0.01 * holef_regularizer(dist.weight_matrix(), "fro"))
    assert isinstance(loss_fn.reducer, reducers.MultipleReducers)


@pytest.mark.parametrize("reducer", [None, reducers.MeanReducer(), reducers.SumReducer()])
def test_value_with_ref_emb_and_reducers_matches_a_hand_computation(reducer):
    dist = _distance(6)
    loss_fn = HOLEFLoss(distance=dist, margin=0.5, reg_weight=0.01, reg_kind="l1", reducer=reducer)
    s, ls, p, lp = _sketch_photo_batch()
    got = loss_fn(s, ls, ref_emb=p, ref_labels=lp)
    triplets = lmu.get_all_triplets_indices(ls, lp)
    per = _manual_triplet(naive := holef_distance_matrix(s, p, dist.weight_matrix()), triplets, 0.5)
    assert naive.shape == (8, 4) and len(per) == 8 * 3
    if reducer is None:  # TripletMarginLoss's default: mean over the non-zero triplets
        triplet = per[per > 0].mean()
    elif isinstance(reducer, reducers.SumReducer):  # check first: SumReducer subclasses MeanReducer
        triplet = per.sum()
    else:
        triplet = per.mean()
    expected = triplet + 0.01 * (dist.weight_matrix() - torch.eye(6, dtype=F64)).abs().sum()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # Swapping the roles (photos as queries) gives another value: the API is asymmetric on purpose.
    swapped = per_swapped = _manual_triplet(
        holef_distance_matrix(p, s, dist.weight_matrix()).T, triplets, 0.5
    )
    assert not torch.allclose(swapped, per) and per_swapped.shape == per.shape


def test_regulariser_survives_a_batch_without_triplets():
    dist = _distance(4)
    loss_fn = HOLEFLoss(distance=dist, reg_weight=0.1)
    emb = _rand(3, 4, seed=3)
    got = loss_fn(emb, torch.tensor([0, 1, 2]))  # no positives: no triplets
    torch.testing.assert_close(got, 0.1 * holef_regularizer(dist.weight_matrix()), rtol=1e-12, atol=0)


def test_gradients_reach_W_through_the_loss():
    dist = _distance(6)
    loss_fn = HOLEFLoss(distance=dist, margin=1.0, reg_weight=0.01)
    s, ls, p, lp = _sketch_photo_batch()
    W = dist.weight.detach().clone().requires_grad_()

    def fn(W_):
        return torch.func.functional_call(
            loss_fn, {"distance.weight": W_}, (s, ls), {"ref_emb": p, "ref_labels": lp}
        )

    assert fn(W) > 0
    assert torch.autograd.gradcheck(fn, (W,))
    loss_fn(s, ls, ref_emb=p, ref_labels=lp).backward()
    assert (
        dist.weight.grad is not None
        and (dist.weight.grad - torch.diag(dist.weight.grad.diagonal())).abs().max() > 0
    )


def test_an_optimiser_step_on_W_lowers_the_loss():
    # Photos are the sketches with their dimensions cyclically shifted: Euclidean distance (W = I)
    # ranks them badly, a W that undoes the shift ranks them perfectly.
    d, n = 6, 6
    s = _rand(n, d, seed=20)
    p = torch.roll(s, shifts=1, dims=1)
    labels = torch.arange(n)
    dist = HOLEFDistance(d, normalize_embeddings=False).to(F64)
    loss_fn = HOLEFLoss(distance=dist, margin=1.0, reg_weight=1e-3)
    opt = torch.optim.SGD(dist.parameters(), lr=0.01)
    history = []
    for _ in range(30):
        opt.zero_grad()
        # labels.clone(): PML drops the "diagonal" when ref_labels *is* labels (the same object).
        loss = loss_fn(s, labels, ref_emb=p, ref_labels=labels.clone())
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[1] < history[0]
    assert history[-1] < 0.5 * history[0]


@pytest.mark.parametrize(
    "miner_cls, kw",
    [
        (miners.TripletMarginMiner, {"margin": 0.5, "type_of_triplets": "all"}),
        (miners.BatchHardMiner, {}),
        (miners.BatchEasyHardMiner, {"pos_strategy": "easy", "neg_strategy": "hard"}),
    ],
)
def test_miners_use_the_sketch_to_photo_energy(miner_cls, kw):
    dist = _distance(6, scale=0.5)
    miner = miner_cls(distance=dist, **kw)
    loss_fn = HOLEFLoss(distance=dist, margin=0.5, reg_weight=0.0, reducer=reducers.MeanReducer())
    s, ls, p, lp = _sketch_photo_batch(n_classes=5, seed=4)
    mined = miner(s, ls, p, lp)
    mat = holef_distance_matrix(s, p, dist.weight_matrix())
    triplets = lmu.convert_to_triplets(mined, ls, lp)
    assert len(triplets[0]) > 0
    assert (ls[triplets[0]] == lp[triplets[1]]).all() and (ls[triplets[0]] != lp[triplets[2]]).all()
    if miner_cls is miners.BatchHardMiner:
        # hardest negative per anchor, by the asymmetric energy with the sketch as query
        masked = mat.masked_fill(ls[:, None] == lp[None, :], float("inf"))
        torch.testing.assert_close(triplets[2], masked.argmin(dim=1)[triplets[0]], rtol=0, atol=0)
    if miner_cls is miners.TripletMarginMiner:
        a, pos, neg = lmu.get_all_triplets_indices(ls, lp)
        keep = mat[a, neg] - mat[a, pos] <= 0.5
        assert 0 < keep.sum() < len(keep)
        for got_idx, all_idx in zip(triplets, (a, pos, neg)):
            assert torch.equal(got_idx, all_idx[keep])
    got = loss_fn(s, ls, mined, ref_emb=p, ref_labels=lp)
    torch.testing.assert_close(got, _manual_triplet(mat, triplets, 0.5).mean(), rtol=1e-12, atol=1e-12)


def test_cross_batch_memory_allow_list_and_the_combinations_that_work():
    d = 6
    with pytest.raises(Exception, match="not supported for HOLEFLoss"):
        losses.CrossBatchMemory(HOLEFLoss(d), embedding_size=d)

    s, ls, p, lp = _sketch_photo_batch(n_classes=4, d=d, seed=7)
    emb = torch.cat([s, p])
    labels = torch.cat([ls, lp])
    is_photo = torch.cat([torch.zeros(len(s), dtype=torch.bool), torch.ones(len(p), dtype=torch.bool)])

    # 1) plain PML: TripletMarginLoss with the HOLEF distance (regulariser added by hand).
    dist = _distance(d)
    xbm = losses.CrossBatchMemory(
        losses.TripletMarginLoss(margin=0.5, distance=dist, reducer=reducers.MeanReducer()),
        embedding_size=d,
        memory_size=16,
    ).to(F64)
    got = xbm(emb, labels, enqueue_mask=is_photo)
    mat = holef_distance_matrix(s, p, dist.weight_matrix())
    expected = _manual_triplet(mat, lmu.get_all_triplets_indices(ls, lp), 0.5).mean()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    got.backward()
    assert dist.weight.grad.abs().max() > 0

    # 2) HOLEFCrossBatchMemory accepts HOLEFLoss, regulariser included; memory = photos only.
    dist2 = _distance(d)
    loss_fn = HOLEFLoss(distance=dist2, margin=0.5, reg_weight=0.01, reducer=reducers.MeanReducer())
    xbm2 = HOLEFCrossBatchMemory(loss_fn, embedding_size=d, memory_size=16).to(F64)
    got2 = xbm2(emb, labels, enqueue_mask=is_photo)
    torch.testing.assert_close(got2, loss_fn(s, ls, ref_emb=p, ref_labels=lp), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        got2, expected + 0.01 * holef_regularizer(dist2.weight_matrix()), rtol=1e-12, atol=1e-12
    )
    # A second batch sees the photos of the first one in the memory, too.
    s_b, ls_b, p_b, lp_b = _sketch_photo_batch(n_classes=4, d=d, seed=8)
    xbm2(torch.cat([s_b, p_b]), torch.cat([ls_b, lp_b]), enqueue_mask=is_photo)
    assert xbm2.queue_idx == 8


def _shifted_retrieval_problem(n=12, d=8, seed=30):
    """Photos are sketches with dims cyclically shifted; W = the shift permutation matches them exactly."""
    s = _rand(n, d, seed=seed).float()
    p = torch.roll(s, shifts=1, dims=1)  # p_j = s_{j-1}
    W = torch.roll(torch.eye(d), shifts=1, dims=1)  # W_ij = 1 iff j = i + 1: D = sum_i (s_i - p_{i+1})^2
    labels = torch.arange(n)
    return s, p, W, labels


@pytest.mark.parametrize("batch_size", [None, 5])
def test_accuracy_calculator_ranks_with_the_asymmetric_W(batch_size):
    s, p, W, labels = _shifted_retrieval_problem()
    assert not torch.equal(W, W.T)
    holef = HOLEFDistance.from_weight_matrix(W, normalize_embeddings=False)
    assert holef(s, p).diagonal().abs().max() < 1e-5  # a match up to float32 rounding

    def p_at_1(distance, query, ref):
        calc = AccuracyCalculator(
            include=("precision_at_1",),
            k=1,
            device=torch.device("cpu"),
            knn_func=CustomKNN(distance, batch_size),
        )
        return calc.get_accuracy(query, labels, ref, labels)["precision_at_1"]

    assert p_at_1(holef, s, p) == 1.0
    assert p_at_1(LpDistance(normalize_embeddings=False), s, p) < 0.5
    assert p_at_1(holef, p, s) < 0.5  # photos as queries against the sketch gallery: the wrong role


def test_pml_treats_the_same_labels_object_as_self_comparison():
    # One sketch per photo, labels = photo ids: passing the *same* tensor as ref_labels makes PML
    # drop the i == j pairs (it assumes ref is the batch itself), leaving no positive at all.
    dist = _distance(4)
    loss_fn = HOLEFLoss(distance=dist, margin=1.0, reg_weight=0.0)
    s, p = _rand(5, 4, seed=40), _rand(5, 4, seed=41)
    labels = torch.arange(5)
    assert loss_fn(s, labels, ref_emb=p, ref_labels=labels).item() == 0.0
    assert loss_fn(s, labels, ref_emb=p, ref_labels=labels.clone()).item() > 0.0


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({}, ValueError, "exactly one"),
        ({"dim": 4, "distance": HOLEFDistance(4)}, ValueError, "exactly one"),
        ({"distance": LpDistance()}, TypeError, "must be a HOLEFDistance"),
        ({"dim": 4, "swap": True}, ValueError, "swap"),
        ({"dim": 4, "reg_kind": "l2"}, ValueError, "reg_kind"),
        ({"dim": 4, "reg_weight": -1.0}, ValueError, "reg_weight"),
    ],
)
def test_holef_loss_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        HOLEFLoss(**kwargs)

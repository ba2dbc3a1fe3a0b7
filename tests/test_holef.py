"""HOLEF energy: closed form vs the naive outer subtraction, PML distance semantics, gradients, saving."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from safetensors.torch import load_file, save_file

from fgsbir_plugin.holef import (
    HOLEFDistance,
    holef_distance_matrix,
    holef_pairwise,
    holef_regularizer,
)

F64 = torch.float64


def naive_holef(s: torch.Tensor, p: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Reference: materialise (s_i - p_j)^2 for every pair of rows and every (i, j): [Nq, Nr, d, d]."""
    diff = s[:, None, :, None] - p[None, :, None, :]
    return (diff * diff * W).sum(dim=(-2, -1))


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def _asym_W(d, seed=1):
    W = _rand(d, d, seed=seed)
    assert (W - W.T).abs().max() > 0.1  # genuinely asymmetric, with negative entries
    return W


def test_identity_equals_pml_squared_euclidean():
    s, p = _rand(7, 16, seed=0), _rand(11, 16, seed=1)
    dist = HOLEFDistance(16, normalize_embeddings=False).to(F64)
    lp = LpDistance(power=2, normalize_embeddings=False)
    assert torch.equal(dist.weight_matrix(), torch.eye(16, dtype=F64))
    torch.testing.assert_close(dist(s, p), lp(s, p), rtol=0, atol=1e-10)
    torch.testing.assert_close(dist(s), lp(s), rtol=0, atol=1e-10)  # ref_emb None: query vs itself
    q = _rand(7, 16, seed=2)
    torch.testing.assert_close(dist.pairwise_distance(s, q), ((s - q) ** 2).sum(1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("nq,nr,d", [(5, 9, 3), (12, 4, 7), (1, 6, 10), (8, 8, 1)])
def test_closed_form_matches_naive_outer_subtraction(nq, nr, d):
    s, p, W = _rand(nq, d, seed=nq), _rand(nr, d, seed=nr + 100), _rand(d, d, seed=d + 200)
    expected = naive_holef(s, p, W)
    got = holef_distance_matrix(s, p, W)
    assert got.shape == (nq, nr) and got.dtype == F64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-10)
    m = min(nq, nr)
    torch.testing.assert_close(
        holef_pairwise(s[:m], p[:m], W), expected[torch.arange(m), torch.arange(m)], rtol=1e-12, atol=1e-10
    )


def test_asymmetry_is_the_transpose_of_W():
    s, p, W = _rand(6, 5, seed=3), _rand(9, 5, seed=4), _asym_W(5)
    forward = holef_distance_matrix(s, p, W)
    # Swapping the roles of sketch and photo is the same as transposing W, and differs from W.
    torch.testing.assert_close(holef_distance_matrix(p, s, W.T).T, forward, rtol=1e-12, atol=1e-10)
    assert (holef_distance_matrix(p, s, W).T - forward).abs().max() > 1e-3
    dist = HOLEFDistance.from_weight_matrix(W, normalize_embeddings=False)
    torch.testing.assert_close(dist(s, p), naive_holef(s, p, W), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("normalize", [True, False])
def test_normalize_embeddings_on_and_off(normalize):
    s, p, W = 3.0 * _rand(6, 8, seed=5), 0.2 * _rand(4, 8, seed=6), _asym_W(8)
    dist = HOLEFDistance.from_weight_matrix(W, normalize_embeddings=normalize)
    if normalize:
        s_n, p_n = torch.nn.functional.normalize(s, dim=1), torch.nn.functional.normalize(p, dim=1)
        torch.testing.assert_close(dist(s, p), naive_holef(s_n, p_n, W), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(dist(s), naive_holef(s_n, s_n, W), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(dist(5 * s, 0.1 * p), dist(s, p), rtol=1e-12, atol=1e-10)
    else:
        torch.testing.assert_close(dist(s, p), naive_holef(s, p, W), rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(dist(s), naive_holef(s, s, W), rtol=1e-12, atol=1e-10)


def test_gradcheck_wrt_s_p_and_W():
    s = _rand(4, 5, seed=7).requires_grad_()
    p = _rand(3, 5, seed=8).requires_grad_()
    W = _asym_W(5).requires_grad_()
    assert torch.autograd.gradcheck(holef_distance_matrix, (s, p, W))
    q = _rand(4, 5, seed=9).requires_grad_()
    assert torch.autograd.gradcheck(holef_pairwise, (s, q, W))
    Wr = _asym_W(5, seed=10).requires_grad_()
    assert torch.autograd.gradcheck(lambda w: holef_regularizer(w, "fro"), (Wr,))


def test_gradcheck_through_the_distance_module_both_parametrisations():
    s, p = _rand(4, 6, seed=11).requires_grad_(), _rand(5, 6, seed=12).requires_grad_()
    for nonnegative in (False, True):
        dist = HOLEFDistance(6, nonnegative=nonnegative).to(F64)
        name = "raw_weight" if nonnegative else "weight"
        with torch.no_grad():
            getattr(dist, name).add_(0.3 * _rand(6, 6, seed=13))
        raw = getattr(dist, name).detach().clone().requires_grad_()

        def fn(s_, p_, raw_, dist=dist, name=name):
            return torch.func.functional_call(dist, {name: raw_}, (s_, p_))

        assert torch.autograd.gradcheck(fn, (s, p, raw))


def test_free_W_can_be_negative_nonnegative_W_cannot():
    s, p = _rand(10, 6, seed=14), _rand(12, 6, seed=15)
    neg = HOLEFDistance.from_weight_matrix(-torch.eye(6, dtype=F64), normalize_embeddings=False)
    assert (neg(s, p) < 0).all()  # the free parametrisation gives negative energies for negative W

    dist = HOLEFDistance(6, nonnegative=True, normalize_embeddings=False).to(F64)
    W0 = dist.weight_matrix()
    assert (W0 > 0).all()
    # V is stored in float32, so W starts at I + 1e-3 off the diagonal up to float32 rounding.
    torch.testing.assert_close(W0.diagonal(), torch.ones(6, dtype=F64), rtol=0, atol=1e-7)
    off = W0 - torch.diag(W0.diagonal())
    torch.testing.assert_close(off, 1e-3 * (1 - torch.eye(6, dtype=F64)), rtol=1e-6, atol=0)
    with torch.no_grad():
        dist.raw_weight.copy_(4.0 * _rand(6, 6, seed=16))  # entries of both signs before the softplus
    W = dist.weight_matrix()
    both = torch.cat([s, p])  # includes s == p pairs, where rounding could go below 0
    mat = dist(both, both)
    assert (mat >= 0).all()
    torch.testing.assert_close(mat, naive_holef(both, both, W), rtol=1e-12, atol=1e-10)
    assert (dist.pairwise_distance(s, s) >= 0).all()


def test_from_weight_matrix_nonnegative_roundtrip_and_rejects_zero():
    W = torch.rand(5, 5, dtype=F64) + 0.01
    dist = HOLEFDistance.from_weight_matrix(W, nonnegative=True)
    torch.testing.assert_close(dist.weight_matrix(), W, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="must be > 0"):
        HOLEFDistance.from_weight_matrix(torch.eye(5), nonnegative=True)


def test_products_run_in_float32_under_autocast():
    s32, p32 = torch.randn(9, 32), torch.randn(7, 32)
    dist = HOLEFDistance(32, normalize_embeddings=False)
    with torch.no_grad():
        dist.weight.add_(0.1 * torch.randn(32, 32))
    expected = dist(s32, p32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dist(s32, p32)
        got_bf16_in = dist(s32.bfloat16(), p32.bfloat16())
    assert got.dtype == torch.float32 and got_bf16_in.dtype == torch.float32
    assert torch.equal(got, expected)
    assert torch.equal(got_bf16_in, dist(s32.bfloat16().float(), p32.bfloat16().float()))


def test_moves_with_the_module_and_saves_through_safetensors(tmp_path):
    class Head(torch.nn.Module):
        def __init__(self, nonnegative):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)
            self.distance = HOLEFDistance(4, nonnegative=nonnegative)

    for nonnegative in (False, True):
        head = Head(nonnegative)
        name = "distance.raw_weight" if nonnegative else "distance.weight"
        with torch.no_grad():
            head.state_dict()[name].add_(torch.randn(4, 4))
        assert name in head.state_dict()
        path = tmp_path / f"head_{nonnegative}.safetensors"
        save_file(head.state_dict(), str(path))
        other = Head(nonnegative)
        other.load_state_dict(load_file(str(path)))
        assert torch.equal(other.distance.weight_matrix(), head.distance.weight_matrix())
        head.to(F64)
        assert head.distance.weight_matrix().dtype == F64


def test_regularizer_values():
    W = torch.eye(3, dtype=F64)
    W[0, 1], W[2, 2] = -2.0, 0.5
    assert holef_regularizer(W, "fro").item() == pytest.approx(4.25, abs=1e-15)
    assert holef_regularizer(W, "l1").item() == pytest.approx(2.5, abs=1e-15)
    assert holef_regularizer(torch.eye(3), "fro").item() == 0.0


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: holef_distance_matrix(torch.randn(3, 4), torch.randn(2, 5), torch.eye(4)),
            "same embedding size",
        ),
        (
            lambda: holef_distance_matrix(torch.randn(3, 4), torch.randn(2, 4), torch.eye(3)),
            r"W must be \[d, d\]",
        ),
        (lambda: holef_distance_matrix(torch.randn(4), torch.randn(2, 4), torch.eye(4)), "2-D"),
        (lambda: holef_pairwise(torch.randn(3, 4), torch.randn(2, 4), torch.eye(4)), "as many sketches"),
        (lambda: holef_regularizer(torch.eye(3), "l2"), "kind must be"),
        (lambda: HOLEFDistance(4, power=2), "power=1"),
        (lambda: HOLEFDistance(4, is_inverted=True), "is_inverted"),
        (lambda: HOLEFDistance(0), "positive int"),
        (lambda: HOLEFDistance(4, nonnegative=True, offdiag_init=0.0), "offdiag_init"),
    ],
)
def test_bad_input_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_integer_input_type_error():
    with pytest.raises(TypeError, match="floating-point"):
        holef_distance_matrix(torch.ones(2, 3, dtype=torch.long), torch.randn(2, 3), torch.eye(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_moves_W_and_keeps_float32_under_fp16_autocast():
    dist = HOLEFDistance(64, normalize_embeddings=False).cuda()
    with torch.no_grad():
        dist.weight.add_(0.05 * torch.randn(64, 64, device="cuda"))
    s, p = torch.randn(33, 64, device="cuda"), torch.randn(17, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        got = dist(s.half(), p.half())
    assert got.dtype == torch.float32 and got.device.type == "cuda"
    expected = naive_holef(s.half().double(), p.half().double(), dist.weight.double())
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-3)

"""HOLEF, the higher-order learnable energy function, as a pytorch-metric-learning distance and loss.

HOLEF compares every dimension of a sketch embedding ``s`` with every dimension of a photo
embedding ``p``, weighted by a learnable matrix ``W`` (d x d)::

    D_W(s, p) = sum_i sum_j W_ij (s_i - p_j)^2

``W = I`` is the squared Euclidean distance. The outer difference (an ``[Nq, Nr, d, d]`` tensor)
is never built: with ``r = W 1`` (row sums) and ``c = W^T 1`` (column sums)::

    D_W(s, p) = (s * s) . r + (p * p) . c - 2 s^T W p

so a whole ``[Nq, Nr]`` matrix costs two matrix products, O(Nq Nr d + min(Nq, Nr) d^2) time and
O(Nq Nr + d^2) memory.

Two properties users must know (both are tested):

* Asymmetry. ``D_W(s, p) != D_W(p, s)`` unless ``W`` is symmetric. Everywhere in this module the
  first argument is the sketch ``s`` and the second the photo ``p``: ``HOLEFDistance(query, ref)``
  treats ``query`` as sketches and ``ref`` as photos, so PML losses and miners should be called as
  ``loss(sketch_emb, sketch_labels, ref_emb=photo_emb, ref_labels=photo_labels)``. Without
  ``ref_emb`` (one mixed batch) each anchor plays the sketch role.
* Sign. With negative entries in ``W``, ``D`` can be negative. By default ``W`` is free (as in the
  paper); ``nonnegative=True`` parametrises ``W = softplus(V)`` elementwise, so every entry is
  positive and ``D >= 0`` for all inputs (the bipartite "Laplacian" of a non-negative ``W`` is
  positive semi-definite); the result is then clamped at 0 to remove rounding error only.
"""

from __future__ import annotations

import contextlib
import math

import torch
from pytorch_metric_learning.distances import BaseDistance
from pytorch_metric_learning.losses import CrossBatchMemory, TripletMarginLoss
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

__all__ = [
    "holef_distance_matrix",
    "holef_pairwise",
    "holef_regularizer",
    "HOLEFDistance",
    "HOLEFLoss",
    "HOLEFCrossBatchMemory",
]


def _check_inputs(s: torch.Tensor, p: torch.Tensor, W: torch.Tensor, pairwise: bool) -> None:
    for name, t in (("s", s), ("p", p), ("W", W)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor, got {type(t).__name__}; convert it with torch.as_tensor."
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}; cast it with .float().")
    if s.ndim != 2 or p.ndim != 2:
        raise ValueError(
            f"s and p must be 2-D [N, d] embeddings, got shapes {tuple(s.shape)} and {tuple(p.shape)}; "
            "flatten or unsqueeze them to [N, d]."
        )
    d = s.shape[1]
    if p.shape[1] != d:
        raise ValueError(
            f"s and p must have the same embedding size, got {s.shape[1]} and {p.shape[1]}; "
            "use embeddings from the same model head."
        )
    if tuple(W.shape) != (d, d):
        raise ValueError(
            f"W must be [d, d] = [{d}, {d}] for {d}-dimensional embeddings, got {tuple(W.shape)}; "
            "build HOLEFDistance with dim equal to the embedding size."
        )
    if pairwise and s.shape[0] != p.shape[0]:
        raise ValueError(
            f"pairwise HOLEF needs as many sketches as photos, got {s.shape[0]} and {p.shape[0]}; "
            "use holef_distance_matrix for all pairs."
        )
    if not (s.device == p.device == W.device):
        raise ValueError(
            f"s, p and W must be on one device, got {s.device}, {p.device} and {W.device}; "
            "move the HOLEFDistance (or W) with .to(device)."
        )


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    # float32 at least, so that the expanded form (a difference of large terms) never runs in
    # float16/bfloat16; float64 inputs stay float64.
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _autocast_off(device_type: str):
    """A context that turns autocast off on ``device_type`` (a no-op where autocast does not exist)."""
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # e.g. the "meta" device has no autocast
        return contextlib.nullcontext()


def holef_distance_matrix(s: torch.Tensor, p: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """All-pairs HOLEF energy ``D[a, b] = sum_ij W_ij (s[a, i] - p[b, j])^2`` in closed form.

    Args:
        s: sketch embeddings ``[Nq, d]``.
        p: photo embeddings ``[Nr, d]``.
        W: weight matrix ``[d, d]`` (any sign, not necessarily symmetric).

    Returns:
        ``[Nq, Nr]`` energies in float32, or in float64 when any input is float64. The products
        run in that precision even inside ``torch.autocast``, because the expanded form subtracts
        large terms and loses everything in half precision.
    """
    _check_inputs(s, p, W, pairwise=False)
    dtype = _compute_dtype(s, p, W)
    with _autocast_off(s.device.type):
        s, p, W = s.to(dtype), p.to(dtype), W.to(dtype)
        r = W.sum(dim=1)  # [d] row sums weight s_i^2
        c = W.sum(dim=0)  # [d] column sums weight p_j^2
        sq_s = (s * s) @ r  # [Nq]
        sq_p = (p * p) @ c  # [Nr]
        # Multiply W into the smaller side so the d^2 term costs min(Nq, Nr) d^2.
        if s.shape[0] <= p.shape[0]:
            cross_left, cross_right = s @ W, p.T
        else:
            cross_left, cross_right = s, W @ p.T
        return torch.addmm(sq_s[:, None] + sq_p[None, :], cross_left, cross_right, beta=1.0, alpha=-2.0)


def holef_pairwise(s: torch.Tensor, p: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Row-wise HOLEF energy ``D[n] = sum_ij W_ij (s[n, i] - p[n, j])^2`` in closed form.

    Args:
        s: sketch embeddings ``[N, d]``.
        p: photo embeddings ``[N, d]`` (row ``n`` is compared with ``s[n]`` only).
        W: weight matrix ``[d, d]``.

    Returns:
        ``[N]`` energies, in the precision described in :func:`holef_distance_matrix`.
    """
    _check_inputs(s, p, W, pairwise=True)
    dtype = _compute_dtype(s, p, W)
    with _autocast_off(s.device.type):
        s, p, W = s.to(dtype), p.to(dtype), W.to(dtype)
        r, c = W.sum(dim=1), W.sum(dim=0)
        return (s * s) @ r + (p * p) @ c - 2.0 * ((s @ W) * p).sum(dim=1)


def holef_regularizer(W: torch.Tensor, kind: str = "fro") -> torch.Tensor:
    """Distance of ``W`` from the identity: ``||W - I||_F^2`` (``"fro"``) or ``||W - I||_1`` (``"l1"``).

    Args:
        W: weight matrix ``[d, d]``.
        kind: ``"fro"`` for the squared Frobenius norm, ``"l1"`` for the entrywise L1 norm.

    Returns:
        A scalar tensor in ``W``'s dtype, differentiable w.r.t. ``W``.
    """
    if not isinstance(W, torch.Tensor) or W.ndim != 2 or W.shape[0] != W.shape[1]:
        shape = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
        raise ValueError(f"W must be a square [d, d] tensor, got {shape}; pass the HOLEF weight matrix.")
    diff = W - torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
    if kind == "fro":
        return (diff * diff).sum()
    if kind == "l1":
        return diff.abs().sum()
    raise ValueError(f'kind must be "fro" or "l1", got {kind!r}.')


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    # log(exp(x) - 1), written with expm1 so small x keeps its precision.
    return torch.log(torch.expm1(x))


class HOLEFDistance(BaseDistance):
    """HOLEF energy as a pytorch-metric-learning distance (smaller = more similar).

    ``distance(query [Nq, d], ref [Nr, d]) -> [Nq, Nr]`` with ``query`` the sketches ``s`` and
    ``ref`` the photos ``p`` (the energy is not symmetric); ``ref=None`` compares ``query`` with
    itself. ``normalize_embeddings`` (default True, as for every PML distance) L2-normalises both
    sides first; with it off, ``W = I`` gives exactly ``LpDistance(power=2, normalize_embeddings=False)``.

    Args:
        dim: embedding size ``d``; ``W`` is ``[d, d]``, initialised to the identity.
        nonnegative: if True, ``W = softplus(V)`` elementwise, so ``D >= 0`` always. ``W`` then starts at
            ``I`` with off-diagonal entries ``offdiag_init`` (softplus never reaches 0 exactly).
        offdiag_init: initial off-diagonal entry of ``W`` when ``nonnegative=True``; must be > 0.
        **kwargs: passed to ``BaseDistance`` (``normalize_embeddings``, ``p``, ``collect_stats``).
            ``power`` must stay 1 (the energy is already squared) and ``is_inverted`` False.

    The learnable tensor is ``self.weight`` (free ``W``) or ``self.raw_weight`` (``V``), an
    ``nn.Parameter`` in the state dict; use :meth:`weight_matrix` for the effective ``W``.
    """

    def __init__(self, dim: int, nonnegative: bool = False, offdiag_init: float = 1e-3, **kwargs):
        if kwargs.get("power", 1) != 1:
            raise ValueError(
                f"HOLEFDistance needs power=1 (the energy is already squared), got {kwargs['power']}."
            )
        if kwargs.get("is_inverted", False):
            raise ValueError("HOLEFDistance is a distance (smaller = closer); do not pass is_inverted=True.")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int (the embedding size), got {dim!r}.")
        kwargs["power"], kwargs["is_inverted"] = 1, False
        super().__init__(**kwargs)
        self.dim = dim
        self.nonnegative = bool(nonnegative)
        eye = torch.eye(dim)
        if self.nonnegative:
            if not (isinstance(offdiag_init, (int, float)) and 0 < offdiag_init < 1):
                raise ValueError(
                    f"offdiag_init must be in (0, 1) with nonnegative=True, got {offdiag_init!r}."
                )
            self.offdiag_init = float(offdiag_init)
            init = eye + (1.0 - eye) * self.offdiag_init
            self.raw_weight = torch.nn.Parameter(_inverse_softplus(init.double()).float())
        else:
            self.offdiag_init = 0.0
            self.weight = torch.nn.Parameter(eye)

    @classmethod
    def from_weight_matrix(cls, W: torch.Tensor, nonnegative: bool = False, **kwargs) -> HOLEFDistance:
        """A distance whose effective ``W`` is the given ``[d, d]`` matrix (for search from a saved W).

        With ``nonnegative=True`` every entry of ``W`` must be > 0 (softplus cannot produce 0).
        """
        if not isinstance(W, torch.Tensor) or W.ndim != 2 or W.shape[0] != W.shape[1]:
            shape = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
            raise ValueError(f"W must be a square [d, d] tensor, got {shape}.")
        W = W.detach()
        dist = cls(W.shape[0], nonnegative=nonnegative, **kwargs)
        with torch.no_grad():
            if nonnegative:
                if not bool((W > 0).all()):
                    raise ValueError(
                        "with nonnegative=True every entry of W must be > 0; use nonnegative=False."
                    )
                dist.raw_weight.data = _inverse_softplus(W.double()).to(W.dtype)
            else:
                dist.weight.data = W.clone()
        return dist

    def weight_matrix(self) -> torch.Tensor:
        """The effective ``W`` ``[d, d]`` used in the energy (after the softplus when non-negative)."""
        if self.nonnegative:
            return torch.nn.functional.softplus(self.raw_weight)
        return self.weight

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor | None) -> torch.Tensor:
        """``[Nq, Nr]`` energies, ``query_emb`` as sketches, ``ref_emb`` (or ``query_emb``) as photos."""
        if ref_emb is None:
            ref_emb = query_emb
        mat = holef_distance_matrix(query_emb, ref_emb, self.weight_matrix())
        return mat.clamp_min(0) if self.nonnegative else mat

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """``[N]`` energies between row ``n`` of ``query_emb`` (sketch) and of ``ref_emb`` (photo)."""
        dist = holef_pairwise(query_emb, ref_emb, self.weight_matrix())
        return dist.clamp_min(0) if self.nonnegative else dist

    def extra_repr(self) -> str:
        return f"dim={self.dim}, nonnegative={self.nonnegative}, normalize_embeddings={self.normalize_embeddings}"


class HOLEFLoss(TripletMarginLoss):
    """Triplet margin loss on the HOLEF energy plus ``reg_weight * R(W)``, PML style.

    ``loss = reducer(max(0, margin + D_W(s, p+) - D_W(s, p-))) + reg_weight * holef_regularizer(W, reg_kind)``

    The two terms are separate sub-losses of PML's loss dict, ``"loss"`` (reduced by the reducer,
    ``AvgNonZeroReducer`` by default) and ``"holef_reg"`` (``"already_reduced"``), summed by
    ``MultipleReducers``. The regulariser is kept even when a batch has no triplet.

    Args:
        dim: embedding size; builds a ``HOLEFDistance(dim)``. Give ``dim`` or ``distance``, not both.
        distance: an existing ``HOLEFDistance`` (share it with the miner so both see the same W).
        margin: triplet margin, in energy units (PML's default 0.05).
        reg_weight: ``lambda`` >= 0, weight of the regulariser.
        reg_kind: ``"fro"`` (``||W - I||_F^2``) or ``"l1"`` (``||W - I||_1``).
        **kwargs: passed to ``TripletMarginLoss`` (``triplets_per_anchor``, ``smooth_loss``, ``reducer``, ...).
            ``swap`` is refused: it compares a positive with a negative photo, which HOLEF (sketch vs
            photo) does not define.

    Call it like any PML loss: ``loss(sketch_emb, labels, indices_tuple, ref_emb=photo_emb, ref_labels=...)``.
    PML treats ``ref_labels`` that *is* ``labels`` (the same tensor object) as the batch compared with
    itself and drops the ``i == j`` pairs; with one sketch per photo and photo ids as labels, pass
    ``ref_labels=labels.clone()``.
    """

    def __init__(
        self,
        dim: int | None = None,
        *,
        distance: HOLEFDistance | None = None,
        margin: float = 0.05,
        reg_weight: float = 1e-3,
        reg_kind: str = "fro",
        **kwargs,
    ):
        if (dim is None) == (distance is None):
            raise ValueError(
                "give HOLEFLoss either dim (to build a HOLEFDistance) or distance=, exactly one."
            )
        if distance is None:
            distance = HOLEFDistance(dim)
        elif not isinstance(distance, HOLEFDistance):
            raise TypeError(
                f"distance must be a HOLEFDistance, got {type(distance).__name__}; "
                "for another distance use TripletMarginLoss directly."
            )
        if kwargs.get("swap", False):
            raise ValueError(
                "HOLEFLoss does not support swap=True: it would compare two photos with a sketch-photo energy."
            )
        if reg_kind not in ("fro", "l1"):
            raise ValueError(f'reg_kind must be "fro" or "l1", got {reg_kind!r}.')
        if not (isinstance(reg_weight, (int, float)) and math.isfinite(reg_weight) and reg_weight >= 0):
            raise ValueError(f"reg_weight must be a finite number >= 0, got {reg_weight!r}.")
        self.reg_weight = float(reg_weight)
        self.reg_kind = reg_kind
        super().__init__(margin=margin, distance=distance, **kwargs)
        self.add_to_recordable_attributes(list_of_names=["reg_weight"], is_stat=False)

    def _sub_loss_names(self):
        return ["loss", "holef_reg"]

    def regularization_loss(self) -> torch.Tensor:
        """``reg_weight * holef_regularizer(W, reg_kind)`` as a scalar tensor."""
        return self.reg_weight * holef_regularizer(self.distance.weight_matrix(), self.reg_kind)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        indices_tuple = lmu.convert_to_triplets(
            indices_tuple, labels, ref_labels, t_per_anchor=self.triplets_per_anchor
        )
        if len(indices_tuple[0]) == 0:
            triplet = self.zero_loss()
        else:
            triplet = super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)["loss"]
        reg = {"losses": self.regularization_loss(), "indices": None, "reduction_type": "already_reduced"}
        return {"loss": triplet, "holef_reg": reg}


class HOLEFCrossBatchMemory(CrossBatchMemory):
    """PML's ``CrossBatchMemory`` that also accepts :class:`HOLEFLoss`.

    ``CrossBatchMemory`` checks the loss's class name against an allow-list that contains
    ``TripletMarginLoss`` but not ``HOLEFLoss``. Two combinations work:

    * ``CrossBatchMemory(TripletMarginLoss(distance=HOLEFDistance(d)), d)``: plain PML, no
      regulariser; add ``reg_weight * holef_regularizer(dist.weight_matrix())`` yourself.
    * ``HOLEFCrossBatchMemory(HOLEFLoss(d), d)``: the regulariser comes with the loss.

    For sketch -> photo use, pass ``enqueue_mask`` True for photo rows: photos go to the memory
    (detached, as PML stores them) and the sketches are the queries.
    """

    @staticmethod
    def supported_losses():
        return CrossBatchMemory.supported_losses() + ["HOLEFLoss"]

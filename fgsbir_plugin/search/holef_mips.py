"""HOLEF as a maximum-inner-product search: the vectors a faiss index stores and queries with.

The HOLEF energy of a sketch embedding ``s`` and a photo embedding ``p`` (both ``[d]``) is

    D_W(s, p) = sum_ij W_ij (s_i - p_j)^2 = (s*s).r + (p*p).c - 2 s^T W p,   r = W 1,  c = W^T 1.

For a fixed query the first term is a constant, so ranking photos by ascending ``D_W`` is ranking
them by descending inner product of

    q(s) = [2 W^T s, -1]        (the query,  d + 1 values)
    v(p) = [p, (p*p).c]         (the photo,  d + 1 values)

because ``<q(s), v(p)> = 2 (W^T s).p - (p*p).c = 2 s^T W p - (p*p).c = (s*s).r - D_W(s, p)``.
No assumption on ``W`` is needed (it may be asymmetric and indefinite). The index stores ``v(p)``
with ``faiss.METRIC_INNER_PRODUCT``; a search embeds ``q(s)`` and turns each score back into the
true distance with ``D_W = (s*s).r - score`` (the query constant is computed in float64).

With an exact (``Flat``) index the result is the exact HOLEF top-k. Approximate indexes (``HNSW``,
``IVF``) build their graph / clusters from the stored vectors alone, and ``v(p)`` is not normalised:
its last coordinate grows with ``|p|^2`` and may be negative, so an inner-product HNSW graph links
everything to the few largest vectors and its recall collapses. For those specs the index therefore
(``mips="l2"``) rescales the extra coordinate to the spread of an ordinary one (``alpha``) and
applies the classic reduction of inner product to Euclidean search,
``v' = [v, sqrt(M^2 - |v|^2)]``, ``q' = [q, 0]``, ``|q' - v'|^2 = |q|^2 + M^2 - 2 <q, v>``, with
``M^2`` fixed at 4x the largest squared norm of the first vectors added (or trained on).
Both scalings are fixed from the first vectors the index sees and saved with it.
``benchmarks/search.py`` measures the recall of both forms against exact HOLEF and exact cosine.
"""

from __future__ import annotations

import numpy as np

from .inputs import chunks

__all__ = ["holef_gallery_vectors", "holef_query_vectors", "HOLEFTransform", "MIPS_FORMS"]

MIPS_FORMS = ("ip", "l2")


def holef_gallery_vectors(p: np.ndarray, W: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``v(p) = [p, (p*p).c / alpha]`` with ``c = W^T 1``: ``[N, d]`` -> ``[N, d + 1]`` (float64)."""
    c = W.sum(axis=0)
    return np.concatenate([p, ((p * p) @ c)[:, None] / alpha], axis=1)


def holef_query_vectors(s: np.ndarray, W: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(q(s) = [2 W^T s, -alpha]`` ``[N, d + 1]``, query constant ``(s*s).r`` ``[N]``), ``r = W 1`` (float64).

    ``D_W(s, p) = (s*s).r - <q(s), v(p)>`` for every ``alpha > 0`` (it only rescales the extra
    coordinate, which matters to approximate indexes, not to the inner product).
    """
    r = W.sum(axis=1)
    q = np.concatenate([2.0 * (s @ W), np.full((s.shape[0], 1), -alpha)], axis=1)  # rows are W^T s
    return q, (s * s) @ r


class HOLEFTransform:
    """The HOLEF matrix and the scalings that turn HOLEF ranking into one faiss search.

    Args:
        W: the HOLEF matrix ``[d, d]``, float64.
        mips: ``"ip"`` (store ``v(p)``, search by inner product) or ``"l2"`` (store ``v'(p)``, search
            by squared Euclidean distance).
        alpha: divisor of the extra coordinate of ``v(p)`` (1 until calibrated).
        max_sq_norm: ``M^2`` of the Euclidean form; None until calibrated (0 for ``"ip"``, where it
            only marks the transform as calibrated).
    """

    def __init__(
        self, W: np.ndarray, mips: str, alpha: float = 1.0, max_sq_norm: float | None = None
    ) -> None:
        self.W = W
        self.mips = mips
        self.alpha = alpha
        self.max_sq_norm = max_sq_norm

    @property
    def extra_dims(self) -> int:
        """Coordinates added to the ``d`` of an embedding: 1 for ``"ip"``, 2 for ``"l2"``."""
        return 1 if self.mips == "ip" else 2

    def calibrate(self, p: np.ndarray) -> None:
        """Fix the scalings from the first photo embeddings ``[N, d]`` seen (train() or the first add()).

        ``alpha`` gives the extra coordinate ``(p*p).c / alpha`` the spread of an ordinary
        coordinate, so it neither dominates nor vanishes in an approximate index's geometry.
        For ``mips="l2"`` the bound ``M^2`` (4x the largest squared norm seen, i.e. a 2x margin on
        the norm) turns the inner product into a Euclidean distance.
        """
        if self.max_sq_norm is not None or p.shape[0] == 0:
            return
        c = self.W.sum(axis=0)
        extra = np.concatenate([(block * block) @ c for block in chunks(p)])
        spread = float(np.std(extra)) if p.shape[0] > 1 else float(abs(extra[0]))
        rms = float(np.sqrt(sum(float((block * block).sum()) for block in chunks(p)) / p.size))
        self.alpha = spread / rms if spread > 0 and rms > 0 else 1.0
        if self.mips == "l2":
            self.max_sq_norm = 4.0 * max(float(self._sq_norms(block).max()) for block in chunks(p))
        else:
            self.max_sq_norm = 0.0

    def _sq_norms(self, p: np.ndarray) -> np.ndarray:
        """``|v(p)|^2`` with the current ``alpha``: ``[N]`` float64."""
        v = holef_gallery_vectors(p, self.W, self.alpha)
        return (v * v).sum(axis=1)

    def check_norms(self, p: np.ndarray) -> None:
        """Refuse photos whose ``|v(p)|^2`` exceeds ``M^2``: the Euclidean form has no room for them."""
        if self.mips != "l2":
            return
        for block in chunks(p):
            if (self._sq_norms(block) > self.max_sq_norm).any():
                raise ValueError(
                    "some embeddings are far larger than those this HNSW/IVF HOLEF index was calibrated "
                    "on (its first add() or train()); rebuild it, passing all photos (or a "
                    "representative sample to train()) first."
                )

    def gallery_vectors(self, p: np.ndarray) -> np.ndarray:
        """What the index stores for photos ``[N, d]``: ``v(p)`` or ``v'(p)``, ``[N, d + extra_dims]``."""
        v = holef_gallery_vectors(p, self.W, self.alpha)
        if self.mips == "l2":
            sq = (v * v).sum(axis=1)  # <= M^2, checked by check_norms before
            v = np.concatenate([v, np.sqrt(np.maximum(self.max_sq_norm - sq, 0.0))[:, None]], axis=1)
        return v

    def query_vectors(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query vectors [N, d + extra_dims], constant [N])`` for sketches ``s`` ``[N, d]`` (float64).

        :meth:`distances` turns faiss's scores for these queries back into ``D_W``.
        """
        q, const = holef_query_vectors(s, self.W, self.alpha)
        if self.mips == "l2":
            # faiss returns |q' - v'|^2 = |q|^2 + M^2 - 2 <q, v>; fold the known terms into const
            const = const - 0.5 * ((q * q).sum(axis=1) + self.max_sq_norm)
            q = np.concatenate([q, np.zeros((q.shape[0], 1))], axis=1)
        return q, const

    def distances(self, scores: np.ndarray, const: np.ndarray) -> np.ndarray:
        """``D_W`` ``[Nq, k]`` from faiss's scores ``[Nq, k]`` (float64) and the query constants ``[Nq]``."""
        if self.mips == "l2":
            return const[:, None] + 0.5 * scores  # D = (s*s).r - <q, v> = const' + L2 / 2
        return const[:, None] - scores

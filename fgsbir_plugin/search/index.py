"""A faiss gallery index that searches with cosine, squared L2, or the learned HOLEF distance, exactly.

HOLEF as a maximum-inner-product search
---------------------------------------
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
everything to the few largest vectors (``benchmarks/results/search.md``: recall@10 0.01-0.04 at
d = 512, 10k photos, efSearch 16-256, where cosine HNSW on the same data reaches 0.72-0.98). For non-Flat specs the index therefore
(``mips="auto"``) rescales the extra coordinate to the spread of an ordinary one (``alpha``) and
applies the classic reduction of inner product to Euclidean search,
``v' = [v, sqrt(M^2 - |v|^2)]``, ``q' = [q, 0]``, ``|q' - v'|^2 = |q|^2 + M^2 - 2 <q, v>``, with
``M^2`` fixed at 4x the largest squared norm of the first vectors added (or trained on).
Both scalings are fixed from the first vectors the index sees and saved with it.
``benchmarks/search.py`` measures the recall of both forms: with the Euclidean form HOLEF HNSW
recall matches cosine HNSW recall on the same data.

Units of the returned distances (smaller is always closer):
``cosine`` -> ``1 - cos(s, p)`` in [0, 2]; ``l2`` -> squared Euclidean distance ``|s - p|^2``;
``holef`` -> ``D_W(s, p)`` (may be negative when ``W`` is indefinite).

File format (``save``/``load``), one file, nothing unpickled::

    b"FGSBIRIX"                      8 bytes magic
    header length                    8 bytes, unsigned little-endian
    sha256(header)                   32 bytes
    header                           UTF-8 JSON: format_version, metric, dim, spec, model name and
                                     fingerprint, W fingerprint, id mapping, search params, and the
                                     list of sections that follow with their sizes and sha256
    sections                         "faiss" (faiss.serialize_index bytes), then "W" (float64,
                                     little-endian, C order, d x d) for metric "holef"
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._common import atomic_path, tensor_fingerprint

__all__ = [
    "GalleryIndex",
    "METRICS",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_EF_CONSTRUCTION",
    "DEFAULT_NPROBE",
    "holef_gallery_vectors",
    "holef_query_vectors",
    "model_identity",
    "weight_fingerprint",
]

METRICS = ("cosine", "l2", "holef")
FORMAT_VERSION = 1
MAGIC = b"FGSBIRIX"
DEFAULT_EF_SEARCH = 128
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_NPROBE = 16
_SEARCH_PARAMS = ("efSearch", "efConstruction", "nprobe")
_EXPECT_KEYS = ("dim", "metric", "spec", "W", "model", "model_name", "model_fingerprint")


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss is an optional extra
        raise ImportError(
            "gallery search needs faiss; install it with `pip install fgsbir-plugin[search]` (faiss-cpu)."
        ) from err
    return faiss


# ----------------------------------------------------------------------------------------------
# input conversion


_CHUNK = 65_536  # rows converted to float64 at a time, so a 1M-photo add() needs no 4 GiB copies


def _as_matrix(x: Any, dim: int, what: str) -> np.ndarray:
    """``x`` ([N, dim] numpy array, torch tensor or nested list) as a float32 or float64 numpy array.

    float32 input is kept as it is (no copy); everything else becomes float64. Rows are converted
    to float64 chunk by chunk later (:func:`_chunks`).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x if x.dtype in (torch.float32, torch.float64) else x.double()).numpy()
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim == 1 and x.shape[0] == dim:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape [N, {dim}], got {list(x.shape)}; pass one row per vector.")
    for block in _chunks(x):
        if not np.isfinite(block).all():
            raise ValueError(f"{what} contain NaN or infinite values; check the model's outputs.")
    return x


def _chunks(x: np.ndarray):
    """float64 copies of consecutive row blocks of ``x``."""
    for start in range(0, x.shape[0], _CHUNK):
        yield np.ascontiguousarray(x[start : start + _CHUNK], dtype=np.float64)


def _resolve_weight_matrix(W: Any, dim: int) -> np.ndarray:
    """The HOLEF matrix as float64 ``[dim, dim]`` from an array, a tensor or an object with ``weight_matrix()``."""
    if W is None:
        raise ValueError(
            "metric 'holef' needs W: pass the d x d HOLEF matrix (array, tensor or HOLEFDistance)."
        )
    if hasattr(W, "weight_matrix"):
        W = W.weight_matrix()
    if isinstance(W, torch.Tensor):
        W = W.detach().to("cpu", torch.float64).numpy()
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (dim, dim):
        raise ValueError(
            f"W must have shape [{dim}, {dim}] for embeddings of dim {dim}, got {list(W.shape)}."
        )
    if not np.isfinite(W).all():
        raise ValueError("W contains NaN or infinite values; check the HOLEF parameters.")
    return np.ascontiguousarray(W)


def weight_fingerprint(W: np.ndarray) -> str:
    """SHA-256 of the HOLEF matrix values as float64 (so a float32 and a float64 copy of the same W agree)."""
    return tensor_fingerprint({"W": torch.from_numpy(np.ascontiguousarray(W, dtype=np.float64))})


def model_identity(model: torch.nn.Module) -> tuple[str, str]:
    """``(architecture name, sha256 of the state dict)`` identifying the weights that made the embeddings."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") or type(model).__name__
    # 0-d tensors (BatchNorm's num_batches_tracked) are given one dimension because
    # tensor_fingerprint cannot byte-view a 0-d tensor
    state = {k: v.reshape(1) if v.dim() == 0 else v for k, v in model.state_dict().items()}
    return str(name), tensor_fingerprint(state)


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


def _pq_pad(spec: str, dim: int) -> int:
    """The index dimension: ``dim`` rounded up so every ``PQm`` in the spec divides it (zeros pad)."""
    ms = [int(m) for m in re.findall(r"PQ(\d+)", spec)]
    step = int(np.lcm.reduce(ms)) if ms else 1
    return -(-dim // step) * step


# ----------------------------------------------------------------------------------------------


class GalleryIndex:
    """A searchable gallery of photo embeddings, keyed by photo id (strings or non-negative ints).

    Args:
        dim: embedding dimension ``d``.
        metric: ``"cosine"`` (inner product of L2-normalised vectors), ``"l2"`` (squared Euclidean),
            or ``"holef"`` (the learned HOLEF energy, searched exactly as a maximum inner product).
        W: for ``"holef"``: the ``[d, d]`` matrix, as a numpy array, a torch tensor, or an object
            with ``weight_matrix()`` (a ``HOLEFDistance``). Ignored otherwise (must be None).
        spec: a ``faiss.index_factory`` description without ``IDMap``: ``"Flat"`` (exact, default),
            ``"HNSW32"``, ``"IVF1024,Flat"``, ``"IVF1024,PQ32"``, ... IVF and PQ need ``train()`` first.
        model: optionally the model that makes the embeddings; its name and weight fingerprint are
            saved with the index and checked by ``load(..., expect={"model": model})``.
        mips: how ``holef`` becomes a faiss search: ``"ip"`` (inner product on ``v(p)``, exact with
            ``Flat``) or ``"l2"`` (the inner product further reduced to a Euclidean nearest-neighbour
            search with one more coordinate, which approximate graph/cluster indexes handle far
            better); ``"auto"`` (default) is ``"ip"`` for ``Flat`` and ``"l2"`` otherwise.
        **search_params: ``efSearch`` (HNSW, default 128), ``efConstruction`` (HNSW, default 200),
            ``nprobe`` (IVF, default 16, capped at the number of lists).

    ``search`` returns distances in the metric's units, smaller is closer: ``1 - cos`` for cosine,
    squared Euclidean for l2, ``D_W`` for holef.
    """

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        W: Any = None,
        spec: str = "Flat",
        *,
        model: torch.nn.Module | None = None,
        mips: str = "auto",
        **search_params: int,
    ) -> None:
        faiss = _faiss()
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}.")
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(
                f"spec must be a faiss index_factory string such as 'Flat' or 'HNSW32', got {spec!r}."
            )
        if spec.replace(" ", "").upper().startswith("IDMAP"):
            raise ValueError(f"spec {spec!r} must leave out IDMap: GalleryIndex adds the id mapping itself.")
        self.dim = int(dim)
        self.metric = metric
        self.spec = spec
        if metric == "holef":
            self._W: np.ndarray | None = _resolve_weight_matrix(W, self.dim)
            self.W_fingerprint: str | None = weight_fingerprint(self._W)
        else:
            if W is not None:
                raise ValueError(f"W is only used with metric 'holef'; leave it out for metric {metric!r}.")
            self._W = None
            self.W_fingerprint = None
        self.model_name: str | None = None
        self.model_fingerprint: str | None = None
        if model is not None:
            self.model_name, self.model_fingerprint = model_identity(model)
        if mips not in ("auto", "ip", "l2"):
            raise ValueError(f"mips must be 'auto', 'ip' or 'l2', got {mips!r}.")
        if metric != "holef":
            self.mips: str | None = None
        else:
            self.mips = ("ip" if spec.strip() == "Flat" else "l2") if mips == "auto" else mips
        # HOLEF scaling, fixed from the first vectors the index sees (see _calibrate)
        self._alpha = 1.0
        self._max_sq_norm: float | None = None
        base_dim = self.dim + {None: 0, "ip": 1, "l2": 2}[self.mips]
        self.index_dim = _pq_pad(spec, base_dim)
        faiss_metric = faiss.METRIC_L2 if metric == "l2" or self.mips == "l2" else faiss.METRIC_INNER_PRODUCT
        try:
            inner = faiss.index_factory(self.index_dim, spec, faiss_metric)
        except RuntimeError as err:
            raise ValueError(
                f"faiss cannot build index spec {spec!r} for dimension {self.index_dim} "
                f"({str(err).strip().splitlines()[-1]}); see the faiss index_factory documentation."
            ) from None
        self._index = faiss.IndexIDMap2(inner)
        self._id_kind: str | None = None
        self._label_of: dict[str, int] = {}
        self._name_of: dict[int, str] = {}
        self._next_label = 0
        self.search_params: dict[str, int] = {}
        self._init_search_params(search_params)
        self.extra: dict[str, Any] = {}

    # -- parameters --------------------------------------------------------------------------

    def _inner(self):
        return _faiss().downcast_index(self._index.index)

    def _is_hnsw(self) -> bool:
        return hasattr(self._inner(), "hnsw")

    def _ivf(self):
        faiss = _faiss()
        try:
            return faiss.extract_index_ivf(self._index.index)
        except RuntimeError:
            return None

    def _init_search_params(self, params: Mapping[str, int]) -> None:
        defaults: dict[str, int] = {}
        if self._is_hnsw():
            defaults.update(efSearch=DEFAULT_EF_SEARCH, efConstruction=DEFAULT_EF_CONSTRUCTION)
        ivf = self._ivf()
        if ivf is not None:
            defaults["nprobe"] = min(DEFAULT_NPROBE, ivf.nlist)
        self.set_search_params(**{**defaults, **params})

    def set_search_params(self, **params: int) -> None:
        """Set ``efSearch``/``efConstruction`` (HNSW specs) or ``nprobe`` (IVF specs)."""
        faiss = _faiss()
        for name, value in params.items():
            if name not in _SEARCH_PARAMS:
                raise TypeError(f"unknown search parameter {name!r}; use one of {', '.join(_SEARCH_PARAMS)}.")
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"search parameter {name} must be a positive integer, got {value!r}.")
            value = int(value)
            if name in ("efSearch", "efConstruction") and not self._is_hnsw():
                raise ValueError(
                    f"{name} applies to HNSW specs only, and this index's spec is {self.spec!r}."
                )
            if name == "nprobe" and self._ivf() is None:
                raise ValueError(f"nprobe applies to IVF specs only, and this index's spec is {self.spec!r}.")
            if name == "efConstruction":
                self._inner().hnsw.efConstruction = value
            else:
                faiss.ParameterSpace().set_index_parameter(self._index, name, value)
            self.search_params[name] = value

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def min_training_points(self) -> int:
        """The fewest vectors faiss accepts for ``train()`` with this spec (0 when no training is needed)."""
        if self.is_trained:
            return 0
        need = 1
        ivf = self._ivf()
        if ivf is not None:
            need = max(need, int(ivf.nlist))
        inner = self._inner()
        pq = getattr(inner, "pq", None)
        if pq is not None:
            need = max(need, int(pq.ksub))
        return need

    # -- vectors ------------------------------------------------------------------------------

    def _pad(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] < self.index_dim:
            x = np.concatenate([x, np.zeros((x.shape[0], self.index_dim - x.shape[1]))], axis=1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _calibrate(self, p: np.ndarray) -> None:
        """Fix the HOLEF scaling from the first vectors seen (train() or the first add()).

        ``alpha`` gives the extra coordinate ``(p*p).c / alpha`` the spread of an ordinary
        coordinate, so it neither dominates nor vanishes in an approximate index's geometry.
        For ``mips="l2"`` the bound ``M^2`` (4x the largest squared norm seen, i.e. a 2x margin on
        the norm) turns the inner product into a Euclidean distance: v' = [v, sqrt(M^2 - |v|^2)],
        q' = [q, 0], so |q' - v'|^2 = |q|^2 + M^2 - 2 <q, v>.
        """
        if self.metric != "holef" or self._max_sq_norm is not None or p.shape[0] == 0:
            return
        c = self._W.sum(axis=0)
        extra = np.concatenate([(block * block) @ c for block in _chunks(p)])
        spread = float(np.std(extra)) if p.shape[0] > 1 else float(abs(extra[0]))
        rms = float(np.sqrt(sum(float((block * block).sum()) for block in _chunks(p)) / p.size))
        self._alpha = spread / rms if spread > 0 and rms > 0 else 1.0
        if self.mips == "l2":
            sq = max(float(self._holef_sq_norms(block).max()) for block in _chunks(p))
            self._max_sq_norm = 4.0 * sq
        else:
            self._max_sq_norm = 0.0  # unused by the inner-product form; marks the index as calibrated

    def _holef_sq_norms(self, p: np.ndarray) -> np.ndarray:
        """``|v(p)|^2`` with the index's scaling: ``[N]`` float64."""
        v = holef_gallery_vectors(p, self._W, self._alpha)
        return (v * v).sum(axis=1)

    def _check_norms(self, p: np.ndarray) -> None:
        if self.mips != "l2":
            return
        for block in _chunks(p):
            if (self._holef_sq_norms(block) > self._max_sq_norm).any():
                raise ValueError(
                    "some embeddings are far larger than those this HNSW/IVF HOLEF index was calibrated "
                    "on (its first add() or train()); rebuild it, passing all photos (or a "
                    "representative sample to train()) first."
                )

    def _gallery_vectors(self, p: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        elif self.metric == "holef":
            p = holef_gallery_vectors(p, self._W, self._alpha)
            if self.mips == "l2":
                sq = (p * p).sum(axis=1)  # <= M^2, checked by _check_norms before
                p = np.concatenate([p, np.sqrt(np.maximum(self._max_sq_norm - sq, 0.0))[:, None]], axis=1)
        return self._pad(p)

    def _query_vectors(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.metric == "cosine":
            return self._pad(s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)), None
        if self.metric == "holef":
            q, const = holef_query_vectors(s, self._W, self._alpha)
            if self.mips == "l2":
                # faiss returns |q' - v'|^2 = |q|^2 + M^2 - 2 <q, v>; fold the known terms into const
                const = const - 0.5 * ((q * q).sum(axis=1) + self._max_sq_norm)
                q = np.concatenate([q, np.zeros((q.shape[0], 1))], axis=1)
            return self._pad(q), const
        return self._pad(s), None

    @property
    def W(self) -> np.ndarray | None:
        """The HOLEF matrix ``[d, d]`` (float64 copy) for metric ``holef``, else None."""
        return None if self._W is None else self._W.copy()

    # -- ids ----------------------------------------------------------------------------------

    def _labels_for_new(self, ids: Any, n: int) -> tuple[str, np.ndarray, np.ndarray | None]:
        """``(id kind, int64 faiss labels [n], string names [n] or None)`` for ``n`` new photos."""
        if ids is None:
            if self._id_kind == "str":
                raise ValueError("this index uses string photo ids; pass ids=[...] to add().")
            labels = np.arange(self._next_label, self._next_label + n, dtype=np.int64)
            kind = "int"
        else:
            kind, values = _classify_ids(ids)
            if len(values) != n:
                raise ValueError(f"got {n} embeddings but {len(values)} ids; pass one id per embedding.")
            if self._id_kind is not None and kind != self._id_kind:
                raise TypeError(
                    f"this index uses {self._id_kind} ids, got {kind} ids; use one kind of id per index."
                )
            if len(set(values.tolist())) != n:
                raise ValueError("ids passed to add() repeat; every photo id must be unique.")
            if kind == "str":
                clash = [v for v in values if v in self._label_of]
                if clash:
                    raise ValueError(
                        f"ids already in the index: {clash[:3]}; remove() them first to replace them."
                    )
                labels = np.arange(self._next_label, self._next_label + n, dtype=np.int64)
            else:
                labels = values.astype(np.int64)
                present = self._int_ids()
                clash = labels[np.isin(labels, present)]
                if clash.size:
                    raise ValueError(
                        f"ids already in the index: {clash[:3].tolist()}; remove() them first to replace them."
                    )
        return kind, labels, (values if kind == "str" else None)

    def _int_ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self._index.id_map).astype(np.int64)

    def _commit_labels(self, kind: str, labels: np.ndarray, names: np.ndarray | None) -> None:
        self._id_kind = kind
        if names is not None:
            for label, name in zip(labels.tolist(), names.tolist()):
                self._label_of[name] = label
                self._name_of[label] = name
        if labels.size:
            self._next_label = max(self._next_label, int(labels.max()) + 1)

    @property
    def ids(self) -> list:
        """The photo ids in the index, in insertion order (strings or ints)."""
        labels = self._int_ids()
        if self._id_kind == "str":
            return [self._name_of[int(label)] for label in labels]
        return labels.tolist()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __contains__(self, photo_id: Any) -> bool:
        if self._id_kind == "str":
            return photo_id in self._label_of
        if isinstance(photo_id, (int, np.integer)) and not isinstance(photo_id, bool):
            return bool(np.isin(int(photo_id), self._int_ids()))
        return False

    def __repr__(self) -> str:
        return (
            f"GalleryIndex(dim={self.dim}, metric={self.metric!r}, spec={self.spec!r}, "
            f"size={len(self)}, search_params={self.search_params})"
        )

    # -- building -----------------------------------------------------------------------------

    def train(self, embeddings: Any) -> None:
        """Train an IVF / PQ index on ``[N, dim]`` representative embeddings (a no-op for Flat and HNSW)."""
        if self.is_trained:
            return
        p = _as_matrix(embeddings, self.dim, "training embeddings")
        need = self.min_training_points
        if p.shape[0] < need:
            raise ValueError(
                f"spec {self.spec!r} needs at least {need} training embeddings (ideally 40x that), "
                f"got {p.shape[0]}; pass more, or use spec 'Flat' for a small gallery."
            )
        self._calibrate(p)
        self._index.train(np.concatenate([self._gallery_vectors(block) for block in _chunks(p)]))
        if "nprobe" in self.search_params:  # the quantiser is new; keep the chosen nprobe
            self.set_search_params(nprobe=self.search_params["nprobe"])

    def add(self, embeddings: Any, ids: Any = None) -> None:
        """Add photo embeddings ``[N, dim]`` under ``ids`` (N strings, or N non-negative ints; default 0..).

        Raises ValueError for an untrained IVF/PQ index, repeated ids, or ids already present.
        """
        if not self.is_trained:
            raise ValueError(
                f"spec {self.spec!r} must be trained before add(): call train(embeddings) with at least "
                f"{self.min_training_points} embeddings first."
            )
        p = _as_matrix(embeddings, self.dim, "embeddings")
        kind, labels, names = self._labels_for_new(ids, p.shape[0])
        if p.shape[0] == 0:
            return
        self._calibrate(p)
        self._check_norms(p)  # before anything is added, so a failed add() adds nothing
        for start, block in zip(range(0, p.shape[0], _CHUNK), _chunks(p)):
            self._index.add_with_ids(self._gallery_vectors(block), labels[start : start + len(block)])
        self._commit_labels(kind, labels, names)

    def remove(self, ids: Any) -> int:
        """Remove photos by id; returns how many were removed. Unknown ids are an error. Not for HNSW specs."""
        if self._is_hnsw():
            raise ValueError(
                f"faiss cannot remove vectors from an HNSW index (spec {self.spec!r}); rebuild the index "
                "without those photos, or use a Flat or IVF spec."
            )
        kind, values = _classify_ids(ids)
        if self._id_kind is None:
            raise ValueError(f"ids not in the index: {values[:3].tolist()}; the index is empty.")
        if kind != self._id_kind:
            raise TypeError(f"this index uses {self._id_kind} ids, got {kind} ids.")
        if kind == "str":
            missing = [v for v in values.tolist() if v not in self._label_of]
            labels = np.array(
                [self._label_of[v] for v in values.tolist() if v in self._label_of], dtype=np.int64
            )
        else:
            labels = values.astype(np.int64)
            missing = labels[~np.isin(labels, self._int_ids())].tolist()
        if missing:
            raise ValueError(f"ids not in the index: {missing[:3]}; nothing was removed.")
        removed = int(self._index.remove_ids(np.unique(labels)))
        if kind == "str":
            for v in values.tolist():
                self._name_of.pop(self._label_of.pop(v, -1), None)
        return removed

    # -- searching ----------------------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` closest photos of each query.

        Args:
            queries: ``[Nq, dim]`` sketch embeddings (numpy or torch).
            k: neighbours per query (positive).

        Returns:
            ``(distances [Nq, k] float64, ids [Nq, k])``, closest first; distances in the metric's
            units (``1 - cos`` / squared Euclidean / ``D_W``). Ids are int64 (``-1`` where fewer than
            ``k`` results were found) or, for string ids, an object array of str (``None`` there);
            missing slots have distance ``inf``.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        s = np.ascontiguousarray(_as_matrix(queries, self.dim, "queries"), dtype=np.float64)
        q, const = self._query_vectors(s)
        scores, labels = self._index.search(q, int(k))
        scores = scores.astype(np.float64)
        if self.metric == "l2":
            dist = scores
        elif self.metric == "cosine":
            dist = 1.0 - scores
        elif self.mips == "l2":
            dist = const[:, None] + 0.5 * scores  # D = (s*s).r - <q, v> = const' + L2 / 2
        else:
            dist = const[:, None] - scores
        missing = labels < 0
        dist[missing] = np.inf
        if self._id_kind == "str":
            ids = np.empty(labels.shape, dtype=object)
            for (i, j), label in np.ndenumerate(labels):
                ids[i, j] = self._name_of.get(int(label)) if label >= 0 else None
        else:
            ids = labels.astype(np.int64)
        return dist, ids

    # -- persistence --------------------------------------------------------------------------

    def _header(self) -> dict:
        header: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": "fgsbir_plugin.GalleryIndex",
            "metric": self.metric,
            "dim": self.dim,
            "index_dim": self.index_dim,
            "spec": self.spec,
            "size": len(self),
            "search_params": self.search_params,
            "model_name": self.model_name,
            "model_fingerprint": self.model_fingerprint,
            "W_fingerprint": self.W_fingerprint,
            "mips": self.mips,
            "holef_alpha": self._alpha,
            "holef_max_sq_norm": self._max_sq_norm,
            "id_kind": self._id_kind,
            "next_label": self._next_label,
            "faiss_version": getattr(_faiss(), "__version__", None),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if self._id_kind == "str":
            labels = sorted(self._name_of)
            header["labels"] = labels
            header["names"] = [self._name_of[label] for label in labels]
        return header

    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the index and its metadata to one file at ``path``, atomically; returns the path.

        ``extra`` (JSON-serialisable) is stored in the header under ``"extra"`` (the CLI keeps the
        photo folder there).
        """
        faiss = _faiss()
        faiss_bytes = faiss.serialize_index(self._index).tobytes()
        sections = [("faiss", faiss_bytes)]
        if self._W is not None:
            sections.append(("W", self._W.astype("<f8").tobytes(order="C")))
        header = self._header()
        header["extra"] = dict(extra) if extra else {}
        header["sections"] = [
            {"name": name, "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sections
        ]
        header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(MAGIC)
            fh.write(struct.pack("<Q", len(header_bytes)))
            fh.write(hashlib.sha256(header_bytes).digest())
            fh.write(header_bytes)
            for _, data in sections:
                fh.write(data)
        return path

    @classmethod
    def read_header(cls, path: str | os.PathLike) -> dict:
        """The verified JSON header of a saved index (metric, dim, spec, model, extra, ...)."""
        return _read_file(Path(path))[0]

    @classmethod
    def load(cls, path: str | os.PathLike, expect: Mapping[str, Any] | None = None) -> GalleryIndex:
        """Load a file written by :meth:`save`, verifying its checksums and ``expect``.

        ``expect`` may hold ``dim``, ``metric``, ``spec``, ``W`` (array / tensor / HOLEFDistance:
        compared by fingerprint), ``model`` (an ``nn.Module``: name and weight fingerprint compared),
        ``model_name``, ``model_fingerprint``. Any mismatch raises ValueError naming it.
        Truncated or corrupted files raise ValueError; nothing is unpickled.
        """
        faiss = _faiss()
        path = Path(path)
        header, sections = _read_file(path)
        _check_expect(path, header, expect or {})
        self = cls.__new__(cls)
        self.dim = int(header["dim"])
        self.metric = header["metric"]
        self.spec = header["spec"]
        self.index_dim = int(header["index_dim"])
        self.model_name = header["model_name"]
        self.model_fingerprint = header["model_fingerprint"]
        self.W_fingerprint = header["W_fingerprint"]
        self.mips = header["mips"]
        self._alpha = float(header["holef_alpha"])
        self._max_sq_norm = header["holef_max_sq_norm"]
        self._W = None
        if self.metric == "holef":
            W = np.frombuffer(sections["W"], dtype="<f8").reshape(self.dim, self.dim).astype(np.float64)
            if weight_fingerprint(W) != self.W_fingerprint:
                raise ValueError(
                    f"{path} is corrupted: its W does not match the W fingerprint in its header."
                )
            self._W = W
        index = faiss.deserialize_index(np.frombuffer(sections["faiss"], dtype=np.uint8))
        if not isinstance(index, faiss.IndexIDMap2) or index.d != self.index_dim:
            raise ValueError(f"{path} is corrupted: its faiss index does not match its header.")
        self._index = index
        self._id_kind = header["id_kind"]
        self._next_label = int(header["next_label"])
        self._name_of = {}
        self._label_of = {}
        if self._id_kind == "str":
            self._name_of = {int(label): name for label, name in zip(header["labels"], header["names"])}
            self._label_of = {name: label for label, name in self._name_of.items()}
        self.search_params = {}
        self.set_search_params(**header["search_params"])
        self.extra = header.get("extra", {})
        if len(self) != int(header["size"]):
            raise ValueError(
                f"{path} is corrupted: the header says {header['size']} photos, the index holds {len(self)}."
            )
        return self


def _classify_ids(ids: Any) -> tuple[str, np.ndarray]:
    """``("int", int64 array)`` or ``("str", object array of str)``; anything else is a TypeError."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise TypeError(
            f"ids must be a sequence of strings or of non-negative ints, got {type(ids).__name__}."
        )
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one-dimensional, got shape {list(arr.shape)}.")
    if arr.size == 0:
        return "int", arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        if (arr < 0).any():
            raise ValueError("integer ids must be non-negative (-1 marks a missing result in search()).")
        return "int", arr.astype(np.int64)
    if arr.dtype.kind == "U" or (arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr)):
        return "str", np.array([str(v) for v in arr], dtype=object)
    raise TypeError(f"ids must be strings or non-negative ints, got values of type {arr.dtype}.")


def _read_file(path: Path) -> tuple[dict, dict[str, bytes]]:
    if not path.is_file():
        raise FileNotFoundError(f"no gallery index at {path}; build one with `fgsbir index build`.")
    data = path.read_bytes()
    prefix = len(MAGIC) + 8 + 32
    if len(data) < prefix or data[: len(MAGIC)] != MAGIC:
        raise ValueError(
            f"{path} is not a gallery index file (wrong magic bytes or too short); pass a file written by GalleryIndex.save."
        )
    (header_len,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    header_sha = data[len(MAGIC) + 8 : prefix]
    header_bytes = data[prefix : prefix + header_len]
    if len(header_bytes) != header_len:
        raise ValueError(f"{path} is truncated (its header is incomplete); rebuild or re-copy the index.")
    if hashlib.sha256(header_bytes).digest() != header_sha:
        raise ValueError(f"{path} is corrupted (header checksum mismatch); rebuild or re-copy the index.")
    header = json.loads(header_bytes.decode("utf-8"))
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has index format version {header.get('format_version')}, this fgsbir-plugin reads "
            f"version {FORMAT_VERSION}; rebuild the index with this version."
        )
    offset = prefix + header_len
    expected_size = offset + sum(int(s["nbytes"]) for s in header["sections"])
    if len(data) < expected_size:
        raise ValueError(
            f"{path} is truncated ({len(data)} of {expected_size} bytes); rebuild or re-copy the index."
        )
    if len(data) > expected_size:
        raise ValueError(
            f"{path} has {len(data) - expected_size} unexpected trailing bytes; rebuild or re-copy the index."
        )
    sections: dict[str, bytes] = {}
    for section in header["sections"]:
        chunk = data[offset : offset + int(section["nbytes"])]
        offset += int(section["nbytes"])
        if hashlib.sha256(chunk).hexdigest() != section["sha256"]:
            raise ValueError(
                f"{path} is corrupted (checksum mismatch in its {section['name']} section); rebuild or re-copy the index."
            )
        sections[section["name"]] = chunk
    return header, sections


def _check_expect(path: Path, header: dict, expect: Mapping[str, Any]) -> None:
    unknown = set(expect) - set(_EXPECT_KEYS)
    if unknown:
        raise TypeError(f"unknown expect keys {sorted(unknown)}; use any of {', '.join(_EXPECT_KEYS)}.")
    hint = "rebuild it with `fgsbir index build` for this model"
    for key in ("dim", "metric", "spec"):
        if key in expect and expect[key] is not None and expect[key] != header[key]:
            raise ValueError(
                f"{path} was built with {key} {header[key]!r}, but {expect[key]!r} was expected; {hint}."
            )
    name, fingerprint = expect.get("model_name"), expect.get("model_fingerprint")
    if expect.get("model") is not None:
        name, fingerprint = model_identity(expect["model"])
    if name is not None and header["model_name"] is not None and name != header["model_name"]:
        raise ValueError(f"{path} was built with model {header['model_name']!r}, not {name!r}; {hint}.")
    if (
        fingerprint is not None
        and header["model_fingerprint"] is not None
        and fingerprint != header["model_fingerprint"]
    ):
        raise ValueError(
            f"{path} was built with other weights of model {header['model_name']!r} than the ones given; {hint}."
        )
    if expect.get("W") is not None:
        if header["metric"] != "holef":
            raise ValueError(
                f"{path} uses metric {header['metric']!r}, not 'holef', so it has no W to compare; {hint}."
            )
        W = _resolve_weight_matrix(expect["W"], int(header["dim"]))
        if weight_fingerprint(W) != header["W_fingerprint"]:
            raise ValueError(f"{path} was built with a different HOLEF matrix W than the one given; {hint}.")

"""A faiss gallery index that searches with cosine, squared L2, or the learned HOLEF distance, exactly.

Units of the returned distances (smaller is always closer):
``cosine`` -> ``1 - cos(s, p)`` in [0, 2]; ``l2`` -> squared Euclidean distance ``|s - p|^2``;
``holef`` -> ``D_W(s, p)`` (may be negative when ``W`` is indefinite).

The index composes the pieces of this package: :mod:`.holef_mips` turns HOLEF into one faiss
search, :mod:`.faiss_params` builds the faiss index and sets its parameters, :mod:`.photo_ids`
maps photo ids to faiss labels, and :mod:`.index_file` is the file ``save``/``load`` use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import faiss_params
from .faiss_params import METRICS, is_positive_int, load_faiss
from .holef_mips import MIPS_FORMS, HOLEFTransform
from .index_file import (
    check_expect,
    model_identity,
    read_index_file,
    read_weight_matrix,
    weight_fingerprint,
    write_index_file,
)
from .inputs import as_matrix, chunks, resolve_weight_matrix
from .photo_ids import PhotoIds

__all__ = ["GalleryIndex"]


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
        load_faiss()
        if not is_positive_int(dim):
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}.")
        faiss_params.check_spec(spec)
        self.dim = int(dim)
        self.metric = metric
        self.spec = spec
        self._holef: HOLEFTransform | None = None
        self.W_fingerprint: str | None = None
        if metric == "holef":
            W = resolve_weight_matrix(W, self.dim)
            self.W_fingerprint = weight_fingerprint(W)
        elif W is not None:
            raise ValueError(f"W is only used with metric 'holef'; leave it out for metric {metric!r}.")
        self.model_name: str | None = None
        self.model_fingerprint: str | None = None
        if model is not None:
            self.model_name, self.model_fingerprint = model_identity(model)
        if mips not in ("auto", *MIPS_FORMS):
            raise ValueError(f"mips must be 'auto', 'ip' or 'l2', got {mips!r}.")
        self.mips: str | None = None
        if metric == "holef":
            self.mips = ("ip" if spec.strip() == "Flat" else "l2") if mips == "auto" else mips
            self._holef = HOLEFTransform(W, self.mips)
        extra_dims = self._holef.extra_dims if self._holef is not None else 0
        self.index_dim = faiss_params.padded_dim(spec, self.dim + extra_dims)
        vectors = f"{self.dim}-d embeddings"
        if self.index_dim != self.dim:
            pq_padding = self.index_dim - self.dim - extra_dims
            added = [(extra_dims, "HOLEF's MIPS form"), (pq_padding, "PQ padding")]
            vectors += (
                f" (indexed as {self.index_dim}-d: "
                + ", ".join(f"{n} added by {why}" for n, why in added if n)
                + ")"
            )
        self._index = faiss_params.build_index(
            spec, self.index_dim, euclidean=metric == "l2" or self.mips == "l2", vectors=vectors
        )
        self._ids = PhotoIds()
        self.search_params: dict[str, int] = {}
        self.set_search_params(**{**faiss_params.default_search_params(self._index), **search_params})
        self.extra: dict[str, Any] = {}

    # -- parameters --------------------------------------------------------------------------

    def set_search_params(self, **params: int) -> None:
        """Set ``efSearch``/``efConstruction`` (HNSW specs) or ``nprobe`` (IVF specs)."""
        for name, value in params.items():
            self.search_params[name] = faiss_params.set_search_param(self._index, self.spec, name, value)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def min_training_points(self) -> int:
        """The fewest vectors faiss accepts for ``train()`` with this spec (0 when no training is needed)."""
        return faiss_params.min_training_points(self._index)

    @property
    def W(self) -> np.ndarray | None:
        """The HOLEF matrix ``[d, d]`` (float64 copy) for metric ``holef``, else None."""
        return None if self._holef is None else self._holef.W.copy()

    # -- vectors ------------------------------------------------------------------------------

    def _pad(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] < self.index_dim:
            x = np.concatenate([x, np.zeros((x.shape[0], self.index_dim - x.shape[1]))], axis=1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _gallery_vectors(self, p: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        elif self._holef is not None:
            p = self._holef.gallery_vectors(p)
        return self._pad(p)

    def _query_vectors(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.metric == "cosine":
            return self._pad(s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)), None
        if self._holef is not None:
            q, const = self._holef.query_vectors(s)
            return self._pad(q), const
        return self._pad(s), None

    def _distances(self, scores: np.ndarray, const: np.ndarray | None) -> np.ndarray:
        if self.metric == "l2":
            return scores
        if self.metric == "cosine":
            return 1.0 - scores
        return self._holef.distances(scores, const)

    # -- ids ----------------------------------------------------------------------------------

    def _present_labels(self) -> np.ndarray:
        return load_faiss().vector_to_array(self._index.id_map).astype(np.int64)

    @property
    def ids(self) -> list:
        """The photo ids in the index, in insertion order (strings or ints)."""
        return self._ids.listing(self._present_labels())

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __contains__(self, photo_id: Any) -> bool:
        return self._ids.contains(photo_id, self._present_labels)

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
        p = as_matrix(embeddings, self.dim, "training embeddings")
        need = self.min_training_points
        if p.shape[0] < need:
            raise ValueError(
                f"spec {self.spec!r} needs at least {need} training embeddings (ideally 40x that), "
                f"got {p.shape[0]}; pass more, or use spec 'Flat' for a small gallery."
            )
        if self._holef is not None:
            self._holef.calibrate(p)
        self._index.train(np.concatenate([self._gallery_vectors(block) for block in chunks(p)]))
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
        p = as_matrix(embeddings, self.dim, "embeddings")
        kind, labels, names = self._ids.new_labels(ids, p.shape[0], self._present_labels)
        if p.shape[0] == 0:
            return
        if self._holef is not None:
            self._holef.calibrate(p)
            self._holef.check_norms(p)  # before anything is added, so a failed add() adds nothing
        start = 0
        for block in chunks(p):
            self._index.add_with_ids(self._gallery_vectors(block), labels[start : start + len(block)])
            start += len(block)
        self._ids.commit(kind, labels, names)

    def remove(self, ids: Any) -> int:
        """Remove photos by id; returns how many were removed. Unknown ids are an error. Not for HNSW specs."""
        if faiss_params.is_hnsw(self._index):
            raise ValueError(
                f"faiss cannot remove vectors from an HNSW index (spec {self.spec!r}); rebuild the index "
                "without those photos, or use a Flat or IVF spec."
            )
        labels = self._ids.labels_to_remove(ids, self._present_labels)
        removed = int(self._index.remove_ids(np.unique(labels)))
        self._ids.forget(labels)
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
        if not is_positive_int(k):
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        s = np.ascontiguousarray(as_matrix(queries, self.dim, "queries"), dtype=np.float64)
        q, const = self._query_vectors(s)
        scores, labels = self._index.search(q, int(k))
        dist = self._distances(scores.astype(np.float64), const)
        dist[labels < 0] = np.inf
        return dist, self._ids.ids_of(labels)

    # -- persistence --------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        holef = self._holef
        return {
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
            "holef_alpha": holef.alpha if holef is not None else 1.0,
            "holef_max_sq_norm": holef.max_sq_norm if holef is not None else None,
            "faiss_version": getattr(load_faiss(), "__version__", None),
            **self._ids.header_fields(),
        }

    def save(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the index and its metadata to one file at ``path``, atomically; returns the path.

        ``extra`` (JSON-serialisable) is stored in the header under ``"extra"`` (the CLI keeps the
        photo folder and the model folder there).
        """
        sections = [("faiss", faiss_params.serialize(self._index))]
        if self._holef is not None:
            sections.append(("W", self._holef.W.astype("<f8").tobytes(order="C")))
        header = {**self._header(), "extra": dict(extra) if extra else {}}
        return write_index_file(path, header, sections)

    @classmethod
    def read_header(cls, path: str | os.PathLike) -> dict:
        """The verified JSON header of a saved index (metric, dim, spec, model, extra, ...)."""
        return read_index_file(Path(path))[0]

    @classmethod
    def load(cls, path: str | os.PathLike, expect: Mapping[str, Any] | None = None) -> GalleryIndex:
        """Load a file written by :meth:`save`, verifying its checksums and ``expect``.

        ``expect`` may hold ``dim``, ``metric``, ``spec``, ``W`` (array / tensor / HOLEFDistance:
        compared by fingerprint), ``model`` (an ``nn.Module``: name and weight fingerprint compared),
        ``model_name``, ``model_fingerprint``. Any mismatch raises ValueError naming it.
        Truncated or corrupted files raise ValueError; nothing is unpickled.
        """
        path = Path(path)
        header, sections = read_index_file(path)
        check_expect(path, header, expect or {})
        return cls._from_saved(path, header, sections)

    @classmethod
    def _from_saved(cls, path: Path, header: dict[str, Any], sections: Mapping[str, bytes]) -> GalleryIndex:
        """The index a verified header and its sections describe, built through the constructor.

        The constructor validates the header's settings as it would a caller's and builds an empty
        faiss index of the same spec; the saved faiss index, ids, HOLEF scalings and model identity
        then take its place.
        """
        corrupted = f"{path} is corrupted: its faiss index does not match its header."
        index = cls(
            int(header["dim"]),
            header["metric"],
            read_weight_matrix(path, header, sections),
            header["spec"],
            mips=header["mips"] or "auto",
            **header["search_params"],
        )
        if index.index_dim != int(header["index_dim"]):
            raise ValueError(corrupted)
        faiss_index = faiss_params.deserialize(
            np.frombuffer(sections["faiss"], dtype=np.uint8), index.index_dim
        )
        if faiss_index is None:
            raise ValueError(corrupted)
        index._index = faiss_index
        index.search_params = {}
        index.set_search_params(**header["search_params"])
        index._ids = PhotoIds.from_header(header)
        if index._holef is not None:
            index._holef.alpha = float(header["holef_alpha"])
            index._holef.max_sq_norm = header["holef_max_sq_norm"]
        index.model_name, index.model_fingerprint = header["model_name"], header["model_fingerprint"]
        index.extra = header.get("extra", {})
        if len(index) != int(header["size"]):
            raise ValueError(
                f"{path} is corrupted: the header says {header['size']} photos, the index holds {len(index)}."
            )
        return index

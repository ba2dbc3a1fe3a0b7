"""Photo ids of a GalleryIndex and the int64 labels faiss keys its vectors by.

An index holds one kind of id. Non-negative int ids are the faiss labels themselves. String ids
(relative photo paths, say) get labels ``0, 1, ...`` in the order they are added, and the two-way
mapping is kept here and saved in the index file's header; labels are never reused, so a label
found in a search always names the photo it was added for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["PhotoIds", "classify_ids"]


def classify_ids(ids: Any) -> tuple[str, np.ndarray]:
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


PresentLabels = Callable[[], np.ndarray]  # the int64 labels now in the faiss index


class PhotoIds:
    """The id kind (``"int"``, ``"str"``, or None while nothing was added) and the string-id mapping.

    Methods that must know which int labels the faiss index holds take ``present``, a callable
    returning them, so that string-id indexes never pay for reading the faiss id map.
    """

    def __init__(
        self, kind: str | None = None, name_of: dict[int, str] | None = None, next_label: int = 0
    ) -> None:
        self.kind = kind
        self._name_of: dict[int, str] = dict(name_of or {})
        self._label_of: dict[str, int] = {name: label for label, name in self._name_of.items()}
        self.next_label = next_label

    # -- adding -----------------------------------------------------------------------------------

    def new_labels(
        self, ids: Any, n: int, present: PresentLabels
    ) -> tuple[str, np.ndarray, np.ndarray | None]:
        """``(id kind, int64 faiss labels [n], string names [n] or None)`` for ``n`` new photos.

        Checks only; :meth:`commit` records them once faiss holds the vectors.
        """
        if ids is None:
            if self.kind == "str":
                raise ValueError("this index uses string photo ids; pass ids=[...] to add().")
            return "int", np.arange(self.next_label, self.next_label + n, dtype=np.int64), None
        kind, values = classify_ids(ids)
        if len(values) != n:
            raise ValueError(f"got {n} embeddings but {len(values)} ids; pass one id per embedding.")
        if self.kind is not None and kind != self.kind:
            raise TypeError(f"this index uses {self.kind} ids, got {kind} ids; use one kind of id per index.")
        if len(set(values.tolist())) != n:
            raise ValueError("ids passed to add() repeat; every photo id must be unique.")
        if kind == "str":
            clash = [v for v in values if v in self._label_of]
            if clash:
                raise ValueError(
                    f"ids already in the index: {clash[:3]}; remove() them first to replace them."
                )
            return kind, np.arange(self.next_label, self.next_label + n, dtype=np.int64), values
        labels = values.astype(np.int64)
        clash = labels[np.isin(labels, present())]
        if clash.size:
            raise ValueError(
                f"ids already in the index: {clash[:3].tolist()}; remove() them first to replace them."
            )
        return kind, labels, None

    def commit(self, kind: str, labels: np.ndarray, names: np.ndarray | None) -> None:
        """Record photos that faiss now holds, as returned by :meth:`new_labels`."""
        self.kind = kind
        if names is not None:
            for label, name in zip(labels.tolist(), names.tolist()):
                self._label_of[name] = label
                self._name_of[label] = name
        if labels.size:
            self.next_label = max(self.next_label, int(labels.max()) + 1)

    # -- removing ---------------------------------------------------------------------------------

    def labels_to_remove(self, ids: Any, present: PresentLabels) -> np.ndarray:
        """The int64 labels of ``ids``, all of which must be in the index (ValueError names the missing)."""
        kind, values = classify_ids(ids)
        if self.kind is None:
            raise ValueError(f"ids not in the index: {values[:3].tolist()}; the index is empty.")
        if kind != self.kind:
            raise TypeError(f"this index uses {self.kind} ids, got {kind} ids.")
        if kind == "str":
            missing = [v for v in values.tolist() if v not in self._label_of]
            labels = np.array(
                [self._label_of[v] for v in values.tolist() if v in self._label_of], dtype=np.int64
            )
        else:
            labels = values.astype(np.int64)
            missing = labels[~np.isin(labels, present())].tolist()
        if missing:
            raise ValueError(f"ids not in the index: {missing[:3]}; nothing was removed.")
        return labels

    def forget(self, labels: np.ndarray) -> None:
        """Drop the string ids of removed labels."""
        for label in labels.tolist():
            self._label_of.pop(self._name_of.pop(label, None), None)

    # -- reading ----------------------------------------------------------------------------------

    def ids_of(self, labels: np.ndarray) -> np.ndarray:
        """Photo ids for faiss result labels ``[Nq, k]``: int64 (-1 kept), or object str (None for -1)."""
        if self.kind != "str":
            return labels.astype(np.int64)
        ids = np.empty(labels.shape, dtype=object)
        for (i, j), label in np.ndenumerate(labels):
            ids[i, j] = self._name_of.get(int(label)) if label >= 0 else None
        return ids

    def listing(self, labels: np.ndarray) -> list:
        """The ids of ``labels`` (the faiss id map, in insertion order) as a list of str or int."""
        if self.kind == "str":
            return [self._name_of[int(label)] for label in labels]
        return labels.tolist()

    def contains(self, photo_id: Any, present: PresentLabels) -> bool:
        if self.kind == "str":
            return photo_id in self._label_of
        if isinstance(photo_id, (int, np.integer)) and not isinstance(photo_id, bool):
            return bool(np.isin(int(photo_id), present()))
        return False

    # -- the index file ---------------------------------------------------------------------------

    def header_fields(self) -> dict[str, Any]:
        """``id_kind``, ``next_label`` and, for string ids, ``labels`` and ``names`` (sorted by label)."""
        fields: dict[str, Any] = {"id_kind": self.kind, "next_label": self.next_label}
        if self.kind == "str":
            labels = sorted(self._name_of)
            fields["labels"] = labels
            fields["names"] = [self._name_of[label] for label in labels]
        return fields

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> PhotoIds:
        """The inverse of :meth:`header_fields`."""
        name_of = {}
        if header["id_kind"] == "str":
            name_of = {int(label): name for label, name in zip(header["labels"], header["names"])}
        return cls(header["id_kind"], name_of, int(header["next_label"]))

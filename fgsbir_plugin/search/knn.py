"""A pytorch-metric-learning ``knn_func`` backed by :class:`GalleryIndex`, so PML metrics can use HOLEF."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.utils.inference import return_results

from .index import GalleryIndex

__all__ = ["GalleryKNN"]


class GalleryKNN:
    """``knn_func`` for ``AccuracyCalculator`` (same call as PML's ``FaissKNN`` / ``CustomKNN``).

    Each call indexes ``reference`` in a fresh :class:`GalleryIndex` (ids = row positions) and
    searches ``query``::

        calc = AccuracyCalculator(knn_func=GalleryKNN(metric="holef", W=holef_distance))
        calc.get_accuracy(sketch_emb, photo_emb, sketch_labels, photo_labels)

    Args:
        metric, W, spec, **search_params: as for :class:`GalleryIndex`.
        index: a prebuilt :class:`GalleryIndex` with int ids, searched when ``reference`` is None
            (PML's ``InferenceModel.get_nearest_neighbors`` calls ``knn_func(query, k)``).

    Returns from a call ``(distances [Nq, k] float32, indices [Nq, k] int64)`` on ``query.device``,
    closest first, distances in the metric's units (smaller is closer).
    """

    def __init__(
        self,
        metric: str = "cosine",
        W: Any = None,
        spec: str = "Flat",
        *,
        index: GalleryIndex | None = None,
        **search_params: int,
    ) -> None:
        self.metric = metric
        self.W = W
        self.spec = spec
        self.search_params = search_params
        self.index = index

    def __call__(
        self,
        query: torch.Tensor,
        k: int,
        reference: torch.Tensor | None = None,
        ref_includes_query: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if ref_includes_query:
            k = k + 1  # the query itself comes back first; PML's return_results drops it
        if reference is None:
            if self.index is None:
                raise ValueError(
                    "GalleryKNN needs a reference set: pass reference=..., or index=GalleryIndex(...)."
                )
            index = self.index
        else:
            index = GalleryIndex(query.shape[1], self.metric, self.W, self.spec, **self.search_params)
            if not index.is_trained:
                index.train(reference)
            index.add(reference, np.arange(len(reference), dtype=np.int64))
        distances, ids = index.search(query, min(k, len(index)))
        device = query.device if isinstance(query, torch.Tensor) else "cpu"
        distances = torch.from_numpy(distances.astype(np.float32)).to(device)
        indices = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)
        return return_results(distances, indices, ref_includes_query)

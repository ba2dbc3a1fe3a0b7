"""What a GalleryIndex accepts at its boundary: embedding matrices and HOLEF matrices, checked and converted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["CHUNK", "as_matrix", "chunks", "resolve_weight_matrix"]

CHUNK = 65_536  # rows converted to float64 at a time, so a 1M-photo add() needs no 4 GiB copies


def as_matrix(x: Any, dim: int, what: str) -> np.ndarray:
    """``x`` ([N, dim] numpy array, torch tensor or nested list) as a float32 or float64 numpy array.

    float32 input is kept as it is (no copy); everything else becomes float64. Rows are converted
    to float64 block by block later (:func:`chunks`). ``what`` names ``x`` in error messages.
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
    for block in chunks(x):
        if not np.isfinite(block).all():
            raise ValueError(f"{what} contain NaN or infinite values; check the model's outputs.")
    return x


def chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    """float64 copies of consecutive blocks of at most :data:`CHUNK` rows of ``x``."""
    for start in range(0, x.shape[0], CHUNK):
        yield np.ascontiguousarray(x[start : start + CHUNK], dtype=np.float64)


def resolve_weight_matrix(W: Any, dim: int) -> np.ndarray:
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

"""fgsbir-plugin: fine-grained sketch-based image retrieval for the PyTorch ecosystem.

Importing the package registers the DSSA model family with timm, so that
``timm.create_model("dssa")`` works after ``import fgsbir_plugin``. The dataset loaders and the
faiss search index are imported on first use (``datasets`` and ``faiss`` are slow to import).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from . import models  # noqa: E402  (registers the timm models)
from .holef import (  # noqa: E402
    HOLEFCrossBatchMemory,
    HOLEFDistance,
    HOLEFLoss,
    holef_distance_matrix,
    holef_pairwise,
    holef_regularizer,
)
from .model_io import load_model, save_model  # noqa: E402
from .models import DSSA  # noqa: E402

_LAZY = {
    "load_fgsbir": "fgsbir_plugin.data",
    "load_fgsbir_pair": "fgsbir_plugin.data",
    "GalleryIndex": "fgsbir_plugin.search",
    "GalleryKNN": "fgsbir_plugin.search",
    "CLIPImageEmbedder": "fgsbir_plugin.baselines",
    "retrieval_metrics": "fgsbir_plugin.metrics",
}

__all__ = [
    "__version__",
    "models",
    "DSSA",
    "HOLEFDistance",
    "HOLEFLoss",
    "HOLEFCrossBatchMemory",
    "holef_distance_matrix",
    "holef_pairwise",
    "holef_regularizer",
    "save_model",
    "load_model",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fgsbir_plugin' has no attribute {name!r}")

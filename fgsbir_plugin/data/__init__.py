"""Sketch/photo datasets as Hugging Face ``datasets``: readers, rasteriser, exports.

``load_fgsbir(name_or_path, data_dir)`` returns a ``DatasetDict`` in the row schema of
``schema.py``; ``load_fgsbir_pair`` returns the sketches and the photo gallery from one read.
Publishing a converted dataset to the Hub is ``fgsbir_plugin.hub.push_to_hub`` (``fgsbir push-dataset``).
"""

from __future__ import annotations

import importlib

from .rasterize import rasterize_strokes, split_strokes
from .safe_pickle import load_numpy_pickle
from .validate import LenientSkipWarning, SkipLog

# The loaders, the schema and the exports import `datasets` (and pyarrow), which is slow to import;
# the image transforms in this package (used by training, embedding and search) do not need it, so
# these names are imported on first use.
_LAZY = {
    "load_fgsbir": "load",
    "load_fgsbir_pair": "load",
    "carve_validation": "load",
    "annotated_triplets": "load",
    "DATASET_NAMES": "load",
    "save_parquet": "export",
    "load_parquet": "export",
    "export_imagefolder": "export",
    "load_imagefolder": "export",
    "SKETCH_FEATURES": "schema",
    "PHOTO_FEATURES": "schema",
    "SPLITS": "schema",
}

__all__ = [
    "load_fgsbir",
    "load_fgsbir_pair",
    "carve_validation",
    "annotated_triplets",
    "DATASET_NAMES",
    "rasterize_strokes",
    "split_strokes",
    "load_numpy_pickle",
    "save_parquet",
    "load_parquet",
    "export_imagefolder",
    "load_imagefolder",
    "SkipLog",
    "LenientSkipWarning",
    "SKETCH_FEATURES",
    "PHOTO_FEATURES",
    "SPLITS",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

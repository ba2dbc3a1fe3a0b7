"""Sketch/photo datasets as Hugging Face ``datasets``: readers, rasteriser, exports.

``load_fgsbir(name_or_path, data_dir)`` returns a ``DatasetDict`` in the row schema of
``schema.py``; ``load_fgsbir_pair`` returns the sketches and the photo gallery from one read.
"""

from __future__ import annotations

from .export import export_imagefolder, load_imagefolder, load_parquet, push_to_hub, save_parquet
from .load import DATASET_NAMES, annotated_triplets, carve_validation, load_fgsbir, load_fgsbir_pair
from .rasterize import rasterize_strokes, split_strokes
from .safe_pickle import load_numpy_pickle
from .schema import PHOTO_FEATURES, SKETCH_FEATURES, SPLITS
from .validate import LenientSkipWarning, SkipLog

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
    "push_to_hub",
    "export_imagefolder",
    "load_imagefolder",
    "SkipLog",
    "LenientSkipWarning",
    "SKETCH_FEATURES",
    "PHOTO_FEATURES",
    "SPLITS",
]

"""A compact copy of a dataset for the GPU machine: the rows ``load_fgsbir_pair`` gives, the images small.

A device call carries at most 64 MiB, wheels included, and the raw files of the three protocol datasets
(about 39 MB of stroke pickles, ``.mat`` arrays and PNG photos) do not fit beside the wheels. An export
holds exactly the rows that ``load_fgsbir_pair(name, data_dir)`` returns -- the same splits, ids, row
order and categories -- as a ``save_parquet`` folder (``fgsbir_plugin.data.export``) whose images are
replaced by their decoded ``LOAD_SIZE`` square (``decode_image``) in lossless WebP, grey ('L') where the
three channels are equal. Decoding an exported image at ``LOAD_SIZE`` gives the original's tensor bit
for bit (:func:`verify_export` checks every image), so the GPU protocol's 224 px crops of 256 px images
see the same pixels as from the raw files. At another load size an image is resized from the 256 px
copy rather than from the original, which differs only where the original is not 256 px square (8 of
the 400 Chair-V2 photos).

Layout of an export root, passed to the accuracy harness as its data folder::

    <root>/manifest.json                          what was exported, from where, how big
    <root>/<folder>/compact.json                  one dataset (folder: accuracy_config.DATASET_FOLDERS)
    <root>/<folder>/README.md, sketches/, photos/ its save_parquet folder

The harness (``accuracy_cells.load_cell_data``) reads a dataset from its export whenever the data folder
holds one (``accuracy_config.export_folder``, ``read_export``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accuracy_config import EXPORT_FORMAT, EXPORT_MARK
from datasets import Dataset, DatasetDict
from PIL import Image

from fgsbir_plugin._common import atomic_dir, atomic_write_bytes
from fgsbir_plugin.data import PHOTO_FEATURES, SKETCH_FEATURES, save_parquet
from fgsbir_plugin.data.transforms import decode_image

LOAD_SIZE = 256  # load_size_for(224, 0.875): the decoded side of both protocols' inputs
COLUMNS = {"sketches": ("sketch", SKETCH_FEATURES), "photos": ("photo", PHOTO_FEATURES)}
# WebP effort 4 of 0-6: within 1% of the smallest files at a tenth of effort 6's time.
WEBP = {"lossless": True, "quality": 100, "method": 4}


def compact_image(img: Image.Image, load_size: int = LOAD_SIZE) -> dict[str, Any]:
    """An image reference (``datasets.Image`` storage) of ``img`` decoded at ``load_size``, lossless WebP."""
    arr = decode_image(img, load_size, 3).permute(1, 2, 0).numpy()
    grey = bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
    out = Image.fromarray(np.ascontiguousarray(arr[..., 0]) if grey else arr, mode="L" if grey else "RGB")
    buf = io.BytesIO()
    out.save(buf, format="WEBP", **WEBP)
    return {"bytes": buf.getvalue(), "path": None}


def compact_dict(dd: DatasetDict, config: str, load_size: int = LOAD_SIZE) -> DatasetDict:
    """``dd`` (sketches or photos) with every image replaced by :func:`compact_image`; rows and order kept."""
    column, features = COLUMNS[config]
    out = DatasetDict()
    for split, ds in dd.items():
        rows = {name: list(ds[name]) for name in features if name != column}
        rows[column] = [compact_image(row[column], load_size) for row in ds.select_columns([column])]
        out[split] = Dataset.from_dict(rows, features=features, split=split)
    return out


def write_export(
    sketches: DatasetDict, photos: DatasetDict, folder: str | Path, *, name: str, source: str
) -> dict[str, Any]:
    """Write the compact export of one dataset to ``folder`` (replaced whole); returns its ``compact.json``."""
    folder = Path(folder)
    small = compact_dict(sketches, "sketches"), compact_dict(photos, "photos")
    info = {
        "format": EXPORT_FORMAT,
        "name": name,
        "source": source,
        "load_size": LOAD_SIZE,
        "image_encoding": "WebP lossless of decode_image(img, load_size, 3); 'L' where R == G == B",
        "rows": {
            "sketches": {split: len(ds) for split, ds in sketches.items()},
            "photos": {split: len(ds) for split, ds in photos.items()},
        },
    }
    with atomic_dir(folder) as tmp:
        save_parquet(*small, tmp, title=f"{name}: compact export for the GPU suite (do not publish)")
        atomic_write_bytes(tmp / EXPORT_MARK, (json.dumps(info, indent=1) + "\n").encode())
    info["bytes"] = folder_bytes(folder)
    return info


def folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _first_difference(a: list, b: list) -> str | None:
    if len(a) != len(b):
        return f"{len(a)} rows against {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"row {i}: {x!r} against {y!r}"
    return None


def verify_export(
    original: tuple[DatasetDict, DatasetDict], exported: tuple[DatasetDict, DatasetDict]
) -> int:
    """Check that an export has the original's splits, ids, order and categories, and that every image
    decodes at ``LOAD_SIZE`` to the original's tensor; returns the number of images checked."""
    checked = 0
    for config, orig, exp in zip(COLUMNS, original, exported):
        column, features = COLUMNS[config]
        if list(orig) != list(exp):
            raise ValueError(f"{config}: the export has splits {list(exp)}, the original {list(orig)}.")
        for split in orig:
            for name in (n for n in features if n != column):
                diff = _first_difference(list(orig[split][name]), list(exp[split][name]))
                if diff:
                    raise ValueError(f"{config}/{split}: column {name} differs from the original at {diff}.")
            pairs = zip(orig[split].select_columns([column]), exp[split].select_columns([column]))
            for i, (a, b) in enumerate(pairs):
                if not torch.equal(
                    decode_image(a[column], LOAD_SIZE, 3), decode_image(b[column], LOAD_SIZE, 3)
                ):
                    raise ValueError(f"{config}/{split} row {i}: the exported image decodes to other pixels.")
                checked += 1
    return checked

"""``read``: the synthetic instances as ``(sketches, photos)`` DatasetDicts in the shared row schema.

Photo ``i`` and its sketches depend only on ``(seed, i)``: each draws from its own random stream,
so growing ``num_photos`` keeps the earlier instances unchanged.
"""

from __future__ import annotations

import io

import numpy as np
from datasets import Dataset, DatasetDict
from PIL import Image

from ..schema import PHOTO_FEATURES, SKETCH_FEATURES
from .chair import Part, build_parts, sample_params
from .photo import render_photo
from .sketch import render_sketch

__all__ = [
    "read",
    "instance_parts",
    "clean_sketch",
    "DEFAULT_NUM_PHOTOS",
    "DEFAULT_SKETCHES_PER_PHOTO",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_TEST_FRACTION",
]

DEFAULT_NUM_PHOTOS = 128
DEFAULT_SKETCHES_PER_PHOTO = 3
DEFAULT_IMAGE_SIZE = 64
DEFAULT_TEST_FRACTION = 0.25
_SPLITS = ("train", "test")


def _png(img: Image.Image) -> dict:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def _instance_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    # stream 0: shape and photo; stream k >= 1: sketch k - 1. Independent of num_photos.
    return np.random.default_rng([seed, index, stream])


def instance_parts(seed: int, index: int) -> list[Part]:
    """The outlines of instance ``index`` of the dataset generated with ``seed``."""
    return build_parts(sample_params(_instance_rng(seed, index, 0)))


def clean_sketch(seed: int, index: int, image_size: int) -> Image.Image:
    """A noise-free line drawing of instance ``index``: what a perfect sketcher would draw ('L')."""
    return render_sketch(instance_parts(seed, index), image_size, None)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an int, got {type(value).__name__}; pass a whole number >= {minimum}."
        )
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; pass a larger value.")
    return int(value)


def _check_fraction(test_fraction: object) -> None:
    if (
        not isinstance(test_fraction, (float, int))
        or isinstance(test_fraction, bool)
        or not 0 < test_fraction < 1
    ):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}.")


def _num_test(num_photos: int, test_fraction: float) -> int:
    """How many of the last instances form the test split; ValueError when either split would be empty."""
    num_test = int(round(test_fraction * num_photos))
    if not 1 <= num_test <= num_photos - 1:
        raise ValueError(
            f"test_fraction={test_fraction} of num_photos={num_photos} leaves an empty split; "
            "use more photos or a test_fraction nearer 0.5."
        )
    return num_test


def _generate_rows(
    num_photos: int, num_test: int, sketches_per_photo: int, image_size: int, seed: int, category: str
) -> dict[str, tuple[dict, dict]]:
    """``{split: (sketch columns, photo columns)}``, each a dict of equal-length lists."""
    rows: dict[str, tuple[dict, dict]] = {}
    for split in _SPLITS:
        rows[split] = (
            {"sketch": [], "sketch_id": [], "photo_id": [], "category": []},
            {"photo": [], "photo_id": [], "category": []},
        )
    for i in range(num_photos):
        split = "train" if i < num_photos - num_test else "test"
        sk, ph = rows[split]
        photo_id = f"syn{i:05d}"
        rng = _instance_rng(seed, i, 0)
        parts = build_parts(sample_params(rng))
        ph["photo"].append(_png(render_photo(parts, image_size, rng)))
        ph["photo_id"].append(photo_id)
        ph["category"].append(category)
        for k in range(sketches_per_photo):
            sk["sketch"].append(_png(render_sketch(parts, image_size, _instance_rng(seed, i, k + 1))))
            sk["sketch_id"].append(f"{photo_id}_{k}")
            sk["photo_id"].append(photo_id)
            sk["category"].append(category)
    return rows


def read(
    data_dir: object = None,
    *,
    num_photos: int = DEFAULT_NUM_PHOTOS,
    sketches_per_photo: int = DEFAULT_SKETCHES_PER_PHOTO,
    image_size: int = DEFAULT_IMAGE_SIZE,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    category: str = "synthetic",
) -> tuple[DatasetDict, DatasetDict]:
    """Generate the synthetic dataset: ``(sketches, photos)``, each with ``train`` and ``test``.

    Args:
        data_dir: ignored (the data is generated, not read); accepted so every reader has the
            same signature.
        num_photos: number of object instances (one photo each), >= 2.
        sketches_per_photo: sketches drawn of each instance, >= 1; they differ in their noise.
        image_size: side in pixels of every (square) photo and sketch, >= 16.
        test_fraction: fraction of the photos held out for ``test``, in (0, 1); the split is by
            photo (a photo and all its sketches fall in one split) and both splits are non-empty.
            The last ``round(test_fraction * num_photos)`` instances form the test split.
        seed: non-negative int; the same arguments give the same bytes.
        category: value of the ``category`` column.

    Returns:
        Sketch rows ``{sketch: Image (PNG, mode L, black strokes on white), sketch_id, photo_id,
        category}`` and photo rows ``{photo: Image (PNG, mode RGB), photo_id, category}`` in the
        schema of ``fgsbir_plugin.data.schema``. Ids are ``syn00000`` and ``syn00000_0``.
    """
    num_photos = _check_int("num_photos", num_photos, 2)
    sketches_per_photo = _check_int("sketches_per_photo", sketches_per_photo, 1)
    image_size = _check_int("image_size", image_size, 16)
    seed = _check_int("seed", seed, 0)
    _check_fraction(test_fraction)
    if not isinstance(category, str) or not category:
        raise ValueError(f"category must be a non-empty string, got {category!r}.")
    num_test = _num_test(num_photos, test_fraction)
    rows = _generate_rows(num_photos, num_test, sketches_per_photo, image_size, seed, category)
    sketches = DatasetDict(
        {split: Dataset.from_dict(rows[split][0], features=SKETCH_FEATURES) for split in _SPLITS}
    )
    photos = DatasetDict(
        {split: Dataset.from_dict(rows[split][1], features=PHOTO_FEATURES) for split in _SPLITS}
    )
    return sketches, photos

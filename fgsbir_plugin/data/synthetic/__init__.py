"""A synthetic instance-level sketch/photo dataset, drawn procedurally from a seed.

Every instance is a chair-like object assembled from parts (``chair``: backrest with openings,
seat, legs, stretcher, arms, finials). All instances share the coarse "chair" layout, so telling
them apart is fine-grained: they differ in the shapes, sizes, counts and details of the parts.

- The photo (``photo``) is a filled, shaded, wood-grained rendering (RGB) with a soft shadow, on
  a pale tinted backdrop (half of them with a floor); the object sits in a canonical pose.
- Each sketch (``sketch``) is a black-on-white line drawing ('L') of the same instance as a person
  might draw it: outlines only, wobbly strokes broken into pieces, stroke widths that vary, small
  parts left out, curves simplified, and the whole drawing shifted, scaled and rotated.

Nothing is downloaded and only numpy and Pillow draw it. The bytes are a pure function of the
arguments: photo ``i`` and its sketches depend only on ``(seed, i)``, so growing ``num_photos``
keeps the earlier instances unchanged (``dataset``).

>>> sketches, photos = read(num_photos=8, sketches_per_photo=2, image_size=32)
>>> sketches["train"].num_rows, photos["test"].num_rows
(12, 2)
"""

from __future__ import annotations

from .dataset import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_PHOTOS,
    DEFAULT_SKETCHES_PER_PHOTO,
    DEFAULT_TEST_FRACTION,
    clean_sketch,
    instance_parts,
    read,
)

__all__ = [
    "read",
    "instance_parts",
    "clean_sketch",
    "DEFAULT_NUM_PHOTOS",
    "DEFAULT_SKETCHES_PER_PHOTO",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_TEST_FRACTION",
]

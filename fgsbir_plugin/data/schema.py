"""The one row schema every dataset reader produces.

A dataset is two ``datasets.DatasetDict`` objects with the same split names (``train``,
``test``, optionally ``validation``):

- sketches: one row per sketch, naming the photo it depicts by ``photo_id``;
- photos: the gallery, one row per unique photo of the split.

Metrics pair a sketch with its photo through ``photo_id`` only, never by row position.
"""

from __future__ import annotations

from datasets import Features, Image, Value

__all__ = ["SKETCH_FEATURES", "PHOTO_FEATURES", "SPLITS"]

SKETCH_FEATURES = Features(
    {
        "sketch": Image(),
        "sketch_id": Value("string"),
        "photo_id": Value("string"),
        "category": Value("string"),
    }
)

PHOTO_FEATURES = Features(
    {
        "photo": Image(),
        "photo_id": Value("string"),
        "category": Value("string"),
    }
)

SPLITS = ("train", "validation", "test")

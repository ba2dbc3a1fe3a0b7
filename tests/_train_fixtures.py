"""Tiny sketch/photo datasets and models for the training tests (no downloads, no other branches)."""

from __future__ import annotations

import numpy as np
import timm
import torch
from datasets import Dataset, DatasetDict
from PIL import Image, ImageDraw

from fgsbir_plugin.data.schema import PHOTO_FEATURES, SKETCH_FEATURES
from fgsbir_plugin.train.config import TrainConfig

SIZE = 32


def _shape(draw: ImageDraw.ImageDraw, kind: int, box, outline, fill, width: int) -> None:
    if kind == 0:
        draw.ellipse(box, outline=outline, fill=fill, width=width)
    elif kind == 1:
        draw.rectangle(box, outline=outline, fill=fill, width=width)
    else:
        x0, y0, x1, y1 = box
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], outline=outline, fill=fill, width=width)


def tiny_fgsbir(
    num_photos: int = 12,
    sketches_per_photo: int = 2,
    val_photos: int = 4,
    test_photos: int = 4,
    seed: int = 0,
) -> tuple[DatasetDict, DatasetDict]:
    """Photos of one coloured shape each; sketches are its jittered outline. Splits by photo."""
    rng = np.random.default_rng(seed)
    total = num_photos + val_photos + test_photos
    photos, sketches = [], []
    for p in range(total):
        kind = p % 3
        x0, y0 = rng.integers(2, 12, 2)
        x1, y1 = x0 + rng.integers(10, 18), y0 + rng.integers(10, 18)
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        img = Image.new("RGB", (SIZE, SIZE), (240, 240, 240))
        _shape(ImageDraw.Draw(img), kind, (x0, y0, x1, y1), None, colour, 1)
        photos.append({"photo": img, "photo_id": f"p{p}", "category": "shape"})
        for k in range(sketches_per_photo):
            sk = Image.new("L", (SIZE, SIZE), 255)
            j = rng.integers(-1, 2, 4)
            _shape(ImageDraw.Draw(sk), kind, (x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3]), 0, None, 1)
            sketches.append(
                {"sketch": sk, "sketch_id": f"p{p}_s{k}", "photo_id": f"p{p}", "category": "shape"}
            )
    splits = {
        "train": range(num_photos),
        "validation": range(num_photos, num_photos + val_photos),
        "test": range(num_photos + val_photos, total),
    }

    def pick(rows, ids, features):
        keep = [r for r in rows if int(r["photo_id"][1:]) in ids]
        return Dataset.from_dict({k: [r[k] for r in keep] for k in features}, features=features)

    sk = DatasetDict({name: pick(sketches, set(ids), SKETCH_FEATURES) for name, ids in splits.items()})
    ph = DatasetDict({name: pick(photos, set(ids), PHOTO_FEATURES) for name, ids in splits.items()})
    return sk, ph


def tiny_model() -> torch.nn.Module:
    return timm.create_model("test_resnet", num_classes=0)


def tiny_config(out, **overrides) -> TrainConfig:
    """A training run on ``tiny_fgsbir`` with the ``test_resnet`` trunk at 28 px: 6 steps an epoch, 2 epochs."""
    base = dict(
        data="tiny",
        out=str(out),
        model="test_resnet",
        image_size=28,
        batch_size=4,
        epochs=2,
        lr=1e-3,
        progress=False,
        log_every=1,
        save_every=3,
    )
    base.update(overrides)
    return TrainConfig(**base)

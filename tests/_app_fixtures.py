"""A tiny DSSA and a tiny gallery on disk for the search page's tests (no training, no downloads)."""

from __future__ import annotations

import io
from pathlib import Path

import timm
import torch
from _train_fixtures import tiny_fgsbir
from PIL import Image

import fgsbir_plugin  # noqa: F401  (registers the DSSA architectures with timm)
from fgsbir_plugin.embedding import embed_files
from fgsbir_plugin.model_io import save_model
from fgsbir_plugin.search import GalleryIndex

TINY_DSSA = dict(
    backbone="test_resnet",
    attention_chs=8,
    coarse_grid=(2, 2),
    coarse_chs=8,
    hidden_dim=16,
    coarse_dim=8,
    fine_dim=8,
)
# No pretrained_cfg_overlay: a DSSA with another backbone= reloads with that backbone's data config
# (test_resnet's 160 px), whatever config.json says, so the tests use that config from the start.


def tiny_dssa(attention: bool = True, holef: bool = True, seed: int = 0) -> torch.nn.Module:
    """A 16-d DSSA on timm's test_resnet (160 px input); its attention is randomised so that the map is not uniform."""
    torch.manual_seed(seed)
    model = timm.create_model("dssa", attention=attention, holef=holef, **TINY_DSSA).eval()
    if model.attention is not None:
        with torch.no_grad():
            for p in model.attention.parameters():
                p.normal_(0.0, 0.5)
    return model


def write_gallery(
    root: Path, model: torch.nn.Module | None = None
) -> tuple[Path, list[tuple[Image.Image, str]]]:
    """A run folder, the 20 photos of ``tiny_fgsbir`` as PNG files and their index under ``root``.

    Returns ``(index path, [(test sketch, its photo id), ...])``; photo ids are the file names.
    """
    model = model if model is not None else tiny_dssa()
    sketches, photos = tiny_fgsbir()
    save_model(model, root / "run" / "model")
    paths = []
    for split in photos:
        for row in photos[split]:
            path = root / "photos" / f"{row['photo_id']}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            row["photo"].save(path)
            paths.append(path)
    emb = embed_files(model, paths, "photo").numpy()
    holef = getattr(model, "distance", None) is not None
    index = GalleryIndex(
        emb.shape[1], "holef" if holef else "cosine", W=model.distance if holef else None, model=model
    )
    index.add(emb, [p.name for p in paths])
    index.save(
        root / "gallery.index", extra={"photos_root": str(root / "photos"), "checkpoint": str(root / "run")}
    )
    examples = [(row["sketch"], f"{row['photo_id']}.png") for row in sketches["test"]]
    return root / "gallery.index", examples


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()

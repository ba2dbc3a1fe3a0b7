"""``fgsbir embed``: the embeddings of a folder of images, written as one safetensors file.

The file holds ``embeddings`` ``[N, D]`` float32, row ``i`` for the ``i``-th path in the
``paths`` metadata entry (a JSON list, relative to the folder, sorted); metadata also records the
modality, the model folder and the number of views.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..data.validate import IMAGE_EXTENSIONS

__all__ = ["list_images", "embed_files", "embed_folder"]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


class _Files:
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            with Image.open(self.files[i]) as img:
                img.load()
                return {"image": img.copy()}
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"cannot read image {self.files[i]} ({err}); remove or fix the file.") from None


def embed_files(
    model,
    files: list[Path],
    modality: str,
    *,
    batch_size: int = 64,
    device="cpu",
    views: int = 1,
    progress: bool = False,
):
    """Embeddings ``[len(files), D]`` (float32, CPU) of image files, preprocessed exactly as ``fgsbir eval`` does.

    The model's input spec (size, channels, mean/std, crop) comes from its data config, which a
    trained model records, so index building, ``fgsbir embed`` and evaluation see identical inputs.
    """
    from ..data.transforms import ImageTable, ImageTransform, load_size_for
    from .evaluate import embed_table, model_input_spec

    if modality not in ("sketch", "photo"):
        raise ValueError(f"modality must be 'sketch' or 'photo', got {modality!r}.")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}.")
    spec = model_input_spec(model)
    table = ImageTable(
        _Files(files),
        "image",
        load_size_for(spec["image_size"], spec["crop_pct"]),
        spec["in_chans"],
        cache=False,
    )
    tf = ImageTransform(spec["image_size"], spec["mean"], spec["std"], in_chans=spec["in_chans"])
    return embed_table(model, table, tf, modality, batch_size, device, views, progress=progress)


def embed_folder(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    modality: str = "photo",
    views: int = 1,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Embed every image under ``images`` with the model of ``checkpoint``; write ``out`` atomically."""
    from safetensors.torch import save_file

    from .._common import atomic_path
    from ..model_io import load_model
    from .engine import resolve_device
    from .evaluate import resolve_checkpoint

    folder = Path(images)
    files = list_images(folder)
    _, model_dir = resolve_checkpoint(checkpoint)
    dev = resolve_device(device)
    model = load_model(model_dir, device=dev)
    emb = embed_files(
        model, files, modality, batch_size=batch_size, device=dev, views=views, progress=progress
    )
    metadata = {
        "paths": json.dumps([p.relative_to(folder).as_posix() for p in files]),
        "modality": modality,
        "model": str(model_dir),
        "views": str(views),
    }
    with atomic_path(out) as tmp:
        save_file({"embeddings": emb.contiguous()}, str(tmp), metadata=metadata)
    return {"num_images": len(files), "dim": int(emb.shape[1]), "path": str(out)}

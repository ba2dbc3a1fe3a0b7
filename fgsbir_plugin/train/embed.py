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

from safetensors.torch import save_file

from .._common import atomic_path
from ..embedding import embed_files, list_images
from ..model_io import load_model
from ..run_folder import RunFolder
from ..runtime import resolve_device

__all__ = ["embed_folder"]


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
    """Embed every image under ``images`` with the model of ``checkpoint``; write ``out`` (a ``.safetensors``
    file) atomically."""
    if Path(out).suffix.lower() != ".safetensors":
        raise ValueError(f"{out} must end in .safetensors: the embeddings are written in that format.")
    folder = Path(images)
    files = list_images(folder)
    _, model_dir = RunFolder.resolve(checkpoint)
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

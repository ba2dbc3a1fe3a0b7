"""Images to embeddings with a trained model, preprocessed one way for every caller.

Validation while training, ``fgsbir eval``, ``fgsbir embed``, the search index and the demo all
embed through this module, so a model sees identical inputs wherever it is used: the input spec
(size, channels, mean/std, crop) comes from the model's timm data config, which a trained model
records.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any

import timm.data
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data.transforms import ImageTable, ImageTransform, load_size_for, ten_crop_views
from .data.validate import IMAGE_EXTENSIONS, load_image

__all__ = [
    "embedding_dim",
    "model_input_spec",
    "forward_embed",
    "embed_table",
    "list_images",
    "embed_files",
    "retrieval_distance",
]


def embedding_dim(model: torch.nn.Module) -> int:
    """Width of ``model(x)``, the retrieval embedding: timm's ``head_hidden_size`` (the pooled pre-logits
    width), else ``num_features`` for models that define only that (a plain embedder such as CLIP's)."""
    width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not isinstance(width, int) or width < 1:
        raise ValueError(
            f"{type(model).__name__} declares no embedding width; give it head_hidden_size (timm) or num_features."
        )
    return width


def model_input_spec(model: torch.nn.Module, image_size: int | None = None) -> dict[str, Any]:
    """The model's expected input: ``in_chans``, ``image_size`` (pixels), ``mean``, ``std``, ``crop_pct``.

    Read from ``timm.data.resolve_model_data_config(model)``; ``image_size`` overrides the side.
    """
    cfg = timm.data.resolve_model_data_config(model)
    c, h, w = cfg["input_size"]
    size = int(image_size) if image_size is not None else int(max(h, w))
    return {
        "in_chans": int(c),
        "image_size": size,
        "mean": tuple(float(x) for x in cfg["mean"]),
        "std": tuple(float(x) for x in cfg["std"]),
        "crop_pct": float(cfg.get("crop_pct") or 0.875),
    }


def _accepts_modality(model: torch.nn.Module) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "modality" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def forward_embed(model: torch.nn.Module, x: torch.Tensor, modality: str | None) -> torch.Tensor:
    """``model(x, modality=...)`` for DSSA-style models, ``model(x)`` for plain timm trunks: ``[B, D]``."""
    if modality is not None and _accepts_modality(model):
        return model(x, modality=modality)
    return model(x)


@torch.no_grad()
def embed_table(
    model: torch.nn.Module,
    table: ImageTable,
    transform: ImageTransform,
    modality: str | None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    views: int = 1,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Embeddings ``[N, D]`` (float32, CPU) of every image of ``table``, in eval mode.

    ``views=10`` averages the embeddings of the paper's 10 crops (4 corners + centre, and their
    flips) of each image; ``views=1`` uses the centre crop.
    """
    if views not in (1, 10):
        raise ValueError(f"views must be 1 (centre crop) or 10 (corners + centre, and flips), got {views}.")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    bar = tqdm(
        total=len(table), unit="img", desc=f"embedding {modality}s", disable=not progress, file=sys.stderr
    )
    try:
        for start in range(0, len(table), batch_size):
            idx = range(start, min(start + batch_size, len(table)))
            if views == 1:
                x = torch.stack([transform(table[i]) for i in idx])
            else:
                x = torch.stack(
                    [transform.normalize(ten_crop_views(table[i], transform.image_size)) for i in idx]
                )
                x = x.flatten(0, 1)  # [B*10, C, S, S]
            x = x.to(device, non_blocking=True)
            with torch.autocast(
                device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
            ):
                e = forward_embed(model, x, modality)
            e = e.float()
            if views == 10:
                e = F.normalize(e, dim=-1).view(-1, 10, e.shape[-1]).mean(dim=1)
            out.append(e.cpu())
            bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return torch.cat(out)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path, each readable.

    A symlink to an image file is listed like the file, at its place inside ``folder`` wherever it
    points, as the dataset readers list it: name each file by ``path.relative_to(folder)``, not by
    its resolved target. Symlinked folders are not descended into, so a link cannot make the walk
    loop. A symlink that leads nowhere, or a file that cannot be opened for reading, is a
    ValueError naming it, raised here, before anything is embedded.
    """
    folder = Path(folder)
    if folder.is_file():
        raise NotADirectoryError(f"{folder} is a file; pass the folder of images it is in.")
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist.")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or p.is_symlink())
    )
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    for path in files:
        if not path.is_file():
            raise ValueError(
                f"{path} is a symlink to {os.readlink(path)}, which is not a file; fix or delete the link."
            )
        if not os.access(path, os.R_OK):
            raise ValueError(f"{path} cannot be opened for reading; fix its permissions or delete it.")
    return files


class _Files:
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        # The loaders' check: an undecodable, truncated, non-finite or oversized image is a
        # ValueError naming the file (``validate.load_image``).
        with load_image(self.files[i]) as img:
            return {"image": img.copy()}


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


@torch.no_grad()
def retrieval_distance(sketch_emb: torch.Tensor, photo_emb: torch.Tensor, distance=None) -> torch.Tensor:
    """Distances ``[Nq, Ng]`` (smaller = closer) between sketch and photo embeddings.

    ``distance`` is a PML distance (e.g. the model's HOLEF distance); None means the Euclidean
    distance between L2-normalised embeddings, which ranks exactly as cosine similarity does.
    A similarity (``is_inverted``) is negated so smaller is always closer.
    """
    if distance is None:
        return torch.cdist(F.normalize(sketch_emb.double(), dim=-1), F.normalize(photo_emb.double(), dim=-1))
    mat = distance(sketch_emb, photo_emb)
    return -mat if getattr(distance, "is_inverted", False) else mat

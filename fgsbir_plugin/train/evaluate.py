"""Embed a split's sketches and photos with a model and score sketch -> photo retrieval.

Used for validation while training and by ``fgsbir eval``. The gallery is the split's photo
table (unique photos); each sketch's target is the row of its ``photo_id`` in that table.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._common import atomic_write_bytes
from ..data.sampling import pair_index
from ..data.transforms import ImageTable, ImageTransform, load_size_for, ten_crop_views
from ..metrics import retrieval_metrics

__all__ = [
    "model_input_spec",
    "forward_embed",
    "embed_table",
    "retrieval_distance",
    "split_distances",
    "evaluate_split",
    "describe_device",
    "git_commit",
    "write_eval_report",
    "resolve_checkpoint",
    "load_run_distance",
    "run_eval",
]


def model_input_spec(model: torch.nn.Module, image_size: int | None = None) -> dict[str, Any]:
    """The model's expected input: ``in_chans``, ``image_size`` (pixels), ``mean``, ``std``, ``crop_pct``.

    Read from ``timm.data.resolve_model_data_config(model)``; ``image_size`` overrides the side.
    """
    import timm.data

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


def split_distances(
    model: torch.nn.Module,
    sketches,
    photos,
    *,
    image_size: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    views: int = 1,
    distance=None,
    cache: bool | None = None,
    autocast_dtype: torch.dtype | None = None,
    sketch_table: ImageTable | None = None,
    photo_table: ImageTable | None = None,
) -> dict[str, Any]:
    """Embed one split and compare every sketch with every photo.

    Args:
        sketches, photos: ``datasets.Dataset`` of one split (rows per the shared schema).
        distance: the PML distance used for ranking; defaults to ``model.distance`` when the model
            has one (HOLEF), else the Euclidean distance of L2-normalised embeddings.
        sketch_table, photo_table: already decoded tables to reuse (validation every epoch).

    Returns:
        ``dist`` [Nq, Ng] (smaller = closer), ``target`` [Nq] (gallery index of each sketch's
        photo), the decoded ``sketch_table`` / ``photo_table`` and the eval ``transform``.
    """
    spec = model_input_spec(model, image_size)
    # Decoded at image_size / crop_pct: the centre crop (views=1) keeps crop_pct of the image, as
    # timm evaluates, and the 10 views crop the corners of the same decoded image.
    load = load_size_for(spec["image_size"], spec["crop_pct"])
    if sketch_table is None:
        sketch_table = ImageTable(sketches, "sketch", load, spec["in_chans"], cache=cache)
    if photo_table is None:
        photo_table = ImageTable(photos, "photo", load, spec["in_chans"], cache=cache)
    tf = ImageTransform(spec["image_size"], spec["mean"], spec["std"], in_chans=spec["in_chans"])
    target = pair_index(list(sketches["photo_id"]), list(photos["photo_id"]))
    es = embed_table(model, sketch_table, tf, "sketch", batch_size, device, views, autocast_dtype)
    ep = embed_table(model, photo_table, tf, "photo", batch_size, device, views, autocast_dtype)
    if distance is None:
        distance = getattr(model, "distance", None)
    if distance is not None:
        distance = distance.to("cpu")
    return {
        "dist": retrieval_distance(es, ep, distance),
        "target": target,
        "sketch_table": sketch_table,
        "photo_table": photo_table,
        "transform": tf,
    }


def evaluate_split(model: torch.nn.Module, sketches, photos, **kwargs: Any) -> dict[str, Any]:
    """Score ``model`` on one split: ``{"metrics": {...}, "num_queries", "num_gallery"}``.

    Keyword arguments are those of :func:`split_distances`.
    """
    out = split_distances(model, sketches, photos, **kwargs)
    dist, target = out["dist"], out["target"]
    return {
        "metrics": retrieval_metrics(dist, target),
        "num_queries": len(target),
        "num_gallery": dist.shape[1],
    }


def describe_device(device: torch.device | str) -> str:
    """A human description: the GPU name, or the CPU model and core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    import os

    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def git_commit() -> str | None:
    """The commit of the source checkout the package runs from, or None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_eval_report(path: str | Path, result: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Write ``eval_<split>.json`` atomically: metrics + provenance (device, date, commit, command)."""
    report = {
        "metrics": result["metrics"],
        "num_queries": result["num_queries"],
        "num_gallery": result["num_gallery"],
        **fields,
    }
    report.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    report.setdefault("commit", git_commit())
    report.setdefault("command", " ".join(["fgsbir", *sys.argv[1:]]))
    atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())
    return report


def load_run_distance(run_dir: str | Path, model: torch.nn.Module):
    """The distance a run ranks with: ``model.distance`` (HOLEF inside the model), else a HOLEF W
    saved beside ``model/`` by a plain timm trunk trained with ``--loss holef``, else None (Euclidean)."""
    if getattr(model, "distance", None) is not None:
        return model.distance
    from .engine import HOLEF_FILE

    path = Path(run_dir) / HOLEF_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    from ..holef import HOLEFDistance

    distance = HOLEFDistance(model.num_features)
    distance.load_state_dict(load_file(str(path)))
    return distance.eval()


def resolve_checkpoint(checkpoint: str | Path) -> tuple[Path, Path]:
    """(run folder, model folder) for a run folder or a model folder; FileNotFoundError otherwise."""
    path = Path(checkpoint)
    if (path / "model" / "config.json").is_file():
        return path, path / "model"
    if (path / "config.json").is_file():
        return (path.parent if path.name == "model" else path), path
    raise FileNotFoundError(
        f"{path} is neither a run folder (with model/) nor a model folder (with config.json); "
        "pass the --out folder of `fgsbir train`."
    )


def run_eval(
    checkpoint: str | Path,
    data: str,
    *,
    split: str = "test",
    data_dir: str | None = None,
    data_kwargs: dict | None = None,
    views: int = 1,
    image_size: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    out: str | Path | None = None,
    datasets=None,
) -> dict[str, Any]:
    """Load a trained model, score it on ``split`` of ``data``, write ``eval_<split>.json``; return the report.

    ``datasets`` optionally gives ``(sketches, photos)`` DatasetDicts instead of ``load_fgsbir``.
    """
    from ..model_io import load_model
    from .engine import resolve_device

    run_dir, model_dir = resolve_checkpoint(checkpoint)
    dev = resolve_device(device)
    if datasets is None:
        if data_dir is not None and not Path(data_dir).is_dir():
            raise FileNotFoundError(
                f"data directory {data_dir} does not exist; pass --data-dir pointing at the dataset."
            )
        from ..data import load_fgsbir_pair

        datasets = load_fgsbir_pair(data, data_dir, **dict(data_kwargs or {}))
    sketches, photos = datasets
    if split not in sketches or split not in photos:
        raise ValueError(f"split {split!r} is not in {data}; it has {', '.join(sketches)}.")
    model = load_model(model_dir, device=dev)
    result = evaluate_split(
        model,
        sketches[split],
        photos[split],
        image_size=image_size,
        batch_size=batch_size,
        device=dev,
        views=views,
        distance=load_run_distance(run_dir, model),
    )
    path = Path(out) if out is not None else run_dir / f"eval_{split}.json"
    report = write_eval_report(
        path,
        result,
        dataset=data,
        split=split,
        checkpoint=str(model_dir),
        device=describe_device(dev),
        model_name=str(model.pretrained_cfg.get("architecture", type(model).__name__)),
        views=views,
    )
    report["path"] = str(path)
    return report

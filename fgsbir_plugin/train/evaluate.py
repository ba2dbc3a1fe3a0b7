"""Embed a split's sketches and photos with a model and score sketch -> photo retrieval.

Used for validation while training and by ``fgsbir eval``. The gallery is the split's photo
table (unique photos); each sketch's target is the row of its ``photo_id`` in that table.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .._common import atomic_write_bytes
from ..data import load_fgsbir_pair
from ..data.sampling import pair_index
from ..data.transforms import ImageTable, ImageTransform, load_size_for
from ..embedding import embed_table, model_input_spec, retrieval_distance
from ..metrics import retrieval_metrics
from ..model_io import load_model
from ..run_folder import RunFolder
from ..runtime import describe_device, git_commit, resolve_device

__all__ = [
    "split_distances",
    "evaluate_split",
    "write_eval_report",
    "run_eval",
]


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
        # A copy: moving the model's own distance would move a training model's HOLEF W off its device.
        distance = copy.deepcopy(distance).to("cpu")
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

    ``datasets`` optionally gives ``(sketches, photos)`` DatasetDicts instead of ``load_fgsbir``. A run
    folder trained on the same ``data`` lends what makes its splits, so the split scored is the one the run
    was trained beside: its reader options when ``data_kwargs`` is not given (a generated dataset's sizes,
    for one), and always its seed (another seed in ``data_kwargs`` is refused) and validation fraction. The
    seed also seeds a generated dataset and a pairs folder's or Sketchy's test split (scored with another
    seed, a test split could hold photos the run trained on); the fraction carves the validation split the
    run's model was chosen on, so ``split="validation"`` compares settings such as ``views`` without reading
    the test split. The report records them as ``run_splits``.
    """
    run, model_dir = RunFolder.resolve(checkpoint)
    dev = resolve_device(device)
    trained_on = run.read_run_config() if run.run_config_path.is_file() else {}
    if trained_on.get("data") != data:
        trained_on = {}  # the run's settings describe another dataset
    if data_kwargs is None and trained_on:
        data_kwargs = dict(trained_on.get("data_kwargs") or {})
    data_kwargs = dict(data_kwargs or {})
    run_splits = None
    if datasets is None:
        if data_dir is not None and not Path(data_dir).is_dir():
            raise FileNotFoundError(
                f"data directory {data_dir} does not exist; pass --data-dir pointing at the dataset."
            )
        if trained_on:
            run_splits = {
                "seed": int(trained_on.get("seed", 0)),
                "validation_size": float(trained_on.get("validation_size") or 0.0),
            }
        reader = dict(data_kwargs)
        seed = reader.pop("seed", run_splits["seed"] if run_splits else 0)
        if run_splits and seed != run_splits["seed"]:
            raise ValueError(
                f"--data-kwargs sets seed {seed}, but {checkpoint} was trained on {data} with seed "
                f"{run_splits['seed']}, which made its splits; drop seed from --data-kwargs (another draw "
                "could put the run's training photos in the split scored)."
            )
        vs = run_splits["validation_size"] if run_splits else 0.0
        datasets = load_fgsbir_pair(data, data_dir, validation_size=vs, seed=seed, **reader)
    sketches, photos = datasets
    if split not in sketches or split not in photos:
        hint = (
            " (a run trained on it with --validation-size carves one from train)"
            if split == "validation"
            else ""
        )
        raise ValueError(f"split {split!r} is not in {data}; it has {', '.join(sketches)}{hint}.")
    model = load_model(model_dir, device=dev)
    result = evaluate_split(
        model,
        sketches[split],
        photos[split],
        image_size=image_size,
        batch_size=batch_size,
        device=dev,
        views=views,
        distance=run.load_distance(model),
    )
    path = Path(out) if out is not None else run.eval_report_path(split, views)
    report = write_eval_report(
        path,
        result,
        dataset=data,
        data_kwargs=data_kwargs,
        split=split,
        **({"run_splits": run_splits} if run_splits else {}),
        checkpoint=str(model_dir),
        device=describe_device(dev),
        model_name=str(model.pretrained_cfg.get("architecture", type(model).__name__)),
        views=views,
    )
    report["path"] = str(path)
    return report

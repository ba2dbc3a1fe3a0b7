"""``fgsbir demo``: DSSA against the triplet baseline on synthetic data, on CPU, in minutes.

No data and no downloads: the synthetic dataset (``fgsbir_plugin.data.synthetic``) is generated
on the fly; a small DSSA and the same network without attention and fusion (the triplet
baseline) are trained from scratch with the same settings, both are evaluated on the synthetic
test split next to the untrained DSSA, and a picture shows a few test sketches with their top-5
retrieved photos (the true photo outlined in green) and DSSA's attention map.

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

# (label, timm model name, model kwargs); the first entry is also evaluated untrained.
DEMO_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("DSSA", "dssa", {}),
    ("triplet baseline", "dssa", {"attention": False, "fusion": False}),
)


@dataclass
class DemoSettings:
    """Sizes of the demo; ``quick`` shrinks everything for a CI smoke run."""

    epochs: int = 8
    num_photos: int = 120
    sketches_per_photo: int = 3
    raster_size: int = 224  # pixels of the generated synthetic images
    # Model input side; None = the model's own (Sketch-a-Net: 225, where DSSA attends over a 7x7
    # map). Below ~112 px Sketch-a-Net's last map is 1x1 and the attention has nothing to choose.
    image_size: int | None = None
    batch_size: int = 16
    lr: float = 3e-4  # 1e-3 barely moves the untrained ranking on the synthetic data; 3e-4 does
    warmup_steps: int = 10
    validation_size: float = 0.2
    test_fraction: float = 0.3
    queries_in_figure: int = 4
    train_overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(
            epochs=10,
            num_photos=80,
            sketches_per_photo=2,
            raster_size=160,
            image_size=160,  # a 4x4 attention map at a third of the cost of 225
            batch_size=16,
            warmup_steps=4,
        )


def _synthetic_datasets(settings: DemoSettings, seed: int):
    return load_fgsbir_pair(
        "synthetic",
        None,
        validation_size=settings.validation_size,
        seed=seed,
        num_photos=settings.num_photos,
        sketches_per_photo=settings.sketches_per_photo,
        image_size=settings.raster_size,
        test_fraction=settings.test_fraction,
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


def _demo_config(
    settings: DemoSettings, run_dir: Path, name: str, kwargs: dict, seed: int, dev, progress: bool
):
    return TrainConfig(
        data="synthetic",
        out=str(run_dir),
        model=name,
        model_kwargs=dict(kwargs),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        warmup_steps=settings.warmup_steps,
        validation_size=settings.validation_size,
        image_size=settings.image_size,
        seed=seed,
        device=str(dev),
        progress=progress,
        save_every=0,
        **settings.train_overrides,
    )


def _untrained_row(label: str, name: str, kwargs: dict, seed: int, settings: DemoSettings, test, dev):
    """The metrics of the first model, untrained (seeded), on the test split."""
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
    epochs: int | None = None,
    quick: bool = False,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    settings: DemoSettings | None = None,
    models: tuple[tuple[str, str, dict[str, Any]], ...] = DEMO_MODELS,
    datasets=None,
) -> dict[str, Any]:
    """Train and compare the demo models; returns ``{"table", "json", "figure", "results"}``.

    ``models`` and ``datasets`` exist for tests (stand-in models, tiny data); the command uses the
    DSSA family and the synthetic dataset.
    """
    out = Path(out)
    settings = settings or (DemoSettings.quick() if quick else DemoSettings())
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be a positive integer, got {epochs}.")
        settings.epochs = epochs
    dev = resolve_device(device)
    if datasets is None:
        datasets = _synthetic_datasets(settings, seed)
    sketches, photos = datasets
    test = (sketches["test"], photos["test"])
    if (out / "demo_results.json").exists():
        raise ValueError(f"{out} already holds a demo; choose another --out or delete it.")

    label, m = _untrained_row(*models[0], seed, settings, test, dev)
    rows: list[tuple[str, dict[str, float]]] = [(label, m)]
    results: dict[str, Any] = {label: {"metrics": m}}
    trained: dict[str, tuple[torch.nn.Module, Any]] = {}
    for label, name, kwargs in models:
        run_dir = out / label.replace(" ", "_").replace(",", "").lower()
        if progress:
            print(f"training {label} ({name} {kwargs or ''}) for {settings.epochs} epochs on {dev} ...")
        summary = train(_demo_config(settings, run_dir, name, kwargs, seed, dev, progress), datasets=datasets)
        model = load_model(RunFolder(run_dir).model_dir, device=dev)
        m, dist, target, inputs = _embed_split(model, *test, None, dev)
        rows.append((label, m))
        results[label] = {
            "metrics": m,
            "run": str(run_dir),
            "model": name,
            "model_kwargs": kwargs,
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

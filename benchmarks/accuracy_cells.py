"""The cells of the accuracy benchmark: one (dataset, method, seed) each, trained, selected, scored, written.

A trained cell (``timm``, or ``clip`` with ``adapt: ln_proj``) trains with
``fgsbir_plugin.train.engine.train`` in its own run folder, keeps the model with the best validation
acc@1 (then acc@10) on a validation split carved from train by photo (seeded by the cell's seed), and is
scored once on the TEST split. An untrained cell (``zero_shot``, or ``clip`` with ``adapt: none``) has no
seed dependence: it is scored once per test split and the same record holds for every seed.

Each cell is written atomically to ``<results-dir>/<results-name>/<dataset>/<method>/seed<k>.json``. A
finished cell is skipped; a half-trained one resumes from its run folder; a finished run folder whose
cell file is missing or corrupt is scored again without training.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import timm
import torch
from accuracy_config import (
    DatasetRef,
    export_folder,
    is_trained,
    read_export,
    repo_relative,
    seed_independent,
    train_values,
    validation_size,
)
from accuracy_scoring import DIAGNOSTIC_KEYS, score_test_split
from report_files import write_record

import fgsbir_plugin  # noqa: F401  (registers the DSSA family with timm)
from fgsbir_plugin._common import load_checked_tensors
from fgsbir_plugin.data import carve_validation, load_fgsbir_pair
from fgsbir_plugin.model_io import load_model
from fgsbir_plugin.models.efficientnet_lite_import import load_efficientnet_lite_imagenet
from fgsbir_plugin.run_folder import RunFolder
from fgsbir_plugin.runtime import describe_device, git_commit, resolve_device
from fgsbir_plugin.train import engine
from fgsbir_plugin.train.checkpoint import has_training_state
from fgsbir_plugin.train.config import RESUME_OVERRIDABLE, TrainConfig, resume_config

METRIC_KEYS = ("acc@1", "acc@5", "acc@10", "mAP", "mean_rank", "median_rank")

# A CLIP tower factory: (adapt) -> CLIPImageEmbedder. Tests inject a tiny random one.
ClipFactory = Callable[[str], torch.nn.Module]
# A training run: engine.train's signature (cfg, datasets=..., model=...) -> its summary.
TrainFn = Callable[..., dict[str, Any]]


def cell_path(results_dir: Path, results_name: str, dataset: str, method: str, seed: int) -> Path:
    return Path(results_dir) / results_name / dataset / method / f"seed{seed}.json"


def read_cell(path: Path) -> dict[str, Any] | None:
    """A finished cell's record, or None when it is missing or unreadable (then it is run again)."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict):
        return None
    metrics, diagnostics = rec.get("metrics"), rec.get("diagnostics")
    if not isinstance(metrics, dict) or any(not isinstance(metrics.get(k), int | float) for k in METRIC_KEYS):
        return None
    if not isinstance(diagnostics, dict) or any(k not in diagnostics for k in DIAGNOSTIC_KEYS):
        return None
    if not isinstance(rec.get("seed"), int) or not isinstance(rec.get("ranks"), list):
        return None
    return rec


def test_fingerprint(sketches, photos) -> str:
    """Names a test split by its sketch and photo ids (a seed-independent cell is shared across equal ones)."""
    text = "\n".join(list(sketches["sketch_id"]) + ["--"] + list(photos["photo_id"]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Harness:
    """What every cell of one invocation shares."""

    bench: dict[str, Any]
    results_dir: Path
    results_name: str
    runs_dir: Path
    device: str = "auto"
    clip_factory: ClipFactory | None = None
    clip_info: dict[str, Any] | None = None
    command: str = ""
    train_fn: TrainFn | None = None  # None: engine.train; the GPU suite passes its own (gpu_train.py)
    _data: dict[tuple, tuple] = field(default_factory=dict, repr=False)

    def cell_path(self, dataset: str, method: str, seed: int) -> Path:
        return cell_path(self.results_dir, self.results_name, dataset, method, seed)

    def run_dir(self, dataset: str, method: str, seed: int) -> Path:
        return Path(self.runs_dir) / dataset / method / f"seed{seed}"

    def datasets(self, ref: DatasetRef, seed: int, val_size: float):
        """``(sketches, photos)`` of ``ref`` with the validation split of ``seed``; kept for the dataset's other cells."""
        key = (ref.source, ref.data_dir, json.dumps(ref.kwargs, sort_keys=True), seed, val_size)
        if key not in self._data:
            for old in [k for k in self._data if k[:3] != key[:3]]:
                del self._data[old]  # one dataset at a time in memory
            self._data[key] = load_cell_data(ref, seed, val_size)
        return self._data[key]


def load_cell_data(ref: DatasetRef, seed: int, val_size: float):
    """(sketches, photos) with train / validation (carved from train by photo, seeded) / test.

    A ``seed`` among the dataset's reader arguments fixes the reader's own seed (generated data, a
    folder's seeded test split) for every cell; the cell's seed then sets only the validation carve.
    """

    kwargs = dict(ref.kwargs)
    reader_seed = int(kwargs.pop("seed", seed))
    export = export_folder(ref)
    if export is not None and kwargs:
        raise ValueError(
            f"{ref.name}: {export} holds a compact export, read with the reader's defaults; it cannot apply "
            f"the reader arguments {sorted(kwargs)}: point the data folder at the raw files instead."
        )
    if export is not None:
        sketches, photos = read_export(export)
    else:
        sketches, photos = load_fgsbir_pair(ref.source, ref.data_dir, seed=reader_seed, **kwargs)
    sketches, photos = carve_validation(sketches, photos, val_size, seed)
    for split in ("train", "validation", "test"):
        if split not in sketches or len(sketches[split]) == 0:
            raise ValueError(
                f"{ref.name} (seed {seed}) has no {split} sketches; check the data and validation_size."
            )
    val_ids = set(photos["validation"]["photo_id"])
    if val_ids & set(photos["test"]["photo_id"]) or val_ids & set(photos["train"]["photo_id"]):
        raise ValueError(
            f"{ref.name}: the validation photos overlap train or test; the data split is broken."
        )
    return sketches, photos


def train_config(h: Harness, ref: DatasetRef, name: str, seed: int, validate: bool = True):
    """The TrainConfig of a trained cell."""

    method = h.bench["methods"][name]
    values = train_values(h.bench, method)
    values.update(
        data=ref.source,
        data_dir=ref.data_dir,
        data_kwargs=dict(ref.kwargs),
        out=str(h.run_dir(ref.name, name, seed)),
        seed=seed,
        device=h.device,
    )
    if method["kind"] == "timm":
        values["model"] = method["model"]
        # train.model_kwargs are shared by every timm method; a method's own model_kwargs override them.
        values["model_kwargs"] = {**(values.get("model_kwargs") or {}), **(method.get("model_kwargs") or {})}
    else:  # an injected CLIP tower: cfg.model is only a label, and the DSSA kwargs do not apply
        values["model"], values["model_kwargs"] = f"clip:{method.get('adapt')}", {}
    cfg = TrainConfig.from_dict(values, "benchmark config")
    if not validate:
        return cfg
    # The harness reads the cell's data and hands it to training, so the reader's own seed (a dataset_kwargs
    # entry, kept in the cell's settings) is no option of training, which seeds its reads itself.
    reader = {k: v for k, v in cfg.data_kwargs.items() if k != "seed"}
    return replace(cfg, data_kwargs=reader).validate()


def cell_settings(h: Harness, ref: DatasetRef, name: str, seed: int) -> dict[str, Any]:
    """What a cell's figures depend on (its method and training settings, not where or how fast it ran).

    A finished cell whose recorded settings differ from these was made with another configuration.
    """

    method = h.bench["methods"][name]
    settings: dict[str, Any] = {"method": method, "dataset_kwargs": ref.kwargs}
    if is_trained(method):
        values = train_config(h, ref, name, seed, validate=False).to_dict()
        settings["train"] = {k: v for k, v in values.items() if k not in RESUME_OVERRIDABLE | {"out"}}
    else:
        settings["image_size"] = _untrained_image_size(h, method)
    return json.loads(json.dumps(settings))  # as a JSON record reads back (lists, not tuples)


def stale_cell(h: Harness, ref: DatasetRef, name: str, seed: int, rec: dict[str, Any]) -> bool:
    """True when a finished cell was made with settings other than the config's now.

    A training option added after the cell was made is missing from its record; at its default it is what
    the cell ran with (a new option's default keeps the old behaviour), so it does not make the cell stale.
    """
    now = cell_settings(h, ref, name, seed)
    return with_later_defaults(rec.get("settings"), now) != now


def with_later_defaults(recorded: Any, now: dict[str, Any]) -> Any:
    """``recorded`` settings with the training options it lacks filled in from ``now`` where those are at
    their ``TrainConfig`` default (options that did not exist when the record was written)."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("train"), dict) or "train" not in now:
        return recorded
    defaults = json.loads(json.dumps(TrainConfig().to_dict()))
    train = dict(recorded["train"])
    for key, value in now["train"].items():
        if key not in train and key in defaults and value == defaults[key]:
            train[key] = value
    return {**recorded, "train": train}


def _finished_summary(cfg) -> dict[str, Any] | None:
    """The ``end`` record of a finished run in ``cfg.out`` with the same settings, or None."""

    run = RunFolder(cfg.out)
    if not run.run_config_path.is_file() or not run.log_path.is_file():
        return None
    if not (run.has_model() or run.injected_model_path.is_file()):
        return None
    end = None
    for line in run.log_path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(rec, dict) and rec.get("event") == "end" and rec.get("done"):
            end = rec
    if end is None:
        return None
    try:
        resume_config(cfg, run.read_run_config(), str(run.run_config_path))
    except ValueError as err:
        raise ValueError(
            f"{run.path} holds a finished run with other settings ({err}); "
            "delete that folder or pass another --runs-dir."
        ) from None
    return end


def train_or_resume(
    cfg, datasets, injected: torch.nn.Module | None, train_fn: TrainFn | None = None
) -> dict[str, Any]:
    """Train ``cfg`` with ``train_fn`` (default ``engine.train``), resuming a half-trained run folder; a
    finished run is not trained again."""

    summary = _finished_summary(cfg)
    if summary is not None:
        return summary
    out = Path(cfg.out)
    if (out / "run_config.json").is_file() and has_training_state(out / "state"):
        cfg.resume = True
    elif out.exists():
        # Killed before its first resumable state: nothing to keep (the harness owns runs_dir).
        shutil.rmtree(out)
    summary = (train_fn or engine.train)(cfg, datasets=datasets, model=injected)
    if not summary["done"]:
        raise RuntimeError(f"training of {out} stopped before its end; run the benchmark again to resume it.")
    return summary


def selected_model(run_dir: Path, injected: torch.nn.Module | None, device: torch.device):
    """The model chosen on validation (``model/``, or the injected model's best weights) and its distance."""

    run = RunFolder(run_dir)
    if injected is not None:
        injected.load_state_dict(
            load_checked_tensors(run.injected_model_path, "delete the cell's run folder")
        )
        model = injected.to(device).eval()
    else:
        model = load_model(run.model_dir, device=device).eval()
    return model, run.load_distance(model)


def _recorded_train(cfg) -> dict[str, Any] | None:
    """A cell's training configuration as recorded, its folders relative to the repository where inside."""
    if cfg is None:
        return None
    values = cfg.to_dict()
    for key in ("out", "data_dir"):
        if values.get(key):
            values[key] = repo_relative(values[key])
    return values


def build_untrained(h: Harness, method: dict) -> torch.nn.Module:
    """The model of a zero-shot method: a timm model with its offline weights, or CLIP's tower."""
    if method["kind"] == "clip":
        return h.clip_factory("none")

    kwargs = dict(method.get("model_kwargs") or {})
    kwargs.setdefault("num_classes", 0)
    model = timm.create_model(method["model"], pretrained=False, **kwargs)
    if method.get("weights"):
        load_efficientnet_lite_imagenet(model, package=method["weights"])
    return model


def dataset_key_of(ref: DatasetRef) -> tuple:
    """Names a dataset's files in the per-process caches of the test pass (source, folder, reader arguments)."""
    return (ref.source, ref.data_dir, json.dumps(ref.kwargs, sort_keys=True))


def _trained_cell(h: Harness, ref: DatasetRef, name: str, seed: int) -> dict[str, Any]:
    method = h.bench["methods"][name]
    sketches, photos = h.datasets(ref, seed, validation_size(h.bench, method))
    cfg = train_config(h, ref, name, seed)
    injected = h.clip_factory(method["adapt"]) if method["kind"] == "clip" else None
    summary = train_or_resume(cfg, (sketches, photos), injected, h.train_fn)
    model, distance = selected_model(Path(cfg.out), injected, resolve_device(h.device))
    test = score_test_split(
        model,
        sketches["test"],
        photos["test"],
        device=resolve_device(h.device),
        distance=distance,
        image_size=cfg.image_size,
        batch_size=cfg.eval_batch_size,
        freeze=cfg.freeze if injected is None else None,
        dataset_key=dataset_key_of(ref),
    )
    selection = {
        "split": "validation",
        "num_queries": len(sketches["validation"]),
        "num_gallery": len(photos["validation"]),
        "best_val_acc1_acc10": summary["best"],
        "best_step": summary["best_step"],
        "total_steps": summary["total_steps"],
    }
    return _record(h, ref, name, seed, test, (sketches["test"], photos["test"]), selection, cfg)


def _shared_record(h: Harness, ref: DatasetRef, name: str, fingerprint: str) -> dict[str, Any] | None:
    """A finished record of this untrained method on the same test split (another seed's), or None."""
    folder = h.cell_path(ref.name, name, 0).parent
    for path in sorted(folder.glob("seed*.json")) if folder.is_dir() else []:
        rec = read_cell(path)
        if rec is not None and rec.get("test_fingerprint") == fingerprint and rec.get("seed_independent"):
            return rec
    return None


def _untrained_image_size(h: Harness, method: dict) -> int | None:
    """A zero-shot timm model sees the trained rows' input size; CLIP its tower's own."""
    return h.bench["train"].get("image_size") if method["kind"] == "zero_shot" else None


def _untrained_cell(h: Harness, ref: DatasetRef, name: str, seed: int) -> dict[str, Any]:
    method = h.bench["methods"][name]
    sketches, photos = h.datasets(ref, seed, validation_size(h.bench, {"kind": "timm"}))
    fingerprint = test_fingerprint(sketches["test"], photos["test"])
    shared = _shared_record(h, ref, name, fingerprint)
    if shared is not None and not stale_cell(h, ref, name, seed, shared):
        # Nothing depends on the seed: the record computed for another seed holds for this one.
        return {**shared, "seed": seed, "wall_s": 0.0}
    torch.manual_seed(seed)  # nothing is trained; this only pins any random layer a tower may have
    dev = resolve_device(h.device)
    model = build_untrained(h, method).to(dev).eval()
    image_size = _untrained_image_size(h, method)
    test = score_test_split(
        model,
        sketches["test"],
        photos["test"],
        device=dev,
        image_size=image_size,
        batch_size=int(h.bench["train"].get("eval_batch_size", 64)),
        dataset_key=dataset_key_of(ref),
    )
    selection = {"split": None, "note": "no training and no model selection"}
    return _record(h, ref, name, seed, test, (sketches["test"], photos["test"]), selection, None)


def _record(h: Harness, ref: DatasetRef, name: str, seed: int, test, split, selection, cfg) -> dict[str, Any]:
    method = h.bench["methods"][name]
    metrics = test.metrics
    if not all(math.isfinite(v) for v in metrics.values()):
        raise RuntimeError(f"{ref.name}/{name}/seed{seed}: non-finite test metrics {metrics}.")
    return {
        "dataset": ref.name,
        "dataset_source": ref.source,
        "method": name,
        "label": method["label"],
        "kind": method["kind"],
        "seed": seed,
        "seed_independent": seed_independent(method),
        "computed_with_seed": seed,
        "split": "test",
        "test_fingerprint": test_fingerprint(*split),
        "metrics": metrics,
        "diagnostics": test.diagnostics,
        "num_queries": len(split[0]),
        "num_gallery": len(split[1]),
        "ranks": test.ranks.tolist(),
        "selection": selection,
        "run_dir": repo_relative(h.run_dir(ref.name, name, seed)) if is_trained(method) else None,
        "device": describe_device(resolve_device(h.device)),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # The device machine gets a copy of the tree without .git: the caller passes the commit there.
        "commit": git_commit() or os.environ.get("FGSBIR_COMMIT"),
        "command": h.command,
        "settings": cell_settings(h, ref, name, seed),
        "config": {
            "method": method,
            "train": _recorded_train(cfg),
            "dataset_kwargs": ref.kwargs,
            "clip": h.clip_info if method["kind"] == "clip" else None,
        },
    }


def run_cell(h: Harness, ref: DatasetRef, name: str, seed: int) -> dict[str, Any]:
    """Train (unless untrained), select on validation, score on test once, write the cell; return its record."""

    t0 = time.perf_counter()
    method = h.bench["methods"][name]
    if seed_independent(method):
        record = _untrained_cell(h, ref, name, seed)
    else:
        record = _trained_cell(h, ref, name, seed)
    if record["computed_with_seed"] == seed:
        record["wall_s"] = round(time.perf_counter() - t0, 2)
    write_record(h.cell_path(ref.name, name, seed), record)
    return record

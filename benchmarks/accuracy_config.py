"""The accuracy benchmark's configuration: the config file, its methods, and the datasets a run names.

A config (``benchmarks/accuracy_configs/*.yaml``, or TOML / JSON with the same keys) holds:

* ``protocol``: a paragraph that says what the run measures and how it differs from the paper; it is
  copied into the results JSON and Markdown;
* ``seeds``, ``datasets`` (names known to ``load_fgsbir``, or dataset folders), ``dataset_kwargs`` (per
  dataset, reader keyword arguments);
* ``train``: ``TrainConfig`` fields shared by every trained method (``validation_size`` > 0: the model is
  chosen on a validation split carved from train, never on test);
* ``methods``: name -> ``label``, ``kind`` and the kind's keys (see :data:`METHOD_KEYS`).

A dataset folder (or a named dataset's folder inside the data folder) that holds a compact export
(``compact_data.py``, marked by :data:`EXPORT_MARK`) is read from the export (:func:`export_folder`,
:func:`read_export`): the rows its raw files give, images stored small, for the GPU machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from datasets import DatasetDict

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from fgsbir_plugin.data import DATASET_NAMES, load_parquet
from fgsbir_plugin.models.efficientnet_lite_import import OFFLINE_PACKAGES
from fgsbir_plugin.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside (a committed record names no machine's folders)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


DEFAULT_CONFIG = REPO / "benchmarks" / "accuracy_configs" / "cpu.yaml"
DEFAULT_RESULTS = REPO / "benchmarks" / "results"

# Published figures (acc@1, acc@10 in percent; None: not published), shown above each dataset's table.
PAPER = {
    "shoes_v1": {
        "DSSA full, as published (Song et al., ICCV 2017)": (61.74, 94.78),
        "Triplet-SN, official code, as published": (52.17, None),
    },
    "chairs_v1": {
        "DSSA full, as published (Song et al., ICCV 2017)": (81.44, 95.88),
        "Triplet-SN, official code, as published": (72.16, None),
    },
}
DATASET_TITLES = {
    "chairv2": "QMUL-Chair-V2",
    "shoev2": "QMUL-Shoe-V2",
    "shoes_v1": "QMUL-Shoe-V1",
    "chairs_v1": "QMUL-Chair-V1",
    "synthetic": "synthetic (generated)",
}
# Where each named real dataset sits inside the data folder.
DATASET_FOLDERS = {
    "chairv2": "chairv2",
    "shoev2": "shoev2",
    "shoes_v1": "qmul_v1/shoes",
    "chairs_v1": "qmul_v1/chairs",
}
TOP_KEYS = {"protocol", "seeds", "datasets", "dataset_kwargs", "train", "methods", "curve_max_k", "steps"}
# The keys each method kind takes (label and kind are common to all).
METHOD_KEYS = {
    "timm": {"model", "model_kwargs", "train"},  # trained by fgsbir_plugin.train.engine.train
    "zero_shot": {"model", "model_kwargs", "weights"},  # a timm model's pooled features, no training
    "clip": {"adapt", "train"},  # open_clip's image tower: adapt none (zero-shot) or ln_proj (trained)
}
# Offline weights a zero_shot method may load (the only ImageNet weights that need no network here).
ZERO_SHOT_WEIGHTS = tuple(OFFLINE_PACKAGES)
# A dataset folder holding this file is a compact export (compact_data.py): read with load_parquet.
EXPORT_MARK = "compact.json"
EXPORT_FORMAT = 1


def _read_mapping(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        return yaml.safe_load(text)
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix == ".json":
        return json.loads(text)
    raise ValueError(f"benchmark config {path} must end in .yaml, .yml, .toml or .json.")


def load_benchmark_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a benchmark config; returns it with defaults filled in (``kind``, ``label``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark config {path} does not exist; pass --config <file>.")
    cfg = _read_mapping(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"benchmark config {path} must hold a mapping with seeds, datasets, train, methods.")
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise ValueError(
            f"benchmark config {path} has unknown keys {sorted(unknown)}; known: {sorted(TOP_KEYS)}."
        )
    for key in ("protocol", "seeds", "datasets", "methods"):
        if not cfg.get(key):
            raise ValueError(f"benchmark config {path} must give {key}.")
    cfg["protocol"] = " ".join(str(cfg["protocol"]).split())
    cfg.setdefault("train", {})
    cfg.setdefault("dataset_kwargs", {})
    for name, method in cfg["methods"].items():
        _check_method(cfg, path, name, method)
    cfg["steps"] = _checked_steps(cfg, path)
    return cfg


def _checked_steps(cfg: dict, path: Path) -> list[list[str]]:
    """The config's ablation steps: ``[parent, child]`` pairs of its methods (the tables pair each child
    with its parent on the same test queries; tests check that each changes one thing)."""
    steps = cfg.get("steps") or []
    if not isinstance(steps, list):
        raise ValueError(f"benchmark config {path}: steps must be a list of [parent, child] method pairs.")
    for step in steps:
        if not (isinstance(step, list) and len(step) == 2 and all(m in cfg["methods"] for m in step)):
            raise ValueError(
                f"benchmark config {path}: step {step!r} must be a [parent, child] pair of methods it "
                f"names; it has {', '.join(cfg['methods'])}."
            )
        if step[0] == step[1]:
            raise ValueError(f"benchmark config {path}: step {step!r} pairs a method with itself.")
    return [list(step) for step in steps]


def _check_method(cfg: dict, path: Path, name: str, method: dict) -> None:
    where = f"{path}: method {name!r}"
    if not isinstance(method, dict):
        raise ValueError(f"{where} must be a mapping with label and kind.")
    method.setdefault("kind", "timm")
    method.setdefault("label", name)
    kind = method["kind"]
    if kind not in METHOD_KEYS:
        raise ValueError(f"{where}: kind must be one of {', '.join(METHOD_KEYS)}, not {kind!r}.")
    extra = set(method) - METHOD_KEYS[kind] - {"label", "kind"}
    if extra:
        raise ValueError(
            f"{where} has keys {sorted(extra)} that a {kind} method does not take; "
            f"it takes label, kind, {', '.join(sorted(METHOD_KEYS[kind]))}."
        )
    if kind in ("timm", "zero_shot") and not method.get("model"):
        raise ValueError(f"{where} needs a timm model name (model: ...).")
    if kind == "zero_shot" and method.get("weights") not in (None, *ZERO_SHOT_WEIGHTS):
        raise ValueError(f"{where}: weights must be one of {ZERO_SHOT_WEIGHTS} (offline ImageNet weights).")
    if kind == "clip" and method.setdefault("adapt", "none") not in ("none", "ln_proj"):
        raise ValueError(f"{where}: adapt must be 'none' (zero-shot) or 'ln_proj' (trained).")
    if is_trained(method):
        _check_train_values(train_values(cfg, method), f"{path}: methods.{name}.train")


def _check_train_values(values: dict[str, Any], source: str) -> None:
    TrainConfig.from_dict(values, source)  # unknown option names fail here
    TrainConfig.from_dict({**values, "data": "check", "out": "check"}, source).validate()
    if not float(values.get("validation_size", TrainConfig.validation_size)) > 0:
        raise ValueError(
            f"{source}: validation_size must be > 0: the model is chosen on a validation split "
            "carved from train, never on test."
        )


def train_values(bench: dict, method: dict) -> dict[str, Any]:
    """The TrainConfig values of a method: the shared ``train`` with the method's own on top."""
    return {**bench.get("train", {}), **(method.get("train") or {})}


def validation_size(bench: dict, method: dict) -> float:
    return float(train_values(bench, method).get("validation_size", TrainConfig.validation_size))


def is_trained(method: dict) -> bool:
    """True for methods trained by the engine (and so chosen on the validation split)."""
    return method["kind"] == "timm" or (method["kind"] == "clip" and method.get("adapt") == "ln_proj")


def seed_independent(method: dict) -> bool:
    """True for methods with nothing trained: their test figure is computed once and holds for every seed."""
    return not is_trained(method)


def has_attention(method: dict) -> bool:
    kwargs = method.get("model_kwargs") or {}
    return method["kind"] == "timm" and kwargs.get("attention", True) is not False


def results_name_for(config_path: str | os.PathLike) -> str:
    """The default results name of a config: ``accuracy_<file stem>`` (``cpu.yaml`` -> ``accuracy_cpu``)."""
    return f"accuracy_{Path(config_path).stem}"


@dataclass(frozen=True)
class DatasetRef:
    """One dataset of a run: ``name`` names its rows and folders; ``source`` is what ``load_fgsbir`` reads.

    ``source`` is a dataset name (then ``data_dir`` is the data folder, or None for generated data) or a
    dataset folder path (then ``data_dir`` is None and ``name`` is the folder's name).
    """

    name: str
    source: str
    data_dir: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def title(self) -> str:
        return DATASET_TITLES.get(self.name, self.name)

    @property
    def is_folder(self) -> bool:
        """True when ``source`` is a dataset folder path rather than a dataset name."""
        return self.source != self.name

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


def dataset_ref(entry: str, bench: dict, data_dir: str | None) -> DatasetRef:
    """The :class:`DatasetRef` of a ``--datasets`` / config entry: a dataset name or a dataset folder."""

    entry = str(entry)
    kwargs_by_name = bench.get("dataset_kwargs") or {}
    if entry.lower() in DATASET_NAMES:
        name = entry.lower()
        folder = None if name == "synthetic" else data_dir
        return DatasetRef(name, name, folder, dict(kwargs_by_name.get(name) or {}))
    path = Path(entry).expanduser()
    name = path.resolve().name
    if not name:
        raise ValueError(f"dataset {entry!r}: a dataset folder needs a name (not the file-system root).")
    return DatasetRef(name, str(path.resolve()), None, dict(kwargs_by_name.get(name) or {}))


def dataset_unavailable(ref: DatasetRef) -> str | None:
    """Why ``ref`` cannot be read here (a short reason), or None when it can."""
    if ref.synthetic:
        return None
    if ref.is_folder:
        return None if Path(ref.source).is_dir() else f"folder {ref.source} does not exist"
    if ref.name not in DATASET_FOLDERS:
        return (
            f"{ref.name!r} is neither a dataset name ({', '.join(DATASET_FOLDERS)}, synthetic) nor a folder"
        )
    if ref.data_dir is None or not Path(ref.data_dir).is_dir():
        return "no data folder (set $FGSBIR_DATA or --data-dir)"
    sub = DATASET_FOLDERS[ref.name]
    if not (Path(ref.data_dir) / sub).is_dir():
        return f"dataset not present (no {sub}/ in the data folder)"
    return None


def is_export(folder: str | Path) -> bool:
    return (Path(folder) / EXPORT_MARK).is_file()


def export_folder(ref: DatasetRef) -> Path | None:
    """The compact export ``ref`` reads from: its folder, or its named dataset's folder in the data folder."""
    if ref.is_folder:
        folder = Path(ref.source)
    elif ref.data_dir is not None and ref.name in DATASET_FOLDERS:
        folder = Path(ref.data_dir) / DATASET_FOLDERS[ref.name]
    else:
        return None
    return folder if is_export(folder) else None


def read_export(folder: str | Path) -> tuple[DatasetDict, DatasetDict]:
    """``(sketches, photos)`` of a compact export, as ``load_fgsbir_pair`` returned them when exported."""
    folder = Path(folder)
    info = json.loads((folder / EXPORT_MARK).read_text(encoding="utf-8"))
    if info.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{folder} is a compact export of format {info.get('format')}, not {EXPORT_FORMAT}; "
            "export it again (python benchmarks/gpu_suite.py --prepare --force)."
        )
    return load_parquet(folder)

"""Training configuration: one dataclass, a YAML/TOML file loader, and flag-over-file merging.

Precedence, lowest first: the dataclass defaults, the ``--config`` file, the command-line flags.
Keys in a file are the field names below (``batch_size`` or ``batch-size``); an unknown key is an
error naming the key, so a typo never silently trains with a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "TrainConfig",
    "load_config_file",
    "merge_config",
    "LOSSES",
    "MINERS",
    "OPTIMIZERS",
    "SCHEDULES",
    "PRECISIONS",
    "BATCH_GROUPS",
    "ANNOTATED_DATASETS",
    "RESUME_OVERRIDABLE",
    "resume_config",
]

# triplet: squared Euclidean distance of L2-normalised embeddings (HOLEF with W = I, so the two share
# their margin's meaning); triplet_l2: the plain (non-squared) Euclidean distance; holef: the learned energy.
LOSSES = ("triplet", "triplet_l2", "holef")
MINERS = ("none", "batch-hard", "semi-hard")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
CACHE_MODES = ("auto", "yes", "no")
# How a batch's photos are chosen: at random (none), or in sets of look-alikes read from the human
# annotations of QMUL-Shoe-V1 / QMUL-Chair-V1 (annotated: the photos annotators compared with each sketch).
BATCH_GROUPS = ("none", "annotated")
# The datasets that ship human-annotated triplets; fgsbir_plugin.data.load.annotated_triplets reads them
# and refuses any other name, and TrainConfig.validate refuses --batch-groups annotated for the others.
ANNOTATED_DATASETS = ("shoes_v1", "chairs_v1")

# Keywords of load_fgsbir_pair that training sets itself, so --data-kwargs must not repeat them. (``lenient``
# is not one: a damaged image's error offers it, and {"lenient": true} skips and counts such files.)
_DATA_OPTIONS = frozenset({"name_or_path", "data_dir", "validation_size", "seed"})

# Settings that do not change what is computed, so --resume may change them.
RESUME_OVERRIDABLE = frozenset(
    {
        "device",
        "workers",
        "progress",
        "stop_after_steps",
        "cache",
        "cache_limit_mb",
        "eval_batch_size",
        "log_every",
        "tensorboard",
        "log_csv",
        "data_dir",
        "resume",
    }
)


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as ``run_config.json`` in the run folder.

    Learning rates are per optimiser step (after gradient accumulation); ``warmup_steps`` and
    ``max_steps`` count optimiser steps; ``batch_size`` is sketches per process per micro-batch.
    ``freeze`` names a frozen trunk prefix whose outputs are computed once for ``cache_views`` augmented
    views of every image and cached (see :mod:`fgsbir_plugin.train.frozen`).
    """

    data: str | None = None
    out: str | None = None
    data_dir: str | None = None
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    validation_size: float = 0.1
    model: str = "dssa"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    loss: str = "triplet"
    margin: float = 0.2
    holef_lambda: float = 5e-4
    miner: str = "none"
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    k_per_photo: int = 1
    batch_groups: str = "none"
    group_size: int = 4
    optimizer: str = "adamw"
    lr: float = 1e-4
    trunk_lr: float | None = None
    distance_lr: float | None = None
    weight_decay: float = 1e-2
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = None
    freeze: str | None = None
    cache_views: int = 6
    image_size: int | None = None
    hflip: float = 0.5
    stroke_jitter: float = 0.0
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    grad_accum: int = 1
    workers: int = 0
    cache: str = "auto"
    cache_limit_mb: float = 2048.0
    eval_batch_size: int = 64
    early_stop: int | None = None
    eval_every: int | None = None
    save_every: int = 50
    log_every: int = 10
    log_csv: bool = False
    tensorboard: bool = False
    progress: bool = True
    stop_after_steps: int | None = None
    resume: bool = False

    def validate(self) -> TrainConfig:
        """Raise ValueError with one sentence for the first bad value; return self."""

        def bad(name: str, why: str) -> None:
            raise ValueError(f"{name} = {getattr(self, name)!r} is invalid: {why}.")

        if not self.data and not self.resume:  # a resumed run reads its dataset from run_config.json
            bad(
                "data",
                "name a dataset (chairv2, shoev2, shoes_v1, chairs_v1, sketchy, synthetic) or a folder",
            )
        if not self.out:
            bad("out", "give the run folder to write, e.g. --out runs/x")
        choices = {
            "loss": LOSSES,
            "miner": MINERS,
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "precision": PRECISIONS,
            "cache": CACHE_MODES,
            "batch_groups": BATCH_GROUPS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(name, f"choose one of {', '.join(allowed)}")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            bad("lr", "the learning rate must be a positive number")
        if self.distance_lr is not None and not self.distance_lr >= 0:
            bad("distance_lr", "the learning rate of HOLEF W must be >= 0 (0 keeps W fixed)")
        if self.trunk_lr is not None and not self.trunk_lr >= 0:
            bad("trunk_lr", "the trunk learning rate must be >= 0 (0 freezes the trunk)")
        positive_ints = [
            "epochs",
            "batch_size",
            "k_per_photo",
            "grad_accum",
            "eval_batch_size",
            "log_every",
            "cache_views",
        ]
        for name in positive_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "it must be a positive integer")
        for name in ("max_steps", "stop_after_steps", "early_stop", "image_size", "eval_every"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                bad(name, "it must be a positive integer or unset")
        for name in ("warmup_steps", "workers", "save_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                bad(name, "it must be an integer >= 0")
        for name in ("weight_decay", "margin", "holef_lambda", "momentum"):
            if not getattr(self, name) >= 0:
                bad(name, "it must be >= 0")
        if self.freeze is not None and self.freeze != "trunk" and not self.freeze.startswith("trunk.blocks."):
            bad(
                "freeze",
                "name 'trunk' or 'trunk.blocks.K' (the stem and blocks[:K] of an EfficientNet trunk)",
            )
        if self.freeze is not None and self.workers:
            bad("workers", "a frozen trunk trains on cached features in memory: use --workers 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            bad("grad_clip", "it must be a positive gradient norm or unset")
        for name in ("hflip", "stroke_jitter"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "it is a probability and must be in [0, 1]")
        if not 0.0 <= self.validation_size < 1.0:
            bad("validation_size", "it is the fraction of train photos held out and must be in [0, 1)")
        if self.batch_size % self.k_per_photo:
            bad("batch_size", f"it must be a multiple of k_per_photo ({self.k_per_photo})")
        photos_per_batch = self.batch_size // self.k_per_photo
        if self.batch_groups != "none" and (
            not isinstance(self.group_size, int)
            or isinstance(self.group_size, bool)
            or not 2 <= self.group_size <= photos_per_batch
        ):
            bad("group_size", f"it must be an integer from 2 to the {photos_per_batch} photos of a batch")
        if (
            self.batch_groups == "annotated"
            and self.data
            and str(self.data).lower() not in ANNOTATED_DATASETS
        ):
            bad(
                "batch_groups",
                f"it needs a dataset with annotated triplets ({', '.join(ANNOTATED_DATASETS)}) and "
                f"{self.data!r} has none; use --batch-groups none",
            )
        for name in ("model_kwargs", "data_kwargs"):
            if not isinstance(getattr(self, name), dict):
                bad(name, "it must be a mapping (a JSON object on the command line)")
        own = sorted(set(self.data_kwargs) & _DATA_OPTIONS)
        if own:
            bad(
                "data_kwargs",
                f"it sets {', '.join(own)}, which training sets itself; use the training options instead",
            )
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise FileNotFoundError(
                f"data directory {self.data_dir} does not exist; pass --data-dir pointing at the dataset folder."
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        return cls(**_check_keys(values, source))


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def _check_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in _FIELDS:
            raise ValueError(
                f"unknown option {key!r} in {source}; valid options are: {', '.join(sorted(_FIELDS))}."
            )
        out[name] = value
    return out


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON file of training options.

    Returns the options as a dict keyed by field name; raises ValueError for an unknown key or a
    file that is not a mapping, FileNotFoundError when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix in (".yaml", ".yml"):
            values = yaml.safe_load(text)
        elif suffix == ".toml":
            values = tomllib.loads(text)
        elif suffix == ".json":
            values = json.loads(text)
        else:
            raise ValueError(f"config file {path} must end in .yaml, .yml, .toml or .json.")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        # safe_load refuses Python tags (!!python/object ...) with a ConstructorError, a YAMLError.
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"config file {path} is not valid {suffix[1:].upper()} ({first_line}); "
            "write plain option: value pairs (no tags)."
        ) from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(
            f"config file {path} must hold a mapping of option: value, not {type(values).__name__}."
        )
    return _check_keys(values, f"config file {path}")


def merge_config(file_values: dict[str, Any] | None, flag_values: dict[str, Any]) -> TrainConfig:
    """Defaults < file < flags. ``flag_values`` holds only the flags the user gave."""
    merged = dict(file_values or {})
    merged.update(_check_keys(flag_values, "the command line"))
    return TrainConfig.from_dict(merged)


def resume_config(cfg: TrainConfig, saved: dict[str, Any], source: str) -> TrainConfig:
    """The configuration a ``--resume`` continues with: the ``saved`` settings of the run, with this
    invocation's runtime settings (:data:`RESUME_OVERRIDABLE`) on top.

    Raises ValueError naming the options given now that differ from the saved ones and may not change.
    """
    stored = TrainConfig.from_dict(saved, source).to_dict()
    given, defaults = cfg.to_dict(), TrainConfig().to_dict()
    changed = [
        k
        for k in given
        if given[k] != stored[k] and k not in RESUME_OVERRIDABLE and k != "out" and given[k] != defaults[k]
    ]  # options left at their default were not given
    if changed:
        raise ValueError(
            f"--resume continues {cfg.out} with its saved settings, but {', '.join(changed)} differ; "
            "drop those options or start a new --out folder."
        )
    merged = dict(stored)
    # Runtime settings come from this invocation (a stored --stop-after-steps must not stop again);
    # the data folder may move, but stays as stored when not given.
    merged.update({k: given[k] for k in RESUME_OVERRIDABLE if k != "data_dir" or given[k] is not None})
    merged["out"], merged["resume"] = str(Path(cfg.out)), True
    return TrainConfig.from_dict(merged)

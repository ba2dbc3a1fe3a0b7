"""Set-up of a training run: everything the loop needs, built once, in a fixed order.

The order matters for reproducibility: the global RNG is seeded first, then the model is built
(its initialisation draws from that RNG), then the input pipeline; a resumed run then restores the
saved RNG state over all of it. :func:`start_session` returns a :class:`TrainSession` that the
steps in :mod:`~fgsbir_plugin.train.loop` work on.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._common import atomic_write_bytes
from ..data.load import annotated_triplets
from ..data.sampling import PairBatchSampler, PairDataset, look_alikes, pair_index
from ..data.transforms import ImageTable, ImageTransform, load_size_for
from ..embedding import model_input_spec
from ..run_folder import RunFolder
from ..runtime import resolve_device
from . import ddp
from .build import (
    CachedPairModel,
    PairModel,
    build_loss,
    build_model,
    check_model_name,
    load_datasets,
    loss_distance,
)
from .checkpoint import has_training_state, load_training_state, restore_rng_state
from .config import RESUME_OVERRIDABLE, TrainConfig, resume_config
from .frozen import CachedPairDataset, FrozenTrunk, cached_views
from .optim import build_optimizer
from .run_log import RunLog

__all__ = [
    "TrainSession",
    "start_session",
    "new_progress",
    "SmallValidationWarning",
    "MIN_VALIDATION_SKETCHES",
]

# Fewer validation sketches than this, and picking the best model on their acc@1 is mostly chance.
MIN_VALIDATION_SKETCHES = 5


class SmallValidationWarning(UserWarning):
    """The validation split is too small for its acc@1 to tell models apart (see ``MIN_VALIDATION_SKETCHES``)."""


def new_progress() -> dict[str, Any]:
    """Where a run stands; saved in ``state/`` and restored on ``--resume``."""
    return {
        "epoch": 0,
        "step": 0,
        "batch_in_epoch": 0,
        "best": None,
        "best_step": None,
        "bad_validations": 0,
        "done": False,
    }


@dataclass
class TrainSession:
    """One training run, set up: configuration, where it runs, what it trains, and what it reads."""

    cfg: TrainConfig
    run: RunFolder
    device: torch.device
    info: ddp.DistInfo
    model: torch.nn.Module
    injected: bool
    loss_fn: torch.nn.Module
    miner: torch.nn.Module | None
    pair: PairModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    image_size: int
    sketches: Any
    photos: Any
    dataset: PairDataset | CachedPairDataset
    sampler: PairBatchSampler
    batches_per_epoch: int
    total_steps: int
    val_tables: tuple[ImageTable, ImageTable] | None
    frozen: FrozenTrunk | None = None
    val_cache: tuple[torch.Tensor, torch.Tensor] | None = None
    progress: dict[str, Any] = field(default_factory=new_progress)
    net: torch.nn.Module | None = None
    log: RunLog | None = None
    running_loss: float | None = None

    @property
    def main(self) -> bool:
        return self.info.rank == 0

    @property
    def has_validation(self) -> bool:
        return "validation" in self.sketches and len(self.sketches["validation"]) > 0

    def set_train_mode(self, training: bool) -> None:
        """Train or eval mode for the trained modules; a frozen trunk prefix and its BatchNorms stay in eval."""
        self.pair.train(training)
        if self.frozen is not None:
            self.frozen.set_mode(training)

    @property
    def distance(self):
        """The distance the run ranks with: the model's HOLEF, else the loss's, else None (Euclidean)."""
        d = getattr(self.model, "distance", None)
        return d if d is not None else loss_distance(self.loss_fn)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _checked_config(cfg: TrainConfig, run: RunFolder) -> TrainConfig:
    """``cfg`` validated; on ``--resume`` the saved settings of the run in ``run``."""
    cfg.validate()
    if cfg.resume:
        if not run.run_config_path.is_file() or not has_training_state(run.state_dir):
            raise FileNotFoundError(
                f"--resume: {run.path} holds no run to resume (no {RunFolder.RUN_CONFIG} and {RunFolder.STATE}/)."
            )
        saved = run.read_run_config()
        return resume_config(cfg, saved, str(run.run_config_path)).validate()
    if run.holds_run():
        raise ValueError(
            f"{run.path} already holds a run; pass --resume to continue it or choose another --out."
        )
    return cfg


def _record_input_size(model: torch.nn.Module, spec: dict[str, Any], image_size: int | None) -> None:
    """Record the trained input size so that `fgsbir eval` and timm's data config use it."""
    if image_size is None:
        return
    pc = dict(model.pretrained_cfg)
    pc["input_size"] = (spec["in_chans"], spec["image_size"], spec["image_size"])
    model.pretrained_cfg = pc


def _cached_pipeline(
    cfg: TrainConfig, frozen: FrozenTrunk, spec: dict[str, Any], tables, transforms, device: torch.device
):
    """(CachedPairDataset of the train split, (sketch, photo) view-0 outputs of the validation split or None).

    ``tables``: (train sketches, train photos, validation sketches or None, validation photos or None).
    """
    s_table, p_table, vs_table, vp_table = tables
    s_tf, p_tf, eval_tf = transforms
    settings = (frozen.fingerprint(), cfg.data, cfg.data_dir, json.dumps(cfg.data_kwargs, sort_keys=True))
    settings += (spec["image_size"], spec["crop_pct"], tuple(spec["mean"]), tuple(spec["std"]))

    def views(table, column, tf, n):
        key = settings + (column, tf.hflip, tf.stroke_jitter)
        ids = list(table.dataset[f"{column}_id"])
        return cached_views(frozen, table, ids, n, tf, eval_tf, device, cfg.eval_batch_size, memo_key=key)

    s2p = pair_index(list(s_table.dataset["photo_id"]), list(p_table.dataset["photo_id"]))
    train = CachedPairDataset(
        views(s_table, "sketch", s_tf, cfg.cache_views),
        views(p_table, "photo", p_tf, cfg.cache_views),
        s2p,
        cfg.seed,
    )
    val = None
    if vs_table is not None:
        val = (views(vs_table, "sketch", s_tf, 1)[:, 0], views(vp_table, "photo", p_tf, 1)[:, 0])
    return train, val


def _input_pipeline(
    cfg: TrainConfig,
    spec: dict[str, Any],
    sketches,
    photos,
    info: ddp.DistInfo,
    frozen: FrozenTrunk | None = None,
    device: torch.device | None = None,
):
    """(pair dataset, batch sampler, batches per epoch, total optimiser steps, validation tables, val cache).

    Images are decoded once (cached in memory when small) and augmented as tensors per sample; with a frozen
    trunk prefix, its outputs for ``cache_views`` views per image are computed once instead.
    """
    load = load_size_for(spec["image_size"], spec["crop_pct"])
    cache = {"auto": None, "yes": True, "no": False}[cfg.cache]
    c = spec["in_chans"]
    s_table = ImageTable(sketches["train"], "sketch", load, c, cache, cfg.cache_limit_mb)
    p_table = ImageTable(photos["train"], "photo", load, c, cache, cfg.cache_limit_mb)
    s2p = pair_index(list(sketches["train"]["photo_id"]), list(photos["train"]["photo_id"]))
    mean, std, size = spec["mean"], spec["std"], spec["image_size"]
    s_tf = ImageTransform(size, mean, std, c, train=True, hflip=cfg.hflip, stroke_jitter=cfg.stroke_jitter)
    p_tf = ImageTransform(size, mean, std, c, train=True, hflip=cfg.hflip)
    dataset = PairDataset(s_table, p_table, s2p, s_tf, p_tf, seed=cfg.seed)
    groups = _batch_groups(cfg, sketches["train"], photos["train"])
    sampler = PairBatchSampler(
        s2p,
        cfg.batch_size,
        k=cfg.k_per_photo,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        groups=groups,
        group_size=cfg.group_size,  # used only with groups
    )
    # Accumulation groups never straddle epochs: the epoch is cut to whole optimiser steps.
    batches_per_epoch = (sampler.batches_per_epoch // cfg.grad_accum) * cfg.grad_accum
    steps_per_epoch = batches_per_epoch // cfg.grad_accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"one epoch gives fewer than {cfg.grad_accum} batches of {cfg.batch_size}; "
            "lower --batch-size or --grad-accum."
        )
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    val_tables = None
    if "validation" in sketches and len(sketches["validation"]) > 0 and info.rank == 0:
        n = len(sketches["validation"])
        if n < MIN_VALIDATION_SKETCHES:
            warnings.warn(
                f"the validation split has only {n} sketch{'es' if n > 1 else ''}: its acc@1 moves in steps "
                f"of {100 / n:.0f} points, so the best model is picked almost by chance; raise "
                "--validation-size (or give your own validation split more photos).",
                SmallValidationWarning,
                stacklevel=2,
            )
        val_tables = (
            ImageTable(sketches["validation"], "sketch", load, c, cache, cfg.cache_limit_mb),
            ImageTable(photos["validation"], "photo", load, c, cache, cfg.cache_limit_mb),
        )
    val_cache = None
    if frozen is not None:
        eval_tf = ImageTransform(size, mean, std, c)
        tables = (s_table, p_table, *(val_tables or (None, None)))
        dataset, val_cache = _cached_pipeline(cfg, frozen, spec, tables, (s_tf, p_tf, eval_tf), device)
    return dataset, sampler, batches_per_epoch, total_steps, val_tables, val_cache


def _batch_groups(cfg: TrainConfig, sketches, photos) -> list[list[int]] | None:
    """Look-alike photos per training photo for ``--batch-groups annotated`` (None for ``none``)."""
    if cfg.batch_groups == "none":
        return None
    # TrainConfig.validate has checked that cfg.data names a dataset with annotations (ANNOTATED_DATASETS).
    triplets = annotated_triplets(str(cfg.data).lower(), cfg.data_dir)
    if triplets is None or "train" not in triplets:
        raise FileNotFoundError(
            f"{cfg.data}: the annotation file with its triplets is missing from the data folder; "
            "copy <category>_annotation.json beside the .mat files, or use --batch-groups none."
        )
    return look_alikes(
        triplets["train"], list(sketches["sketch_id"]), list(sketches["photo_id"]), list(photos["photo_id"])
    )


def _check_saved_state(s: TrainSession, state: dict[str, Any]) -> None:
    """The state in ``state/`` belongs to this run and stands where a run can stand; else one sentence."""
    where, fix = s.run.state_dir, "restore the run folder from a backup or start a new run"
    missing = [k for k in ("optimizer", "rng", "progress") if k not in state]
    if missing:
        raise ValueError(f"the training state in {where} lacks {', '.join(missing)}; {fix}.")
    saved_cfg = state.get("config")
    if isinstance(saved_cfg, dict):
        ignore = RESUME_OVERRIDABLE | {"out"}
        now = s.cfg.to_dict()
        differ = sorted(k for k in now if k not in ignore and saved_cfg.get(k, now[k]) != now[k])
        if differ:
            raise ValueError(
                f"{s.run.run_config_path} does not match the settings saved in {where} ({', '.join(differ)} "
                f"differ); {fix}."
            )
    progress = state["progress"]
    bounds = {
        "epoch": (0, None),
        "step": (0, s.total_steps),
        "batch_in_epoch": (0, s.batches_per_epoch),
        "bad_validations": (0, None),
    }
    for key, (low, high) in bounds.items():
        v = progress.get(key) if isinstance(progress, dict) else None
        if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
            limit = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(
                f"the saved progress in {where} has {key} = {v!r}, which must be {limit}; {fix}."
            )


def _restore_or_start(s: TrainSession) -> None:
    """Resume: load the saved weights, optimiser, scaler, progress and RNG. New run: write run_config.json."""
    if s.cfg.resume:
        model_state, state = load_training_state(s.run.state_dir)
        _check_saved_state(s, state)
        if s.main:
            for stale in s.run.stale_state_folders():
                shutil.rmtree(stale, ignore_errors=True)
        try:
            s.pair.load_state_dict({k: v.to(s.device) for k, v in model_state.items()})
            s.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                s.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"the state in {s.run.state_dir} does not fit the model and optimiser of "
                f"{s.run.run_config_path} ({first}); restore the run folder or start a new run."
            ) from None
        s.progress.update(state["progress"])
        rng = state["rng"]
        restore_rng_state(rng[s.info.rank] if isinstance(rng, list) else rng)
    elif s.main:
        s.run.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(s.cfg.to_dict(), indent=2) + "\n"
        atomic_write_bytes(s.run.run_config_path, text.encode())
    ddp.barrier()


def _wrap(s: TrainSession) -> torch.nn.Module:
    """The module the loop calls: the pair model, under DDP when distributed, compiled when asked."""
    net: torch.nn.Module = s.pair
    if s.info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            s.pair, device_ids=[s.device.index] if s.device.type == "cuda" else None
        )
    if s.cfg.compile:
        net = torch.compile(net)
    return net


def start_session(cfg: TrainConfig, datasets=None, model: torch.nn.Module | None = None) -> TrainSession:
    """Validate ``cfg``, build the model, loss, optimiser and input pipeline, restore a resumed run."""
    run = RunFolder(Path(cfg.out) if cfg.out else Path())
    cfg = _checked_config(cfg, run)
    injected = model is not None
    if not injected:
        check_model_name(cfg.model)  # before the (possibly slow) data loading
    device = resolve_device(cfg.device)
    info = ddp.init_distributed(device)
    if info.distributed and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    _seed_everything(cfg.seed)
    sketches, photos = datasets if datasets is not None else load_datasets(cfg)
    if "train" not in sketches or "train" not in photos:
        raise ValueError("the dataset has no train split; check --data.")
    if not injected:
        model = build_model(cfg)
    spec = model_input_spec(model, cfg.image_size)
    _record_input_size(model, spec, cfg.image_size)
    frozen = FrozenTrunk(model, cfg.freeze) if cfg.freeze else None
    loss_fn, miner, _ = build_loss(cfg, model)
    pair = (PairModel(model, loss_fn) if frozen is None else CachedPairModel(model, loss_fn, frozen)).to(
        device
    )
    if cfg.channels_last:
        pair = pair.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, pair)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    dataset, sampler, batches_per_epoch, total_steps, val_tables, val_cache = _input_pipeline(
        cfg, spec, sketches, photos, info, frozen, device
    )
    s = TrainSession(
        cfg=cfg,
        run=run,
        device=device,
        info=info,
        model=model,
        injected=injected,
        loss_fn=loss_fn,
        miner=miner,
        pair=pair,
        optimizer=optimizer,
        scaler=scaler,
        amp_dtype=_autocast_dtype(cfg.precision),
        image_size=spec["image_size"],
        sketches=sketches,
        photos=photos,
        dataset=dataset,
        sampler=sampler,
        batches_per_epoch=batches_per_epoch,
        total_steps=total_steps,
        val_tables=val_tables,
        frozen=frozen,
        val_cache=val_cache,
    )
    _restore_or_start(s)
    s.net = _wrap(s)
    s.log = RunLog(run, cfg.log_csv, cfg.tensorboard, s.main)
    if cfg.resume:
        s.log.truncate_after(s.progress["step"])
    return s

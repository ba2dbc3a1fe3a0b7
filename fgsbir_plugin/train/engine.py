"""The training loop behind ``fgsbir train``.

One step: a batch of B sketches with their B photos (P distinct photos, see
:class:`~fgsbir_plugin.data.sampling.PairBatchSampler`), both embedded by the model (its sketch and
photo trunks when they are separate), then a PML loss over cross-modal triplets only: the sketch
embeddings are the anchors and the photo embeddings the reference set (``ref_emb``), with
``labels = ref_labels = photo index``, optionally mined (batch-hard / semi-hard).

The run folder (``--out``) receives ``run_config.json``, ``log.jsonl`` (+ ``log.csv``), the best
model in ``model/`` (chosen on the validation split carved from train, by acc@1 then acc@10; never
the test split) and the resumable state in ``state/``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._common import atomic_write_bytes
from ..data.sampling import PairBatchSampler, PairDataset, collate_pairs, pair_index
from ..data.transforms import ImageTable, ImageTransform, load_size_for
from ..embedding import embedding_dim, forward_embed, model_input_spec
from ..run_folder import RunFolder
from ..runtime import resolve_device
from . import ddp
from .checkpoint import (
    capture_rng_state,
    has_training_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)
from .config import RESUME_OVERRIDABLE, TrainConfig
from .evaluate import evaluate_split

__all__ = [
    "train",
    "build_model",
    "build_loss",
    "lr_factor",
    "load_datasets",
    "PairModel",
]

_TRUNK_WORDS = ("trunk", "backbone", "encoder")


def check_model_name(name: str) -> None:
    """ValueError unless timm (with the DSSA family registered) knows ``name``."""
    import timm

    import fgsbir_plugin  # noqa: F401  (registers the DSSA models)

    if not timm.is_model(name) and not name.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(
            f"unknown model {name!r}; pick a timm model name, e.g. one of timm.list_models('dssa*')."
        )


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """``timm.create_model(cfg.model, pretrained=cfg.pretrained, num_classes=0, **cfg.model_kwargs)``.

    With ``loss = holef`` the model is asked for ``holef=True`` so that it owns ``model.distance``
    (HOLEF W travels with the weights). A plain timm model is built with ``num_classes=0`` so that
    ``model(x)`` is the pooled embedding.
    """
    import timm

    check_model_name(cfg.model)
    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("num_classes", 0)
    if cfg.loss == "holef":
        kwargs.setdefault("holef", True)
    try:
        return timm.create_model(cfg.model, pretrained=cfg.pretrained, **kwargs)
    except (TypeError, NotImplementedError):
        if kwargs.get("holef") and "holef" not in cfg.model_kwargs:
            # The model has no HOLEF support (a plain timm trunk): HOLEF W lives in the loss instead.
            kwargs.pop("holef")
            return timm.create_model(cfg.model, pretrained=cfg.pretrained, **kwargs)
        raise


def _make_holef_loss(distance, margin: float, lam: float):
    """``HOLEFLoss`` (triplet on the HOLEF energy + ``lam * ||W - I||_F^2``) sharing ``distance``."""
    from ..holef import HOLEFLoss

    return HOLEFLoss(distance=distance, margin=margin, reg_weight=lam)


def build_loss(
    cfg: TrainConfig, model: torch.nn.Module
) -> tuple[torch.nn.Module, torch.nn.Module | None, Any]:
    """(loss, miner or None, distance) for ``cfg.loss`` / ``cfg.miner``.

    triplet: PML ``TripletMarginLoss(margin)`` on L2-normalised embeddings (Euclidean distance).
    holef: ``HOLEFLoss`` with the model's ``distance`` (a HOLEFDistance) when the model has one,
    else a new ``HOLEFDistance(num_features)`` held by the loss. The miner uses the same distance.
    """
    from pytorch_metric_learning import distances, losses, miners

    if cfg.loss == "triplet":
        distance = distances.LpDistance(normalize_embeddings=True, p=2, power=1)
        loss = losses.TripletMarginLoss(margin=cfg.margin, distance=distance)
    else:
        distance = getattr(model, "distance", None)
        if distance is None:
            from ..holef import HOLEFDistance

            distance = HOLEFDistance(embedding_dim(model))
        loss = _make_holef_loss(distance, cfg.margin, cfg.holef_lambda)
    miner = None
    if cfg.miner == "batch-hard":
        miner = miners.BatchHardMiner(distance=distance)
    elif cfg.miner == "semi-hard":
        miner = miners.TripletMarginMiner(margin=cfg.margin, type_of_triplets="semihard", distance=distance)
    return loss, miner, distance


class PairModel(torch.nn.Module):
    """Embeds a sketch batch and a photo batch in one ``forward`` (one DDP forward per step).

    Holds the loss too, so that loss parameters (a HOLEF W not owned by the model) are trained,
    synchronised by DDP and checkpointed like the model's.
    """

    def __init__(self, model: torch.nn.Module, loss: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_embed(self.model, sketch, "sketch"), forward_embed(self.model, photo, "photo")


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based) of ``total``.

    Linear warm-up from 1/(warmup+1) over ``warmup`` steps, then ``constant``, ``cosine`` (to 0 at
    ``total``) or ``onecycle`` (linear decay to 0 at ``total``, after the warm-up ramp).
    """
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0 - t  # onecycle: ramp up (warm-up), then straight down


def _param_groups(cfg: TrainConfig, pair: PairModel) -> list[dict[str, Any]]:
    trunk, head, no_decay = [], [], []
    names = [n for n, _ in pair.model.named_parameters()]
    has_trunk = any(any(w in n.split(".")[0] for w in _TRUNK_WORDS) for n in names)
    for name, p in pair.model.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".")[0]
        if top == "distance":
            no_decay.append(p)  # HOLEF W has its own regulariser
        elif not has_trunk or any(w in top for w in _TRUNK_WORDS):
            trunk.append(p)  # a plain timm model is all trunk
        else:
            head.append(p)
    # The loss may share the model's HOLEF distance: add only parameters not already grouped.
    grouped = {id(p) for p in trunk + head + no_decay}
    no_decay += [p for p in pair.loss.parameters() if p.requires_grad and id(p) not in grouped]
    trunk_lr = cfg.lr if cfg.trunk_lr is None else cfg.trunk_lr
    groups = [
        {"params": trunk, "lr": trunk_lr, "weight_decay": cfg.weight_decay, "name": "trunk"},
        {"params": head, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "head"},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0, "name": "distance"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: TrainConfig, pair: PairModel) -> torch.optim.Optimizer:
    groups = _param_groups(cfg, pair)
    for g in groups:
        g["base_lr"] = g["lr"]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def load_datasets(cfg: TrainConfig):
    """(sketches, photos) DatasetDicts with the validation split carved from train by photo."""
    from ..data import load_fgsbir_pair

    return load_fgsbir_pair(
        cfg.data, cfg.data_dir, validation_size=cfg.validation_size, seed=cfg.seed, **cfg.data_kwargs
    )


class _RunLog:
    """``log.jsonl`` (always), ``log.csv`` and TensorBoard (optional) of one run, on the main process."""

    def __init__(self, out: Path, csv_too: bool, tensorboard: bool, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = out / "log.jsonl"
        self.csv_path = out / "log.csv" if csv_too else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                print("fgsbir train: TensorBoard is not installed; logging to log.jsonl only.")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            flat = {k: v for k, v in record.items() if not isinstance(v, dict)}
            flat.update({f"val_{k}": v for k, v in record.get("val", {}).items()})
            with open(self.csv_path, "a", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=sorted(flat))
                if new:
                    w.writeheader()
                w.writerow(flat)
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, int | float) and k != "step":
                    self.tb.add_scalar(f"{record.get('event', 'train')}/{k}", v, step)
            for k, v in record.get("val", {}).items():
                self.tb.add_scalar(f"val/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _model_args(cfg: TrainConfig, model: torch.nn.Module) -> dict[str, Any]:
    args = dict(cfg.model_kwargs)
    if getattr(model, "distance", None) is not None:
        args["holef"] = True
    return args


def _resolve_resume(cfg: TrainConfig, out: Path) -> TrainConfig:
    saved_path = out / "run_config.json"
    if not saved_path.is_file() or not has_training_state(out / "state"):
        raise FileNotFoundError(f"--resume: {out} holds no run to resume (no run_config.json and state/).")
    saved = TrainConfig.from_dict(json.loads(saved_path.read_text(encoding="utf-8")), str(saved_path))
    given, stored = cfg.to_dict(), saved.to_dict()
    changed = [k for k in given if given[k] != stored[k] and k not in RESUME_OVERRIDABLE and k != "out"]
    defaults = TrainConfig().to_dict()
    changed = [k for k in changed if given[k] != defaults[k]]  # options left at their default were not given
    if changed:
        raise ValueError(
            f"--resume continues {out} with its saved settings, but {', '.join(changed)} differ; "
            "drop those options or start a new --out folder."
        )
    merged = dict(stored)
    # Runtime settings come from this invocation (a stored --stop-after-steps must not stop again);
    # the data folder may move, but stays as stored when not given.
    merged.update({k: given[k] for k in RESUME_OVERRIDABLE if k != "data_dir" or given[k] is not None})
    merged["out"], merged["resume"] = str(out), True
    return TrainConfig.from_dict(merged)


def train(cfg: TrainConfig, datasets=None, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns a summary (best validation metrics, steps, run folder).

    Args:
        cfg: a validated :class:`TrainConfig`.
        datasets: optional ``(sketches, photos)`` DatasetDicts to use instead of ``load_fgsbir``.
        model: optional prebuilt embedder (``model(x, modality=...)`` -> ``[B, D]``, with
            ``pretrained_cfg`` and ``num_features``) trained instead of ``timm.create_model(cfg.model)``,
            e.g. the CLIP baseline; ``cfg.model`` is then only a label. Its best weights are saved as
            a state dict, ``INJECTED_MODEL_FILE`` in the run folder, instead of ``model/``; on
            ``resume`` pass a freshly built model of the same architecture.
    """
    cfg.validate()
    out = Path(cfg.out)
    injected = model is not None
    if cfg.resume:
        cfg = _resolve_resume(cfg, out)
    elif (
        (out / "state").exists() or (out / "model").exists() or (out / RunFolder.INJECTED_MODEL_FILE).exists()
    ):
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out.")
    if not injected:
        check_model_name(cfg.model)  # before the (possibly slow) data loading
    device = resolve_device(cfg.device)
    info = ddp.init_distributed(device)
    if info.distributed and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    main = info.rank == 0
    _seed_everything(cfg.seed)

    if datasets is None:
        datasets = load_datasets(cfg)
    sketches, photos = datasets
    if "train" not in sketches or "train" not in photos:
        raise ValueError("the dataset has no train split; check --data.")
    has_val = "validation" in sketches and len(sketches["validation"]) > 0

    if not injected:
        model = build_model(cfg)
    spec = model_input_spec(model, cfg.image_size)
    if cfg.image_size is not None:
        # Record the trained input size so that `fgsbir eval` and timm's data config use it.
        pc = dict(model.pretrained_cfg)
        pc["input_size"] = (spec["in_chans"], spec["image_size"], spec["image_size"])
        model.pretrained_cfg = pc
    loss_fn, miner, _ = build_loss(cfg, model)
    pair = PairModel(model, loss_fn).to(device)
    if cfg.channels_last:
        pair = pair.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, pair)
    amp_dtype = _autocast_dtype(cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    # Input pipeline: decode once (cached in memory when small), augment tensors per sample.
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
    sampler = PairBatchSampler(
        s2p, cfg.batch_size, k=cfg.k_per_photo, seed=cfg.seed, rank=info.rank, world_size=info.world_size
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
    if has_val and main:
        val_tables = (
            ImageTable(sketches["validation"], "sketch", load, c, cache, cfg.cache_limit_mb),
            ImageTable(photos["validation"], "photo", load, c, cache, cfg.cache_limit_mb),
        )

    progress: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "batch_in_epoch": 0,
        "best": None,
        "best_step": None,
        "bad_validations": 0,
        "done": False,
    }
    if cfg.resume:
        model_state, state = load_training_state(out / "state")
        if main:
            # Half-written state folders of a run killed mid-save (the complete one was kept).
            for stale in out.glob(".state.*"):
                if stale.is_dir() and stale.name != ".state.old":
                    shutil.rmtree(stale, ignore_errors=True)
        pair.load_state_dict({k: v.to(device) for k, v in model_state.items()})
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        progress.update(state["progress"])
        restore_rng_state(state["rng"][info.rank] if isinstance(state["rng"], list) else state["rng"])
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "run_config.json", (json.dumps(cfg.to_dict(), indent=2) + "\n").encode())
    ddp.barrier()

    net: torch.nn.Module = pair
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            pair, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        net = torch.compile(net)

    loader_kwargs: dict[str, Any] = {"num_workers": cfg.workers, "pin_memory": device.type == "cuda"}
    if cfg.workers > 0:
        loader_kwargs["persistent_workers"] = False
    log = _RunLog(out, cfg.log_csv, cfg.tensorboard, main)

    def save_state() -> None:
        rng = capture_rng_state()
        if info.distributed:
            gathered: list[Any] = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, json.dumps(_rng_to_json(rng)))
            rngs = [_rng_from_json(json.loads(g)) for g in gathered]
        else:
            rngs = rng
        if main:
            save_training_state(
                out / "state",
                pair.state_dict(),
                {
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                    "rng": rngs,
                    "progress": progress,
                    "schedule": {
                        "kind": cfg.schedule,
                        "warmup_steps": cfg.warmup_steps,
                        "total_steps": total_steps,
                    },
                    "config": cfg.to_dict(),
                },
            )
        ddp.barrier()

    def save_best() -> None:
        from ..model_io import save_model

        if injected:
            from safetensors.torch import save_file

            from .._common import atomic_path

            with atomic_path(out / RunFolder.INJECTED_MODEL_FILE) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
        else:
            save_model(model, out / "model", model_args=_model_args(cfg, model))
        held_by_loss = _loss_distance(loss_fn)
        if getattr(model, "distance", None) is None and held_by_loss is not None:
            # A model without HOLEF support (a plain timm trunk): W is saved beside model/.
            from safetensors.torch import save_file

            from .._common import atomic_path

            with atomic_path(out / RunFolder.HOLEF_FILE) as tmp:
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in held_by_loss.state_dict().items()}, str(tmp)
                )

    run_distance = getattr(model, "distance", None)
    if run_distance is None:
        run_distance = _loss_distance(loss_fn)

    def validate() -> dict[str, float] | None:
        if not main:
            return None
        if not has_val:
            save_best()
            return None
        res = evaluate_split(
            model,
            sketches["validation"],
            photos["validation"],
            image_size=size,
            batch_size=cfg.eval_batch_size,
            device=device,
            distance=run_distance,
            autocast_dtype=amp_dtype,
            sketch_table=val_tables[0],
            photo_table=val_tables[1],
        )
        return res["metrics"]

    def set_lr(step: int) -> None:
        f = lr_factor(step, total_steps, cfg.warmup_steps, cfg.schedule)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * f

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=progress["step"],
        disable=not (cfg.progress and main),
        unit="step",
        dynamic_ncols=True,
    )
    images_per_step = 2 * cfg.batch_size * cfg.grad_accum * info.world_size
    stopped = False
    t_last, steps_since = time.perf_counter(), 0
    running_loss = None
    pair.train()
    try:
        while not progress["done"]:
            epoch = progress["epoch"]
            sampler.set_epoch(epoch, start_batch=progress["batch_in_epoch"])
            # The loader draws its base seed from this generator, not the global RNG, so creating a
            # loader mid-epoch on resume leaves the global RNG (dropout, ...) where it was.
            loader_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=sampler,
                collate_fn=collate_pairs,
                generator=loader_gen,
                **loader_kwargs,
            )
            micro = 0
            for sketch, photo, labels in loader:
                if progress["batch_in_epoch"] >= batches_per_epoch:
                    break
                sketch = sketch.to(device, non_blocking=True)
                photo = photo.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                if cfg.channels_last:
                    sketch = sketch.contiguous(memory_format=torch.channels_last)
                    photo = photo.contiguous(memory_format=torch.channels_last)
                micro += 1
                last_micro = micro % cfg.grad_accum == 0
                sync = contextlib.nullcontext()
                if info.distributed and not last_micro:
                    sync = net.no_sync() if hasattr(net, "no_sync") else sync
                with sync:
                    with torch.autocast(
                        device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                    ):
                        es, ep = net(sketch, photo)
                    es, ep = es.float(), ep.float()
                    # A separate tensor for ref_labels: PML drops the diagonal (self-pairs) when
                    # ref_labels *is* labels, which here would discard every sketch-photo positive.
                    ref_labels = labels.clone()
                    indices = miner(es, labels, ep, ref_labels) if miner is not None else None
                    loss = loss_fn(es, labels, indices, ep, ref_labels)
                    scaler.scale(loss / cfg.grad_accum).backward()
                progress["batch_in_epoch"] += 1
                value = float(loss.detach())
                running_loss = value if running_loss is None else 0.9 * running_loss + 0.1 * value
                if not last_micro:
                    continue
                set_lr(progress["step"])
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(pair.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                progress["step"] += 1
                steps_since += 1
                bar.update(1)
                if progress["step"] % cfg.log_every == 0 or progress["step"] == total_steps:
                    now = time.perf_counter()
                    rate = images_per_step * steps_since / max(now - t_last, 1e-9)
                    t_last, steps_since = now, 0
                    bar.set_postfix(loss=f"{running_loss:.4f}", img_s=f"{rate:.1f}")
                    log.write(
                        {
                            "event": "train",
                            "epoch": epoch,
                            "step": progress["step"],
                            "loss": value,
                            "loss_avg": running_loss,
                            "lr": optimizer.param_groups[0]["lr"],
                            "img_per_s": rate,
                        }
                    )
                if progress["step"] >= total_steps:
                    break
                if cfg.stop_after_steps is not None and progress["step"] >= cfg.stop_after_steps:
                    stopped = True
                    break
                if cfg.save_every and progress["step"] % cfg.save_every == 0:
                    save_state()
            if stopped:
                save_state()
                break
            # End of an epoch (or of training): validate, keep the best, maybe stop early.
            end_of_training = progress["step"] >= total_steps
            # Here the epoch is complete (all its batches seen) or training reached its last step.
            progress["epoch"] += 1
            progress["batch_in_epoch"] = 0
            metrics = validate()
            stop_early = False
            if main:
                record: dict[str, Any] = {"event": "epoch", "epoch": epoch, "step": progress["step"]}
                if metrics is not None:
                    key = [metrics["acc@1"], metrics["acc@10"]]
                    improved = progress["best"] is None or key > progress["best"]
                    if improved:
                        progress["best"], progress["best_step"] = key, progress["step"]
                        progress["bad_validations"] = 0
                        save_best()
                    else:
                        progress["bad_validations"] += 1
                    stop_early = cfg.early_stop is not None and progress["bad_validations"] >= cfg.early_stop
                    record.update({"val": metrics, "best": progress["best"], "improved": improved})
                    bar.write(
                        f"epoch {epoch}: val acc@1 {metrics['acc@1']:.2f} acc@10 {metrics['acc@10']:.2f}"
                        f"{' (best)' if improved else ''}"
                    )
                log.write(record)
            stop_early = ddp.broadcast_flag(stop_early, device)
            if end_of_training or stop_early:
                progress["done"] = True
            save_state()
    finally:
        bar.close()
        log.close()
    summary = {
        "out": str(out),
        "step": progress["step"],
        "epoch": progress["epoch"],
        "total_steps": total_steps,
        "best": progress["best"],
        "best_step": progress["best_step"],
        "stopped": stopped,
        "done": progress["done"],
    }
    if main and progress["done"]:
        log.write({"event": "end", **summary})
    if info.distributed:
        ddp.cleanup()
    return summary


def _loss_distance(loss_fn: torch.nn.Module):
    """The HOLEF distance held by the loss when the model has none (None for the triplet baseline)."""
    d = getattr(loss_fn, "distance", None)
    from pytorch_metric_learning.distances import LpDistance

    return None if d is None or isinstance(d, LpDistance) else d


def _rng_to_json(rng: dict[str, Any]) -> dict[str, Any]:
    from .checkpoint import flatten_state

    tensors, skeleton = flatten_state(rng)
    return {
        "skeleton": skeleton,
        "tensors": {k: v.tolist() for k, v in tensors.items()},
        "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()},
    }


def _rng_from_json(data: dict[str, Any]) -> dict[str, Any]:
    from .checkpoint import unflatten_state

    tensors = {
        k: torch.tensor(v, dtype=getattr(torch, data["dtypes"][k])) for k, v in data["tensors"].items()
    }
    return unflatten_state(data["skeleton"], tensors)

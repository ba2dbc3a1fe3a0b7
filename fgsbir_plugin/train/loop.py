"""The steps of a training run, each working on a :class:`~fgsbir_plugin.train.session.TrainSession`.

One step: a batch of B sketches with their B photos (P distinct photos, see
:class:`~fgsbir_plugin.data.sampling.PairBatchSampler`), both embedded by the model (its sketch and
photo trunks when they are separate), then a PML loss over cross-modal triplets only: the sketch
embeddings are the anchors and the photo embeddings the reference set (``ref_emb``), with
``labels = ref_labels = photo index``, optionally mined (batch-hard / semi-hard).

:func:`train_one_epoch` runs the steps of one epoch (or up to a stop), :func:`validate` scores the
validation split, :func:`end_of_epoch` keeps the best model (chosen on the validation split carved
from train, by acc@1 then acc@10; never the test split) and decides on early stopping,
:func:`save_state` writes the resumable state.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from .._common import save_checked_tensors
from ..data.sampling import collate_pairs, pair_index
from ..embedding import retrieval_distance
from ..metrics import retrieval_metrics
from ..model_io import save_model
from . import ddp
from .build import loss_distance, saved_model_args
from .checkpoint import capture_rng_state, rng_state_from_json, rng_state_to_json, save_training_state
from .evaluate import evaluate_split
from .optim import set_lr
from .session import TrainSession

__all__ = [
    "TrainingDiverged",
    "make_loader",
    "train_step",
    "train_one_epoch",
    "validate",
    "end_of_epoch",
    "save_state",
    "save_best",
]


class TrainingDiverged(ValueError):
    """The loss or the weights became non-finite; nothing non-finite was written to the run folder."""


def diverged(s: TrainSession, what: str) -> None:
    """Log the divergence and raise :class:`TrainingDiverged`: the run stops before saving anything, so
    ``state/`` and ``model/`` keep the last finite state and the best model so far."""
    step = s.progress["step"]
    if s.main:
        s.log.write({"event": "diverged", "step": step, "reason": what})
    raise TrainingDiverged(
        f"training diverged at step {step} ({what}); {s.run.path} keeps the last finite saved state and the "
        "best model so far: start a new run with a lower --lr or with --grad-clip."
    )


def check_finite_weights(s: TrainSession) -> None:
    """Raise :class:`TrainingDiverged` when any trained weight is NaN or infinite (before a save)."""
    named = list(s.pair.named_parameters())
    finite = torch.stack([torch.isfinite(p).all() for _, p in named])  # one device sync for all of them
    if not bool(finite.all()):
        diverged(s, f"weight {named[int((~finite).nonzero()[0])][0]} is not finite")


def make_loader(s: TrainSession, epoch: int) -> torch.utils.data.DataLoader:
    """The DataLoader of ``epoch``, starting at the batch the run stands at (mid-epoch on resume)."""
    s.sampler.set_epoch(epoch, start_batch=s.progress["batch_in_epoch"])
    # The loader draws its base seed from this generator, not the global RNG, so creating a loader
    # mid-epoch on resume leaves the global RNG (dropout, ...) where it was.
    loader_gen = torch.Generator().manual_seed(s.cfg.seed * 1_000_003 + epoch)
    kwargs: dict[str, Any] = {"num_workers": s.cfg.workers, "pin_memory": s.device.type == "cuda"}
    if s.cfg.workers > 0:
        kwargs["persistent_workers"] = False
    return torch.utils.data.DataLoader(
        s.dataset, batch_sampler=s.sampler, collate_fn=collate_pairs, generator=loader_gen, **kwargs
    )


def train_step(
    s: TrainSession, sketch: torch.Tensor, photo: torch.Tensor, labels: torch.Tensor, sync
) -> float:
    """Forward and backward of one micro-batch (the optimiser step is the caller's); returns the loss."""
    sketch = sketch.to(s.device, non_blocking=True)
    photo = photo.to(s.device, non_blocking=True)
    labels = labels.to(s.device, non_blocking=True)
    if s.cfg.channels_last:
        sketch = sketch.contiguous(memory_format=torch.channels_last)
        photo = photo.contiguous(memory_format=torch.channels_last)
    with sync:
        amp = s.amp_dtype
        with torch.autocast(s.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            es, ep = s.net(sketch, photo)
        es, ep = es.float(), ep.float()
        # A separate tensor for ref_labels: PML drops the diagonal (self-pairs) when ref_labels *is*
        # labels, which here would discard every sketch-photo positive.
        ref_labels = labels.clone()
        indices = s.miner(es, labels, ep, ref_labels) if s.miner is not None else None
        loss = s.loss_fn(es, labels, indices, ep, ref_labels)
        s.scaler.scale(loss / s.cfg.grad_accum).backward()
    return float(loss.detach())


def _optimizer_step(s: TrainSession) -> None:
    set_lr(s.optimizer, s.cfg, s.progress["step"], s.total_steps)
    if s.cfg.grad_clip is not None:
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(s.pair.parameters(), s.cfg.grad_clip)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.optimizer.zero_grad(set_to_none=True)
    s.progress["step"] += 1


class _Throughput:
    """Images per second between two logged steps."""

    def __init__(self, images_per_step: int) -> None:
        self.images_per_step = images_per_step
        self.t_last, self.steps = time.perf_counter(), 0

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.images_per_step * self.steps / max(now - self.t_last, 1e-9)
        self.t_last, self.steps = now, 0
        return rate


def _log_step(s: TrainSession, epoch: int, value: float, meter: _Throughput, bar) -> None:
    rate = meter.rate()
    bar.set_postfix(loss=f"{s.running_loss:.4f}", img_s=f"{rate:.1f}")
    s.log.write(
        {
            "event": "train",
            "epoch": epoch,
            "step": s.progress["step"],
            "loss": value,
            "loss_avg": s.running_loss,
            "lr": s.optimizer.param_groups[0]["lr"],
            "img_per_s": rate,
        }
    )


def train_one_epoch(
    s: TrainSession, bar, meter: _Throughput, epoch_batches=None, save: bool = True
) -> str | None:
    """Run the rest of the current epoch; ``"stopped"`` at ``stop_after_steps``, ``"early"`` when a
    validation every ``eval_every`` steps calls for early stopping, else None.

    Returns at the end of the epoch, at the last step of training, or at the requested stop; with
    ``save``, the resumable state is saved every ``save_every`` steps and after each ``eval_every``
    validation. ``epoch_batches(epoch)`` yields the epoch's ``(sketch, photo, labels)`` batches from
    the session's position (default: :func:`make_loader`).
    """
    cfg, progress = s.cfg, s.progress
    epoch = progress["epoch"]
    micro = 0
    batches = make_loader(s, epoch) if epoch_batches is None else epoch_batches(epoch)
    for sketch, photo, labels in batches:
        if progress["batch_in_epoch"] >= s.batches_per_epoch:
            break
        micro += 1
        last_micro = micro % cfg.grad_accum == 0
        sync = contextlib.nullcontext()
        if s.info.distributed and not last_micro:
            sync = s.net.no_sync() if hasattr(s.net, "no_sync") else sync
        value = train_step(s, sketch, photo, labels, sync)
        # Every process stops together (a lone stop would leave the others waiting in the next collective).
        if ddp.any_flag(not math.isfinite(value), s.device):
            diverged(
                s,
                f"the loss is {value}"
                if not math.isfinite(value)
                else "the loss is not finite on another process",
            )
        progress["batch_in_epoch"] += 1
        s.running_loss = value if s.running_loss is None else 0.9 * s.running_loss + 0.1 * value
        if not last_micro:
            continue
        _optimizer_step(s)
        meter.steps += 1
        bar.update(1)
        if progress["step"] % cfg.log_every == 0 or progress["step"] == s.total_steps:
            _log_step(s, epoch, value, meter, bar)
        last = progress["step"] >= s.total_steps
        if cfg.eval_every is not None and (progress["step"] % cfg.eval_every == 0 or last):
            if validate_and_keep_best(s, epoch, bar):
                return "early"
            if save and not last:
                save_state(s)
        if last:
            break
        if cfg.stop_after_steps is not None and progress["step"] >= cfg.stop_after_steps:
            return "stopped"
        if save and cfg.save_every and progress["step"] % cfg.save_every == 0:
            save_state(s)
    return None


@torch.no_grad()
def _validate_cached(s: TrainSession, distance) -> dict[str, float]:
    """Validation on the cached evaluation views of the validation split (a frozen trunk prefix)."""
    s.set_train_mode(False)
    try:
        sketch_z, photo_z = s.val_cache
        step = s.cfg.eval_batch_size
        es = torch.cat(
            [
                s.frozen.rest(sketch_z[i : i + step].float().to(s.device)).float().cpu()
                for i in range(0, len(sketch_z), step)
            ]
        )
        ep = torch.cat(
            [
                s.frozen.rest(photo_z[i : i + step].float().to(s.device)).float().cpu()
                for i in range(0, len(photo_z), step)
            ]
        )
    finally:
        s.set_train_mode(True)
    val_s, val_p = s.sketches["validation"], s.photos["validation"]
    target = pair_index(list(val_s["photo_id"]), list(val_p["photo_id"]))
    if distance is not None:
        distance = distance.to("cpu")
    dist = retrieval_distance(es, ep, distance)
    if distance is not None:
        distance.to(s.device)
    return retrieval_metrics(dist, target)


def validate(s: TrainSession) -> dict[str, float] | None:
    """Validation metrics on the main process (None elsewhere); without a validation split, the
    current model is saved as the best instead (None)."""
    if not s.main:
        return None
    if not s.has_validation:
        save_best(s)
        return None
    distance = getattr(s.model, "distance", None)
    if distance is None:
        distance = loss_distance(s.loss_fn)
    if s.frozen is not None:
        return _validate_cached(s, distance)
    res = evaluate_split(
        s.model,
        s.sketches["validation"],
        s.photos["validation"],
        image_size=s.image_size,
        batch_size=s.cfg.eval_batch_size,
        device=s.device,
        distance=distance,
        autocast_dtype=s.amp_dtype,
        sketch_table=s.val_tables[0],
        photo_table=s.val_tables[1],
    )
    return res["metrics"]


def end_of_epoch(s: TrainSession, epoch: int, bar) -> bool:
    """Close a complete epoch (or the last step); validate there unless ``eval_every`` says when. True to stop."""
    progress = s.progress
    progress["epoch"] += 1
    progress["batch_in_epoch"] = 0
    if s.cfg.eval_every is not None:
        return False
    return validate_and_keep_best(s, epoch, bar)


def validate_and_keep_best(s: TrainSession, epoch: int, bar) -> bool:
    """Validate, keep the model when it is the best so far, log the epoch record; True to stop early."""
    progress = s.progress
    # On every process (the replicas are equal), not only in the main one's save_best: all stop together.
    check_finite_weights(s)
    metrics = validate(s)
    stop_early = False
    if s.main:
        record: dict[str, Any] = {"event": "epoch", "epoch": epoch, "step": progress["step"]}
        if metrics is not None:
            key = [metrics["acc@1"], metrics["acc@10"]]
            improved = progress["best"] is None or key > progress["best"]
            if improved:
                progress["best"], progress["best_step"] = key, progress["step"]
                progress["bad_validations"] = 0
                save_best(s)
            else:
                progress["bad_validations"] += 1
            early = s.cfg.early_stop
            stop_early = early is not None and progress["bad_validations"] >= early
            record.update({"val": metrics, "best": progress["best"], "improved": improved})
            bar.write(
                f"epoch {epoch}: val acc@1 {metrics['acc@1']:.2f} acc@10 {metrics['acc@10']:.2f}"
                f"{' (best)' if improved else ''}"
            )
        s.log.write(record)
    return ddp.broadcast_flag(stop_early, s.device)


def _gathered_rng(s: TrainSession):
    """This process's RNG state, or every process's (a list by rank) when distributed."""
    rng = capture_rng_state()
    if not s.info.distributed:
        return rng
    gathered: list[Any] = [None] * s.info.world_size
    torch.distributed.all_gather_object(gathered, json.dumps(rng_state_to_json(rng)))
    return [rng_state_from_json(json.loads(g)) for g in gathered]


def save_state(s: TrainSession) -> None:
    """Write ``state/``: current weights, optimiser, scaler, RNG, progress, schedule and configuration."""
    check_finite_weights(s)
    rngs = _gathered_rng(s)
    if s.main:
        save_training_state(
            s.run.state_dir,
            s.pair.state_dict(),
            {
                "optimizer": s.optimizer.state_dict(),
                "scaler": s.scaler.state_dict() if s.scaler.is_enabled() else {},
                "rng": rngs,
                "progress": s.progress,
                "schedule": {
                    "kind": s.cfg.schedule,
                    "warmup_steps": s.cfg.warmup_steps,
                    "total_steps": s.total_steps,
                },
                "config": s.cfg.to_dict(),
            },
        )
    ddp.barrier()


def _save_tensors(path, module: torch.nn.Module) -> None:
    save_checked_tensors(path, module.state_dict())


def save_best(s: TrainSession) -> None:
    """Write the current model as the run's best: ``model/`` (a timm model folder), or a state dict for an
    injected model; a HOLEF W held by the loss goes beside it."""
    check_finite_weights(s)
    if s.injected:
        _save_tensors(s.run.injected_model_path, s.model)
    else:
        save_model(s.model, s.run.model_dir, model_args=saved_model_args(s.cfg, s.model))
    held_by_loss = loss_distance(s.loss_fn)
    if getattr(s.model, "distance", None) is None and held_by_loss is not None:
        _save_tensors(s.run.holef_path, held_by_loss)


def progress_bar(s: TrainSession):
    return tqdm(
        total=s.total_steps,
        initial=s.progress["step"],
        disable=not (s.cfg.progress and s.main),
        unit="step",
        dynamic_ncols=True,
    )

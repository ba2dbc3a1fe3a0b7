"""``train()``, the training run behind ``fgsbir train``: set up, epochs, validation, the end of the run.

The pieces live in their own modules: :mod:`.session` sets the run up (model, loss, optimiser, input
pipeline, resume), :mod:`.loop` holds the steps (one epoch, validation, the end of an epoch, saving),
:mod:`.build` and :mod:`.optim` build the model, loss and optimiser from the configuration. The run
folder's layout is :class:`~fgsbir_plugin.run_folder.RunFolder`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from ..run_folder import RunFolder
from . import ddp
from .config import TrainConfig
from .loop import _Throughput, end_of_epoch, progress_bar, save_state, train_one_epoch
from .session import TrainSession, start_session

__all__ = ["train", "run_session"]


def train(cfg: TrainConfig, datasets=None, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns a summary (best validation metrics, steps, run folder).

    Args:
        cfg: a :class:`TrainConfig` (validated here).
        datasets: optional ``(sketches, photos)`` DatasetDicts to use instead of ``load_fgsbir``.
        model: optional prebuilt embedder (``model(x, modality=...)`` -> ``[B, D]``, with
            ``pretrained_cfg`` and ``head_hidden_size``, or ``num_features`` for a
            plain embedder; see ``embedding.embedding_dim``) trained instead of ``timm.create_model(cfg.model)``,
            e.g. the CLIP baseline; ``cfg.model`` is then only a label. Its best weights are saved as
            a state dict (``RunFolder.INJECTED_MODEL_FILE``) instead of ``model/``; on ``resume``
            pass a freshly built model of the same architecture.
    """
    cfg.validate()  # before the lock creates the folder: a bad option leaves nothing behind
    # One training process per run folder: the main process holds the folder's lock until the run ends
    # (a killed run's lock dies with it, so --resume takes it over).
    run = RunFolder(Path(cfg.out))
    lock = run.lock(create=not cfg.resume) if ddp.dist_info().rank == 0 else contextlib.nullcontext()
    with lock:
        try:
            s = start_session(cfg, datasets, model)
        except BaseException:
            if ddp.dist_info().distributed:
                ddp.cleanup()  # set-up may have failed after joining the process group (see run_session)
            raise
        return run_session(s)


def run_session(
    s: TrainSession, epoch_batches: Callable[[int], Iterable] | None = None, save: bool = True
) -> dict[str, Any]:
    """The epochs of a set-up session (:func:`~.session.start_session`) to the end of training; the summary.

    ``epoch_batches(epoch)`` yields the ``(sketch, photo, labels)`` batches of ``epoch`` from the session's
    position in it (default: the session's DataLoader); ``save=False`` writes no resumable state (the
    best model is still kept).
    """
    bar = progress_bar(s)
    meter = _Throughput(2 * s.cfg.batch_size * s.cfg.grad_accum * s.info.world_size)
    stopped = False
    s.set_train_mode(True)
    try:
        while not s.progress["done"]:
            epoch = s.progress["epoch"]
            status = train_one_epoch(s, bar, meter, epoch_batches, save)
            if status == "stopped":
                stopped = True
                if save:
                    save_state(s)
                break
            end_of_training = s.progress["step"] >= s.total_steps
            if end_of_epoch(s, epoch, bar) or status == "early" or end_of_training:
                s.progress["done"] = True
            if save and (s.cfg.eval_every is None or s.progress["done"]):
                save_state(s)
    finally:
        bar.close()
        s.log.close()
        # Leave the process group on every way out, a diverged run's too: a process that exits while
        # still in it can abort (SIGABRT, "terminate called without an active exception") when gloo's
        # threads are torn down with the interpreter, and torchrun then reports the run as failed.
        if s.info.distributed:
            ddp.cleanup()
    return _finish(s, stopped)


def _finish(s: TrainSession, stopped: bool) -> dict[str, Any]:
    summary = {
        "out": str(s.run.path),
        "step": s.progress["step"],
        "epoch": s.progress["epoch"],
        "total_steps": s.total_steps,
        "best": s.progress["best"],
        "best_step": s.progress["best_step"],
        "stopped": stopped,
        "done": s.progress["done"],
    }
    if s.main and s.progress["done"]:
        s.log.write({"event": "end", **summary})
    return summary

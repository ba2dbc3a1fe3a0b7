"""The run folder: what ``fgsbir train --out DIR`` writes there, and how such a folder is recognised.

Every module that reads or writes a run folder (training, evaluation, embedding, search, publishing,
the benchmarks) goes through :class:`RunFolder`, so the layout is written down once::

    DIR/
      run_config.json              the TrainConfig the run was started with
      log.jsonl, log.csv           one record per logged step and per epoch (csv optional)
      tensorboard/                 optional
      model/                       the best model (validation split), a timm ``local-dir:`` folder
      holef_distance.safetensors   HOLEF W of a model that cannot hold it (a plain timm trunk)
      model_state.safetensors      the best weights of a model passed to ``train(model=...)``
                                   (both: their tensors' SHA-256 in their metadata, checked on reading)
      state/                       the resumable training state (see ``train.checkpoint``)
      eval_<split>.json            reports written by ``fgsbir eval``
      .lock                        held by the training process writing here (see :meth:`RunFolder.lock`)

A *model folder* (``config.json`` + ``model.safetensors``) may be given wherever a run folder is:
:meth:`RunFolder.resolve` accepts either.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; see RunFolder.lock
    fcntl = None

import torch

from ._common import load_checked_tensors

__all__ = ["RunFolder", "RunLocked", "MODEL_CONFIG"]

MODEL_CONFIG = "config.json"  # the file that makes a folder a timm model folder


class RunLocked(OSError):
    """Another live process holds the run folder's lock."""


class RunFolder:
    """Paths of one run folder. Cheap to build; touches the disk only in the methods that say so."""

    RUN_CONFIG = "run_config.json"
    LOG = "log.jsonl"
    LOG_CSV = "log.csv"
    TENSORBOARD = "tensorboard"
    MODEL = "model"
    STATE = "state"
    # HOLEF W of a model that cannot hold it (a plain timm trunk trained with the HOLEF loss).
    HOLEF_FILE = "holef_distance.safetensors"
    # The best weights of a model passed to train(model=...): a state dict, since such a model (the
    # CLIP baseline) need not be a timm model that model_io can rebuild from config.json.
    INJECTED_MODEL_FILE = "model_state.safetensors"
    LOCK = ".lock"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- paths ------------------------------------------------------------------------------------

    @property
    def run_config_path(self) -> Path:
        return self.path / self.RUN_CONFIG

    @property
    def log_path(self) -> Path:
        return self.path / self.LOG

    @property
    def log_csv_path(self) -> Path:
        return self.path / self.LOG_CSV

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def model_dir(self) -> Path:
        return self.path / self.MODEL

    @property
    def state_dir(self) -> Path:
        return self.path / self.STATE

    @property
    def holef_path(self) -> Path:
        return self.path / self.HOLEF_FILE

    @property
    def injected_model_path(self) -> Path:
        return self.path / self.INJECTED_MODEL_FILE

    @property
    def lock_path(self) -> Path:
        return self.path / self.LOCK

    def eval_report_path(self, split: str, views: int = 1) -> Path:
        """``eval_<split>.json`` for the centre crop; ``eval_<split>_<views>views.json`` otherwise, so the
        protocols do not overwrite each other."""
        return self.path / (f"eval_{split}.json" if views == 1 else f"eval_{split}_{views}views.json")

    # -- what is there ----------------------------------------------------------------------------

    def eval_report_paths(self) -> list[Path]:
        """The ``eval_<split>[_<views>views].json`` reports, sorted by name."""
        return sorted(self.path.glob("eval_*.json"))

    def holds_run(self) -> bool:
        """True when a training run has written its state or a model here (a new run must not start)."""
        return self.state_dir.exists() or self.model_dir.exists() or self.injected_model_path.exists()

    def has_model(self) -> bool:
        """True when ``model/`` is a complete timm model folder."""
        return (self.model_dir / MODEL_CONFIG).is_file()

    def stale_state_folders(self) -> list[Path]:
        """Half-written ``.state.*`` folders of a run killed mid-save (the parked ``.state.old`` is kept)."""
        return [
            p for p in self.path.glob(f".{self.STATE}.*") if p.is_dir() and p.name != f".{self.STATE}.old"
        ]

    def read_run_config(self) -> dict[str, Any]:
        """``run_config.json`` as a dict; a clear error when it is missing or not a JSON object."""
        path = self.run_config_path
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.path} has no {self.RUN_CONFIG}; pass the --out folder of `fgsbir train`."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} is not valid JSON ({err.msg}); restore it or start a new run."
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object; restore it or start a new run.")
        return data

    @contextlib.contextmanager
    def lock(self, create: bool = True) -> Iterator[None]:
        """Hold the folder's lock for the body: one training process writes a run folder at a time.

        The lock is an advisory ``flock`` on ``.lock``, which the kernel releases when its process
        ends in any way (SIGKILL included), so a lock left by a killed run is free and the next
        ``--resume`` takes it over; there is no stale-lock guessing. The file records the holder's
        host and pid, for the error message only. Raises :class:`RunLocked` (a one-sentence message)
        when a live process holds it. Where ``fcntl`` does not exist (Windows) there is no lock.
        With ``create=False`` a missing folder is not created and there is nothing to lock. A folder this
        call created is removed again (with the parents it created) when the body fails before writing
        anything into it, so a refused run leaves nothing behind.
        """
        if fcntl is None or (not create and not self.path.is_dir()):
            yield
            return
        created = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                raise RunLocked(
                    f"{self.path} is being written by a running training ({holder}); wait for it to end "
                    "or choose another --out."
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
            try:
                yield
            except BaseException:
                if created and [p.name for p in self.path.iterdir()] == [self.LOCK]:
                    self.lock_path.unlink()  # still held: no other process can have taken it
                    for folder in created:  # innermost first; stops at a folder something else filled
                        try:
                            folder.rmdir()
                        except OSError:
                            break
                raise
        finally:
            os.close(fd)  # releases the flock

    # -- resolution -------------------------------------------------------------------------------

    @classmethod
    def resolve(cls, checkpoint: str | os.PathLike) -> tuple[RunFolder, Path]:
        """(run folder, model folder) for a run folder or a model folder; FileNotFoundError otherwise.

        A model folder named ``model`` belongs to the run folder above it; any other model folder is
        its own run folder (it then has no records beside it).
        """
        path = Path(checkpoint)
        if (path / cls.MODEL / MODEL_CONFIG).is_file():
            return cls(path), path / cls.MODEL
        if (path / MODEL_CONFIG).is_file():
            return cls(path.parent if path.name == cls.MODEL else path), path
        raise FileNotFoundError(
            f"{path} is neither a run folder (with model/) nor a model folder (with config.json); "
            "pass the --out folder of `fgsbir train`."
        )

    def load_distance(self, model: torch.nn.Module):
        """The distance this run ranks with: ``model.distance`` (HOLEF inside the model), else the HOLEF W
        saved beside ``model/`` (a plain timm trunk trained with ``--loss holef``), else None (Euclidean)."""
        if getattr(model, "distance", None) is not None:
            return model.distance
        if not self.holef_path.is_file():
            return None
        # Lazy: holef imports pytorch-metric-learning, which `fgsbir --help` should not pay for.
        from .holef import HOLEFDistance

        tensors = load_checked_tensors(self.holef_path, "train the run again or copy its folder again")
        dim = next(iter(tensors.values())).shape[0]  # W (or its raw parameter) is [d, d]
        distance = HOLEFDistance(dim, nonnegative="raw_weight" in tensors)
        distance.load_state_dict(tensors)
        return distance.eval()

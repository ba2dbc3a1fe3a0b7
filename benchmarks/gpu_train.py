"""A training run whose input pipeline runs on the accelerator: the engine's run, its batches made there.

``fgsbir_plugin.train.engine.train`` feeds each step from a DataLoader: every sample is cropped, flipped
and normalised on the CPU and copied over, and the DataLoader starts afresh every epoch. With the small
FG-SBIR sets and a GPU, that work is likely to take as long as the steps themselves (an expectation: no
GPU has measured it yet). :func:`train_on_device` builds the
same session (``start_session``: model, loss, optimiser, sampler, validation), keeps every training
image decoded once as uint8 ``[N, C, L, L]`` on the device (:class:`DeviceImages`, shared by the runs of
one process), and makes each batch there (:class:`DeviceBatches`): the same sampler batches and, for
each sample, the same random draws from the same per-sample generator as ``PairDataset``, so the pixels
of every batch equal the engine's (``tests/test_gpu_suite.py`` checks this on the CPU). The epochs are
the engine's own (``engine.run_session``), fed with these batches.

Two differences from ``engine.train``, neither changing what is computed: no resumable ``state/`` is
written (a cell that does not finish in its call is run again from the start in the next, on a fresh
machine), and a ``deadline`` stops the run between two steps with :class:`OutOfTime`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F

# _channel_stats (private) is the transforms' own mean/std shaping, so the device batches normalise as
# the engine's do.
from fgsbir_plugin.data.sampling import pair_index
from fgsbir_plugin.data.transforms import ImageTable, _channel_stats, load_size_for, sample_generator
from fgsbir_plugin.embedding import model_input_spec
from fgsbir_plugin.train import engine
from fgsbir_plugin.train.session import TrainSession, start_session


class OutOfTime(RuntimeError):
    """The run reached its deadline before its end; its run folder holds no finished run."""


@dataclasses.dataclass
class DeviceImages:
    """One split column decoded once: the CPU table (for validation) and its uint8 copy on the device."""

    table: ImageTable  # cached: .tensor is uint8 [N, C, L, L]
    device_tensor: torch.Tensor  # the same, on the device


# Decoded columns by (dataset, column, row ids, load size, channels, device): the cells of one dataset
# and seed share their train and validation images.
_IMAGES: OrderedDict[tuple, DeviceImages] = OrderedDict()
_IMAGES_LIMIT = 8


def device_images(
    split, column: str, load: int, in_chans: int, device: torch.device, key: Any
) -> DeviceImages:
    """The :class:`DeviceImages` of ``split[column]`` decoded at ``load``, kept for the next run."""
    ids = "\n".join(split[f"{column}_id"])
    full = (key, column, hashlib.sha256(ids.encode()).hexdigest(), load, in_chans, str(device))
    if full not in _IMAGES:
        table = ImageTable(split, column, load, in_chans, cache=True)
        _IMAGES[full] = DeviceImages(table, table.tensor.to(device))
        while len(_IMAGES) > _IMAGES_LIMIT:
            _IMAGES.popitem(last=False)
    _IMAGES.move_to_end(full)
    return _IMAGES[full]


def crop_flip(images: torch.Tensor, index, top, left, flip, size: int) -> torch.Tensor:
    """uint8 ``images`` [N, C, L, L] -> uint8 [B, C, S, S]: image ``index[b]`` cut at (``top[b]``, ``left[b]``),
    mirrored where ``flip[b]``; ``ImageTransform``'s crop and flip for a whole batch, on ``images``' device."""
    dev = images.device
    steps = torch.arange(size, device=dev)
    rows = top[:, None] + steps
    cols = left[:, None] + steps
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    chans = torch.arange(images.shape[1], device=dev)
    return images[
        index[:, None, None, None], chans[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
    ]


def thicken_strokes(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """``ImageTransform``'s stroke jitter (a 3x3 dilation of the dark ink) on the rows of uint8 [B, C, S, S] in ``which``."""
    thick = (-F.max_pool2d(-images.to(torch.float32), 3, stride=1, padding=1)).to(torch.uint8)
    return torch.where(which[:, None, None, None], thick, images)


class DeviceBatches:
    """Training pairs ``(sketch, photo, photo index)`` of a session, cut from uint8 images on the device.

    For sample ``i`` of ``epoch`` the generator ``sample_generator(seed, epoch, i)`` gives 4 draws for the
    sketch and the next 4 for its photo (top, left, flip, stroke jitter), as ``PairDataset`` draws them.
    The draws are made on the CPU and go over in one copy per batch.
    """

    def __init__(self, sketches: torch.Tensor, photos: torch.Tensor, sketch_to_photo, spec, cfg) -> None:
        self.sketches, self.photos = sketches, photos
        self.sketch_to_photo = sketch_to_photo.to(torch.long)
        self.size, self.seed = spec["image_size"], cfg.seed
        self.hflip, self.stroke_jitter = cfg.hflip, cfg.stroke_jitter
        dev, c = sketches.device, spec["in_chans"]
        self.mean = _channel_stats(spec["mean"], c).to(dev)
        self.std = _channel_stats(spec["std"], c).to(dev)

    def _draws(self, epoch: int, indices: list[int]) -> torch.Tensor:
        """[B, 8] float32: each sample's sketch draws, then its photo draws."""
        rows = []
        for i in indices:
            g = sample_generator(self.seed, epoch, i)
            rows.append(torch.cat([torch.rand(4, generator=g), torch.rand(4, generator=g)]))
        return torch.stack(rows)

    def _plan(
        self, images: torch.Tensor, index: torch.Tensor, d: torch.Tensor, jitter: float
    ) -> torch.Tensor:
        """[5, B] int64: image row, top, left, flip, stroke jitter, from 4 draws per sample."""
        room = images.shape[-1] - self.size + 1
        # float32 draw times an int, truncated: ImageTransform's int(draws[k] * (h - s + 1)).
        top, left = (d[:, 0] * room).to(torch.long), (d[:, 1] * room).to(torch.long)
        return torch.stack([index, top, left, (d[:, 2] < self.hflip).long(), (d[:, 3] < jitter).long()])

    def _views(self, images: torch.Tensor, plan: torch.Tensor, jitter: bool) -> torch.Tensor:
        out = crop_flip(images, plan[0], plan[1], plan[2], plan[3].bool(), self.size)
        if jitter:
            out = thicken_strokes(out, plan[4].bool())
        return (out.to(torch.float32) / 255.0 - self.mean) / self.std

    def batch(self, epoch: int, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``collate_pairs`` of ``PairDataset[(epoch, i)]`` for ``i`` in ``indices``, made on the device."""
        d = self._draws(epoch, indices)
        sketch_index = torch.tensor(indices, dtype=torch.long)
        photo_index = self.sketch_to_photo[sketch_index]
        plans = torch.stack(
            [
                self._plan(self.sketches, sketch_index, d[:, :4], self.stroke_jitter),
                self._plan(self.photos, photo_index, d[:, 4:], 0.0),
            ]
        ).to(self.sketches.device)
        jitter = bool((d[:, 3] < self.stroke_jitter).any())  # decided here: no device sync per batch
        sketch = self._views(self.sketches, plans[0], jitter)
        photo = self._views(self.photos, plans[1], False)
        return sketch, photo, photo_index


def device_pipeline(s: TrainSession) -> DeviceBatches:
    """The session's batches from device images; its validation tables swapped for the shared decoded ones."""
    spec = model_input_spec(s.model, s.cfg.image_size)
    load, c = load_size_for(spec["image_size"], spec["crop_pct"]), spec["in_chans"]
    key = (s.cfg.data, s.cfg.data_dir, json.dumps(s.cfg.data_kwargs, sort_keys=True))

    def images(split: str, column: str, device: torch.device) -> DeviceImages:
        table = s.sketches[split] if column == "sketch" else s.photos[split]
        return device_images(table, column, load, c, device, key)

    if s.val_tables is not None:
        cpu = torch.device("cpu")  # validation embeds from the CPU tables, as the engine does
        s.val_tables = (images("validation", "sketch", cpu).table, images("validation", "photo", cpu).table)
    s2p = pair_index(list(s.sketches["train"]["photo_id"]), list(s.photos["train"]["photo_id"]))
    sketches, photos = images("train", "sketch", s.device), images("train", "photo", s.device)
    return DeviceBatches(sketches.device_tensor, photos.device_tensor, s2p, spec, s.cfg)


def _epoch_batches(s: TrainSession, batches: DeviceBatches, deadline: float | None):
    """``epoch -> the epoch's batches`` from the session's position, made on the device; :class:`OutOfTime`
    before a batch once ``deadline`` has passed."""

    def epoch_batches(epoch: int):
        for indices in s.sampler.epoch_batches(epoch)[s.progress["batch_in_epoch"] :]:
            if deadline is not None and time.monotonic() > deadline:
                raise OutOfTime(
                    f"{s.run.path}: the budget ran out at step {s.progress['step']} of {s.total_steps}."
                )
            yield batches.batch(epoch, indices)

    return epoch_batches


def train_on_device(
    cfg,
    datasets=None,
    model: torch.nn.Module | None = None,
    *,
    deadline: float | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """``engine.train(cfg, datasets, model)`` with the input pipeline on ``cfg.device``; same summary.

    ``deadline`` (``time.monotonic()`` seconds) raises :class:`OutOfTime` between steps; ``compile``
    wraps the pair model in ``torch.compile``. A frozen, cached trunk (``cfg.freeze``: no image pipeline
    to move), a resumed run and gradient accumulation go to ``engine.train``.
    """
    if cfg.freeze is not None or cfg.resume or cfg.grad_accum != 1:
        return engine.train(cfg, datasets=datasets, model=model)
    # No decoding at set-up: the decoded images come from this module's shared tables.
    s = start_session(dataclasses.replace(cfg, cache="no", workers=0), datasets, model)
    batches = device_pipeline(s)
    if compile:
        s.net = torch.compile(s.net)
    return engine.run_session(s, _epoch_batches(s, batches, deadline), save=False)

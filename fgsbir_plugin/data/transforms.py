"""Image transforms for training and evaluation, on decoded uint8 tensors.

Images are decoded once to a square uint8 tensor ``[C, L, L]`` at a *load size* ``L`` slightly
larger than the model's input (``L = round(image_size / crop_pct)``), already converted to the
model's number of input channels: a grey sketch becomes 3 identical channels for an RGB trunk, an
RGB photo becomes one luminance channel for the 1-channel Sketch-a-Net trunk. Everything after
that (crop, flip, stroke jitter, normalisation) runs on tensors, so a small dataset can be decoded
once, cached in memory (:class:`ImageTable`) and augmented cheaply every epoch.

Randomness comes from an explicit ``torch.Generator`` per sample (seeded from the run seed, the
epoch and the sample index by the caller), so an augmentation does not depend on which DataLoader
worker draws it, and a resumed run draws exactly the augmentations an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "load_size_for",
    "decode_image",
    "ImageTransform",
    "ten_crop_views",
    "ImageTable",
    "hf_decode_transform",
    "sample_generator",
]


def load_size_for(image_size: int, crop_pct: float) -> int:
    """The side ``L`` (pixels) images are decoded at, so that a centre crop of ``image_size`` keeps ``crop_pct``."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")
    return max(image_size, int(math.floor(image_size / crop_pct + 0.5)))


def decode_image(img: Image.Image | np.ndarray, load_size: int, in_chans: int) -> torch.Tensor:
    """Decode one image to a square uint8 tensor ``[in_chans, load_size, load_size]``.

    The shorter side is resized to ``load_size`` (bilinear, antialiased) and the centre square kept.
    ``in_chans`` 1 converts to luminance ("L"); 3 converts to RGB (a grey sketch is replicated).
    """
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}.")
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(img).__name__}.")
    if img.mode in ("RGBA", "LA", "P"):
        # Transparent pixels of a drawn sketch are background: composite onto white, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if in_chans == 1 else "RGB")
    w, h = img.size
    scale = load_size / min(w, h)
    nw, nh = max(load_size, round(w * scale)), max(load_size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
    left, top = (nw - load_size) // 2, (nh - load_size) // 2
    img = img.crop((left, top, left + load_size, top + load_size))
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded by (run seed, epoch, sample index): independent of worker and order."""
    # A fixed odd-multiplier mix keeps nearby (epoch, index) pairs far apart in seed space.
    mixed = (seed * 1_000_003 + epoch * 998_244_353 + index * 2_654_435_761) % (2**63 - 1)
    g = torch.Generator()
    g.manual_seed(mixed)
    return g


def _channel_stats(values: Sequence[float], in_chans: int) -> torch.Tensor:
    v = torch.tensor([float(x) for x in values], dtype=torch.float32)
    if v.numel() == in_chans:
        return v.view(in_chans, 1, 1)
    if in_chans == 1:
        return v.mean().view(1, 1, 1)  # an RGB model's mean/std applied to one luminance channel
    if v.numel() == 1:
        return v.expand(in_chans).clone().view(in_chans, 1, 1)
    raise ValueError(f"mean/std have {v.numel()} values but the model takes {in_chans} channels.")


@dataclass
class ImageTransform:
    """Crop, flip, optional stroke jitter, then normalise a uint8 image ``[C, L, L]`` to float ``[C, S, S]``.

    Args:
        image_size: output side ``S`` in pixels (the model's input size).
        mean, std: per-channel normalisation in [0, 1] units (from the model's pretrained_cfg).
        in_chans: channels of the decoded image and the output.
        train: random crop and flip when True; centre crop when False (deterministic).
        hflip: probability of a horizontal flip while training.
        stroke_jitter: probability of thickening the dark strokes by one pixel (a 3x3 dilation of the
            ink) while training; for sketches, whose line width varies between drawers.
    """

    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    in_chans: int = 3
    train: bool = False
    hflip: float = 0.5
    stroke_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {self.image_size}.")
        for name in ("hflip", "stroke_jitter"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability and must be in [0, 1], got {p}.")
        self._mean = _channel_stats(self.mean, self.in_chans)
        self._std = _channel_stats(self.std, self.in_chans)

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 ``[..., C, H, W]`` -> float32 normalised, same shape."""
        return (img.to(torch.float32) / 255.0 - self._mean) / self._std

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``img``: uint8 ``[C, L, L]`` with ``L >= image_size``; returns float32 ``[C, S, S]``."""
        c, h, w = img.shape
        s = self.image_size
        if h < s or w < s:
            raise ValueError(
                f"image of {h}x{w} pixels is smaller than the crop size {s}; decode it at >= {s}."
            )
        if self.train:
            if generator is None:
                raise ValueError("a training transform needs a torch.Generator for its random draws.")
            draws = torch.rand(4, generator=generator)
            top = int(draws[0] * (h - s + 1))
            left = int(draws[1] * (w - s + 1))
            out = img[:, top : top + s, left : left + s]
            if draws[2] < self.hflip:
                out = out.flip(-1)
            if draws[3] < self.stroke_jitter:
                # Ink is dark on white: dilating the ink is an erosion (min filter) of the image.
                out = -F.max_pool2d(-out[None].to(torch.float32), 3, stride=1, padding=1)[0]
                out = out.to(torch.uint8)
        else:
            top, left = (h - s) // 2, (w - s) // 2
            out = img[:, top : top + s, left : left + s]
        return self.normalize(out)


def ten_crop_views(img: torch.Tensor, image_size: int) -> torch.Tensor:
    """The paper's 10 test views of ``img`` ``[..., C, L, L]``: 4 corners + centre, and their mirror images.

    Returns ``[..., 10, C, S, S]`` with ``S = image_size``; order: top-left, top-right, bottom-left,
    bottom-right, centre, then the same five flipped horizontally.
    """
    h, w = img.shape[-2:]
    s = image_size
    if h < s or w < s:
        raise ValueError(f"image of {h}x{w} pixels is smaller than the crop size {s}.")
    ct, cl = (h - s) // 2, (w - s) // 2
    offsets = [(0, 0), (0, w - s), (h - s, 0), (h - s, w - s), (ct, cl)]
    crops = [img[..., t : t + s, lft : lft + s] for t, lft in offsets]
    crops += [c.flip(-1) for c in crops]
    return torch.stack(crops, dim=-4)


class ImageTable:
    """Random access to a dataset column as decoded uint8 tensors ``[C, L, L]``, cached in memory when small.

    Args:
        dataset: a ``datasets.Dataset`` (or any sequence of rows) with an image column.
        column: "sketch" or "photo".
        load_size: side ``L`` in pixels to decode to.
        in_chans: channels to convert to (1 or 3).
        cache: True decodes every image once now into one tensor ``[N, C, L, L]``; False decodes on
            access; None caches when the decoded tensor would take at most ``cache_limit_mb``.
    """

    def __init__(
        self,
        dataset,
        column: str,
        load_size: int,
        in_chans: int,
        cache: bool | None = None,
        cache_limit_mb: float = 2048.0,
    ) -> None:
        self.dataset = dataset
        self.column = column
        self.load_size = int(load_size)
        self.in_chans = int(in_chans)
        n = len(dataset)
        self.nbytes = n * self.in_chans * self.load_size**2
        if cache is None:
            cache = self.nbytes <= cache_limit_mb * 2**20
        self.tensor: torch.Tensor | None = None
        if cache:
            out = torch.empty((n, self.in_chans, self.load_size, self.load_size), dtype=torch.uint8)
            # Iterating a datasets.Dataset decodes row by row without materialising other columns.
            source = dataset.select_columns([column]) if hasattr(dataset, "select_columns") else dataset
            for i, row in enumerate(source):
                out[i] = decode_image(row[column], self.load_size, self.in_chans)
            self.tensor = out
        elif hasattr(dataset, "with_transform"):
            self._lazy = dataset.with_transform(hf_decode_transform(column, self.load_size, self.in_chans))
        else:
            self._lazy = None

    @property
    def cached(self) -> bool:
        return self.tensor is not None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[index]
        if self._lazy is not None:
            return self._lazy[int(index)]["pixel_values"]
        return decode_image(self.dataset[int(index)][self.column], self.load_size, self.in_chans)


def hf_decode_transform(column: str, load_size: int, in_chans: int):
    """A function for ``datasets.Dataset.with_transform``: adds ``pixel_values`` (uint8 ``[C, L, L]`` each).

    Used when a dataset is too large to cache: rows are decoded lazily, on access.
    """

    def transform(batch: dict) -> dict:
        batch = dict(batch)
        batch["pixel_values"] = [decode_image(img, load_size, in_chans) for img in batch[column]]
        return batch

    return transform

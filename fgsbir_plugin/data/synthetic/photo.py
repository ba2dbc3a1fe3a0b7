"""The synthetic photo: a filled, shaded, wood-grained RGB rendering of an instance's parts.

A soft shadow sits under the object, on a pale tinted backdrop (half of them with a floor); the
object is in its canonical pose.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .chair import Part

__all__ = ["render_photo"]

# drawing happens at a multiple of the output size and is box-filtered down, which anti-aliases edges
_PHOTO_SUPERSAMPLE = 2
# probability that a photo shows a floor below a horizon; tuned with benchmarks/synthetic_difficulty.py
_PHOTO_FLOOR_P = 0.5


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    pp, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array(
        [(v, t, pp), (q, v, pp), (pp, v, t), (pp, q, v), (t, pp, v), (v, pp, q)][i], dtype=np.float32
    )


@functools.lru_cache(maxsize=4)
def _unit_grid(big: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre-free coordinates (y, x), each [big, big] float32 in [0, 1); cached, read-only."""
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / big
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _backdrop(rng: np.random.Generator, yy: np.ndarray) -> np.ndarray:
    """A pale product-photo backdrop (a tinted gradient), sometimes with a floor below: [big, big, 3]."""
    wall = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0))
    floor = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.6, 0.9))
    horizon = rng.uniform(0.62, 0.8) if rng.random() < _PHOTO_FLOOR_P else 2.0
    return np.where(
        (yy < horizon)[..., None], wall * (0.92 + 0.12 * yy[..., None]), floor * (1.05 - 0.2 * yy[..., None])
    )


def _shadow(parts: list[Part], big: int, rng: np.random.Generator) -> np.ndarray:
    """How much light a soft shadow under the object takes away, per pixel: [big, big] in [0, 1]."""
    all_pts = np.concatenate([pt.polygon for pt in parts])
    x0, x1 = all_pts[:, 0].min(), all_pts[:, 0].max()
    y1 = all_pts[:, 1].max()
    shadow = Image.new("L", (big, big), 0)
    ImageDraw.Draw(shadow).ellipse(
        [x0 * big, (y1 - 0.03) * big, x1 * big, (y1 + 0.03) * big], fill=int(rng.uniform(60, 120))
    )
    return np.asarray(shadow.filter(ImageFilter.GaussianBlur(big * 0.02)), dtype=np.float32) / 255.0


def _paint_object(
    parts: list[Part], img: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    """``img`` with the parts painted over it: a frame colour, sometimes an upholstery colour, grain, light."""
    big = img.shape[0]
    frame_rgb = _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.8))
    seat_rgb = (
        frame_rgb
        if rng.random() < 0.5
        else _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.4, 0.95))
    )
    grain_angle = rng.uniform(0, math.pi)
    grain = np.sin(
        2 * math.pi * rng.uniform(15, 40) * (xx * math.cos(grain_angle) + yy * math.sin(grain_angle))
    )
    light_dir = rng.normal(size=2)
    light_dir /= np.linalg.norm(light_dir)
    light = 1.0 + 0.35 * ((xx - 0.5) * float(light_dir[0]) + (yy - 0.5) * float(light_dir[1]))
    # one label map in painter's order (0 = background, holes paint 0 back), then colour per label
    labels_img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(labels_img)
    for k, part in enumerate(parts):
        draw.polygon([tuple(v) for v in part.polygon * big], fill=0 if part.role == "hole" else k + 1)
    labels = np.asarray(labels_img)
    colour = np.zeros((len(parts) + 1, 3), np.float32)
    shade = np.zeros(len(parts) + 1, np.float32)
    grain_amp = np.zeros(len(parts) + 1, np.float32)
    for k, part in enumerate(parts):
        colour[k + 1] = seat_rgb if part.role == "seat" else frame_rgb
        shade[k + 1] = part.shade
        grain_amp[k + 1] = 0.06 if part.role == "frame" else 0.02
    obj = colour[labels] * (shade[labels] * light * (1.0 + grain_amp[labels] * grain))[..., None]
    return np.where((labels > 0)[..., None], obj, img)


def render_photo(parts: list[Part], size: int, rng: np.random.Generator) -> Image.Image:
    """A filled, shaded and textured RGB rendering of the parts on a textured background."""
    big = size * _PHOTO_SUPERSAMPLE
    yy, xx = _unit_grid(big)
    img = _backdrop(rng, yy)
    # the shadow is drawn before the object so the object covers it
    img = img * (1.0 - _shadow(parts, big, rng)[..., None])
    img = _paint_object(parts, img, rng, yy, xx)
    out = Image.fromarray(np.clip(img * 255.0, 0, 255).astype(np.uint8), "RGB")
    out = out.resize((size, size), Image.Resampling.BOX)
    noisy = np.asarray(out, dtype=np.float64) + rng.normal(0.0, 4.0, size=(size, size, 3))
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")

"""The synthetic sketch: a black-on-white 'L' line drawing of an instance, as a person might draw it.

Outlines only, wobbly strokes broken into pieces, stroke widths that vary, small parts left out,
curves simplified, and the whole drawing shifted, scaled and rotated.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .chair import Part

__all__ = ["render_sketch"]

# drawing happens at a multiple of the output size and is box-filtered down, which anti-aliases
# edges; thin strokes need more than filled regions
_SUPERSAMPLE = 4

# How far a sketch departs from the object (unit = canvas side). Tuned with
# benchmarks/synthetic_difficulty.py so that a tiny CNN learns the task but raw pixels do not.
_SKETCH_ROTATION_DEG = 10.0  # whole drawing rotated by U(-r, r)
_SKETCH_SCALE = (0.85, 1.12)  # and scaled by U(lo, hi)
_SKETCH_SHIFT = 0.07  # and shifted by U(-s, s) on each axis
_SKETCH_WOBBLE = (0.004, 0.012)  # amplitude range of the low-frequency tremor of a stroke
_SKETCH_PART_OFFSET = 0.008  # s.d. of each part's own displacement from where it belongs
_SKETCH_DROP_SCALE = 1.0  # multiplies every part's drop probability


def _resample_closed(poly: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` units along the closed outline ``poly`` [K, 2] -> [M, 2]."""
    closed = np.vstack([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(arc[-1] / step), 8)
    t = np.linspace(0.0, arc[-1], n, endpoint=False)
    return np.stack([np.interp(t, arc, closed[:, 0]), np.interp(t, arc, closed[:, 1])], axis=1)


def _smooth_noise(rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """Low-frequency 2-D wobble [n, 2] of about ``amp`` units: a few random sinusoids."""
    t = np.linspace(0.0, 1.0, n)
    out = np.zeros((n, 2))
    for f in (1, 2, 3):
        phase = rng.uniform(0, 2 * math.pi, size=2)
        out += rng.normal(0.0, amp / f, size=2) * np.sin(2 * math.pi * f * t[:, None] + phase)
    return out


def _trace_clean(parts: list[Part], draw: ImageDraw.ImageDraw, big: int) -> None:
    """Every part traced exactly, with a fixed width and no misalignment."""
    for part in parts:
        pts = part.polygon * big
        draw.line([tuple(v) for v in np.vstack([pts, pts[:1]])], fill=0, width=_SUPERSAMPLE, joint="curve")


def _misplacement(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The drawing as a whole is misplaced: (rotation-and-scale matrix [2, 2], shift [2]) about the centre."""
    angle = math.radians(rng.uniform(-_SKETCH_ROTATION_DEG, _SKETCH_ROTATION_DEG))
    scale = rng.uniform(*_SKETCH_SCALE)
    shift = rng.uniform(-_SKETCH_SHIFT, _SKETCH_SHIFT, size=2)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
    return rot, shift


def _draw_strokes(
    pts: np.ndarray, draw: ImageDraw.ImageDraw, big: int, width_px: float, rng: np.random.Generator
) -> None:
    """One outline ``pts`` [M, 2] as 1-3 strokes that start anywhere, with small gaps or overshoots."""
    start = int(rng.integers(len(pts)))
    pts = np.roll(pts, -start, axis=0)
    cuts = np.unique(rng.integers(1, len(pts), size=int(rng.integers(0, 3))))
    bounds = [0, *cuts.tolist(), len(pts)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        b = min(b + int(rng.integers(-2, 4)), len(pts))
        if b - a < 2:
            continue
        stroke = pts[a:b] * big
        w = max(1, int(round(width_px * rng.uniform(0.7, 1.3) * _SUPERSAMPLE)))
        # no rounded joints: the points are dense, so the turn at each one is small
        draw.line(stroke.ravel().tolist(), fill=0, width=w)


def _trace_by_hand(parts: list[Part], draw: ImageDraw.ImageDraw, big: int, rng: np.random.Generator) -> None:
    """The parts as one sketcher draws them: some left out, curves simplified, shaky, misplaced."""
    rot, shift = _misplacement(rng)
    wobble = rng.uniform(*_SKETCH_WOBBLE)  # how shaky this sketcher's hand is
    width_px = rng.uniform(0.7, 1.8)  # pen width at the output resolution
    for part in parts:
        if rng.random() < part.drop_p * _SKETCH_DROP_SCALE:
            continue
        poly = part.polygon
        if len(poly) > 8:  # sketchers simplify curves: keep a handful of the vertices
            keep = int(rng.integers(5, 9))
            poly = poly[np.linspace(0, len(poly), keep, endpoint=False).astype(int)]
        pts = _resample_closed(poly, 0.01)
        pts = pts + _smooth_noise(rng, len(pts), wobble) + rng.normal(0.0, _SKETCH_PART_OFFSET, size=2)
        pts = (pts - 0.5) @ rot.T + 0.5 + shift
        _draw_strokes(pts, draw, big, width_px, rng)


def render_sketch(
    parts: list[Part], size: int, rng: np.random.Generator | None, *, clean: bool = False
) -> Image.Image:
    """A black-on-white 'L' line drawing of the parts.

    With ``clean=True`` (or ``rng=None``) every part is traced exactly, with a fixed width and no
    misalignment: the "perfect sketch" used to check that instances are distinguishable at all.
    """
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(canvas)
    if clean or rng is None:
        _trace_clean(parts, draw, big)
    else:
        _trace_by_hand(parts, draw, big, rng)
    return canvas.resize((size, size), Image.Resampling.BOX)

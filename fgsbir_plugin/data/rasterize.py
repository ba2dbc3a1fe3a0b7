"""Render vector sketches (stroke point lists) as anti-aliased greyscale images."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["split_strokes", "rasterize_strokes", "encode_png"]

_SUPERSAMPLE = 4


def split_strokes(points: np.ndarray) -> list[np.ndarray]:
    """Split an (N, 3) point list into strokes.

    Args:
        points: (N, 3) array of absolute x, y (pixels) and a pen-lift flag that is 1 on the last
            point of each stroke. Points after the last lift form one final stroke.

    Returns:
        One (n_i, 2) float64 array of x, y per stroke, in drawing order.
    """
    points = _check_points(points)
    ends = np.flatnonzero(points[:, 2] > 0.5) + 1
    if len(ends) == 0 or ends[-1] != len(points):
        ends = np.append(ends, len(points))
    starts = np.concatenate([[0], ends[:-1]])
    return [points[s:e, :2] for s, e in zip(starts, ends) if e > s]


def _check_points(points) -> np.ndarray:
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(
            f"stroke points must be an (N, 3) array of x, y, pen-lift, got shape {arr.shape}; "
            "pass absolute coordinates with a pen-lift column"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"stroke points must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("stroke points contain NaN or infinite values; clean the strokes before rendering")
    return arr


def rasterize_strokes(
    points,
    canvas: int = 256,
    line_width: float = 3.0,
    antialias: bool = True,
    max_strokes: int | None = None,
    fraction: float | None = None,
    source_size: float = 256.0,
) -> Image.Image:
    """Draw strokes as black lines on a white square canvas.

    Args:
        points: (N, 3) array: absolute x, y in pixels of a ``source_size`` square (QMUL-V2: 256)
            and a pen-lift flag that is 1 on the last point of each stroke.
        canvas: output side in pixels; coordinates are scaled by ``canvas / source_size``.
        line_width: stroke width in output pixels.
        antialias: draw at 4x resolution and box-downsample, giving grey edge pixels; when False,
            lines are drawn directly at ``canvas`` size (pure black and white).
        max_strokes: render only the first ``max_strokes`` strokes (None: all).
        fraction: render only the first ``ceil(fraction * N)`` points, in drawing order, in [0, 1]
            (None: all). With ``max_strokes`` too, both limits apply.
        source_size: side of the square the coordinates are given in.

    Returns:
        A PIL image, mode ``'L'``, ``canvas`` x ``canvas``: 255 background, 0 ink.
    """
    if not isinstance(canvas, int | np.integer) or canvas < 1:
        raise ValueError(f"canvas must be a positive int (pixels), got {canvas!r}")
    if not line_width > 0:
        raise ValueError(f"line_width must be positive (pixels), got {line_width!r}")
    if not source_size > 0:
        raise ValueError(f"source_size must be positive (pixels), got {source_size!r}")
    if max_strokes is not None and (not isinstance(max_strokes, int | np.integer) or max_strokes < 0):
        raise ValueError(f"max_strokes must be a non-negative int or None, got {max_strokes!r}")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    points = _check_points(points)
    if fraction is not None:
        points = points[: math.ceil(fraction * len(points) - 1e-9)]
    strokes = split_strokes(points) if len(points) else []
    if max_strokes is not None:
        strokes = strokes[:max_strokes]

    ss = _SUPERSAMPLE if antialias else 1
    side = canvas * ss
    image = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(image)
    scale = canvas / source_size
    width = max(1, round(line_width * ss))
    radius = width / 2
    for stroke in strokes:
        # Output pixel i spans supersampled pixels [i*ss, i*ss + ss); its centre is i*ss + (ss-1)/2,
        # so the shift keeps a stroke centred on its coordinates after the box downsample.
        xy = stroke * (scale * ss) + (ss - 1) / 2
        if len(xy) > 1:
            draw.line(xy.ravel().tolist(), fill=0, width=width, joint="curve")
        if width > 2:
            # Round caps: PIL draws butt ends, which leaves single-point strokes invisible.
            for x, y in (xy[0], xy[-1]):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
        elif len(xy) == 1:
            draw.point(xy.ravel().tolist(), fill=0)
    return image.reduce(ss) if ss > 1 else image


def encode_png(image: Image.Image, compress_level: int = 1) -> bytes:
    """Lossless PNG bytes of ``image``; level 1 trades a little size for speed."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()

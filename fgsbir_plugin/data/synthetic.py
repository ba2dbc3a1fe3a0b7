"""A synthetic instance-level sketch/photo dataset, drawn procedurally from a seed.

Every instance is a chair-like object assembled from parts (backrest with openings, seat,
legs, stretcher, arms, finials). All instances share the coarse "chair" layout, so telling
them apart is fine-grained: they differ in the shapes, sizes, counts and details of the parts.

- The photo is a filled, shaded, wood-grained rendering (RGB) with a soft shadow, on a pale
  tinted backdrop (half of them with a floor); the object sits in a canonical pose.
- Each sketch is a black-on-white line drawing ('L') of the same instance as a person might
  draw it: outlines only, wobbly strokes broken into pieces, stroke widths that vary, small
  parts left out, curves simplified, and the whole drawing shifted, scaled and rotated.

Nothing is downloaded and only numpy and Pillow draw it. The bytes are a pure function of the
arguments: photo ``i`` and its sketches depend only on ``(seed, i)``, so growing ``num_photos``
keeps the earlier instances unchanged.

>>> sketches, photos = read(num_photos=8, sketches_per_photo=2, image_size=32)
>>> sketches["train"].num_rows, photos["test"].num_rows
(12, 2)
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict
from PIL import Image, ImageDraw, ImageFilter

from .schema import PHOTO_FEATURES, SKETCH_FEATURES

__all__ = ["read", "DEFAULT_NUM_PHOTOS", "DEFAULT_SKETCHES_PER_PHOTO", "DEFAULT_IMAGE_SIZE"]

DEFAULT_NUM_PHOTOS = 128
DEFAULT_SKETCHES_PER_PHOTO = 3
DEFAULT_IMAGE_SIZE = 64
DEFAULT_TEST_FRACTION = 0.25

# drawing happens at a multiple of the output size and is box-filtered down, which anti-aliases
# edges; thin strokes need more than filled regions
_SUPERSAMPLE = 4
_PHOTO_SUPERSAMPLE = 2

# How far a sketch departs from the object (unit = canvas side). Tuned with
# benchmarks/synthetic_difficulty.py so that a tiny CNN learns the task but raw pixels do not.
_SKETCH_ROTATION_DEG = 10.0  # whole drawing rotated by U(-r, r)
_SKETCH_SCALE = (0.85, 1.12)  # and scaled by U(lo, hi)
_SKETCH_SHIFT = 0.07  # and shifted by U(-s, s) on each axis
_SKETCH_WOBBLE = (0.004, 0.012)  # amplitude range of the low-frequency tremor of a stroke
_SKETCH_PART_OFFSET = 0.008  # s.d. of each part's own displacement from where it belongs
_SKETCH_DROP_SCALE = 1.0  # multiplies every part's drop probability
_PHOTO_FLOOR_P = 0.5  # probability that a photo shows a floor below a horizon


@dataclass(frozen=True)
class _Part:
    """One closed outline of an object, in unit coordinates (x right, y down, [0, 1])."""

    name: str
    polygon: np.ndarray  # [K, 2] float64, implicitly closed
    role: str  # "frame", "seat" (its own colour half of the time) or "hole" (background shows through)
    shade: float  # brightness factor of this face in the photo
    drop_p: float  # probability that a sketcher leaves the part out


# --------------------------------------------------------------------------- geometry


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _sample_params(rng: np.random.Generator) -> dict:
    """Draw the parameters of one instance; all lengths are fractions of the canvas side."""
    p: dict = {}
    p["cx"] = 0.5 + rng.uniform(-0.02, 0.02)
    p["seat_y"] = rng.uniform(0.50, 0.58)
    p["seat_w"] = rng.uniform(0.34, 0.54)
    p["seat_depth"] = rng.uniform(0.03, 0.09)
    p["seat_t"] = rng.uniform(0.025, 0.07)
    p["back_h"] = rng.uniform(0.22, 0.38)
    p["back_w_frac"] = rng.uniform(0.65, 1.0)
    p["back_tilt"] = rng.uniform(-0.05, 0.08)
    p["back_top"] = int(rng.integers(4))  # flat, arch, peak, notch
    p["back_top_amp"] = rng.uniform(0.03, 0.08)
    p["openings"] = int(rng.integers(5))  # none, vertical slots, horizontal slots, round, grid
    p["n_openings"] = int(rng.integers(1, 5))
    p["opening_margin"] = rng.uniform(0.12, 0.25)
    p["leg_len"] = rng.uniform(0.17, 0.30)
    p["leg_w"] = rng.uniform(0.018, 0.045)
    p["leg_splay"] = rng.uniform(-0.01, 0.06)
    p["leg_taper"] = rng.uniform(0.4, 1.0)
    p["back_legs"] = bool(rng.random() < 0.6)
    p["stretcher"] = int(rng.integers(3))  # none, bar, cross
    p["stretcher_at"] = rng.uniform(0.35, 0.75)
    p["arms"] = int(rng.integers(3))  # none, straight post, outward-curved post
    p["arm_h"] = rng.uniform(0.07, 0.15)
    p["finials"] = bool(rng.random() < 0.35)
    p["finial_r"] = rng.uniform(0.015, 0.035)
    p["cushion"] = bool(rng.random() < 0.4)
    return p


def _build_parts(p: dict) -> list[_Part]:
    """Turn instance parameters into outlines, listed back to front (painter's order)."""
    cx, sy, sw, d, st = p["cx"], p["seat_y"], p["seat_w"], p["seat_depth"], p["seat_t"]
    inset = 0.8 * d  # the far edge of the seat looks narrower (cheap perspective)
    parts: list[_Part] = []

    # backrest: a quadrilateral standing on the far edge of the seat, sheared by the tilt
    bw = (sw - 2 * inset) * p["back_w_frac"]
    by, bh, tilt = sy - d, p["back_h"], p["back_tilt"]

    def back_xy(u: float, v: float) -> tuple[float, float]:
        # u in [0, 1] across the back, v in [0, 1] from bottom to top
        return cx - bw / 2 + u * bw + v * tilt, by - v * bh

    top = [back_xy(1.0, 1.0)]
    amp = p["back_top_amp"]
    if p["back_top"] == 1:  # arch
        for u in np.linspace(0.9, 0.1, 9):
            x, y = back_xy(float(u), 1.0)
            top.append((x, y - amp * math.sin(math.pi * u)))
    elif p["back_top"] == 2:  # peak
        x, y = back_xy(0.5, 1.0)
        top.append((x, y - amp))
    elif p["back_top"] == 3:  # notch
        x, y = back_xy(0.5, 1.0)
        top.append((x, y + 0.6 * amp))
    top.append(back_xy(0.0, 1.0))
    back = np.array([back_xy(0.0, 0.0), back_xy(1.0, 0.0), *top], dtype=np.float64)

    # back legs first: they are behind everything else
    leg_bottom = sy + st + p["leg_len"]
    lw, splay, taper = p["leg_w"], p["leg_splay"], p["leg_taper"]

    def leg(x_top: float, y_top: float, y_bot: float, side: float) -> np.ndarray:
        xb = x_top + side * splay
        return np.array(
            [
                [x_top - lw / 2, y_top],
                [x_top + lw / 2, y_top],
                [xb + lw * taper / 2, y_bot],
                [xb - lw * taper / 2, y_bot],
            ]
        )

    if p["back_legs"]:
        for side in (-1.0, 1.0):
            x = cx + side * (sw / 2 - inset - lw / 2)
            parts.append(
                _Part("back_leg", leg(x, sy - d + st, leg_bottom - 0.7 * d, side), "frame", 0.6, 0.3)
            )

    parts.append(_Part("back", back, "frame", 0.9, 0.02))

    # openings cut through the backrest
    m = p["opening_margin"]
    kind, n = p["openings"], p["n_openings"]
    holes: list[np.ndarray] = []
    if kind == 1:  # vertical slots
        gap = 0.5 / (n + 1)
        w = (1 - 2 * m - gap * (n - 1)) / n
        for i in range(n):
            u0 = m + i * (w + gap)
            holes.append(
                np.array([back_xy(u0, m), back_xy(u0 + w, m), back_xy(u0 + w, 1 - m), back_xy(u0, 1 - m)])
            )
    elif kind == 2:  # horizontal slots
        gap = 0.4 / (n + 1)
        h = (1 - 2 * m - gap * (n - 1)) / n
        for i in range(n):
            v0 = m + i * (h + gap)
            holes.append(
                np.array([back_xy(m, v0), back_xy(1 - m, v0), back_xy(1 - m, v0 + h), back_xy(m, v0 + h)])
            )
    elif kind == 3:  # one round window, size from the count
        x, y = back_xy(0.5, 0.55)
        r = min(bw, bh) * (0.12 + 0.06 * n)
        holes.append(_ellipse(x, y, r, r * 0.9))
    elif kind == 4:  # 2 x 2 grid of windows
        half = (1 - 2 * m - 0.1) / 2
        for i in range(2):
            for j in range(2):
                u0, v0 = m + i * (half + 0.1), m + j * (half + 0.1)
                holes.append(
                    np.array(
                        [
                            back_xy(u0, v0),
                            back_xy(u0 + half, v0),
                            back_xy(u0 + half, v0 + half),
                            back_xy(u0, v0 + half),
                        ]
                    )
                )
    parts.extend(_Part("opening", h, "hole", 1.0, 0.25) for h in holes)

    if p["finials"]:
        r = p["finial_r"]
        for u in (0.0, 1.0):
            x, y = back_xy(u, 1.0)
            parts.append(_Part("finial", _ellipse(x, y - r, r, r), "frame", 0.95, 0.35))

    # seat: top face (trapezoid) and front face (slab)
    seat_top = np.array(
        [[cx - sw / 2, sy], [cx + sw / 2, sy], [cx + sw / 2 - inset, sy - d], [cx - sw / 2 + inset, sy - d]]
    )
    parts.append(_Part("seat_top", seat_top, "seat", 1.1, 0.0))
    parts.append(_Part("seat_front", _rect(cx - sw / 2, sy, cx + sw / 2, sy + st), "seat", 0.75, 0.05))
    if p["cushion"]:
        parts.append(
            _Part("cushion", _ellipse(cx, sy - d / 2, sw / 2 - inset, d / 2 + 0.01, 20), "seat", 1.2, 0.4)
        )

    # front legs and stretcher
    xs = [cx + side * (sw / 2 - lw / 2) for side in (-1.0, 1.0)]
    for side, x in zip((-1.0, 1.0), xs):
        parts.append(_Part("leg", leg(x, sy + st, leg_bottom, side), "frame", 0.85, 0.05))
    if p["stretcher"]:
        v = p["stretcher_at"]
        y = sy + st + v * p["leg_len"]
        xl, xr = xs[0] - v * splay, xs[1] + v * splay
        t = 0.6 * lw
        if p["stretcher"] == 1:
            parts.append(_Part("stretcher", _rect(xl, y - t / 2, xr, y + t / 2), "frame", 0.8, 0.3))
        else:
            y0, y1 = sy + st + 0.15 * p["leg_len"], y
            for a, b in (((xl, y0), (xr, y1)), ((xr, y0), (xl, y1))):
                parts.append(
                    _Part(
                        "stretcher",
                        np.array(
                            [
                                [a[0], a[1] - t / 2],
                                [a[0], a[1] + t / 2],
                                [b[0], b[1] + t / 2],
                                [b[0], b[1] - t / 2],
                            ]
                        ),
                        "frame",
                        0.8,
                        0.3,
                    )
                )

    # arms: a post at each side of the seat with a cap on top
    if p["arms"]:
        ah = p["arm_h"]
        for side in (-1.0, 1.0):
            x = cx + side * (sw / 2 - lw / 2)
            bend = side * (0.03 if p["arms"] == 2 else 0.0)
            post = np.array(
                [
                    [x - lw / 2, sy],
                    [x + lw / 2, sy],
                    [x + lw / 2 + bend, sy - ah],
                    [x - lw / 2 + bend, sy - ah],
                ]
            )
            cap_x = x + bend
            cap = _rect(cap_x - 1.6 * lw, sy - ah - 0.6 * lw, cap_x + 1.6 * lw, sy - ah + 0.3 * lw)
            parts.append(_Part("arm", post, "frame", 0.85, 0.3))
            parts.append(_Part("arm_cap", cap, "frame", 1.0, 0.4))
    return parts


# --------------------------------------------------------------------------- photo


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


def _render_photo(parts: list[_Part], size: int, rng: np.random.Generator) -> Image.Image:
    """A filled, shaded and textured RGB rendering of the parts on a textured background."""
    big = size * _PHOTO_SUPERSAMPLE
    yy, xx = _unit_grid(big)

    # background: a pale product-photo backdrop (a tinted gradient), sometimes a floor below
    wall = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0))
    floor = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.6, 0.9))
    horizon = rng.uniform(0.62, 0.8) if rng.random() < _PHOTO_FLOOR_P else 2.0
    img = np.where(
        (yy < horizon)[..., None], wall * (0.92 + 0.12 * yy[..., None]), floor * (1.05 - 0.2 * yy[..., None])
    )

    # a soft shadow under the object, drawn before the object so the object covers it
    all_pts = np.concatenate([pt.polygon for pt in parts])
    x0, x1 = all_pts[:, 0].min(), all_pts[:, 0].max()
    y1 = all_pts[:, 1].max()
    shadow = Image.new("L", (big, big), 0)
    ImageDraw.Draw(shadow).ellipse(
        [x0 * big, (y1 - 0.03) * big, x1 * big, (y1 + 0.03) * big], fill=int(rng.uniform(60, 120))
    )
    shadow = np.asarray(shadow.filter(ImageFilter.GaussianBlur(big * 0.02)), dtype=np.float32) / 255.0
    img = img * (1.0 - shadow[..., None])

    # object: a frame colour and (sometimes) a different upholstery colour
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
    img = np.where((labels > 0)[..., None], obj, img)

    out = Image.fromarray(np.clip(img * 255.0, 0, 255).astype(np.uint8), "RGB")
    out = out.resize((size, size), Image.Resampling.BOX)
    noisy = np.asarray(out, dtype=np.float64) + rng.normal(0.0, 4.0, size=(size, size, 3))
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- sketch


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


def _render_sketch(
    parts: list[_Part], size: int, rng: np.random.Generator | None, *, clean: bool = False
) -> Image.Image:
    """A black-on-white 'L' line drawing of the parts.

    With ``clean=True`` (or ``rng=None``) every part is traced exactly, with a fixed width and no
    misalignment: the "perfect sketch" used to check that instances are distinguishable at all.
    """
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(canvas)
    clean = clean or rng is None
    if clean:
        for part in parts:
            pts = part.polygon * big
            draw.line(
                [tuple(v) for v in np.vstack([pts, pts[:1]])], fill=0, width=_SUPERSAMPLE, joint="curve"
            )
        return canvas.resize((size, size), Image.Resampling.BOX)

    # the drawing as a whole is misplaced: rotation, scale, shift about the canvas centre
    angle = math.radians(rng.uniform(-_SKETCH_ROTATION_DEG, _SKETCH_ROTATION_DEG))
    scale = rng.uniform(*_SKETCH_SCALE)
    shift = rng.uniform(-_SKETCH_SHIFT, _SKETCH_SHIFT, size=2)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]) * scale
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
        # one outline becomes 1-3 strokes that start anywhere, with small gaps or overshoots
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
    return canvas.resize((size, size), Image.Resampling.BOX)


# --------------------------------------------------------------------------- dataset


def _png(img: Image.Image) -> dict:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def _instance_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    # stream 0: shape and photo; stream k >= 1: sketch k - 1. Independent of num_photos.
    return np.random.default_rng([seed, index, stream])


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an int, got {type(value).__name__}; pass a whole number >= {minimum}."
        )
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; pass a larger value.")
    return int(value)


def read(
    data_dir: object = None,
    *,
    num_photos: int = DEFAULT_NUM_PHOTOS,
    sketches_per_photo: int = DEFAULT_SKETCHES_PER_PHOTO,
    image_size: int = DEFAULT_IMAGE_SIZE,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    category: str = "synthetic",
) -> tuple[DatasetDict, DatasetDict]:
    """Generate the synthetic dataset: ``(sketches, photos)``, each with ``train`` and ``test``.

    Args:
        data_dir: ignored (the data is generated, not read); accepted so every reader has the
            same signature.
        num_photos: number of object instances (one photo each), >= 2.
        sketches_per_photo: sketches drawn of each instance, >= 1; they differ in their noise.
        image_size: side in pixels of every (square) photo and sketch, >= 16.
        test_fraction: fraction of the photos held out for ``test``, in (0, 1); the split is by
            photo (a photo and all its sketches fall in one split) and both splits are non-empty.
            The last ``round(test_fraction * num_photos)`` instances form the test split.
        seed: non-negative int; the same arguments give the same bytes.
        category: value of the ``category`` column.

    Returns:
        Sketch rows ``{sketch: Image (PNG, mode L, black strokes on white), sketch_id, photo_id,
        category}`` and photo rows ``{photo: Image (PNG, mode RGB), photo_id, category}`` in the
        schema of ``fgsbir_plugin.data.schema``. Ids are ``syn00000`` and ``syn00000_0``.
    """
    num_photos = _check_int("num_photos", num_photos, 2)
    sketches_per_photo = _check_int("sketches_per_photo", sketches_per_photo, 1)
    image_size = _check_int("image_size", image_size, 16)
    seed = _check_int("seed", seed, 0)
    if (
        not isinstance(test_fraction, (float, int))
        or isinstance(test_fraction, bool)
        or not 0 < test_fraction < 1
    ):
        raise ValueError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}.")
    if not isinstance(category, str) or not category:
        raise ValueError(f"category must be a non-empty string, got {category!r}.")
    num_test = int(round(test_fraction * num_photos))
    if not 1 <= num_test <= num_photos - 1:
        raise ValueError(
            f"test_fraction={test_fraction} of num_photos={num_photos} leaves an empty split; "
            "use more photos or a test_fraction nearer 0.5."
        )

    rows: dict[str, tuple[dict, dict]] = {}
    for split in ("train", "test"):
        rows[split] = (
            {"sketch": [], "sketch_id": [], "photo_id": [], "category": []},
            {"photo": [], "photo_id": [], "category": []},
        )
    for i in range(num_photos):
        split = "train" if i < num_photos - num_test else "test"
        sk, ph = rows[split]
        photo_id = f"syn{i:05d}"
        rng = _instance_rng(seed, i, 0)
        parts = _build_parts(_sample_params(rng))
        ph["photo"].append(_png(_render_photo(parts, image_size, rng)))
        ph["photo_id"].append(photo_id)
        ph["category"].append(category)
        for k in range(sketches_per_photo):
            sk["sketch"].append(_png(_render_sketch(parts, image_size, _instance_rng(seed, i, k + 1))))
            sk["sketch_id"].append(f"{photo_id}_{k}")
            sk["photo_id"].append(photo_id)
            sk["category"].append(category)

    sketches = DatasetDict(
        {split: Dataset.from_dict(rows[split][0], features=SKETCH_FEATURES) for split in ("train", "test")}
    )
    photos = DatasetDict(
        {split: Dataset.from_dict(rows[split][1], features=PHOTO_FEATURES) for split in ("train", "test")}
    )
    return sketches, photos

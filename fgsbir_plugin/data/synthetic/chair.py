"""The synthetic object: a chair-like outline set drawn from a few dozen random parameters.

``sample_params`` draws an instance's parameters; ``build_parts`` turns them into closed outlines
(backrest with openings, seat, legs, stretcher, arms, finials) in unit coordinates, listed back to
front. All instances share the coarse layout, so telling them apart is fine-grained: they differ in
the shapes, sizes, counts and details of the parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Part", "sample_params", "build_parts"]


@dataclass(frozen=True)
class Part:
    """One closed outline of an object, in unit coordinates (x right, y down, [0, 1])."""

    name: str
    polygon: np.ndarray  # [K, 2] float64, implicitly closed
    role: str  # "frame", "seat" (its own colour half of the time) or "hole" (background shows through)
    shade: float  # brightness factor of this face in the photo
    drop_p: float  # probability that a sketcher leaves the part out


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def sample_params(rng: np.random.Generator) -> dict:
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


@dataclass(frozen=True)
class _Backrest:
    """The backrest: a quadrilateral standing on the far edge of the seat, sheared by the tilt."""

    cx: float
    width: float
    base_y: float
    height: float
    tilt: float

    @classmethod
    def of(cls, p: dict, inset: float) -> _Backrest:
        width = (p["seat_w"] - 2 * inset) * p["back_w_frac"]
        return cls(p["cx"], width, p["seat_y"] - p["seat_depth"], p["back_h"], p["back_tilt"])

    def xy(self, u: float, v: float) -> tuple[float, float]:
        """The point at ``u`` in [0, 1] across the back and ``v`` in [0, 1] from bottom to top."""
        return self.cx - self.width / 2 + u * self.width + v * self.tilt, self.base_y - v * self.height

    def outline(self, p: dict) -> np.ndarray:
        """The back's polygon: bottom edge, then a top edge that is flat, arched, peaked or notched."""
        top = [self.xy(1.0, 1.0)]
        amp = p["back_top_amp"]
        if p["back_top"] == 1:  # arch
            for u in np.linspace(0.9, 0.1, 9):
                x, y = self.xy(float(u), 1.0)
                top.append((x, y - amp * math.sin(math.pi * u)))
        elif p["back_top"] == 2:  # peak
            x, y = self.xy(0.5, 1.0)
            top.append((x, y - amp))
        elif p["back_top"] == 3:  # notch
            x, y = self.xy(0.5, 1.0)
            top.append((x, y + 0.6 * amp))
        top.append(self.xy(0.0, 1.0))
        return np.array([self.xy(0.0, 0.0), self.xy(1.0, 0.0), *top], dtype=np.float64)

    def quad(self, u0: float, v0: float, u1: float, v1: float) -> np.ndarray:
        """The backrest-aligned quadrilateral spanning ``[u0, u1] x [v0, v1]``."""
        return np.array([self.xy(u0, v0), self.xy(u1, v0), self.xy(u1, v1), self.xy(u0, v1)])


def _leg_bottom(p: dict) -> float:
    return p["seat_y"] + p["seat_t"] + p["leg_len"]


def _leg(p: dict, x_top: float, y_top: float, y_bot: float, side: float) -> np.ndarray:
    """A leg from ``(x_top, y_top)`` down to ``y_bot``, splayed outwards on ``side`` and tapered."""
    lw, splay, taper = p["leg_w"], p["leg_splay"], p["leg_taper"]
    xb = x_top + side * splay
    return np.array(
        [
            [x_top - lw / 2, y_top],
            [x_top + lw / 2, y_top],
            [xb + lw * taper / 2, y_bot],
            [xb - lw * taper / 2, y_bot],
        ]
    )


def _back_legs(p: dict, inset: float) -> list[Part]:
    """The two back legs, if any: behind everything else."""
    if not p["back_legs"]:
        return []
    cx, sy, sw, d, st, lw = p["cx"], p["seat_y"], p["seat_w"], p["seat_depth"], p["seat_t"], p["leg_w"]
    parts = []
    for side in (-1.0, 1.0):
        x = cx + side * (sw / 2 - inset - lw / 2)
        parts.append(
            Part("back_leg", _leg(p, x, sy - d + st, _leg_bottom(p) - 0.7 * d, side), "frame", 0.6, 0.3)
        )
    return parts


def _openings(p: dict, back: _Backrest) -> list[Part]:
    """Openings cut through the backrest: vertical or horizontal slots, a round window, or a grid."""
    m = p["opening_margin"]
    kind, n = p["openings"], p["n_openings"]
    holes: list[np.ndarray] = []
    if kind == 1:  # vertical slots
        gap = 0.5 / (n + 1)
        w = (1 - 2 * m - gap * (n - 1)) / n
        for i in range(n):
            u0 = m + i * (w + gap)
            holes.append(back.quad(u0, m, u0 + w, 1 - m))
    elif kind == 2:  # horizontal slots
        gap = 0.4 / (n + 1)
        h = (1 - 2 * m - gap * (n - 1)) / n
        for i in range(n):
            v0 = m + i * (h + gap)
            holes.append(back.quad(m, v0, 1 - m, v0 + h))
    elif kind == 3:  # one round window, size from the count
        x, y = back.xy(0.5, 0.55)
        r = min(back.width, back.height) * (0.12 + 0.06 * n)
        holes.append(_ellipse(x, y, r, r * 0.9))
    elif kind == 4:  # 2 x 2 grid of windows
        half = (1 - 2 * m - 0.1) / 2
        for i in range(2):
            for j in range(2):
                u0, v0 = m + i * (half + 0.1), m + j * (half + 0.1)
                holes.append(back.quad(u0, v0, u0 + half, v0 + half))
    return [Part("opening", h, "hole", 1.0, 0.25) for h in holes]


def _finials(p: dict, back: _Backrest) -> list[Part]:
    """Round knobs on the two top corners of the backrest, if any."""
    if not p["finials"]:
        return []
    r = p["finial_r"]
    parts = []
    for u in (0.0, 1.0):
        x, y = back.xy(u, 1.0)
        parts.append(Part("finial", _ellipse(x, y - r, r, r), "frame", 0.95, 0.35))
    return parts


def _seat(p: dict, inset: float) -> list[Part]:
    """The seat's top face (a trapezoid), its front face (a slab) and, sometimes, a cushion."""
    cx, sy, sw, d, st = p["cx"], p["seat_y"], p["seat_w"], p["seat_depth"], p["seat_t"]
    seat_top = np.array(
        [[cx - sw / 2, sy], [cx + sw / 2, sy], [cx + sw / 2 - inset, sy - d], [cx - sw / 2 + inset, sy - d]]
    )
    parts = [
        Part("seat_top", seat_top, "seat", 1.1, 0.0),
        Part("seat_front", _rect(cx - sw / 2, sy, cx + sw / 2, sy + st), "seat", 0.75, 0.05),
    ]
    if p["cushion"]:
        parts.append(
            Part("cushion", _ellipse(cx, sy - d / 2, sw / 2 - inset, d / 2 + 0.01, 20), "seat", 1.2, 0.4)
        )
    return parts


def _stretchers(p: dict, xs: list[float]) -> list[Part]:
    """The bar (one) or cross (two) between the front legs ``xs``, if any."""
    if not p["stretcher"]:
        return []
    sy, st, lw, splay = p["seat_y"], p["seat_t"], p["leg_w"], p["leg_splay"]
    v = p["stretcher_at"]
    y = sy + st + v * p["leg_len"]
    xl, xr = xs[0] - v * splay, xs[1] + v * splay
    t = 0.6 * lw
    if p["stretcher"] == 1:
        return [Part("stretcher", _rect(xl, y - t / 2, xr, y + t / 2), "frame", 0.8, 0.3)]
    y0, y1 = sy + st + 0.15 * p["leg_len"], y
    parts = []
    for a, b in (((xl, y0), (xr, y1)), ((xr, y0), (xl, y1))):
        bar = np.array(
            [
                [a[0], a[1] - t / 2],
                [a[0], a[1] + t / 2],
                [b[0], b[1] + t / 2],
                [b[0], b[1] - t / 2],
            ]
        )
        parts.append(Part("stretcher", bar, "frame", 0.8, 0.3))
    return parts


def _front_legs(p: dict) -> list[Part]:
    """The two front legs, then the stretcher between them."""
    cx, sy, sw, st, lw = p["cx"], p["seat_y"], p["seat_w"], p["seat_t"], p["leg_w"]
    xs = [cx + side * (sw / 2 - lw / 2) for side in (-1.0, 1.0)]
    parts = [
        Part("leg", _leg(p, x, sy + st, _leg_bottom(p), side), "frame", 0.85, 0.05)
        for side, x in zip((-1.0, 1.0), xs)
    ]
    return parts + _stretchers(p, xs)


def _arms(p: dict) -> list[Part]:
    """A post at each side of the seat with a cap on top, straight or bent outwards, if any."""
    if not p["arms"]:
        return []
    cx, sy, sw, lw, ah = p["cx"], p["seat_y"], p["seat_w"], p["leg_w"], p["arm_h"]
    parts = []
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
        parts.append(Part("arm", post, "frame", 0.85, 0.3))
        parts.append(Part("arm_cap", cap, "frame", 1.0, 0.4))
    return parts


def build_parts(p: dict) -> list[Part]:
    """Turn instance parameters into outlines, listed back to front (painter's order)."""
    inset = 0.8 * p["seat_depth"]  # the far edge of the seat looks narrower (cheap perspective)
    back = _Backrest.of(p, inset)
    return [
        *_back_legs(p, inset),
        Part("back", back.outline(p), "frame", 0.9, 0.02),
        *_openings(p, back),
        *_finials(p, back),
        *_seat(p, inset),
        *_front_legs(p),
        *_arms(p),
    ]

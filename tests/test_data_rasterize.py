"""rasterize_strokes draws where the strokes are, nowhere else, and renders partial sketches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt
from skimage.draw import line as sk_line

from fgsbir_plugin.data.rasterize import rasterize_strokes, split_strokes

# Two strokes: an open zigzag and a horizontal bar; pen-lift 1 on each stroke's last point.
STROKES = np.array(
    [
        [40, 40, 0],
        [120, 60, 0],
        [60, 130, 0],
        [200, 150, 1],
        [30, 220, 0],
        [220, 220, 1],
    ],
    dtype=np.float64,
)


def reference_mask(points: np.ndarray, canvas: int = 256) -> np.ndarray:
    """1-px polylines drawn independently with scikit-image: True on the stroke centre lines."""
    mask = np.zeros((canvas, canvas), bool)
    for stroke in split_strokes(points):
        for (x0, y0), (x1, y1) in zip(stroke[:-1], stroke[1:]):
            rr, cc = sk_line(round(y0), round(x0), round(y1), round(x1))
            mask[rr, cc] = True
    return mask


def test_split_strokes_follows_pen_lifts():
    strokes = split_strokes(STROKES)
    assert [len(s) for s in strokes] == [4, 2]
    np.testing.assert_array_equal(strokes[1], [[30, 220], [220, 220]])
    # Points after the last lift still form a stroke.
    assert [len(s) for s in split_strokes(STROKES[:5])] == [4, 1]


@pytest.mark.parametrize("antialias", [True, False])
def test_ink_on_strokes_white_far_away(antialias):
    image = rasterize_strokes(STROKES, canvas=256, line_width=3.0, antialias=antialias)
    assert image.mode == "L" and image.size == (256, 256)
    pixels = np.asarray(image)
    ref = reference_mask(STROKES)
    assert (pixels[ref] < 100).all()
    far = distance_transform_edt(~ref) > 3.5
    assert (pixels[far] == 255).all()
    levels = set(np.unique(pixels).tolist())
    if antialias:
        assert len(levels) > 10  # grey edge pixels
    else:
        assert levels == {0, 255}


def test_canvas_scales_coordinates():
    small = np.asarray(rasterize_strokes(STROKES, canvas=64, line_width=2.0))
    ref = reference_mask(STROKES * [0.25, 0.25, 1], canvas=64)
    assert (small[ref] < 128).all()
    assert (small[distance_transform_edt(~ref) > 2.5] == 255).all()


def test_partial_rendering():
    full = np.asarray(rasterize_strokes(STROKES))
    first = np.asarray(rasterize_strokes(STROKES, max_strokes=1))
    only_first = np.asarray(rasterize_strokes(STROKES[:4]))
    np.testing.assert_array_equal(first, only_first)
    assert (first[220, 100:150] == 255).all() and (full[220, 100:150] < 100).all()
    # fraction: ceil(0.5 * 6) = 3 points -> the first stroke's first two segments only.
    half = np.asarray(rasterize_strokes(STROKES, fraction=0.5))
    np.testing.assert_array_equal(half, np.asarray(rasterize_strokes(STROKES[:3])))
    np.testing.assert_array_equal(np.asarray(rasterize_strokes(STROKES, fraction=1.0)), full)
    assert (np.asarray(rasterize_strokes(STROKES, fraction=0.0)) == 255).all()
    assert (np.asarray(rasterize_strokes(STROKES, max_strokes=0)) == 255).all()


def test_single_point_stroke_is_visible():
    dot = np.asarray(rasterize_strokes(np.array([[100.0, 50.0, 1.0]]), line_width=4.0))
    assert dot[50, 100] < 50 and dot[50, 110] == 255


@pytest.mark.parametrize(
    "points, kwargs, match",
    [
        (np.zeros((4, 2)), {}, r"\(N, 3\)"),
        (np.zeros(3), {}, r"\(N, 3\)"),
        (np.array([[0, 0, np.nan]]), {}, "NaN"),
        (STROKES, {"canvas": 0}, "canvas"),
        (STROKES, {"line_width": 0}, "line_width"),
        (STROKES, {"fraction": 1.5}, "fraction"),
        (STROKES, {"max_strokes": -1}, "max_strokes"),
    ],
)
def test_bad_input(points, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rasterize_strokes(points, **kwargs)

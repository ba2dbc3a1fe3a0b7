"""Reader for the QMUL-Shoe-V2 / QMUL-Chair-V2 layout: a stroke pickle plus a photo folder.

Layout (``data_dir`` is the folder holding both, or its parent with a ``chairv2``/``shoev2`` folder)::

    <Name>_Coordinate          pickle: dict '/<split>/<photo_id>_<k>' -> (N, 3) float array
    photo/<photo_id>.png       the photos

Stroke arrays hold absolute x, y on a 256 x 256 canvas and a pen-lift flag that is 1 on the
last point of each stroke. A sketch pairs with the photo named by the key's last path part
with its final ``_<k>`` removed; its split is the key's first part (``train`` or ``test``).
The pickle is read with ``safe_pickle.load_numpy_pickle`` (numpy globals only, never code).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from .._common import default_data_dir
from .rasterize import encode_png, rasterize_strokes
from .records import READER_SPLITS, PhotoItem, SketchItem, assemble
from .safe_pickle import load_numpy_pickle
from .validate import Issues, SkipLog, image_files

__all__ = ["read", "read_strokes", "find_source", "KNOWN"]

KNOWN = {
    # name -> (pickle file name, folder names to look for under a parent folder, category)
    "chairv2": ("ChairV2_Coordinate", ("chairv2", "ChairV2"), "chair"),
    "shoev2": ("ShoeV2_Coordinate", ("shoev2", "ShoeV2"), "shoe"),
}


def find_source(data_dir: str | os.PathLike | None, name: str | None = None) -> tuple[Path, Path]:
    """Locate ``(stroke pickle, photo folder)`` for dataset ``name`` (None: any ``*_Coordinate``).

    ``data_dir`` may be the dataset folder itself or its parent (None: the default data folder).
    """
    if data_dir is None:
        data_dir = default_data_dir()
        if data_dir is None:
            raise FileNotFoundError(
                f"no data_dir given and no default data folder found; pass data_dir= (the folder "
                f"holding {KNOWN[name][0] if name in KNOWN else '<Name>_Coordinate'}) or set $FGSBIR_DATA"
            )
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data_dir {root} is not a folder; pass the folder holding the stroke pickle")
    if name is not None:
        pickle_name, subdirs, _ = KNOWN[name]
        candidates = [root, *(root / d for d in subdirs)]
        for folder in candidates:
            if (folder / pickle_name).is_file():
                return folder / pickle_name, folder / "photo"
        tried = ", ".join(str(c / pickle_name) for c in candidates)
        raise FileNotFoundError(f"no {pickle_name} found (looked for {tried}); point data_dir at its folder")
    found = sorted(root.glob("*_Coordinate"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{root} holds {len(found)} '*_Coordinate' stroke pickles ({', '.join(p.name for p in found) or 'none'}); "
            "a QMUL-V2 folder must hold exactly one"
        )
    return found[0], root / "photo"


def read_strokes(
    data_dir: str | os.PathLike | None = None, name: str | None = "chairv2"
) -> dict[str, np.ndarray]:
    """The raw stroke arrays, keyed as in the pickle (``'/<split>/<sketch_id>'`` -> (N, 3) float64)."""
    pickle_path, _ = find_source(data_dir, name)
    return _load_pickle(pickle_path)


def _load_pickle(path: Path) -> dict:
    data = load_numpy_pickle(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} holds a {type(data).__name__}, not a dict of stroke arrays; is it a QMUL-V2 *_Coordinate file?"
        )
    return data


def _check_strokes(key, value, origin: str) -> str | None:
    """None when ``value`` is a usable (N, 3) stroke array, else what is wrong with it."""
    if not isinstance(value, np.ndarray):
        return f"{origin} holds a {type(value).__name__}, not a numpy array"
    if value.ndim != 2 or value.shape[1] != 3:
        return f"{origin} has shape {value.shape}, not (N, 3) points of x, y, pen-lift"
    if value.shape[0] == 0:
        return f"{origin} has no points (an empty sketch)"
    if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
        return f"{origin} has dtype {value.dtype}, not real numbers"
    if not np.isfinite(value).all():
        return f"{origin} contains NaN or infinite coordinates"
    return None


def read(
    data_dir: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    category: str | None = None,
    canvas: int = 256,
    line_width: float = 3.0,
    antialias: bool = True,
    max_strokes: int | None = None,
    fraction: float | None = None,
    lenient: bool = False,
    skip_log: SkipLog | None = None,
    verify_images: bool = True,
    num_threads: int | None = None,
) -> tuple[DatasetDict, DatasetDict]:
    """Read a QMUL-V2 dataset as ``(sketches, photos)`` DatasetDicts with splits train and test.

    Args:
        data_dir: the folder holding ``<Name>_Coordinate`` and ``photo/``, or its parent.
        name: ``"chairv2"`` / ``"shoev2"`` picks the pickle file name; None takes the one
            ``*_Coordinate`` file in ``data_dir``.
        category: the ``category`` column (default: ``"chair"`` / ``"shoe"`` for known names, else "").
        canvas, line_width, antialias, max_strokes, fraction: passed to ``rasterize_strokes``
            (canvas and line width in pixels; ``fraction`` of points / ``max_strokes`` first
            strokes give partial sketches). Sketches are rendered once here and stored as PNG bytes.
        lenient: skip and count bad items instead of raising (see ``validate``).
        skip_log: receives the skip counts (lenient loads).
        verify_images: decode every photo once while loading (catches corrupt files now).
        num_threads: rendering threads (default: CPU count, at most 8).

    Returns:
        ``(sketches, photos)`` in the row schema of ``schema.py``.
    """
    if name is not None and name not in KNOWN:
        raise ValueError(f"unknown QMUL-V2 name {name!r}; use one of {sorted(KNOWN)} or None")
    pickle_path, photo_dir = find_source(data_dir, name)
    photo_dir = photo_dir.absolute()  # rows keep file paths: they must not depend on the cwd
    if not photo_dir.is_dir():
        raise FileNotFoundError(
            f"photo folder {photo_dir} is missing; it must hold <photo_id>.png beside {pickle_path.name}"
        )
    if category is None:
        category = next((c for p, _, c in KNOWN.values() if p == pickle_path.name), "")
    issues = Issues(lenient, skip_log)
    strokes = _load_pickle(pickle_path)

    items: list[tuple[SketchItem, np.ndarray]] = []
    for key, value in strokes.items():
        origin = f"{pickle_path} key {key!r}"
        parts = str(key).strip("/").split("/") if isinstance(key, str) else []
        if len(parts) != 2 or parts[0] not in READER_SPLITS or "_" not in parts[1]:
            issues(
                "unpaired_file",
                origin,
                f"{origin} is not of the form '/<train|test>/<photo_id>_<k>'; rename the key or remove the entry",
            )
            continue
        problem = _check_strokes(key, value, origin)
        if problem:
            issues("bad_strokes", origin, f"{problem}; fix or remove that entry of the pickle")
            continue
        split, sketch_id = parts
        photo_id = sketch_id.rsplit("_", 1)[0]
        items.append((SketchItem(sketch_id, photo_id, origin, split=split, category=category), value))

    def render(points: np.ndarray) -> dict:
        image = rasterize_strokes(
            points,
            canvas=canvas,
            line_width=line_width,
            antialias=antialias,
            max_strokes=max_strokes,
            fraction=fraction,
        )
        return {"path": None, "bytes": encode_png(image)}

    workers = num_threads or min(8, os.cpu_count() or 1)
    # Drawing and PNG encoding release the GIL for most of their time, so threads scale.
    with ThreadPoolExecutor(workers) as pool:
        for (item, _), ref in zip(items, pool.map(render, [v for _, v in items])):
            item.image = ref

    photos = [PhotoItem(p.stem, str(p), path=str(p), category=category) for p in image_files(photo_dir)]
    return assemble(
        [item for item, _ in items],
        photos,
        issues,
        photo_hint=lambda pid: str(photo_dir / f"{pid}.png"),
        source=str(pickle_path),
        verify_images=verify_images,
    )

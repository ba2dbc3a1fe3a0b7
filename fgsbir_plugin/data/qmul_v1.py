"""Reader for QMUL-Shoe / QMUL-Chair version 1 (the DSSA paper's datasets): ``.mat`` arrays.

Layout (``data_dir``: the category folder, the ``qmul_v1`` folder holding it, or that one's parent)::

    <cat>/<cat>_sketch_db_{train,test}.mat   variable ``data``: uint8 (n, H, W), white ground, black ink
    <cat>/<cat>_edge_db_{train,test}.mat     the same layout: photo edge maps (no colour photos exist)
    <cat>/<cat>_annotation.json              optional: per split, human-annotated triplets

Sketch i pairs with edge map i of the same split. Ids are ``<cat>_<split>_<i>`` (i from 0) for
the photo (edge map) and ``<cat>_<split>_<i>_sketch`` for its sketch. Edge maps are stored as
RGB (three equal channels) so that every photo row decodes to RGB; sketches are ``'L'``.

Arrays saved from MATLAB may arrive in MATLAB order ``(H, W, n)``. Each file is read in the
order that makes the four files agree (a sketch file and its edge file hold as many images, the
train and test files of one kind hold images of one size), with the annotation file's counts
breaking a tie; ``axes="nhw"`` / ``"hwn"`` states the order instead.

The annotated triplets are not rows of the sketch table (the row schema is fixed); read them
with ``read_triplets``: one row per (sketch, more similar photo, less similar photo), by id.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Value
from scipy.io import loadmat

from .._common import default_data_dir
from .records import READER_SPLITS, PhotoItem, SketchItem, assemble
from .validate import Issues, SkipLog, image_ref_from_array

__all__ = ["read", "read_triplets", "find_category_dir", "CATEGORIES", "TRIPLET_FEATURES", "AXES"]

logger = logging.getLogger("fgsbir_plugin.data")

CATEGORIES = {"shoes_v1": "shoes", "chairs_v1": "chairs"}
AXES = {"nhw": "numpy order (n, H, W)", "hwn": "MATLAB order (H, W, n)"}
"""The axis orders a ``.mat`` array may be stored in, by the name ``read(axes=...)`` takes."""
_KINDS = ("sketch", "edge")
_SINGULAR = {"shoes": "shoe", "chairs": "chair", "handbags": "handbag"}

TRIPLET_FEATURES = Features(
    {
        "sketch_id": Value("string"),
        "positive_photo_id": Value("string"),
        "negative_photo_id": Value("string"),
    }
)


def find_category_dir(data_dir: str | os.PathLike | None, category: str) -> Path:
    """The folder holding ``<category>_sketch_db_train.mat``; ``data_dir`` may be it or a parent."""
    if data_dir is None:
        data_dir = default_data_dir()
        if data_dir is None:
            raise FileNotFoundError(
                "no data_dir given and no default data folder found; pass data_dir= (the qmul_v1 "
                "folder or its category folder) or set $FGSBIR_DATA"
            )
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data_dir {root} is not a folder; pass the qmul_v1 folder or its category folder"
        )
    marker = f"{category}_sketch_db_train.mat"
    candidates = [root, root / category, root / "qmul_v1" / category]
    for folder in candidates:
        if (folder / marker).is_file():
            return folder
    tried = ", ".join(str(c / marker) for c in candidates)
    raise FileNotFoundError(
        f"no {marker} found (looked for {tried}); point data_dir at the folder holding it"
    )


def _load_mat_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; a QMUL-V1 category folder needs sketch and edge .mat files for train and test"
        )
    try:
        mat = loadmat(path, variable_names=["data"])
    except Exception as exc:  # scipy raises several types for damaged files
        raise ValueError(
            f"{path} is not a readable MATLAB file ({type(exc).__name__}: {exc}); get a fresh copy"
        ) from None
    if "data" not in mat:
        raise ValueError(f"{path} has no variable 'data'; QMUL-V1 files store the images in 'data'")
    data = mat["data"]
    if data.ndim != 3 or data.dtype != np.uint8 or min(data.shape) == 0:
        raise ValueError(
            f"{path} holds 'data' of shape {data.shape} and dtype {data.dtype}, not uint8 (n, H, W) images; "
            "is it a QMUL-V1 sketch/edge file?"
        )
    return data


def _reading(shape: tuple[int, ...], order: str) -> tuple[int, tuple[int, ...]]:
    """(number of images, image shape (H, W)) of a 3-d array of ``shape`` stored in ``order``."""
    return (shape[0], shape[1:]) if order == "nhw" else (shape[2], shape[:2])


def _disagreement(shapes: dict, paths: dict, orders: dict) -> str | None:
    """None when the four files read in ``orders`` fit together, else what does not fit (names files)."""
    read = {key: _reading(shapes[key], orders[key]) for key in shapes}
    for split in READER_SPLITS:
        (n_sketch, _), (n_edge, _) = read["sketch", split], read["edge", split]
        if n_sketch != n_edge:
            return (
                f"{paths['sketch', split]} holds {n_sketch} sketches but {paths['edge', split]} holds "
                f"{n_edge} edge maps; sketch i pairs with edge map i, so the counts must match"
            )
    for kind in _KINDS:
        (_, train_hw), (_, test_hw) = read[kind, "train"], read[kind, "test"]
        if train_hw != test_hw:
            return (
                f"{paths[kind, 'train']} holds {kind} images of {train_hw[0]} x {train_hw[1]} pixels but "
                f"{paths[kind, 'test']} holds {test_hw[0]} x {test_hw[1]}; the splits of one kind share one image size"
            )
    return None


def _annotated_counts(path: Path) -> dict[str, int] | None:
    """Sketches per split listed by the annotation file, or None when there is none."""
    if not path.is_file():
        return None
    return {split: len(per_sketch) for split, per_sketch in _read_annotation(path).items()}


def _axis_orders(shapes: dict, paths: dict, annotation: Path, axes: str | None) -> dict:
    """``(kind, split) -> "nhw" | "hwn"``: the one way of reading the four files that fits together.

    Raises ValueError naming the files when no reading fits, or when several do and the annotation
    file's counts do not single one out.
    """
    keys = list(shapes)
    options = [axes] if axes is not None else list(AXES)
    fits = []
    for combo in itertools.product(options, repeat=len(keys)):
        orders = dict(zip(keys, combo))
        if _disagreement(shapes, paths, orders) is None:
            fits.append(orders)
    if not fits:
        stated = {key: axes or "nhw" for key in keys}
        raise ValueError(f"{_disagreement(shapes, paths, stated)} -- get a consistent copy of the dataset")
    if len(fits) > 1:
        counts = _annotated_counts(annotation)
        if counts is not None:
            agreeing = [o for o in fits if all(_reading(shapes[k], o[k])[0] == counts[k[1]] for k in keys)]
            fits = agreeing or fits  # an annotation file that fits no reading does not choose one
    if len(fits) == 1:
        return fits[0]
    key = next(k for k in keys if len({o[k] for o in fits}) > 1)
    (n1, hw1), (n2, hw2) = _reading(shapes[key], "nhw"), _reading(shapes[key], "hwn")
    raise ValueError(
        f"{paths[key]} holds 'data' of shape {shapes[key]}, which reads as {n1} images of {hw1[0]} x {hw1[1]} "
        f"pixels in {AXES['nhw']} or as {n2} images of {hw2[0]} x {hw2[1]} in {AXES['hwn']}, and neither the "
        f"other .mat files nor {annotation.name} tell which; pass axes='nhw' or axes='hwn' to the reader"
    )


def read(
    data_dir: str | os.PathLike | None = None,
    *,
    category: str = "shoes",
    axes: str | None = None,
    lenient: bool = False,
    skip_log: SkipLog | None = None,
    num_threads: int | None = None,
) -> tuple[DatasetDict, DatasetDict]:
    """Read QMUL-V1 ``category`` as ``(sketches, photos)`` DatasetDicts with splits train and test.

    Args:
        data_dir: the category folder, the ``qmul_v1`` folder, or its parent (None: default data folder).
        category: the file prefix, e.g. ``"shoes"`` or ``"chairs"``.
        axes: how the ``.mat`` arrays are stored: ``"nhw"`` (numpy order, n images of H x W),
            ``"hwn"`` (MATLAB order), or None to tell from the files (see the module docstring).
        lenient: skip and count blank sketches instead of raising (see ``validate``).
        num_threads: PNG-encoding threads (default: CPU count, at most 8).

    Returns:
        ``(sketches, photos)``: sketches ``'L'`` (H x W as stored, 256 x 256), edge-map photos RGB.
    """
    if axes is not None and axes not in AXES:
        raise ValueError(f"axes must be one of {sorted(AXES)} or None (tell from the files), got {axes!r}")
    folder = find_category_dir(data_dir, category)
    issues = Issues(lenient, skip_log)
    label = _SINGULAR.get(category, category)
    paths = {
        (kind, split): folder / f"{category}_{kind}_db_{split}.mat"
        for split in READER_SPLITS
        for kind in _KINDS
    }
    raw = {key: _load_mat_array(path) for key, path in paths.items()}
    orders = _axis_orders(
        {key: a.shape for key, a in raw.items()}, paths, folder / f"{category}_annotation.json", axes
    )
    for key, order in orders.items():
        if order == "hwn" and axes is None:
            logger.info("reading %s as %s", paths[key], AXES["hwn"])
    sketches, photos = [], []
    for split in READER_SPLITS:
        sk_path, ed_path = paths["sketch", split], paths["edge", split]
        # MATLAB arrays arrive column-major; one copy makes every per-image slice contiguous.
        sk, ed = (
            np.ascontiguousarray(
                np.moveaxis(raw[kind, split], 2, 0) if orders[kind, split] == "hwn" else raw[kind, split]
            )
            for kind in _KINDS
        )
        # PNG encoding releases the GIL, so threads share the work across cores.
        with ThreadPoolExecutor(num_threads or min(8, os.cpu_count() or 1)) as pool:
            edge_refs = list(pool.map(image_ref_from_array, ed, ["RGB"] * len(ed)))
            sketch_refs = list(pool.map(image_ref_from_array, sk, ["L"] * len(sk)))
        for i in range(len(sk)):
            photo_id = f"{category}_{split}_{i}"
            photos.append(
                PhotoItem(photo_id, f"{ed_path} [{i}]", image=edge_refs[i], split=split, category=label)
            )
            origin = f"{sk_path} [{i}]"
            if sk[i].min() == sk[i].max():
                issues(
                    "bad_strokes",
                    origin,
                    f"sketch {origin} is blank (one grey level); remove it from the file",
                )
                continue
            sketches.append(
                SketchItem(
                    f"{photo_id}_sketch", photo_id, origin, image=sketch_refs[i], split=split, category=label
                )
            )
    return assemble(
        sketches, photos, issues, photo_hint=lambda pid: f"edge map {pid} in {folder}", source=str(folder)
    )


def read_triplets(
    data_dir: str | os.PathLike | None = None, *, category: str = "shoes"
) -> DatasetDict | None:
    """The human-annotated triplets of ``<category>_annotation.json``, by id, or None when absent.

    The file lists, per split and per sketch i, pairs ``[a, b]`` of edge-map indices of the same
    split; as in the original training code, photo a is the annotated positive (judged more
    similar to sketch i) and photo b the negative.

    Returns:
        ``DatasetDict`` train/test with ``TRIPLET_FEATURES`` columns sketch_id, positive_photo_id,
        negative_photo_id (the ids ``read`` gives), or None when the annotation file does not exist.
    """
    folder = find_category_dir(data_dir, category)
    path = folder / f"{category}_annotation.json"
    if not path.is_file():
        return None
    out = DatasetDict()
    for split, per_sketch in _read_annotation(path).items():
        cols: dict[str, list[str]] = {k: [] for k in TRIPLET_FEATURES}
        for i, pairs in enumerate(per_sketch):
            for positive, negative in pairs:
                cols["sketch_id"].append(f"{category}_{split}_{i}_sketch")
                cols["positive_photo_id"].append(f"{category}_{split}_{positive}")
                cols["negative_photo_id"].append(f"{category}_{split}_{negative}")
        out[split] = Dataset.from_dict(cols, features=TRIPLET_FEATURES, split=split)
    return out


def _read_annotation(path: Path) -> dict[str, list]:
    """``split -> per sketch i, its list of [a, b] photo-index pairs``, every entry checked.

    Raises ValueError naming ``path`` for a file that is not JSON or not in the annotation layout.
    """
    try:
        ann = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); get a fresh copy of the annotation file"
        ) from None
    out = {}
    for split in READER_SPLITS:
        per_sketch = ann.get(split) if isinstance(ann, dict) else None
        per_sketch = per_sketch.get("triplets") if isinstance(per_sketch, dict) else None
        if not isinstance(per_sketch, list):
            raise ValueError(f"{path} has no '{split}' -> 'triplets' list; is it a QMUL-V1 annotation file?")
        n = len(per_sketch)
        for i, pairs in enumerate(per_sketch):
            if not isinstance(pairs, list):
                raise ValueError(
                    f"{path} {split} triplets of sketch {i} are {pairs!r}, not a list of photo-index pairs; "
                    "get a fresh copy of the annotation file"
                )
            for pair in pairs:
                if not (
                    isinstance(pair, list)
                    and len(pair) == 2
                    and all(isinstance(j, int) and not isinstance(j, bool) and 0 <= j < n for j in pair)
                ):
                    raise ValueError(
                        f"{path} {split} triplets of sketch {i} hold {pair!r}, not a pair of photo indices in "
                        f"[0, {n}); get a fresh copy of the annotation file"
                    )
        out[split] = per_sketch
    return out

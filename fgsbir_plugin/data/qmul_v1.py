"""Reader for QMUL-Shoe / QMUL-Chair version 1 (the DSSA paper's datasets): ``.mat`` arrays.

Layout (``data_dir``: the category folder, the ``qmul_v1`` folder holding it, or that one's parent)::

    <cat>/<cat>_sketch_db_{train,test}.mat   variable ``data``: uint8 (n, H, W), white ground, black ink
    <cat>/<cat>_edge_db_{train,test}.mat     the same layout: photo edge maps (no colour photos exist)
    <cat>/<cat>_annotation.json              optional: per split, human-annotated triplets

Sketch i pairs with edge map i of the same split. Ids are ``<cat>_<split>_<i>`` (i from 0) for
the photo (edge map) and ``<cat>_<split>_<i>_sketch`` for its sketch. Edge maps are stored as
RGB (three equal channels) so that every photo row decodes to RGB; sketches are ``'L'``.

The annotated triplets are not rows of the sketch table (the row schema is fixed); read them
with ``read_triplets``: one row per (sketch, more similar photo, less similar photo), by id.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Value
from scipy.io import loadmat

from .._common import default_data_dir
from .records import READER_SPLITS, PhotoItem, SketchItem, assemble
from .validate import Issues, SkipLog, image_ref_from_array

__all__ = ["read", "read_triplets", "find_category_dir", "CATEGORIES", "TRIPLET_FEATURES"]

CATEGORIES = {"shoes_v1": "shoes", "chairs_v1": "chairs"}
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
    # MATLAB arrays arrive column-major; one copy makes every per-image slice contiguous.
    return np.ascontiguousarray(data)


def read(
    data_dir: str | os.PathLike | None = None,
    *,
    category: str = "shoes",
    lenient: bool = False,
    skip_log: SkipLog | None = None,
    num_threads: int | None = None,
) -> tuple[DatasetDict, DatasetDict]:
    """Read QMUL-V1 ``category`` as ``(sketches, photos)`` DatasetDicts with splits train and test.

    Args:
        data_dir: the category folder, the ``qmul_v1`` folder, or its parent (None: default data folder).
        category: the file prefix, e.g. ``"shoes"`` or ``"chairs"``.
        lenient: skip and count blank sketches instead of raising (see ``validate``).
        num_threads: PNG-encoding threads (default: CPU count, at most 8).

    Returns:
        ``(sketches, photos)``: sketches ``'L'`` (H x W as stored, 256 x 256), edge-map photos RGB.
    """
    folder = find_category_dir(data_dir, category)
    issues = Issues(lenient, skip_log)
    label = _SINGULAR.get(category, category)
    sketches, photos = [], []
    for split in READER_SPLITS:
        sk_path = folder / f"{category}_sketch_db_{split}.mat"
        ed_path = folder / f"{category}_edge_db_{split}.mat"
        sk, ed = _load_mat_array(sk_path), _load_mat_array(ed_path)
        if len(sk) != len(ed):
            raise ValueError(
                f"{sk_path} holds {len(sk)} sketches but {ed_path} holds {len(ed)} edge maps; sketch i pairs "
                "with edge map i, so the counts must match -- get a consistent copy of the dataset"
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
    try:
        ann = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); get a fresh copy") from None
    out = DatasetDict()
    for split in READER_SPLITS:
        try:
            per_sketch = ann[split]["triplets"]
        except (KeyError, TypeError):
            raise ValueError(
                f"{path} has no '{split}' -> 'triplets' list; is it a QMUL-V1 annotation file?"
            ) from None
        n = len(per_sketch)
        cols: dict[str, list[str]] = {k: [] for k in TRIPLET_FEATURES}
        for i, pairs in enumerate(per_sketch):
            for pair in pairs:
                if len(pair) != 2 or not all(isinstance(j, int) and 0 <= j < n for j in pair):
                    raise ValueError(
                        f"{path} {split} triplets of sketch {i} hold {pair!r}, not a pair of photo indices in "
                        f"[0, {n}); get a fresh copy of the annotation file"
                    )
                cols["sketch_id"].append(f"{category}_{split}_{i}_sketch")
                cols["positive_photo_id"].append(f"{category}_{split}_{pair[0]}")
                cols["negative_photo_id"].append(f"{category}_{split}_{pair[1]}")
        out[split] = Dataset.from_dict(cols, features=TRIPLET_FEATURES, split=split)
    return out

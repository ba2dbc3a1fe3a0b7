"""``load_fgsbir``: one call from a dataset name or folder to ``datasets.DatasetDict``.

Names and readers (``name_or_path`` -> reader module: what ``data_dir`` is):

- ``"chairv2"``, ``"shoev2"`` -> ``qmul_v2`` (stroke pickle): the folder with ``*_Coordinate``, or its parent.
- ``"shoes_v1"``, ``"chairs_v1"`` -> ``qmul_v1`` (.mat arrays): the category folder, ``qmul_v1``, or its parent.
- ``"sketchy"`` -> ``sketchy``: the folder holding ``photo/`` and ``sketch/``.
- ``"synthetic"`` -> ``synthetic`` (generated): not used.
- a folder path (then ``data_dir`` must be None), detected from its contents: ``photos/`` +
  ``sketches/`` -> ``pairs_folder``; one ``*_Coordinate`` -> ``qmul_v2``; ``photo/`` + ``sketch/``
  -> ``sketchy``; one ``<cat>_sketch_db_train.mat`` -> ``qmul_v1``.

For the named real datasets, ``data_dir=None`` means the default data folder
(``$FGSBIR_DATA``, else ``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict

from ..train.config import ANNOTATED_DATASETS  # light (no torch, no datasets); TrainConfig checks it too
from . import pairs_folder, qmul_v1, qmul_v2, sketchy, synthetic

__all__ = ["load_fgsbir", "load_fgsbir_pair", "carve_validation", "annotated_triplets", "DATASET_NAMES"]

# name -> (module, fixed reader kwargs)
_NAMED = {
    "chairv2": ("qmul_v2", {"name": "chairv2"}),
    "shoev2": ("qmul_v2", {"name": "shoev2"}),
    "shoes_v1": ("qmul_v1", {"category": "shoes"}),
    "chairs_v1": ("qmul_v1", {"category": "chairs"}),
    "sketchy": ("sketchy", {}),
    "synthetic": ("synthetic", {}),
}
DATASET_NAMES = tuple(_NAMED)
# reader name -> module whose ``read(data_dir, **kwargs)`` returns ``(sketches, photos)``
_READERS = {
    "pairs_folder": pairs_folder,
    "qmul_v1": qmul_v1,
    "qmul_v2": qmul_v2,
    "sketchy": sketchy,
    "synthetic": synthetic,
}


def _resolve(name_or_path, data_dir) -> tuple[str, dict, object]:
    """(reader module name, fixed kwargs, data_dir to pass)."""
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(
            f"name_or_path must be a dataset name or a folder path, got {type(name_or_path).__name__}"
        )
    key = str(name_or_path).lower()
    if isinstance(name_or_path, str) and key in _NAMED:
        module, fixed = _NAMED[key]
        if module == "synthetic" and data_dir is not None:
            raise ValueError("the synthetic dataset is generated, not read: leave data_dir=None.")
        return module, fixed, data_dir
    path = Path(name_or_path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a known dataset name ({', '.join(DATASET_NAMES)}) nor an existing folder; "
            "check the spelling or the path."
        )
    if data_dir is not None:
        raise ValueError("name_or_path is already a folder; leave data_dir=None")
    if (path / "photos").is_dir() and (path / "sketches").is_dir():
        return "pairs_folder", {}, path
    if len(list(path.glob("*_Coordinate"))) == 1:
        return "qmul_v2", {}, path
    if (path / "photo").is_dir() and (path / "sketch").is_dir():
        return "sketchy", {}, path
    v1 = list(path.glob("*_sketch_db_train.mat"))
    if len(v1) == 1:
        return "qmul_v1", {"category": v1[0].name[: -len("_sketch_db_train.mat")]}, path
    raise FileNotFoundError(
        f"{path} does not look like a known layout: expected photos/ + sketches/ (pairs folder), one "
        "<Name>_Coordinate pickle + photo/ (QMUL-V2), photo/ + sketch/ (Sketchy), or one "
        "<cat>_sketch_db_train.mat (QMUL-V1 category folder); see the README"
    )


def carve_validation(
    sketches: DatasetDict, photos: DatasetDict, validation_size: float, seed: int = 0
) -> tuple[DatasetDict, DatasetDict]:
    """Move a seeded fraction of the train photos, with all their sketches, to ``validation``.

    The train photo ids are sorted, permuted by ``numpy.random.default_rng(seed)``, and the first
    ``round(validation_size * n)`` (at least 1, at most n - 1) become the validation photos. Row
    order within each split is kept. Returns new DatasetDicts ordered train, validation, test.
    """
    if isinstance(validation_size, bool) or not isinstance(validation_size, int | float | np.floating):
        raise TypeError(f"validation_size must be a fraction in [0, 1), got {type(validation_size).__name__}")
    if not 0.0 <= validation_size < 1.0:
        raise ValueError(
            f"validation_size must be a fraction of the train photos in [0, 1), got {validation_size!r}"
        )
    if "validation" in sketches or "validation" in photos:
        raise ValueError("the dataset already has a validation split; pass validation_size=0")
    if validation_size == 0:
        return sketches, photos
    train_ids = list(photos["train"]["photo_id"])
    ids = sorted(train_ids)
    if len(ids) < 2:
        raise ValueError(
            f"the train split has {len(ids)} photo(s); carving a validation split needs at least 2"
        )
    n_val = min(max(round(validation_size * len(ids)), 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = {ids[i] for i in order[:n_val]}

    def split(ds: Dataset, id_list) -> tuple[Dataset, Dataset]:
        in_val = [pid in val for pid in id_list]
        keep = [i for i, v in enumerate(in_val) if not v]
        move = [i for i, v in enumerate(in_val) if v]
        return ds.select(keep), ds.select(move)

    s_train, s_val = split(sketches["train"], list(sketches["train"]["photo_id"]))
    p_train, p_val = split(photos["train"], train_ids)
    new_s = DatasetDict({"train": s_train, "validation": s_val})
    new_p = DatasetDict({"train": p_train, "validation": p_val})
    for k in sketches:
        if k != "train":
            new_s[k] = sketches[k]
    for k in photos:
        if k != "train":
            new_p[k] = photos[k]
    return new_s, new_p


def load_fgsbir_pair(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    validation_size: float = 0.0,
    seed: int = 0,
    lenient: bool = False,
    **reader_kwargs,
) -> tuple[DatasetDict, DatasetDict]:
    """Read a dataset once and return ``(sketches, photos)`` DatasetDicts with the same splits.

    Args:
        name_or_path: a dataset name (see the module table) or a folder path.
        data_dir: where a named dataset lives (None: the default data folder).
        validation_size: fraction of the train photos moved, with their sketches, to a
            ``validation`` split (0: none). See ``carve_validation``.
        seed: seeds the validation carve, and is also passed to readers that take a ``seed``
            (synthetic generation; pairs_folder / sketchy seeded test split).
        lenient: skip and count bad items instead of raising; the counts are logged and
            warned (``validate.LenientSkipWarning``); pass ``skip_log=SkipLog()`` to read them.
        **reader_kwargs: passed to the reader's ``read`` (e.g. ``canvas``, ``line_width``,
            ``fraction``, ``max_strokes`` for QMUL-V2; ``test_fraction`` for folders); a keyword
            the reader does not take is a ValueError naming the ones it does.

    Returns:
        ``(sketches, photos)`` with the features of ``schema.py``; sketches one row per sketch,
        photos the gallery of unique photos of each split.
    """
    module_name, fixed, data_dir = _resolve(name_or_path, data_dir)
    clash = sorted(set(fixed) & set(reader_kwargs))
    if clash:
        raise ValueError(f"{name_or_path!r} fixes {clash} itself; do not pass them")
    module = _READERS[module_name]
    params = inspect.signature(module.read).parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {**fixed, **reader_kwargs}
    if "seed" in params or var_kw:
        kwargs.setdefault("seed", seed)
    skip_log = kwargs.pop("skip_log", None)
    if "lenient" in params:
        kwargs["lenient"] = lenient
        if skip_log is not None:
            kwargs["skip_log"] = skip_log
    # A reader without a lenient mode (generated data) has nothing to skip, so lenient is moot.
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown and not var_kw:
        raise ValueError(
            f"the {module_name} reader does not take {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(k for k in params if k != 'data_dir'))} -- check the spelling of the reader options"
        )
    sketches, photos = module.read(data_dir, **kwargs)
    return carve_validation(sketches, photos, validation_size, seed)


def load_fgsbir(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    config: str = "sketches",
    validation_size: float = 0.0,
    seed: int = 0,
    lenient: bool = False,
    **reader_kwargs,
) -> DatasetDict:
    """Load an FG-SBIR dataset as a ``datasets.DatasetDict`` (``train``, ``test``, maybe ``validation``).

    Args:
        config: ``"sketches"`` (one row per sketch: sketch, sketch_id, photo_id, category) or
            ``"photos"`` (the gallery: photo, photo_id, category). Use ``load_fgsbir_pair`` to
            get both from one read.
        Others: as in ``load_fgsbir_pair``.

    Example:
        >>> sketches = load_fgsbir("chairv2", validation_size=0.1)  # doctest: +SKIP
        >>> sketches["train"][0]["sketch"]  # a PIL 'L' image, decoded on access  # doctest: +SKIP
    """
    if config not in ("sketches", "photos"):
        raise ValueError(f"config must be 'sketches' or 'photos', got {config!r}")
    sketches, photos = load_fgsbir_pair(
        name_or_path, data_dir, validation_size=validation_size, seed=seed, lenient=lenient, **reader_kwargs
    )
    return sketches if config == "sketches" else photos


def annotated_triplets(name: str, data_dir: str | os.PathLike | None = None) -> DatasetDict | None:
    """Human-annotated (sketch, positive photo, negative photo) triplets by id, or None.

    Only QMUL-V1 ships them (``<cat>_annotation.json``); see ``qmul_v1.read_triplets``.
    """
    key = str(name).lower()
    if key not in ANNOTATED_DATASETS:
        raise ValueError(
            f"annotated triplets exist only for {' and '.join(ANNOTATED_DATASETS)}, not {name!r}"
        )
    return qmul_v1.read_triplets(data_dir, category=_NAMED[key][1]["category"])

"""Reader for the Sketchy database layout, for instance-level retrieval within a category.

Layout (``data_dir`` is the folder holding ``photo/`` and ``sketch/``)::

    photo/<category>/<photo_id>.jpg
    sketch/<category>/<photo_id>-<k>.png
    testset.txt                       optional: test photos, one per line, as '<category>/<photo_id>[.ext]'

The released archive nests one more level of augmentation variants
(``photo/tx_000000000000/<category>/...``); pass ``variant="tx_000000000000"`` (the default
picks that folder automatically when it exists in both trees). A sketch pairs with the photo
named by its stem with the last ``-<k>`` (or ``_<k>``) removed, within the same category; the
``category`` column holds the folder name. Photo ids must be unique across categories (they
are in Sketchy: ImageNet file names). Without ``testset.txt`` a seeded ``test_fraction`` of the
photos is the test split (see ``pairs_folder.seeded_test_split``).
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import DatasetDict

from .pairs_folder import list_pairs, seeded_test_split, split_file_lines
from .records import assemble
from .validate import Issues, SkipLog

__all__ = ["read"]

_DEFAULT_VARIANT = "tx_000000000000"


def _read_testset(path: Path) -> set[tuple[str, str]]:
    out = set()
    for n, line in enumerate(split_file_lines(path), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        parts = entry.replace("\\", "/").split("/")
        if len(parts) != 2:
            raise ValueError(f"{path} line {n} is {entry!r}, not '<category>/<photo_id>'; fix that line")
        out.add((parts[0], os.path.splitext(parts[1])[0]))
    return out


def _trees(root: Path, variant: str | None) -> tuple[Path, Path]:
    """``(photo_root, sketch_root)``: ``photo/`` and ``sketch/``, or their ``variant`` sub-folders."""
    photo_root, sketch_root = root / "photo", root / "sketch"
    for folder in (photo_root, sketch_root):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is missing; a Sketchy folder holds photo/<category>/ and sketch/<category>/"
            )
    if (
        variant is None
        and (photo_root / _DEFAULT_VARIANT).is_dir()
        and (sketch_root / _DEFAULT_VARIANT).is_dir()
    ):
        variant = _DEFAULT_VARIANT
    if variant is not None:
        photo_root, sketch_root = photo_root / variant, sketch_root / variant
        for folder in (photo_root, sketch_root):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"variant folder {folder} is missing; pick a variant present in photo/ and sketch/"
                )
    return photo_root, sketch_root


def _list_categories(photo_root: Path, sketch_root: Path, issues: Issues) -> tuple[list, list]:
    """Photos and sketches of every category folder; a sketch category without photos is an issue."""
    categories = sorted(p.name for p in photo_root.iterdir() if p.is_dir())
    if not categories:
        raise FileNotFoundError(
            f"{photo_root} holds no category folders; expected photo/<category>/<photo_id>.jpg"
        )
    photos, sketches = [], []
    for cat in categories:
        if not (sketch_root / cat).is_dir():
            raise FileNotFoundError(
                f"category {cat!r} has photos but no sketch folder {sketch_root / cat}; add it or remove {photo_root / cat}"
            )
        ph, sk = list_pairs(photo_root / cat, sketch_root / cat, issues, cat)
        photos += ph
        sketches += sk
    extra = sorted({p.name for p in sketch_root.iterdir() if p.is_dir()} - set(categories))
    for cat in extra:
        for f in sorted((sketch_root / cat).iterdir()):
            issues(
                "sketch_without_photo",
                str(f),
                f"sketch {f} is in category {cat!r}, which has no photo folder; add {photo_root / cat}",
            )
    return photos, sketches


def _assign_splits(photos: list, root: Path, test_fraction: float, seed: int) -> None:
    """Set each photo's split from ``testset.txt``, or from a seeded ``test_fraction`` without one."""
    testset = root / "testset.txt"
    if testset.is_file():
        test = _read_testset(testset)
        known = {(p.category, p.photo_id) for p in photos}
        unknown = sorted(test - known)
        if unknown:
            raise FileNotFoundError(
                f"{testset} lists {len(unknown)} photo(s) that do not exist (e.g. '{'/'.join(unknown[0])}'); fix the list"
            )
        for p in photos:
            p.split = "test" if (p.category, p.photo_id) in test else "train"
    else:
        test_ids = seeded_test_split([p.photo_id for p in photos], test_fraction, seed)
        for p in photos:
            p.split = "test" if p.photo_id in test_ids else "train"


def _in_their_photos_category(sketches: list, photos: list, issues: Issues) -> list:
    """The sketches whose category is their photo's; a sketch filed under another category is an issue."""
    cat_of = {}
    for p in photos:
        cat_of.setdefault(p.photo_id, p.category)
    kept = []
    for s in sketches:
        if s.photo_id in cat_of and cat_of[s.photo_id] != s.category:
            issues(
                "sketch_without_photo",
                s.origin,
                f"sketch {s.origin} is in category {s.category!r} but photo '{s.photo_id}' is in "
                f"{cat_of[s.photo_id]!r}; move the sketch to its photo's category",
            )
            continue
        kept.append(s)
    return kept


def read(
    data_dir: str | os.PathLike,
    *,
    variant: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    lenient: bool = False,
    skip_log: SkipLog | None = None,
    verify_images: bool = True,
) -> tuple[DatasetDict, DatasetDict]:
    """Read a Sketchy-layout folder as ``(sketches, photos)`` DatasetDicts with train and test.

    Args:
        data_dir: the folder holding ``photo/`` and ``sketch/``.
        variant: sub-folder of both trees to read (e.g. ``"tx_000000000000"``); None reads
            ``photo/<category>`` directly, or that default variant when it exists.
        test_fraction, seed: the seeded split used when there is no ``testset.txt``.
        lenient, skip_log, verify_images: as in ``pairs_folder.read``.
    """
    if data_dir is None:
        raise ValueError("the Sketchy reader needs data_dir: the folder holding photo/ and sketch/")
    root = Path(data_dir).absolute()  # rows keep file paths: they must not depend on the cwd
    photo_root, sketch_root = _trees(root, variant)
    issues = Issues(lenient, skip_log)
    photos, sketches = _list_categories(photo_root, sketch_root, issues)
    _assign_splits(photos, root, test_fraction, seed)
    # A sketch names its photo within its own category folder.
    sketches = _in_their_photos_category(sketches, photos, issues)
    return assemble(
        sketches,
        photos,
        issues,
        photo_hint=lambda pid: f"{photo_root}/<category>/{pid}.jpg",
        source=str(root),
        verify_images=verify_images,
    )

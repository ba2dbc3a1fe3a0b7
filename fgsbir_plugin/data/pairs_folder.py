"""Reader for a folder of sketch/photo pairs that a user can make by hand.

Layout::

    <root>/photos/<photo_id>.<ext>              one file per photo
    <root>/sketches/<photo_id>_<k>.<ext>        any number of sketches per photo ('-' works too:
                                                <photo_id>-<k>.<ext>)
    <root>/train.txt, <root>/test.txt           optional split files: one photo id per line

``<ext>`` is any of png, jpg, jpeg, bmp, gif, webp, tif, tiff (any case). A sketch pairs with
the photo named by its file stem with the last ``_<k>`` or ``-<k>`` removed (``k`` is the text
after the last ``_`` or ``-``, so photo ids may themselves contain ``_`` and ``-``). The sketch
id is the file stem. Split files list photo ids, one per line; blank lines and lines starting
with ``#`` are ignored; both files must exist if either does, and every photo must be in exactly
one. Without split files, a seeded ``test_fraction`` of the photos (sorted by id, then permuted
by ``numpy.random.default_rng(seed)``) is the test split; every sketch goes with its photo.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from .records import PhotoItem, SketchItem, assemble
from .validate import Issues, SkipLog, image_files

__all__ = ["read", "list_pairs", "seeded_test_split", "read_split_files", "split_file_lines"]

_SKETCH_STEM = re.compile(r"^(?P<photo>.+)[_-](?P<k>[^_-]+)$")


def list_pairs(
    photo_dir: Path, sketch_dir: Path, issues: Issues, category: str = ""
) -> tuple[list[PhotoItem], list[SketchItem]]:
    """Photos and sketches of two flat folders, paired by the file-name rule above (no splits yet)."""
    for folder, what in ((photo_dir, "photo"), (sketch_dir, "sketch")):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{what} folder {folder} is missing; create it and put the {what} images in it"
            )
    photos = [PhotoItem(p.stem, str(p), path=str(p), category=category) for p in image_files(photo_dir)]
    sketches = []
    for p in image_files(sketch_dir):
        m = _SKETCH_STEM.match(p.stem)
        if m is None:
            issues(
                "unpaired_file",
                str(p),
                f"sketch file {p} is not named <photo_id>_<k> or <photo_id>-<k>; rename it so it names its photo",
            )
            continue
        sketches.append(SketchItem(p.stem, m["photo"], str(p), path=str(p), category=category))
    return photos, sketches


def seeded_test_split(photo_ids, test_fraction: float, seed: int) -> set[str]:
    """The test photo ids: ``round(test_fraction * n)`` (at least 1 when 0 < fraction and n >= 2)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction!r}")
    ids = sorted(set(photo_ids))
    n_test = round(test_fraction * len(ids))
    if test_fraction > 0 and len(ids) >= 2:
        n_test = min(max(n_test, 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i] for i in order[:n_test]}


def split_file_lines(path: Path) -> list[str]:
    """The lines of a split file (UTF-8 text), or a ValueError naming it when it is not text."""
    try:
        return path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as plain text, one id per line"
        ) from None


def read_split_files(root: Path) -> dict[str, str] | None:
    """photo id -> split from ``train.txt``/``test.txt`` in ``root``, or None when neither exists."""
    files = {split: root / f"{split}.txt" for split in ("train", "test")}
    present = [s for s, f in files.items() if f.is_file()]
    if not present:
        return None
    if len(present) == 1:
        missing = next(f for s, f in files.items() if s not in present)
        raise FileNotFoundError(
            f"{files[present[0]]} exists but {missing} does not; add it (photo ids, one per line) or remove both"
        )
    where: dict[str, str] = {}
    for split, path in files.items():
        for n, line in enumerate(split_file_lines(path), 1):
            pid = line.strip()
            if not pid or pid.startswith("#"):
                continue
            if pid in where:
                raise ValueError(
                    f"{path} line {n} lists photo '{pid}', which {root / (where[pid] + '.txt')} already lists; "
                    "a photo belongs to one split -- remove one entry"
                )
            where[pid] = split
    return where


def _apply_splits(
    photos: list[PhotoItem],
    split_of: dict[str, str] | None,
    issues: Issues,
    root: Path,
    test_fraction: float,
    seed: int,
) -> list[PhotoItem]:
    if split_of is None:
        test = seeded_test_split([p.photo_id for p in photos], test_fraction, seed)
        for p in photos:
            p.split = "test" if p.photo_id in test else "train"
        return photos
    kept = []
    for p in photos:
        if p.photo_id not in split_of:
            issues(
                "photo_not_in_split_file",
                p.origin,
                f"photo {p.origin} is in neither {root / 'train.txt'} nor {root / 'test.txt'}; add its id to one",
            )
            continue
        p.split = split_of[p.photo_id]
        kept.append(p)
    known = {p.photo_id for p in photos}
    unknown = sorted(set(split_of) - known)
    if unknown:
        # A listed photo that does not exist would silently shrink a split: always an error.
        raise FileNotFoundError(
            f"the split files in {root} list {len(unknown)} photo id(s) with no file in photos/ "
            f"(e.g. '{unknown[0]}'); add the photos or remove the ids"
        )
    return kept


def read(
    data_dir: str | os.PathLike,
    *,
    category: str = "",
    test_fraction: float = 0.2,
    seed: int = 0,
    lenient: bool = False,
    skip_log: SkipLog | None = None,
    verify_images: bool = True,
) -> tuple[DatasetDict, DatasetDict]:
    """Read a pairs folder (layout above) as ``(sketches, photos)`` DatasetDicts with train and test.

    Args:
        data_dir: the folder holding ``photos/`` and ``sketches/``.
        category: value of the ``category`` column.
        test_fraction, seed: the seeded split used when there are no split files.
        lenient: skip and count bad items instead of raising (see ``validate``).
        verify_images: decode every image once while loading (catches corrupt files now);
            files already RGB (photos) / 'L' (sketches) are kept by path and decode lazily,
            others are converted once to PNG bytes.
    """
    if data_dir is None:
        raise ValueError("a pairs folder needs data_dir: the folder holding photos/ and sketches/")
    root = Path(data_dir).absolute()  # rows keep file paths: they must not depend on the cwd
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; pass the folder holding photos/ and sketches/")
    issues = Issues(lenient, skip_log)
    photos, sketches = list_pairs(root / "photos", root / "sketches", issues, category)
    photos = _apply_splits(photos, read_split_files(root), issues, root, test_fraction, seed)
    return assemble(
        sketches,
        photos,
        issues,
        photo_hint=lambda pid: str(root / "photos" / f"{pid}.<ext>"),
        source=str(root),
        verify_images=verify_images,
    )

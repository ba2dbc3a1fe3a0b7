"""From reader items to the (sketches, photos) pair of ``DatasetDict``s, with every check.

Readers list what they found as ``SketchItem`` / ``PhotoItem``; ``assemble`` checks images,
ids, pairing and splits (strictly, or counting skips when lenient) and builds datasets with
the exact features of ``schema.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset, DatasetDict

from .schema import PHOTO_FEATURES, SKETCH_FEATURES
from .validate import Issues, checked_image_refs

__all__ = ["SketchItem", "PhotoItem", "assemble", "READER_SPLITS"]

READER_SPLITS = ("train", "test")


@dataclass
class SketchItem:
    """One sketch. Give ``image`` (a datasets Image reference) or ``path`` (a file to check)."""

    sketch_id: str
    photo_id: str
    origin: str  # names the source in messages: a file path, or "<pickle> key '<key>'"
    image: dict | None = None
    path: str | None = None
    split: str | None = None  # None: the photo's split
    category: str = ""


@dataclass
class PhotoItem:
    """One photo. Give ``image`` (a datasets Image reference) or ``path`` (a file to check)."""

    photo_id: str
    origin: str
    image: dict | None = None
    path: str | None = None
    split: str | None = None  # None: the split of its sketches
    category: str = ""


def _check_images(items: list, mode: str, issues: Issues, verify: bool) -> list:
    todo = [i for i, item in enumerate(items) if item.image is None]
    results = checked_image_refs([items[i].path for i in todo], mode, verify=verify)
    bad = set()
    for i, (ref, err) in zip(todo, results):
        if ref is None:
            issues(err.reason, items[i].origin, str(err))
            bad.add(i)
        else:
            items[i].image = ref
    return [item for i, item in enumerate(items) if i not in bad]


def _dedupe(items: list, id_attr: str, kind: str, issues: Issues) -> list:
    seen: dict[str, object] = {}
    kept = []
    for item in items:
        key = getattr(item, id_attr)
        if key in seen:
            issues(
                f"duplicate_{kind}_id",
                item.origin,
                f"{kind} id '{key}' is used twice ({seen[key].origin} and {item.origin}); "
                "rename or remove one of them",
            )
            continue
        seen[key] = item
        kept.append(item)
    return kept


def assemble(
    sketches: list[SketchItem],
    photos: list[PhotoItem],
    issues: Issues,
    *,
    photo_hint: Callable[[str], str],
    source: str,
    verify_images: bool = True,
) -> tuple[DatasetDict, DatasetDict]:
    """Check reader items and build ``(sketches, photos)`` DatasetDicts with splits train and test.

    Args:
        sketches, photos: what the reader found, in the order rows should keep.
        issues: strict/lenient problem handler (see ``validate``).
        photo_hint: photo id -> where that photo was expected (for "photo is missing" messages).
        source: names the dataset in the lenient-skip warning.
        verify_images: decode every image file once (see ``validate.checked_image_refs``).

    Returns:
        Sketch rows per split, and the gallery of photos per split (each photo once, in reader order).
    """
    photos = _dedupe(photos, "photo_id", "photo", issues)
    sketches = _dedupe(sketches, "sketch_id", "sketch", issues)
    photos = _check_images(photos, "RGB", issues, verify_images)
    sketches = _check_images(sketches, "L", issues, verify_images)

    by_id = {p.photo_id: p for p in photos}
    photo_split: dict[str, str] = {p.photo_id: p.split for p in photos if p.split is not None}
    first_sketch: dict[str, SketchItem] = {}
    kept: list[SketchItem] = []
    for s in sketches:
        if s.photo_id not in by_id:
            issues(
                "sketch_without_photo",
                s.origin,
                f"sketch {s.origin} depicts photo '{s.photo_id}', which is missing "
                f"(expected {photo_hint(s.photo_id)}); add the photo or remove the sketch",
                FileNotFoundError,
            )
            continue
        split = photo_split.setdefault(s.photo_id, s.split)
        if s.split is not None and s.split != split:
            other = first_sketch.get(s.photo_id)
            where = f"sketch {other.origin} is in {split}" if other else f"the photo is listed in {split}"
            issues(
                "split_conflict",
                s.origin,
                f"sketch {s.origin} is in {s.split} but its photo '{s.photo_id}' belongs to {split} "
                f"({where}); a photo and all its sketches must share one split -- fix the split",
            )
            continue
        if split not in READER_SPLITS:
            raise ValueError(f"split {split!r} of sketch {s.origin} is not one of {READER_SPLITS}")
        first_sketch.setdefault(s.photo_id, s)
        s.split = split
        kept.append(s)

    gallery = []
    for p in photos:
        if p.photo_id not in first_sketch:
            issues(
                "photo_without_sketch",
                p.origin,
                f"photo {p.origin} has no sketch; add a sketch of it or remove the photo",
            )
            continue
        p.split = photo_split[p.photo_id]
        gallery.append(p)

    # Every reader ends here, so a lenient skip is always logged and warned, however it was called.
    issues.skips.report(source)
    sketch_dd, photo_dd = DatasetDict(), DatasetDict()
    for split in READER_SPLITS:
        rows = [s for s in kept if s.split == split]
        sketch_dd[split] = Dataset.from_dict(
            {
                "sketch": [s.image for s in rows],
                "sketch_id": [s.sketch_id for s in rows],
                "photo_id": [s.photo_id for s in rows],
                "category": [s.category for s in rows],
            },
            features=SKETCH_FEATURES,
            split=split,
        )
        prows = [p for p in gallery if p.split == split]
        photo_dd[split] = Dataset.from_dict(
            {
                "photo": [p.image for p in prows],
                "photo_id": [p.photo_id for p in prows],
                "category": [p.category for p in prows],
            },
            features=PHOTO_FEATURES,
            split=split,
        )
    return sketch_dd, photo_dd

"""Bad-input handling shared by the readers: strict errors, or counted skips when lenient.

Strict (the default): the first problem raises one sentence naming the file and what to do.
Lenient: each problem skips the smallest unit it spoils (one sketch, or one photo and its
sketches), is counted in a ``SkipLog`` under a reason, and the counts are logged and warned
once per load (``LenientSkipWarning``). Nothing is dropped without being counted.

Reasons (keys of ``SkipLog.counts``):

- ``corrupt_image``: an image file that does not decode (corrupt, truncated, not an image).
- ``bad_strokes``: a stroke array that is empty, of the wrong shape, or not finite.
- ``duplicate_sketch_id`` / ``duplicate_photo_id``: a second item with an id already seen (the first is kept).
- ``sketch_without_photo``: a sketch whose photo is missing (or was itself skipped).
- ``photo_without_sketch``: a photo that no sketch depicts.
- ``split_conflict``: a sketch whose split disagrees with its photo's (the photo's split wins).
- ``photo_not_in_split_file``: a photo a split file does not place (pairs_folder).
- ``unpaired_file``: a file whose name does not follow the layout's naming rule.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image, ImageOps

from .rasterize import encode_png

__all__ = ["SkipLog", "LenientSkipWarning", "Issues", "checked_image_refs", "IMAGE_EXTENSIONS"]

logger = logging.getLogger("fgsbir_plugin.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class LenientSkipWarning(UserWarning):
    """Warned once per lenient load that skipped anything; the message carries the counts."""


@dataclass
class SkipLog:
    """Counts of what a lenient load skipped, by reason, with a few examples of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def add(self, reason: str, what: str) -> None:
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            ex.append(what)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = [
            f"{n} {reason} (e.g. {'; '.join(self.examples[reason])})" for reason, n in self.counts.items()
        ]
        return "; ".join(parts)

    def report(self, source: str) -> None:
        """Log and warn the counts, once; silent when nothing was skipped."""
        if not self.total:
            return
        msg = f"lenient load of {source} skipped {self.total} item(s): {self.summary()}"
        logger.warning(msg)
        warnings.warn(msg, LenientSkipWarning, stacklevel=3)


class Issues:
    """Raise (strict) or count (lenient) each bad-input problem a reader meets."""

    def __init__(self, lenient: bool, skips: SkipLog | None = None):
        self.lenient = bool(lenient)
        self.skips = skips if skips is not None else SkipLog()

    def __call__(self, reason: str, what: str, message: str, exc: type[Exception] = ValueError) -> None:
        """``message`` is one sentence naming the file and the fix; ``what`` names the skipped item."""
        if not self.lenient:
            raise exc(f"{message} (or pass lenient=True to skip it, counted)")
        self.skips.add(reason, what)


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode``; transparent pixels become white, as on paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert(mode)


def _check_one(path: str, mode: str) -> tuple[dict | None, str | None]:
    """Decode one file fully; return (image ref, None) or (None, error text)."""
    try:
        with Image.open(path) as im:
            im.load()  # full decode: catches truncated files that a header check passes
            if im.mode == mode and im.getexif().get(Image.ExifTags.Base.Orientation) is None:
                return {"path": path, "bytes": None}, None
            # Store converted pixels so every row decodes to ``mode``; apply EXIF rotation first,
            # as datasets' Image feature would when decoding the file itself.
            fixed = _to_mode(ImageOps.exif_transpose(im), mode)
            return {"path": None, "bytes": encode_png(fixed)}, None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def checked_image_refs(
    paths: list[str], mode: str, *, verify: bool = True, num_threads: int | None = None
) -> list[tuple[dict | None, str | None]]:
    """Check image files and return datasets ``Image`` references that decode to ``mode``.

    Args:
        paths: image file paths.
        mode: ``'RGB'`` for photos, ``'L'`` for sketches.
        verify: decode every file once (threads; PIL releases the GIL while decoding). A file
            already in ``mode`` is referenced by path, so rows decode lazily on access; any other
            file is converted once and stored as PNG bytes. When False, only existence is checked
            and files are referenced as they are (modes unchecked).

    Returns:
        Per path, ``({"path": ..., "bytes": ...}, None)`` or ``(None, error text)``.
    """
    if not verify:
        return [
            ({"path": p, "bytes": None}, None) if os.path.isfile(p) else (None, "file does not exist")
            for p in paths
        ]
    workers = num_threads or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 16:
        return [_check_one(p, mode) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(_check_one, paths, [mode] * len(paths)))


def image_ref_from_array(array, mode: str) -> dict:
    """PNG-bytes image reference for a uint8 array (H, W) greyscale, converted to ``mode``."""
    image = Image.fromarray(array, mode="L")
    if mode != "L":
        image = image.convert(mode)
    return {"path": None, "bytes": encode_png(image)}


def decode_ref(ref: dict) -> Image.Image:
    """Decode an image reference (for tests and exports)."""
    if ref.get("bytes") is not None:
        return Image.open(io.BytesIO(ref["bytes"]))
    return Image.open(ref["path"])

"""Bad-input handling shared by the readers: strict errors, or counted skips when lenient.

Strict (the default): the first problem raises one sentence naming the file and what to do.
Lenient: each problem skips the smallest unit it spoils (one sketch, or one photo and its
sketches), is counted in a ``SkipLog`` under a reason, and the counts are logged and warned
once per load (``LenientSkipWarning``). Nothing is dropped without being counted.

Reasons (keys of ``SkipLog.counts``):

- ``corrupt_image``: an image file that does not decode (corrupt, truncated, not an image) or
  holds NaN or infinite float pixels.
- ``image_too_large``: an image with more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``.
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
import re
import struct
import threading
import warnings
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .rasterize import encode_png

__all__ = [
    "SkipLog",
    "LenientSkipWarning",
    "Issues",
    "UnusableImage",
    "open_image",
    "load_image",
    "checked_image_refs",
    "image_files",
    "IMAGE_EXTENSIONS",
]

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


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted; hidden files left out.

    A symlink is listed by its own name, wherever it points, and read through; one that leads
    nowhere is listed too, so that the image check reports it instead of it going missing.
    """
    # Hidden files (".DS_Store", macOS "._x.png" shadows) are not images of the dataset.
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not p.name.startswith(".")
        and (p.is_file() or p.is_symlink())
    )


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode``; transparent pixels become white, as on paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert(mode)


class UnusableImage(ValueError):
    """An image file that cannot be used; the message is one sentence naming the file and the fix.

    ``reason`` is the ``SkipLog`` reason a lenient load counts it under.
    """

    def __init__(self, path, problem: str, fix: str, reason: str = "corrupt_image"):
        super().__init__(f"image {path} {problem}; {fix}")
        self.reason = reason


_REPLACE = "replace it with a valid image or delete it"
# The warning filter ``open_image`` sets is process-wide; the lock keeps the loaders' threads from
# restoring each other's filters.
_OPEN_LOCK = threading.Lock()


def open_image(path: str | os.PathLike) -> Image.Image:
    """``PIL.Image.open`` (header only), refusing an image over PIL's pixel limit in one sentence.

    PIL warns above ``PIL.Image.MAX_IMAGE_PIXELS`` pixels and raises above twice that; both mean
    the file is too large to decode safely (a decompression bomb, or a photo far larger than any
    model input), so both raise ``UnusableImage`` (a ValueError) naming the file. Other failures
    are PIL's own (``OSError``, ``UnidentifiedImageError``).
    """
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            limit = Image.MAX_IMAGE_PIXELS
            size = re.search(r"\((\d+) pixels\)", str(exc))  # PIL's message holds the pixel count
            raise UnusableImage(
                path,
                f"is too large to decode safely ({size[1] + ' pixels' if size else 'its pixel count is'} "
                f"over PIL.Image.MAX_IMAGE_PIXELS = {limit})",
                f"resize it to at most {limit} pixels or delete it",
                reason="image_too_large",
            ) from None


def load_image(path: str | os.PathLike) -> Image.Image:
    """The fully decoded image of ``path``, or ``UnusableImage`` (a ValueError) naming the file.

    Refused: a file PIL cannot open or decode (not an image, a damaged header, data the decoder
    rejects, a truncated file), a PNG with a chunk that fails its CRC or that ends before its
    IEND chunk, a JPEG that ends before its end-of-image marker (these two hold whatever
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says), a float image with NaN or infinite pixels
    (they would convert to black), and an image over PIL's pixel limit (``open_image``). Damage
    that decodes without error, such as altered bytes inside JPEG scan data, cannot be seen.
    """
    try:
        image = open_image(path)
        try:
            image.load()  # full decode: catches truncated files that a header check passes
            damage = _byte_damage(path, image.format)
        except BaseException:
            image.close()
            raise
    except UnusableImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnusableImage(path, f"cannot be read ({type(exc).__name__}: {exc})", _REPLACE) from None
    if damage is not None:
        image.close()
        raise UnusableImage(path, f"cannot be read ({damage})", _REPLACE)
    if image.mode.startswith("F") and not np.isfinite(np.asarray(image)).all():
        image.close()
        raise UnusableImage(
            path,
            "holds NaN or infinite pixel values, which would become black",
            "save it with finite values (or as an 8-bit image) or delete it",
        )
    return image


def _byte_damage(path: str | os.PathLike, fmt: str | None) -> str | None:
    """What a byte-level check of a PNG or JPEG file finds wrong, or None (other formats: None)."""
    if fmt not in ("PNG", "JPEG"):
        return None
    with open(path, "rb") as fh:
        data = fh.read()
    return _png_damage(data) if fmt == "PNG" else _jpeg_damage(data)


def _png_damage(data: bytes) -> str | None:
    # PIL skips the CRCs of the pixel (IDAT) chunks and stops reading at the end of the pixel
    # data, so a flipped byte there or a file cut short of IEND decodes without an error.
    pos = 8  # the signature
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if end > len(data):
            break
        chunk = data[pos + 4 : end - 4]
        if zlib.crc32(chunk) != struct.unpack(">I", data[end - 4 : end])[0]:
            return f"its {chunk[:4].decode('latin1')!r} chunk fails its CRC check"
        if chunk[:4] == b"IEND":
            return None
        pos = end
    return "it ends before its IEND chunk: truncated"


def _jpeg_damage(data: bytes) -> str | None:
    # Walk the header segments to the first start-of-scan. Scan data never holds 0xFF 0xD9 (a data
    # byte 0xFF is followed by 0x00), so an end-of-image marker after it means the file is whole.
    # A header this walk does not follow is left to the decoder, which has already accepted it.
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            if data.find(b"\xff\xd9", pos + 2 + length) == -1:
                return "it ends before its end-of-image marker: truncated"
            return None
        pos += 2 + length
    return None


def _check_one(path: str, mode: str) -> tuple[dict | None, UnusableImage | None]:
    """Decode one file fully; return (image ref, None) or (None, what is wrong with it)."""
    try:
        with load_image(path) as im:
            if im.mode == mode and im.getexif().get(Image.ExifTags.Base.Orientation) is None:
                return {"path": path, "bytes": None}, None
            # Store converted pixels so every row decodes to ``mode``; apply EXIF rotation first,
            # as datasets' Image feature would when decoding the file itself.
            fixed = _to_mode(ImageOps.exif_transpose(im), mode)
            return {"path": None, "bytes": encode_png(fixed)}, None
    except UnusableImage as exc:
        return None, exc
    except (OSError, SyntaxError, ValueError) as exc:
        return None, UnusableImage(path, f"cannot be read ({type(exc).__name__}: {exc})", _REPLACE)


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
        Per path, ``({"path": ..., "bytes": ...}, None)`` or ``(None, UnusableImage)`` saying
        what is wrong (see ``load_image`` for what a decode check catches).
    """
    if not verify:
        return [
            ({"path": p, "bytes": None}, None)
            if os.path.isfile(p)
            else (None, UnusableImage(p, "is missing or a symlink that leads nowhere", "restore the file"))
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

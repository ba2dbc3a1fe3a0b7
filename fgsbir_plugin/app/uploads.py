"""Sketch images sent by a browser or an API client, decoded under limits the server chooses.

Whatever a client sends is bytes: the page's upload box and the ``search`` endpoint hand this module
the file's content (Gradio reads the file from its own upload folder), never a path to open. A file
that is too large, has too many pixels (a decompression bomb: a few kilobytes that decode to
gigabytes) or is not an image is an :class:`UploadRejected` with one sentence for the page.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

__all__ = ["UploadRejected", "decode_upload", "check_pixels", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS"]

MAX_UPLOAD_BYTES = 8 * 2**20  # a sketch PNG is tens of kilobytes; a photo of a paper sketch a few megabytes
MAX_UPLOAD_PIXELS = 4096 * 4096
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


class UploadRejected(ValueError):
    """An uploaded sketch the server will not decode; the message is shown on the page as it is."""


def check_pixels(width: int, height: int, max_pixels: int = MAX_UPLOAD_PIXELS) -> None:
    """UploadRejected when ``width x height`` exceeds ``max_pixels`` or PIL's own bomb limit."""
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise UploadRejected(
            f"the image is {width}x{height} pixels, more than the {limit:,} this server accepts; "
            "upload a smaller image (a sketch needs no more than about 1000x1000)."
        )


def decode_upload(
    data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS
) -> Image.Image:
    """Decode an uploaded image file's bytes into a PIL image (its first frame), within the limits.

    The size in bytes and the pixel count (read from the header, before any pixel is decoded) are
    checked first; PIL's decompression-bomb warning counts as a rejection too.

    Raises:
        UploadRejected: empty, too many bytes, too many pixels, or not a readable PNG, JPEG, WebP,
            BMP or GIF.
    """
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise UploadRejected("the upload is empty; choose a PNG or JPEG image of a sketch.")
    if len(data) > max_bytes:
        raise UploadRejected(
            f"the file is {len(data) / 2**20:.1f} MiB, more than the {max_bytes / 2**20:.0f} MiB this server "
            "accepts; upload a smaller image."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
                check_pixels(im.width, im.height, max_pixels)
                im.load()
                return im.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadRejected(
            "the image decodes to more pixels than this server accepts (a decompression bomb); "
            "upload a smaller image."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, UploadRejected):
            raise
        raise UploadRejected(
            "the file is not a readable PNG, JPEG, WebP, BMP or GIF image; upload a sketch in one of those formats."
        ) from None

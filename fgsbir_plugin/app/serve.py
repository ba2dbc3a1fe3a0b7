"""Start the search page: ``fgsbir app``, a Hugging Face Space's ``app.py``, or a test's local server.

The server binds to 127.0.0.1 unless told otherwise, shares nothing through Gradio's tunnel, sends no
analytics, accepts uploads of at most :data:`~.uploads.MAX_UPLOAD_BYTES` and shows no tracebacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from .default_assets import DefaultAssets, ensure_default_assets
from .page import build_page
from .service import SearchService
from .uploads import MAX_UPLOAD_BYTES

__all__ = ["create_page", "launch_page", "space_page", "DEFAULT_HOST", "DEFAULT_PORT", "MAX_EXAMPLES"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_EXAMPLES = 8
SPACE_INDEX, SPACE_MODEL, SPACE_PHOTOS = "gallery.index", "model", "photos"


def _examples(assets: DefaultAssets, limit: int = MAX_EXAMPLES) -> list[tuple[Image.Image, str]]:
    """One demo sketch per photo, for the first ``limit`` photos."""
    chosen: dict[str, Path] = {}
    for path, photo_id in assets.examples:
        if photo_id not in chosen and len(chosen) < limit:
            chosen[photo_id] = path
    out = []
    for photo_id, path in chosen.items():
        with Image.open(path) as im:
            out.append((im.convert("L"), photo_id))
    return out


def create_page(
    index: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    *,
    photos: str | os.PathLike | None = None,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    k: int = 5,
    progress: bool = True,
):
    """The page for a gallery index (and its model), or, with no index, for the embedded default.

    Args:
        index: a file written by ``fgsbir index build``; None serves the default gallery (built in
            ``cache_dir`` on first use, see :mod:`.default_assets`).
        checkpoint: the run or model folder to embed sketches with (default: the one the index records).
        photos: the folder of the gallery's photos (default: the one the index records).
    """
    if index is None:
        if checkpoint is not None or photos is not None:
            raise ValueError(
                "--checkpoint and --photos go with --index; leave all three out to serve the default gallery."
            )
        assets = ensure_default_assets(cache_dir, progress=progress)
        service = SearchService.from_files(assets.index, assets.checkpoint, device=device)
        return build_page(service, examples=_examples(assets), k=k)
    service = SearchService.from_files(index, checkpoint, device=device, photos_root=photos)
    return build_page(service, k=k)


def launch_page(
    page,
    *,
    host: str | None = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    block: bool = True,
    **launch_kwargs: Any,
):
    """Queue and launch ``page`` on ``host:port`` (None: Gradio's ``GRADIO_SERVER_NAME`` / ``_PORT``, as
    on a Space); ``block=False`` returns at once with the server running (tests, notebooks)."""
    page.queue(default_concurrency_limit=1, max_size=64)
    page.launch(
        server_name=host,
        server_port=port,
        share=False,
        show_error=False,
        max_file_size=MAX_UPLOAD_BYTES,
        prevent_thread_lock=not block,
        ssr_mode=False,
        quiet=not block,
        **launch_kwargs,
    )
    return page


def space_page(folder: str | os.PathLike, *, k: int = 5):
    """The page of a Space folder written by ``fgsbir push --space``: ``model/``, ``gallery.index``, ``photos/``."""
    folder = Path(folder)
    service = SearchService.from_files(
        folder / SPACE_INDEX, folder / SPACE_MODEL, device="auto", photos_root=folder / SPACE_PHOTOS
    )
    return build_page(service, k=k)

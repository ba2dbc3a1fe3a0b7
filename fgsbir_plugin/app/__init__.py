"""The interactive search page (``fgsbir app``): draw a sketch, see the matching photos as you draw.

A Gradio app, as the Hugging Face ecosystem serves models: the same page runs locally and as a Space.
Gradio is the optional ``app`` extra (``pip install "fgsbir-plugin[app]"``); only building the page
imports it.

Modules: ``service`` (a model and a gallery index loaded once; one query = preprocess + embed +
faiss search), ``uploads`` (client bytes decoded under size and pixel limits), ``handlers`` (what
the page does, without Gradio), ``page`` (the Gradio layout and events, the ``search`` endpoint),
``default_assets`` (the embedded default: the demo's DSSA and synthetic gallery, built on first
use), ``serve`` (start it locally or on a Space).

>>> from fgsbir_plugin.app import create_page, launch_page
>>> launch_page(create_page())  # the default gallery on http://127.0.0.1:7860  # doctest: +SKIP
"""

from __future__ import annotations

from .default_assets import DefaultAssets, default_assets_dir, ensure_default_assets
from .handlers import PageLogic
from .page import build_page
from .serve import DEFAULT_HOST, DEFAULT_PORT, create_page, launch_page, space_page
from .service import SearchResult, SearchService, attention_overlay
from .uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, UploadRejected, decode_upload

__all__ = [
    "SearchService",
    "SearchResult",
    "attention_overlay",
    "PageLogic",
    "build_page",
    "create_page",
    "launch_page",
    "space_page",
    "DefaultAssets",
    "default_assets_dir",
    "ensure_default_assets",
    "UploadRejected",
    "decode_upload",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
]

"""``fgsbir app``: the interactive search page, served locally with Gradio."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import CLIError

# `fgsbir --help` must answer at once: the page (torch, timm, faiss, gradio) is imported by app_command
# when it runs. The defaults are restated from fgsbir_plugin.app.serve; tests/test_cli_startup.py checks
# that they agree.

__all__ = ["register", "app_command", "DEFAULT_HOST", "DEFAULT_PORT"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def register(subparsers) -> None:
    """Add ``app`` to the ``fgsbir`` parser."""
    p = subparsers.add_parser(
        "app",
        help="serve a page where you draw a sketch and see the matching photos (Gradio)",
        description="Serve a Gradio page: draw (or upload) a sketch and see the closest photos of a gallery index "
        "as you draw, with DSSA's attention over the sketch and each photo; a `search` API endpoint for "
        "gradio_client. With no --index it serves the embedded default (the demo's DSSA and its synthetic "
        "gallery), built on the first start (about 1.5 minutes on 2 CPU cores) and reused afterwards. "
        "Needs the app extra: pip install 'fgsbir-plugin[app]'.",
    )
    p.add_argument("--index", type=Path, metavar="GALLERY.index", help="file written by `fgsbir index build`")
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="RUN",
        help="run or model folder (default: the one the index records)",
    )
    p.add_argument(
        "--photos",
        type=Path,
        metavar="DIR",
        help="the gallery's photos (default: the folder the index records)",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 exposes the page to the network)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("-k", type=int, default=5, help="photos shown at first (default 5)")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, ...")
    p.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where the default gallery is built and kept (default $FGSBIR_APP_CACHE or ~/.cache/fgsbir/app_default)",
    )
    p.set_defaults(func=app_command)


def app_command(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be between 1 and 65535, got {args.port}.")
    if args.k < 1:
        raise CLIError(f"-k must be positive, got {args.k}.")
    try:
        import gradio  # noqa: F401  (optional: the `app` extra; checked here to name the fix)
    except ImportError:
        raise CLIError(
            "fgsbir app needs Gradio; install it with: pip install 'fgsbir-plugin[app]'."
        ) from None
    from fgsbir_plugin.app import create_page, launch_page

    page = create_page(
        args.index,
        args.checkpoint,
        photos=args.photos,
        device=args.device,
        cache_dir=args.cache_dir,
        k=args.k,
    )
    print(f"serving on http://{args.host}:{args.port} (Ctrl-C stops it)")
    launch_page(page, host=args.host, port=args.port)
    return 0

"""The local folder a push uploads: built beside its destination, then renamed into place whole.

Every push is built this way first; ``dry_run=DIR`` stops there and leaves the folder, so what a dry
run shows is byte for byte what a real push uploads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .._common import atomic_dir

__all__ = ["check_fresh_output", "staged_output"]


def check_fresh_output(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path; FileExistsError unless it is absent or an empty folder (nothing is overwritten)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} already exists and is not an empty folder; pass a new --dry-run folder so nothing is overwritten."
        )
    return out_dir


@contextlib.contextmanager
def staged_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside ``out_dir``; when the body succeeds it becomes ``out_dir``.

    ``out_dir`` must be absent or empty. If the body raises, nothing appears at ``out_dir`` and the
    temporary folder is removed.
    """
    with atomic_dir(check_fresh_output(out_dir)) as tmp:
        yield tmp

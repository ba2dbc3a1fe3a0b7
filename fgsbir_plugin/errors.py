"""Exceptions shared across the package's layers (no imports, so any module may use them)."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A user error: printed as one sentence, exit status 2, no traceback."""

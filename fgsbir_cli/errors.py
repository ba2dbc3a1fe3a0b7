"""The one exception the command line defines (no imports, so every command module may use it)."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """A user error: printed as one sentence, exit status 2, no traceback."""

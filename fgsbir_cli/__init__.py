"""The ``fgsbir`` command line (also ``python -m fgsbir_cli`` and ``python -m fgsbir_plugin``).

A package of its own, beside ``fgsbir_plugin``, because importing ``fgsbir_plugin`` registers the
timm models and so loads torch and timm (seconds): ``fgsbir --help``, ``fgsbir <cmd> --help`` and
argument errors are answered by this package alone, which imports only the standard library; a command
imports the library when it runs.

Each area contributes its own sub-commands: a module listed in ``COMMAND_MODULES`` defines
``register(subparsers)``, which adds its parsers and sets ``func`` on each to a callable taking the
parsed ``argparse.Namespace`` and returning an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
from importlib import metadata

from .errors import CLIError

__all__ = ["build_parser", "main", "describe_error", "COMMAND_MODULES", "CLIError"]

COMMAND_MODULES = (
    "fgsbir_cli.train",  # train, eval, embed, demo
    "fgsbir_cli.search",  # index build, search
    "fgsbir_cli.hub",  # push, push-dataset
    "fgsbir_cli.app",  # app
)


def _version() -> str:
    try:
        return metadata.version("fgsbir-plugin")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reads no abbreviated long options: ``--seed`` is an error when only
    ``--seeds`` exists, not silently that option. Sub-command parsers are of this class too (argparse makes
    them of their parent's)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fgsbir", description="Fine-grained sketch-based image retrieval.")
    parser.add_argument("--version", action="version", version=f"fgsbir-plugin {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


_OS_FIXES = {
    errno.ENOSPC: "free disk space and run the command again (a training run continues with --resume)",
    errno.EDQUOT: "free disk space and run the command again (a training run continues with --resume)",
    errno.EACCES: "check the permissions of the path",
    errno.EPERM: "check the permissions of the path",
    errno.EROFS: "write to a writable folder",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.EISDIR: "pass a file, not a folder",
    errno.EMFILE: "raise the open-file limit (ulimit -n) or use fewer --workers",
}


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failure types that mean bad input or a bad environment, not a bug in fgsbir (see :func:`main`).

    The library turns what it can foresee into a one-sentence ValueError or OSError; the third-party
    types listed here are what may still reach the top from inside a library it calls. Imported only
    after a command failed, so that start-up stays light.
    """
    types: list[type[BaseException]] = [CLIError, ValueError, OSError]
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        types.append(SafetensorError)
    with contextlib.suppress(ImportError):
        import yaml

        types.append(yaml.YAMLError)
    with contextlib.suppress(ImportError):
        from PIL import Image

        types.append(Image.DecompressionBombError)
    return tuple(types)


def describe_error(err: BaseException) -> str:
    """One line for an expected failure: the library's own sentence, or the OS error with its path and a fix."""
    if isinstance(err, OSError) and err.errno is not None and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        fix = _OS_FIXES.get(err.errno, "check the path and the disk")
        text = f"{err.strerror}{where}; {fix}."
    else:
        text = str(err).strip() or type(err).__name__
    return " ".join(text.split())  # one line, whatever the message held


def main(argv: list[str] | None = None) -> int:
    """Run one ``fgsbir`` command; 0 on success, 2 on an expected failure (one line on stderr).

    Expected failures are the exception types of :func:`_expected_errors`: bad input (ValueError,
    which the library raises with a sentence naming the file and the fix), the environment (OSError:
    a missing file, a full disk, a held run folder), and damaged files reported by safetensors,
    PyYAML or PIL. Anything else (TypeError, KeyError, RuntimeError, ...) is a bug in fgsbir and keeps
    its traceback; ``FGSBIR_TRACEBACK=1`` shows the traceback of expected failures too.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if os.environ.get("FGSBIR_TRACEBACK") or not isinstance(err, _expected_errors()):
            raise
        print(f"fgsbir {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

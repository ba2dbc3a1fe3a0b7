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
import importlib
import sys
from importlib import metadata

from .errors import CLIError

__all__ = ["build_parser", "main", "COMMAND_MODULES", "CLIError"]

COMMAND_MODULES = (
    "fgsbir_cli.train",  # train, eval, embed, demo
    "fgsbir_cli.search",  # index build, search
    "fgsbir_cli.hub",  # push, push-dataset
)


def _version() -> str:
    try:
        return metadata.version("fgsbir-plugin")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgsbir", description="Fine-grained sketch-based image retrieval.")
    parser.add_argument("--version", action="version", version=f"fgsbir-plugin {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"fgsbir {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        # Library code raises these with a one-sentence message written for the user.
        print(f"fgsbir {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

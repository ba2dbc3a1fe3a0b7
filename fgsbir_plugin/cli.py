"""The ``fgsbir`` command line (also ``python -m fgsbir_plugin``).

Each area of the package contributes its own sub-commands: a module listed in
``COMMAND_MODULES`` defines ``register(subparsers)``, which adds its parsers and sets
``func`` on each to a callable taking the parsed ``argparse.Namespace`` and returning an
exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CLIError

__all__ = ["build_parser", "main", "COMMAND_MODULES", "CLIError"]

COMMAND_MODULES = (
    "fgsbir_plugin.train.cli",  # train, eval, embed, demo
    "fgsbir_plugin.search.cli",  # index build, search
    "fgsbir_plugin.hub.cli",  # push, push-dataset
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fgsbir", description="Fine-grained sketch-based image retrieval.")
    parser.add_argument("--version", action="version", version=f"fgsbir-plugin {__version__}")
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

"""The `scanarr` command line: one sub-command per module of this package.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Sub-command modules, in the order `scanarr --help` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "scanarr.cli.scan",
    "scanarr.cli.links",
    "scanarr.cli.dupes",
    "scanarr.cli.watch",
    "scanarr.cli.dev_api",
    "scanarr.cli.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    from scanarr import __version__, native_version

    parser = argparse.ArgumentParser(
        prog="scanarr",
        description="Fast scanner and watcher agent for media libraries.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"scanarr {__version__} (native engine {native_version()})",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def watcher_main() -> int:
    """Entry point of the `scanarr-watcher` console script: `scanarr watch`."""
    return main(["watch", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())

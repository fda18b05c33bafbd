"""The `scanarr` command line: one sub-command per module of this package.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning the exit code); `SUBCOMMANDS`
names them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Sub-commands in the order `scanarr --help` lists them: name → (module, one-line help). Only the
# module of the command being run is imported: the watcher's modules pull in trio and the
# WebSocket stack, which would double the start-up time of a `scanarr scan`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "scan": ("scanarr.cli.scan", "scan folders and summarise their media files (no server needed)"),
    "links": ("scanarr.cli.links", "show where every hardlink of each media file lives; orphans"),
    "dupes": ("scanarr.cli.dupes", "find identical media files stored twice; --relink them"),
    "watch": ("scanarr.cli.watch", "run the watcher agent (connects to the Scanarr API)"),
    "dev-api": ("scanarr.cli.dev_api", "a local stand-in for the Scanarr API (trials and tests)"),
    "doctor": ("scanarr.cli.doctor", "check inotify limits, filesystems, hardlinks, state, API"),
}
SUBCOMMAND_MODULES: tuple[str, ...] = tuple(module for module, _help in SUBCOMMANDS.values())


def build_parser(command: str | None = None, *, load_all: bool = True) -> argparse.ArgumentParser:
    """The `scanarr` parser; with `load_all=False` only `command`'s module is imported and the
    other sub-commands are listed by name and help alone."""
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
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if load_all or name == command:
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def _command_name(argv: Sequence[str]) -> str | None:
    """The sub-command named in `argv`: its first argument that is not an option."""
    return next((argument for argument in argv if not argument.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_name(arguments), load_all=False)
    args = parser.parse_args(arguments)
    code: int = args.func(args)
    return code


def watcher_main() -> int:
    """Entry point of the `scanarr-watcher` console script: `scanarr watch`."""
    return main(["watch", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())

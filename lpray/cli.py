"""The ``lpray`` command line: one subcommand per module in :mod:`lpray.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order ``lpray --help`` lists them: the data flow of a project.
COMMANDS = (
    "synthetic",
    "train",
    "predict",
    "sweep",
    "sweep_report",
    "ensemble",
    "track",
    "smooth",
    "pipeline",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lpray",
        description="Semi-supervised animal pose estimation at cluster scale on Ray.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        try:
            module = importlib.import_module(f"lpray.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name == f"lpray.commands.{module_name}":
                continue  # command not built yet in this checkout
            raise
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        # Input problems are the user's to fix: one clear line, no traceback.
        print(f"lpray {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``lpray`` command line: one subcommand per module in :mod:`lpray.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

Arguments are parsed with ``parse_intermixed_args``, so ``section.key=value`` overrides may come
before, between or after flags (``lpray ensemble CONFIG --seeds 5 training.max_epochs=1``).
``-v``/``-q`` (before or after the command) set the level of lpray's log messages, which go to
stderr. A :class:`~lpray.errors.UserError` (or a ``ValueError``/``FileNotFoundError``, the input
errors of the libraries lpray builds on) ends the command with one line on stderr and exit
status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from lpray.errors import UserError
from lpray.options import WORKER_LOG_LEVEL

# Order is the order ``lpray --help`` lists them: the data flow of a project.
COMMANDS = (
    "synthetic",
    "convert",
    "train",
    "predict",
    "sweep",
    "sweep_report",
    "ensemble",
    "track",
    "select_frames",
    "merge_labels",
    "smooth",
    "export",
    "pipeline",
)

# Exit status of a command stopped by an input problem (argparse uses the same for bad flags).
USER_ERROR_EXIT = 2


def _verbosity_parent() -> argparse.ArgumentParser:
    """-v/-q, accepted before the command and after it."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="debug messages too, on stderr, and the Ray workers' info lines (Ray Train's "
        "per-epoch reports, Lightning's set-up), which are hidden by default",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=argparse.SUPPRESS,
        help="fewer log messages (-q: warnings and errors only, -qq: errors only)",
    )
    return parent


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own parser (by command name)."""
    verbosity = _verbosity_parent()
    parser = argparse.ArgumentParser(
        prog="lpray",
        description="Semi-supervised animal pose estimation at cluster scale on Ray.",
        parents=[verbosity],
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}
    for module_name in COMMANDS:
        try:
            module = importlib.import_module(f"lpray.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name == f"lpray.commands.{module_name}":
                continue  # command not built yet in this checkout
            raise
        sub = subparsers.add_parser(
            module.NAME, help=module.HELP, description=module.HELP, parents=[verbosity]
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, command=module.NAME)
        commands[module.NAME] = sub
    return parser, commands


def _split_global(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """``[global flags...] COMMAND [rest...]``: the flags before the command, it, and the rest."""
    for position, token in enumerate(argv):
        if not token.startswith("-"):
            return argv[:position], token, argv[position + 1 :]
    return argv, None, []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line; overrides and flags may be intermixed in every command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    leading, command, rest = _split_global(argv)
    if command not in commands or any(t in ("-h", "--help") for t in leading):
        return parser.parse_args(argv)  # help, or argparse's own message for a bad command
    globals_ns = _verbosity_parent().parse_args(leading)
    args = commands[command].parse_intermixed_args(rest)
    for name in ("verbose", "quiet"):
        value = getattr(globals_ns, name, 0) + getattr(args, name, 0)
        setattr(args, name, value)
    return args


class _Formatter(logging.Formatter):
    """``lpray: message`` for INFO, ``lpray: warning: message`` above it."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        elif record.levelno < logging.INFO:
            message = f"debug [{record.name}]: {message}"
        return f"lpray: {message}"


def configure_logging(verbose: int = 0, quiet: int = 0) -> logging.Logger:
    """Send the ``lpray`` loggers' messages to stderr at the level -v/-q ask for.

    Default INFO; ``-v`` DEBUG; ``-q`` WARNING; ``-qq`` ERROR. Only the command line calls this:
    library users configure :mod:`logging` themselves (``logging.getLogger("lpray")``).
    """
    level = logging.INFO + 10 * (quiet - verbose)
    level = min(max(level, logging.DEBUG), logging.CRITICAL)
    logger = logging.getLogger("lpray")
    for handler in list(logger.handlers):
        if getattr(handler, "_lpray_cli", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._lpray_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    # Ray workers print one level quieter than the command (WARNING by default, INFO with -v):
    # they inherit the variable from this process, or get it through raywork.worker_env
    os.environ[WORKER_LOG_LEVEL] = logging.getLevelName(min(level + 10, logging.CRITICAL))
    return logger


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError) as err:
        # Input problems are the user's to fix: one clear line, no traceback.
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"lpray {args.command}: error: {message}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())

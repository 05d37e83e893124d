"""One module per ``lpray`` subcommand (see :mod:`lpray.cli`)."""

import os


def seconds_since_start() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere): commands report
    their start-up, the interpreter's and the imports' included, against it."""
    try:
        with open("/proc/self/stat") as handle:
            # field 22, counted after the parenthesised command name (which may hold spaces)
            started_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


def add_format_argument(parser) -> None:
    """``--format csv,parquet``: the table formats a command writes, named by the registry."""
    from lpray.io.formats import (
        DEFAULT_FORMATS,
        FormatError,
        get_format,
        list_formats,
        parse_formats,
    )

    def formats(text: str) -> tuple[str, ...]:
        import argparse

        try:
            return parse_formats(text)
        except FormatError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    # the registry's descriptions (format modules import their writers' packages only to write)
    described = "; ".join(f"{n} = {get_format(n, check=False).description}" for n in list_formats())
    parser.add_argument(
        "--format",
        dest="formats",
        type=formats,
        default=DEFAULT_FORMATS,
        help=f"comma-separated table formats: {described}; default {','.join(DEFAULT_FORMATS)}",
    )

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
    """``--format csv,parquet,h5,nwb``: the table formats a command writes."""

    def formats(text: str) -> tuple[str, ...]:
        import argparse

        from lpray.io.formats import FormatError, parse_formats

        try:
            return parse_formats(text)
        except FormatError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    parser.add_argument(
        "--format",
        dest="formats",
        type=formats,
        default=("csv", "parquet"),
        help="comma-separated table formats: csv, parquet, h5 (DeepLabCut), nwb (ndx-pose); "
        "default csv,parquet",
    )

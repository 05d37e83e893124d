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

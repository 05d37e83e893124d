"""One module per ``lpray`` subcommand (see :mod:`lpray.cli`)."""

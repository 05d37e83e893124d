"""``python -m lpray``: the same as the ``lpray`` command."""

import sys

from lpray.cli import main

if __name__ == "__main__":
    sys.exit(main())

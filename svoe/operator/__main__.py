"""`python -m svoe.operator ...` is `svoe operator ...`."""

from __future__ import annotations

import sys

from svoe.cli import main

if __name__ == "__main__":
    sys.exit(main(["operator", *sys.argv[1:]]))

"""DropScribe entry point: `python app.py [--settings PATH] [command]` (see README.md)."""

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main())

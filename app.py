"""DropScribe entry point: `python app.py [--settings PATH] [command]` (see README.md)."""

import sys

if __name__ == "__main__":
    # Imported here, not at the top: every worker process re-runs this file as __mp_main__
    # (multiprocessing does so for a script's main module), and the service's own imports
    # there cost ~0.6 s per task before the model even starts loading (bench/overhead.py).
    from service.cli import main

    sys.exit(main())

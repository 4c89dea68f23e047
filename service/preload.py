"""What the forkserver imports once, so each worker forks in milliseconds with torch and
whisper already loaded (importing torch does not initialise CUDA: forking stays safe).

Never fatal: multiprocessing's forkserver survives only an ImportError in its preload, and a
broken torch install raises OSError (``[WinError 126] … c10.dll``). A module that fails here is
imported again by the worker itself, which reports the error over its pipe into the service
log (worker.main), instead of the forkserver dying with its reason on a console nobody sees.
"""

from __future__ import annotations

import importlib

MODULES = ("numpy", "torch", "whisper", "opencc", "silero_vad", "faster_whisper",
           "service.audio", "service.engine", "service.fasterwhisper", "service.outputs",
           "service.postprocess", "service.worker")

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except BaseException:  # noqa: BLE001, S110 - the worker imports it again and reports why
        pass

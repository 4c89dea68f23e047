"""What the forkserver imports once, so each worker forks in milliseconds with torch and
whisper already loaded (importing torch does not initialise CUDA: forking stays safe). A
spawned worker (Windows) imports it first too, for the same OpenMP set-up.

Never fatal: multiprocessing's forkserver survives only an ImportError in its preload, and a
broken torch install raises OSError (``[WinError 126] … c10.dll``). A module that fails here is
imported again by the worker itself, which reports the error over its pipe into the service
log (worker.main), instead of the forkserver dying with its reason on a console nobody sees.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import MutableMapping


def quiet_openmp(environ: MutableMapping[str, str] = os.environ) -> None:
    """OpenMP threads sleep when idle (OMP_WAIT_POLICY=PASSIVE) unless the user chose otherwise.

    A faster-whisper worker holds two OpenMP runtimes: torch's (the VAD) and CTranslate2's own
    libgomp. By default an idle pool spins, so each stole the cores from the other: on 2 cores
    the VAD of a 60-s clip took 5–10 s instead of 0.5 s once CTranslate2 had loaded, in every
    warm task after the first (bench/engines.py). Both runtimes read the variable once, when
    they load: so this runs before the imports below.
    """
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


quiet_openmp()

MODULES = ("numpy", "torch", "whisper", "opencc", "silero_vad", "faster_whisper",
           "service.audio", "service.engine", "service.fasterwhisper", "service.outputs",
           "service.postprocess", "service.worker")

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except BaseException:  # noqa: BLE001, S110 - the worker imports it again and reports why
        pass

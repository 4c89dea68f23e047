"""Worker memory against audio length: whole-file decoding vs pieces (memory.piece_minutes).

Each measurement runs in a fresh spawned process (a clean peak RSS) that does what a worker
does: load the model, stream-decode the file, VAD, transcribe, post-process
(service.worker.transcribe). Files (generated now; nothing downloaded) are FLAC like the
issue's: digital silence with one espeak-ng sentence every 10 minutes, so the cost is the
audio's length, not the amount of speech.

Figures per model: peak RSS for 20 min whole / in pieces, 1 h whole, 6 h in pieces (whole-file
6 h would need ~12 GB and is not run), the growth per audio hour each way, and whether the
20-minute transcript in pieces equals the whole-file one. Last line:
  RESULT peak_6h_tiny_mb=<a> peak_6h_base_mb=<b> whole_mb_per_hour=<c> pieces_mb_per_hour=<d>
         same_20min=<words-equal share>

    python bench/memory.py [--models tiny.en,base] [--hours 6]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench.memory")
RATE = 16_000
SENTENCES = ["The meeting starts at nine in the morning.", "Please send the report by Friday.",
             "We agreed to hire two more engineers next quarter."]


def make_flac(path: Path, minutes: float, speech: list[np.ndarray]) -> Path:
    """`minutes` of silence with a sentence every 10 minutes (5 s in), encoded as it goes."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=RATE, layout="mono")
        total, t, i = int(minutes * 60 * RATE), 0, 0
        while t < total:
            block = np.zeros(min(RATE * 60, total - t), np.float32)
            if (t // RATE) % 600 == 0:
                s = speech[i % len(speech)][: len(block) - 5 * RATE]
                block[5 * RATE:5 * RATE + len(s)] = s
                i += 1
            frame = av.AudioFrame.from_ndarray((block * 32767).astype(np.int16)[None, :],
                                               format="s16", layout="mono")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                out.mux(packet)
            t += len(block)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _child(conn, checkpoint: str, flac: str, piece_seconds: float) -> None:  # noqa: ANN001
    import whisper

    from service import audio, options, worker

    model = whisper.load_model(checkpoint, device="cpu")
    loaded = worker.peak_rss_mb()
    job = worker.Job(task_id=1, source_path=flac, source_name=Path(flac).name, model="m",
                     models_dir="", allow_download=False, out_dir="", stem="x",
                     formats=("json",), piece_seconds=piece_seconds,
                     decoding=options.Decoding().model_dump(mode="json"))
    started = time.perf_counter()
    result, meta = worker.transcribe(job, model, audio.stream(Path(flac)), "cpu", None)
    conn.send(json.dumps({"loaded_mb": loaded, "peak_mb": worker.peak_rss_mb(),
                          "seconds": time.perf_counter() - started,
                          "texts": [s["text"] for s in result["segments"]]}))


def measure(checkpoint: Path, flac: Path, piece_seconds: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, str(checkpoint), str(flac), piece_seconds))
    proc.start()
    child.close()
    out = json.loads(parent.recv())
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--hours", type=float, default=6.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("service", "whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from tests.fixtures_models import CACHE_DIR
    from tests.speech import speak_wav, speech_16k

    checkpoints = {name: CACHE_DIR / f"{name}.pt" for name in args.models.split(",")}
    missing = [str(p) for p in checkpoints.values() if not p.is_file()]
    if missing:
        sys.exit(f"run the tests once first (they import the models): missing {missing}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        speech = [speech_16k(speak_wav(s, folder / f"{i}.wav")) for i, s in enumerate(SENTENCES)]
        files = {m: make_flac(folder / f"{m}m.flac", m, speech)
                 for m in (20, 60, args.hours * 60)}
        for m, f in files.items():
            log.info("%5.0f min  FLAC %.1f MB", m, f.stat().st_size / 1e6)
        results: dict[str, dict[str, dict]] = {}
        for name, ckpt in checkpoints.items():
            runs = {
                "20 min whole": measure(ckpt, files[20], 0),
                "20 min pieces": measure(ckpt, files[20], 600),
                "1 h whole": measure(ckpt, files[60], 0),
                f"{args.hours:g} h pieces": measure(ckpt, files[args.hours * 60], 600),
            }
            results[name] = runs
            log.info("\n%s (model loaded: %d MiB)", name, runs["20 min whole"]["loaded_mb"])
            for label, r in runs.items():
                log.info("  %-14s peak %6d MiB   %7.1f s", label, r["peak_mb"], r["seconds"])
    per_hour_whole, per_hour_pieces, same, peaks_6h = [], [], [], {}
    for name, runs in results.items():
        long = runs[f"{args.hours:g} h pieces"]
        per_hour_whole.append((runs["1 h whole"]["peak_mb"] - runs["20 min whole"]["peak_mb"])
                              / (40 / 60))
        per_hour_pieces.append((long["peak_mb"] - runs["20 min pieces"]["peak_mb"])
                               / (args.hours - 20 / 60))
        a, b = runs["20 min whole"]["texts"], runs["20 min pieces"]["texts"]
        equal = len(a) == len(b)
        same.append(sum(x == y for x, y in zip(a, b, strict=True)) / max(1, len(a)) if equal else 0)
        peaks_6h[name.split(".")[0]] = long["peak_mb"]
    log.info("\nper audio hour: whole file +%.0f MiB, in pieces +%.0f MiB",
             max(per_hour_whole), max(per_hour_pieces))
    print("RESULT " + " ".join(f"peak_6h_{k}_mb={v}" for k, v in peaks_6h.items())
          + f" whole_mb_per_hour={max(per_hour_whole):.0f}"
          + f" pieces_mb_per_hour={max(per_hour_pieces):.0f} same_20min={min(same):.2f}")


if __name__ == "__main__":
    main()

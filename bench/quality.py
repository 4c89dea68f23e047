"""Transcript quality: a small synthetic meeting corpus through the engine path, ours vs stock.

Ours = the worker's path (service.worker.transcribe: VAD → language → prompt → decode the speech
only → guards → Chinese script). Stock = openai-whisper's transcribe() with its defaults on the
whole file (no VAD, no prompt, no guards, no script control), as a user of plain Whisper gets.
Both run in this process on the same samples, the same weights and the same threads.

Corpus (espeak-ng speech, generated now; nothing downloaded):
  zh-meeting   three Mandarin sentences, 15 s of quiet room noise between them (base)
  en-meeting   three English sentences, one said twice on purpose, 10 s pauses (base)
  long-quiet   10 minutes of room noise with three English sentences (tiny.en)

Figures: CER (zh) / WER (en) against the script, characters of text in the silences (any
segment lying wholly in a pause), the share of Chinese characters already Simplified, wall time.
Last line:
  RESULT cer_zh=<x> wer_en=<y> invented_chars=<n> simplified_ratio=<r> vad_speedup=<s>
(ours; vad_speedup = stock wall / ours on long-quiet). Nothing here asserts a timing.

    python bench/quality.py [--threads 2] [--skip-stock-zh]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service import options, postprocess, worker  # noqa: E402
from tests.speech import (  # noqa: E402
    character_error_rate,
    compose,
    speak_mandarin,
    speak_wav,
    speech_16k,
    word_error_rate,
)

log = logging.getLogger("bench.quality")

ZH = ["大家好，我们现在开始开会。", "今天的会议讨论三个问题。", "谢谢大家，会议结束。"]
EN = ["Good morning, the quarterly meeting starts now.", "We will review the budget first.",
      "We will review the budget first.", "Thank you all, see you next week."]
QUIET = ["The meeting starts at nine in the morning.", "Please send the report by Friday.",
         "Thank you all, see you next week."]


def _noise(samples: np.ndarray, seed: int, level: float = 0.002) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return samples + (rng.standard_normal(len(samples)) * level).astype(np.float32)


def corpus(folder: Path) -> list[dict]:
    files = []
    pieces: list = [3.0]
    for i, text in enumerate(ZH):
        pieces += [speech_16k(speak_mandarin(text, folder / f"zh{i}.wav")), 15.0]
    wav, spans = compose(pieces, folder / "zh.wav")
    files.append({"name": "zh-meeting", "lang": "zh", "model": "base", "ref": "".join(ZH),
                  "samples": _noise(speech_16k(wav), 1), "spans": spans})
    pieces = [2.0]
    for i, text in enumerate(EN):
        pieces += [speech_16k(speak_wav(text, folder / f"en{i}.wav")), 10.0 if i != 1 else 2.0]
    wav, spans = compose(pieces, folder / "en.wav")
    files.append({"name": "en-meeting", "lang": "en", "model": "base", "ref": " ".join(EN),
                  "samples": _noise(speech_16k(wav), 2), "spans": spans})
    pieces = []
    for i, text in enumerate(QUIET):
        pieces += [170.0 if i else 60.0, speech_16k(speak_wav(text, folder / f"q{i}.wav"))]
    wav, spans = compose(pieces + [190.0], folder / "quiet.wav")
    files.append({"name": "long-quiet", "lang": "en", "model": "tiny.en", "ref": " ".join(QUIET),
                  "samples": _noise(speech_16k(wav), 3), "spans": spans})
    return files


def invented(segments: list[dict], spans: list[tuple[float, float]], margin: float = 0.5) -> int:
    """Characters of text in segments that lie wholly inside a pause between spoken spans."""
    gaps = [(0.0, spans[0][0])] + [(a[1], b[0]) for a, b in zip(spans, spans[1:], strict=False)]
    gaps.append((spans[-1][1], float("inf")))
    n = 0
    for seg in segments:
        if any(seg["start"] >= lo + margin and seg["end"] <= hi - margin for lo, hi in gaps):
            n += len(postprocess.normalise(seg["text"]))
    return n


def simplified_share(text: str) -> float | None:
    import opencc

    han = [ch for ch in text if "\u4e00" <= ch <= "\u9fff"]
    if not han:
        return None
    converted = opencc.OpenCC("t2s").convert("".join(han))
    return sum(a == b for a, b in zip(han, converted, strict=True)) / len(han)


def run_ours(model, f: dict, tmp: Path) -> tuple[dict, float]:
    job = worker.Job(task_id=0, source_path=str(tmp / "x.wav"), source_name=f["name"],
                     model=f["model"], models_dir=str(tmp), allow_download=False,
                     out_dir=str(tmp), stem="x", formats=("json",),
                     language=f["lang"] if f["name"] == "zh-meeting" else None,
                     decoding=options.Decoding().model_dump(mode="json"))
    t0 = time.perf_counter()
    result, _meta = worker.transcribe(job, model, f["samples"], "cpu", None)
    return result, time.perf_counter() - t0


def run_stock(model, f: dict) -> tuple[dict, float]:
    import torch

    torch.manual_seed(0)
    t0 = time.perf_counter()
    result = model.transcribe(f["samples"], fp16=False, verbose=None,
                              language=f["lang"] if f["name"] == "zh-meeting" else None)
    return result, time.perf_counter() - t0


def score(f: dict, result: dict) -> dict:
    text = result["text"]
    err = character_error_rate(postprocess._t2s().convert(f["ref"]),
                               postprocess._t2s().convert(text)) \
        if f["lang"] == "zh" else word_error_rate(f["ref"], text)
    return {"error": err, "invented": invented(result["segments"], f["spans"]),
            "simplified": simplified_share(text), "text": text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-stock-zh", action="store_true",
                    help="skip stock Whisper on the Mandarin file (it can loop for minutes)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import torch
    import whisper

    from tests.fixtures_models import imported_checkpoint

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        models = {name: whisper.load_model(str(imported_checkpoint(name)), device="cpu")
                  for name in ("tiny.en", "base")}
        files = corpus(tmp)
        rows = {}
        for f in files:
            model = models[f["model"]]
            ours, t_ours = run_ours(model, f, tmp)
            if f["name"] == "zh-meeting" and args.skip_stock_zh:
                stock, t_stock = None, float("nan")
            else:
                stock, t_stock = run_stock(model, f)
            rows[f["name"]] = {"ours": (score(f, ours), t_ours),
                               "stock": (score(f, stock) if stock else None, t_stock)}
            for kind in ("stock", "ours"):
                sc, t = rows[f["name"]][kind]
                if sc is None:
                    print(f"{f['name']:11} {kind:5} skipped")
                    continue
                simp = "-" if sc["simplified"] is None else f"{sc['simplified']:.2f}"
                print(f"{f['name']:11} {kind:5} {'CER' if f['lang'] == 'zh' else 'WER'} "
                      f"{sc['error']:.2f}  invented {sc['invented']:4d} chars  simplified "
                      f"{simp:>4}  {t:6.1f} s  | {sc['text'][:90]!r}", flush=True)
    ours = {k: v["ours"][0] for k, v in rows.items()}
    speedup = rows["long-quiet"]["stock"][1] / rows["long-quiet"]["ours"][1]
    simp = ours["zh-meeting"]["simplified"]
    print(f"RESULT cer_zh={ours['zh-meeting']['error']:.2f} "
          f"wer_en={ours['en-meeting']['error']:.2f} "
          f"invented_chars={sum(v['invented'] for v in ours.values())} "
          f"simplified_ratio={1.0 if simp is None else simp:.2f} vad_speedup={speedup:.1f}")


if __name__ == "__main__":
    main()

"""Long files in pieces: cuts in pauses, nothing lost, same transcript, memory that stays flat."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from service import audio, options, pieces, vad, worker
from service.vad import Region
from tests.speech import (
    compose,
    read_wav,
    speak_wav,
    speech_16k,
    talk_wav,
    word_error_rate,
    write_wav,
)

RATE = 16_000
SENTENCES = [
    "The budget review starts with the travel costs.",
    "Please send the minutes to everyone before Friday.",
    "We agreed to hire two more engineers next quarter.",
    "The new office opens in March, not in February.",
    "Thank you all, that is the end of the meeting.",
]


def _find(samples: np.ndarray) -> list[Region]:
    return vad.speech_regions(samples, vad.VadOptions())


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("sentences")
    return [speech_16k(speak_wav(text, folder / f"{i}.wav")) for i, text in enumerate(SENTENCES)]


def _meeting(sentences: list[np.ndarray], path: Path, gap: float, rounds: int) -> Path:
    """`rounds` × the sentences, each followed by `gap` seconds of a quiet room (a microphone's
    noise floor, ~50 dB below the speech: real recordings have no digital silence)."""
    parts: list = [1.0]
    for i in range(rounds * len(sentences)):
        parts += [sentences[i % len(sentences)], gap]
    compose(parts, path)
    samples, _ = read_wav(path)
    noise = np.random.default_rng(7).standard_normal(len(samples)).astype(np.float32) * 0.003
    return write_wav(path, samples + noise, RATE)


# --------------------------------------------------------------------------- where to cut


@pytest.mark.parametrize(("regions", "expected"), [
    ([], 57.0),  # silence: up to the guard zone
    ([Region(1, 5), Region(50, 59.5)], 49.0),  # in the pause, 1 s before a long region
    ([Region(1, 5), Region(20, 30)], 57.0),  # last speech ended long before: guard zone
    ([Region(40, 59)], 39.0),  # one long region from 40 s: cut just before it
    ([Region(1, 5), Region(30.5, 31), Region(31.2, 59)], 31.1),  # a short pause: its middle
    ([Region(10, 59.9)], None),  # talking from 10 s on: no pause to cut in
    ([Region(1, 5), Region(6, 59.9)], None),  # the only pause is too early (more than half)
])
def test_cut_is_in_the_last_pause_before_the_guard_zone(regions, expected) -> None:
    assert pieces._cut(regions, 60.0) == (None if expected is None else pytest.approx(expected))


def test_split_loses_nothing_and_cuts_only_in_pauses(tmp_path: Path, sentences) -> None:
    wav = _meeting(sentences, tmp_path / "m.wav", gap=4.0, rounds=3)  # ~1.5 min
    samples = audio.decode(wav)
    whole = _find(samples)
    parts = list(pieces.split(audio.stream(wav), 20.0, _find))
    assert len(parts) >= 4
    assert np.array_equal(np.concatenate([p.samples for p in parts]), samples)
    offset = 0.0
    for part in parts:
        assert part.offset == pytest.approx(offset, abs=1e-9)
        assert part.duration <= 2 * 20.0
        offset += part.duration
    for part in parts[1:]:  # every cut lies in a pause the whole-file VAD also sees
        assert not any(r.start < part.offset < r.end for r in whole), part.offset
    stitched = [r for p in parts for r in p.file_regions()]
    assert len(stitched) == len(whole)
    for got, want in zip(stitched, whole, strict=True):
        assert got.start == pytest.approx(want.start, abs=0.1)
        assert got.end == pytest.approx(want.end, abs=0.1)


def test_continuous_speech_is_cut_where_the_buffer_ends(tmp_path: Path, caplog) -> None:
    samples = audio.decode(talk_wav(tmp_path / "talk.wav", 50))
    blocks = [samples[i:i + 4000] for i in range(0, len(samples), 4000)]
    with caplog.at_level(logging.WARNING, logger="service.pieces"):
        parts = list(pieces.split(blocks, 20.0, _find))
    assert np.array_equal(np.concatenate([p.samples for p in parts]), samples)
    assert len(parts) >= 2 and all(p.duration <= 40.0 for p in parts)
    assert "no pause" in caplog.text


def test_no_piece_size_means_one_piece(tmp_path: Path, sentences) -> None:
    wav = _meeting(sentences, tmp_path / "m.wav", gap=2.0, rounds=1)
    (part,) = pieces.split(audio.stream(wav), 0, _find)
    assert part.offset == 0 and np.array_equal(part.samples, audio.decode(wav))


def test_shifted_segments_and_words_are_in_file_time() -> None:
    seg = {"id": 0, "seek": 100, "start": 1.0, "end": 2.5, "text": " hi",
           "words": [{"word": " hi", "start": 1.2, "end": 1.4}]}
    (out,) = pieces.shift_segments([seg], 600.0)
    assert (out["start"], out["end"], out["seek"]) == (601.0, 602.5, 60100)
    assert out["words"][0]["start"] == pytest.approx(601.2)
    assert seg["start"] == 1.0  # the piece's own result is left as it was


# --------------------------------------------------------------------------- real transcripts


def _job(path: Path, piece_seconds: float, **decoding) -> worker.Job:
    return worker.Job(task_id=1, source_path=str(path), source_name=path.name, model="tiny.en",
                      models_dir=str(path.parent), allow_download=False, out_dir=str(path.parent),
                      stem=path.stem, formats=("json",), piece_seconds=piece_seconds,
                      decoding=options.Decoding(**decoding).model_dump(mode="json"))


@pytest.mark.slow
def test_a_20_minute_file_in_pieces_reads_like_one_pass(tmp_path: Path, sentences,
                                                        tiny_en_model) -> None:
    """4 pieces of 5 minutes against one whole-file pass: the same speech regions, the same
    segments at the same times. Cuts fall on the VAD's windows and the spectrogram's frames,
    so both see the same samples; two inputs can still differ slightly, both measured here:
    the VAD starts each piece with a fresh state (a region edge moved by one 32-ms window),
    and Whisper floors its spectrogram 80 dB below the loudest sound of what it is given (a
    piece's loudest sound is not the file's; 1 bin in 10,000 changes). tiny.en then spelled
    one word of 20 sentences differently ("remue"/"remuse"): words are compared with a bound.
    """
    wav = _meeting(sentences, tmp_path / "long.wav", gap=57.0, rounds=4)  # 20 × ~60 s
    duration = audio.probe(wav).duration_s
    assert duration > 19 * 60
    whole, whole_meta = worker.transcribe(_job(wav, 0), tiny_en_model, audio.stream(wav),
                                          "cpu", None)
    seen: list[float] = []
    job = dataclasses.replace(_job(wav, 300), audio_seconds=duration)
    split, split_meta = worker.transcribe(job, tiny_en_model, audio.stream(wav), "cpu",
                                          seen.append)
    assert len(split_meta["speech_regions"]) == len(whole_meta["speech_regions"])
    for a, b in zip(split_meta["speech_regions"], whole_meta["speech_regions"], strict=True):
        assert a == pytest.approx(b, abs=0.07)
    assert split_meta["audio_seconds"] == pytest.approx(whole_meta["audio_seconds"])
    assert len(split["segments"]) == len(whole["segments"]) >= 20
    same = 0
    for a, b in zip(split["segments"], whole["segments"], strict=True):
        assert a["start"] == pytest.approx(b["start"], abs=0.1)
        assert a["end"] == pytest.approx(b["end"], abs=0.1)
        same += a["text"] == b["text"]
    assert same >= len(whole["segments"]) - 1
    assert word_error_rate(whole["text"], split["text"]) <= 0.02
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(set(seen)) > 4  # across pieces


def _peaks(conn, checkpoint: str, files: list[str], piece_seconds: float) -> None:
    """Child process: transcribe each file in turn, report the peak RSS after each."""
    import whisper

    model = whisper.load_model(checkpoint, device="cpu")
    out = []
    for f in files:
        path = Path(f)
        worker.transcribe(_job(path, piece_seconds), model, audio.stream(path), "cpu", None)
        out.append(worker.peak_rss_mb())
    conn.send(json.dumps(out))


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_duration(tmp_path: Path, sentences,
                                                     tiny_en_checkpoint) -> None:
    """3 minutes, then 17 minutes, in 1-minute pieces, in one clean (spawned) process: the
    peak grows by less than 100 MiB. Whole-file decoding needs ≈ 2.1 GB per audio hour, so
    14 more minutes would add ≈ 500 MiB (bench/memory.py measures both ways)."""
    short = _meeting(sentences, tmp_path / "short.wav", gap=32.0, rounds=1)
    long = _meeting(sentences, tmp_path / "long.wav", gap=32.0, rounds=6)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_peaks, args=(child, str(tiny_en_checkpoint),
                                            [str(short), str(long)], 60.0))
    proc.start()
    child.close()
    first, second = json.loads(parent.recv())
    proc.join()
    assert proc.exitcode == 0
    assert second - first < 100, (first, second)

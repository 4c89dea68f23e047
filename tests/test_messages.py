"""Every message between the dispatcher and a worker survives pickling, also across a real
child process started the two ways workers are (spawn on Windows, forkserver on POSIX)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import typing
from multiprocessing.connection import Connection

import pytest

from service import messages

EXAMPLES: list[object] = [
    messages.Job(task_id=7, source_path="/in/会议/一.wav", source_name="会议/一.wav",
                 model="tiny.en", models_dir="/models", allow_download=False,
                 out_dir="/out/会议", stem="一 (2)", formats=("txt", "srt"), language="zh",
                 decoding={"vad": True, "glossary": ["张三"]}, gpu=1, gpu_uuid="GPU-1234",
                 threads=2, keep_warm_seconds=30.0, inbox="/in", outbox="/out",
                 audio_seconds=61.5, ui_language="zh-CN"),
    messages.Stop(),
    messages.Ready(),
    messages.StartupError("The worker process could not start: OSError: … c10.dll"),
    messages.Loaded(1.25),
    messages.Progress(0.5),
    messages.Done(outputs=("/out/会议/一 (2).txt",), load_seconds=1.2, transcribe_seconds=3.4,
                  audio_seconds=61.5, detected_language="zh", vram_peak_mb=1100,
                  rss_peak_mb=900, engine="openai-whisper", precision="fp16",
                  sha256="ab" * 32, diarize_seconds=2.0),
    messages.Error("out_of_memory", "The GPU ran out of memory.", True, True),
    messages.Log(30, "service.engine", "语种 zh"),
]


def test_every_message_type_has_an_example() -> None:
    kinds = set(typing.get_args(messages.ToWorker)) | set(typing.get_args(messages.FromWorker))
    assert {type(m) for m in EXAMPLES} == kinds


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_a_message_round_trips_through_pickle_and_cannot_change(msg: object) -> None:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(msg, protocol))
        assert again == msg and type(again) is type(msg)
    fields = dataclasses.fields(msg)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(msg, fields[0].name, None)


def _echo(conn: Connection) -> None:
    """Child: send back what arrives, until the parent closes its end."""
    try:
        while True:
            conn.send(conn.recv())
    except EOFError:
        pass


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_messages_cross_a_real_process_boundary(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_echo, args=(child,), daemon=True)
    process.start()
    child.close()
    try:
        for msg in EXAMPLES:
            parent.send(msg)
            assert parent.poll(60), f"no answer from the {method} child"
            again = parent.recv()
            assert again == msg and type(again) is type(msg)
    finally:
        parent.close()
        process.join(timeout=30)
    assert process.exitcode == 0

"""DropScribe: a watch-folder transcription service (inbox/ → Whisper → outbox/)."""

__version__ = "0.1.0"

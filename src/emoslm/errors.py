"""Errors emoslm raises for bad input. Each names what was wrong and where, so nothing fails silently."""

from __future__ import annotations


class EmoslmError(Exception):
    """Base class of every error emoslm raises on purpose."""


class AudioError(EmoslmError):
    """An audio file or array that cannot be used: empty, corrupt, truncated, non-finite, too short or long."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(EmoslmError):
    """A manifest (lhotse, CSV, JSONL) or corpus label file that is malformed; names the file and the row."""

    def __init__(self, path: object, reason: str, row: int | None = None):
        self.path = str(path)
        self.row = row
        self.reason = reason
        where = f"{self.path}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {reason}")


class LabelError(EmoslmError, ValueError):
    """An emotion label outside the label set in use."""


class EpisodeError(EmoslmError, ValueError):
    """An ICL enrollment setting that cannot be met for a speaker (too few utterances or emotions)."""


class CorpusError(EmoslmError):
    """A corpus directory that does not look like the corpus it is said to be."""


class ConfigError(EmoslmError, ValueError):
    """A recipe config or ``--set`` override that cannot be used: bad YAML, an unknown key, a value of the wrong
    type or outside the allowed ones. Names the key and what it accepts."""


class CheckpointError(EmoslmError, FileNotFoundError):
    """A model checkpoint (folder or file) that is missing; names it and how to make it."""

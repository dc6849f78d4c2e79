"""The service's ears: speech to text with Whisper (faster-whisper), loaded on first use, one call at a time.

``--asr`` picks the model: ``whisper-tiny.en`` (the packaged Whisper tiny.en, the default when it is installed),
a local CTranslate2 Whisper folder, or ``none`` (audio turns are then answered from their emotion alone). The
model is :class:`emoslm.echat.cascade.WhisperASR` (paper 003's cascade ASR), created lazily the first time audio
is transcribed, with the service's thread count.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoslm.assets import package_model_dir
from emoslm.echat.cascade import WhisperASR
from emoslm.errors import EmoslmError

log = logging.getLogger(__name__)

PACKAGED = "whisper-tiny.en"


@dataclass
class TranscriptSegment:
    start: float
    end: float
    text: str


@dataclass
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[TranscriptSegment] = field(default_factory=list)
    latency_ms: float = 0.0


def resolve_asr(spec: str | None) -> tuple[str, Path | None]:
    """``(name, model folder)`` for an ``--asr`` value; ``("none", None)`` when transcription is off.

    ``None``/``"auto"``: the packaged Whisper tiny.en when it (and faster-whisper) is installed, else off. An
    explicit choice that cannot be had raises EmoslmError (at start-up, not at the first request)."""
    auto = spec is None or spec == "auto"
    if spec == "none":
        return "none", None
    if importlib.util.find_spec("faster_whisper") is None:
        if auto:
            return "none", None
        raise EmoslmError(f"--asr {spec}: faster-whisper is not installed (pip install faster-whisper)")
    if auto or spec == PACKAGED:
        try:
            return PACKAGED, package_model_dir(PACKAGED)
        except EmoslmError:
            if auto:
                return "none", None
            raise
    path = Path(spec)
    if not (path / "model.bin").is_file() or not (path / "config.json").is_file():
        raise EmoslmError(f"--asr {spec}: not a CTranslate2 Whisper folder (no model.bin and config.json); use "
                          f"{PACKAGED}, a converted Whisper folder or none")
    return path.name, path


class Transcriber:
    """Whisper over faster-whisper, loaded once on first use; calls are serialised (the CPU is the limit)."""

    def __init__(self, spec: str | None = None, threads: int = 1):
        self.name, self.path = resolve_asr(spec)
        self.threads = max(1, int(threads or 1))
        self._asr: WhisperASR | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    @property
    def loaded(self) -> bool:
        return self._asr is not None

    def _model(self) -> WhisperASR:
        if self._asr is None:
            t0 = time.perf_counter()
            self._asr = WhisperASR(self.path, threads=self.threads)
            log.info("loaded ASR %s in %.1f s", self.name, time.perf_counter() - t0)
        return self._asr

    def transcribe(self, wave: np.ndarray) -> Transcript:
        """The words of a 16 kHz waveform, with Whisper's segments (times in seconds)."""
        if not self.enabled:
            raise EmoslmError("speech recognition is off (emoslm serve --asr none)")
        t0 = time.perf_counter()
        with self._lock:
            model = self._model().model
            multilingual = bool(getattr(getattr(model, "model", None), "is_multilingual", False))
            segments, info = model.transcribe(wave.astype(np.float32, copy=False), beam_size=1,
                                              language=None if multilingual else "en",
                                              condition_on_previous_text=False)
            segs = [TranscriptSegment(round(float(s.start), 3), round(float(s.end), 3), s.text.strip())
                    for s in segments]  # the generator runs the model: consume it under the lock
        text = " ".join(s.text for s in segs if s.text).strip()
        return Transcript(text, getattr(info, "language", "en") or "en", len(wave) / 16000, segs,
                          (time.perf_counter() - t0) * 1000)

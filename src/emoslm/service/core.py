"""The service's engine: the store, the recognizer with its per-speaker caches, the ASR and the chat backend.

The recognizer keeps every speaker's enrollment encodings (and its decoder prefix cache) in memory; they
are updated when an enrollment is added or deleted, so a prediction never re-encodes enrollments. The
encodings are also saved as ``.npy`` per bundle (:meth:`Store.save_encoding`), so a restart loads them
instead of re-encoding; a missing or unreadable one is re-encoded from the stored audio at start-up.
Model calls are serialised by one lock (the recognizer's caches are not thread-safe; the CPU is the limit);
the ASR (:class:`~emoslm.service.asr.Transcriber`, Whisper loaded on first use) and the chat LLM have their own.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emoslm.audio import AudioLimits, load_audio
from emoslm.errors import AudioError, LabelError
from emoslm.personalization.inference import CALIBRATION_FILE, EmotionRecognizer, Prediction, abstains
from emoslm.service.asr import Transcriber
from emoslm.service.chat import (
    ChatBackend,
    EChatBackend,
    load_echat_backend,
    load_streaming_chat_backend,
)
from emoslm.service.http import RateLimiter, parse_rate
from emoslm.service.store import Enrollment, Store

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """What ``emoslm serve`` is started with."""

    bundle: str = "runs/demo/bundle"
    data_dir: str = "data/service"
    llm: str = "smollm2"  # chat backend LLM: smollm2, tiny-llama or a local HF directory
    max_upload_mb: float = 10.0
    max_seconds: float = 300.0  # longest audio; longer than window_seconds: per-segment emotions
    min_seconds: float = 0.1
    window_seconds: float = 4.0  # segments of long audio (at most this long)
    segment_mode: str = "fixed"  # fixed windows or energy-detected speech regions (emoslm.audio.segments)
    torch_threads: int = 2
    max_new_tokens: int = 64
    # how the reply LLM is told the emotion, and its repetition penalty: chosen on dev questions with
    # benchmarks/chat_replies.py (SmolLM2-135M answered 7/8 with these, 0/8 with the voice note, greedy)
    reply_prompt: str = "system"
    repetition_penalty: float = 1.2
    max_prompt_chars: int = 32000  # text of a chat request, checked before tokenising
    echat: str | None = None  # E-chat checkpoint: answers turns whose last user message carries audio
    asr: str | None = None  # none, whisper-tiny.en or a CTranslate2 Whisper folder; None: whisper-tiny.en if packaged
    public_read: bool = False  # GETs without a key (they see every speaker)
    rate_limit: str | None = None  # "N/min" per API key; None: no limit
    cors_origins: tuple[str, ...] = ()
    min_confidence: float | None = None  # abstain below this confidence (a request's min_confidence overrides it)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def audio_limits(self) -> AudioLimits:
        return AudioLimits(min_duration=self.min_seconds, max_duration=self.max_seconds)


def bundle_key(bundle: str | Path) -> str:
    """A short hash of a bundle's files: cached encodings belong to the bundle that made them."""
    h = hashlib.sha256()
    # the temperature changes probabilities, not encodings: calibrating a bundle keeps its cached encodings
    for f in sorted(p for p in Path(bundle).rglob("*") if p.is_file() and p.name != CALIBRATION_FILE):
        h.update(f.relative_to(bundle).as_posix().encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


@dataclass
class Recognition:
    """The emotion of an upload: the whole clip's, and for audio longer than one window each segment's."""

    label: str | None  # None when it abstained
    probs: dict[str, float]
    n_enroll: int
    latency_ms: float
    duration: float
    segments: list | None = None  # SegmentPrediction items (start, end, label, probs, confidence, abstained)
    calibrated: bool = False
    abstained: bool = False

    @property
    def confidence(self) -> float:
        return max(self.probs.values())


class Service:
    """Store + recognizer + ASR + chat backend, shared by the request threads."""

    def __init__(self, settings: Settings):
        self.settings = settings
        per_minute = parse_rate(settings.rate_limit)  # a wrong --rate-limit or --asr fails before any model loads
        self.rate_limiter = RateLimiter(per_minute) if per_minute else None
        self.asr = Transcriber(settings.asr, threads=settings.torch_threads)
        self.store = Store(settings.data_dir)
        self.recognizer = EmotionRecognizer.load(settings.bundle, threads=settings.torch_threads,
                                                 min_confidence=settings.min_confidence)
        self.labels = list(self.recognizer.label_set.labels)
        self.bundle_key = bundle_key(settings.bundle)
        self.model_lock = threading.Lock()
        # loaded before the chat LLM and the enrollments: a wrong --echat fails fast
        self.echat: EChatBackend | None = load_echat_backend(settings.echat) if settings.echat else None
        # enrollment ids per speaker as the recognizer holds them, readable without waiting for the model lock
        self._loaded: dict[str, tuple[str, ...]] = {}
        self.write_lock = threading.Lock()  # DB commit + cache update of enrollments, in one order
        self.chat: ChatBackend = load_streaming_chat_backend(settings.llm, settings.max_new_tokens,
                                                                   settings.reply_prompt, settings.repetition_penalty)
        self.excluded: dict[str, str] = {}
        self._load_enrollments()

    # ------------------------------------------------------------------------------------ start-up

    def _load_enrollments(self) -> None:
        t0 = time.perf_counter()
        report = self.store.check()
        self.excluded = report.excluded
        for eid, why in report.excluded.items():
            log.warning("enrollment %s excluded: %s", eid, why)
        if report.orphans_removed:
            log.info("removed %d orphan audio files (writes never acknowledged)", len(report.orphans_removed))
        encoded = 0
        for enr in report.ok:
            vec = self.store.load_encoding(self.bundle_key, enr.id)
            if vec is None:
                vec = self._encode(self.store.load_audio(enr)).numpy()
                self.store.save_encoding(self.bundle_key, enr.id, vec)
                encoded += 1
            self.recognizer.add_encoded(enr.speaker_id, torch.from_numpy(vec), enr.label, enr.id)
            self._sync_ids(enr.speaker_id)
        log.info("loaded %d enrollments (%d re-encoded, %d excluded) in %.1f s", len(report.ok), encoded,
                 len(report.excluded), time.perf_counter() - t0)

    # ------------------------------------------------------------------------------------ audio + model

    def decode(self, data: bytes, name: str = "upload") -> np.ndarray:
        """Upload bytes -> validated 16 kHz waveform (AudioError says what is wrong)."""
        if not data:
            raise AudioError(name, "empty upload (0 bytes)")
        return load_audio(_Upload(data, name), limits=self.settings.audio_limits)

    def _encode(self, wave: np.ndarray) -> torch.Tensor:
        with self.model_lock:
            return self.recognizer.encode(wave)

    def predict(self, wave: np.ndarray, speaker_id: str | None, min_confidence: float | None = None) -> Prediction:
        if speaker_id is not None:
            self.store.get_speaker(speaker_id)  # 404 for an unknown speaker
        with self.model_lock:
            return self.recognizer.predict(wave, speaker=speaker_id, min_confidence=min_confidence)

    def recognise(self, wave: np.ndarray, speaker_id: str | None, min_confidence: float | None = None
                  ) -> Recognition:
        """The emotion of ``wave`` (personalised with the speaker's enrollments). Audio longer than one window
        (``window_seconds``) is cut into segments (``segment_mode``: fixed windows, or energy-detected speech
        regions of at most a window) predicted as a batch; the clip's probabilities are the segments' mean,
        weighted by their durations. ``min_confidence`` (default: the server's): the clip, and each segment, has
        no label when its confidence is below it."""
        duration = len(wave) / 16000
        s = self.settings
        threshold = self.recognizer.min_confidence if min_confidence is None else min_confidence
        if duration <= s.window_seconds:
            pred = self.predict(wave, speaker_id, threshold)
            return Recognition(pred.label, pred.probs, pred.n_enroll, pred.latency_ms, duration,
                               calibrated=pred.calibrated, abstained=pred.abstained)
        if speaker_id is not None:
            self.store.get_speaker(speaker_id)  # 404 for an unknown speaker
        t0 = time.perf_counter()
        with self.model_lock:
            segs = self.recognizer.predict_segments(wave, speaker_id, mode=s.segment_mode,
                                                    window_s=s.window_seconds, max_seconds=s.max_seconds,
                                                    min_confidence=threshold)
            if not segs and s.segment_mode != "fixed":  # no speech region found: fixed windows over everything
                segs = self.recognizer.predict_segments(wave, speaker_id, mode="fixed", window_s=s.window_seconds,
                                                        max_seconds=s.max_seconds, min_confidence=threshold)
            n_enroll = len(spk.ids) if (spk := self.recognizer.speakers.get(speaker_id or "")) else 0
        segs = [x for x in segs if x.error is None]
        if not segs:
            raise AudioError("upload", "no part of the audio could be recognised")
        weights = np.array([x.end - x.start for x in segs], dtype=np.float64)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(segs), 1 / len(segs))
        probs = {lab: float(sum(w * x.probs.get(lab, 0.0) for w, x in zip(weights, segs))) for lab in self.labels}
        label = max(probs, key=probs.get)
        abstained = abstains(probs[label], threshold)
        return Recognition(None if abstained else label, probs, n_enroll, (time.perf_counter() - t0) * 1000,
                           duration, segs, calibrated=self.recognizer.calibrated, abstained=abstained)

    def _sync_ids(self, speaker_id: str) -> None:
        """Publish a speaker's enrollment ids after the recognizer changed (called under the model lock)."""
        spk = self.recognizer.speakers.get(speaker_id)
        if spk is not None and spk.ids:
            self._loaded[speaker_id] = tuple(spk.ids)
        else:
            self._loaded.pop(speaker_id, None)

    def n_enrolled(self, speaker_id: str) -> int:
        return len(self._loaded.get(speaker_id, ()))

    def loaded_ids(self, speaker_id: str | None = None) -> set[str]:
        """Ids of the enrollments in the recognizer's cache (of one speaker, or all): the rows that are used."""
        if speaker_id is not None:
            return set(self._loaded.get(speaker_id, ()))
        return {uid for ids in list(self._loaded.values()) for uid in ids}

    # ------------------------------------------------------------------------------------ writes

    def check_label(self, label: str) -> str:
        """The model's class for a user-given label; LabelError listing the valid labels otherwise."""
        try:
            return self.recognizer.label_set.check(label)
        except LabelError:
            raise LabelError(f"unknown emotion label {label!r}; valid labels: {', '.join(self.labels)}") from None

    def add_enrollment(self, speaker_id: str, data: bytes, label: str, name: str = "upload") -> Enrollment:
        """Check the label and the speaker, decode and encode the audio, write it durably, commit the row, then
        update the caches. Nothing is stored when any step fails."""
        label = self.check_label(label)
        self.store.get_speaker(speaker_id)
        wave = self.decode(data, name)
        vec = self._encode(wave)
        eid, rel, sha = self.store.write_audio(speaker_id, wave)
        with self.write_lock:
            enr = self.store.commit_enrollment(eid, speaker_id, label, rel, sha, len(wave) / 16000,
                                               self.recognizer.max_enroll)
            with self.model_lock:
                self.recognizer.add_encoded(speaker_id, vec, label, eid)
                self._sync_ids(speaker_id)
        self.store.save_encoding(self.bundle_key, eid, vec.numpy())
        return enr

    def delete_enrollment(self, speaker_id: str, eid: str) -> Enrollment:
        with self.write_lock:
            enr = self.store.delete_enrollment(speaker_id, eid)
            with self.model_lock:
                spk = self.recognizer.speakers.get(speaker_id)
                if spk is not None and eid in spk.ids:  # not there if it was excluded at start-up
                    self.recognizer.remove(speaker_id, eid)
                    self._sync_ids(speaker_id)
        return enr

    def delete_speaker(self, speaker_id: str) -> int:
        with self.write_lock:
            gone = self.store.delete_speaker(speaker_id)
            with self.model_lock:
                self.recognizer.remove(speaker_id)
                self._sync_ids(speaker_id)
        return len(gone)


class _Upload(io.BytesIO):
    """Upload bytes that error messages (ours and libsndfile's) call by their name."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __repr__(self) -> str:
        return repr(self.name)

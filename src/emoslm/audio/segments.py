"""Long audio cut into utterance-sized segments: fixed windows, or speech regions found by an energy detector.

    from emoslm.audio.segments import segment_wave
    segs = segment_wave(wave, 16000, mode="energy", window_s=4.0)   # [Segment(start=0.31, end=3.02), ...]

- ``mode="fixed"``: windows of ``window_s`` seconds every ``hop_s`` (default: ``window_s``, no overlap) from the
  start; the last window ends at the end of the audio, and one shorter than ``min_s`` is merged into the window
  before it (a whole audio shorter than ``min_s`` is still one segment: there is nothing to merge it into).
- ``mode="energy"``: voice activity from frame energy. The RMS of 25 ms frames (10 ms hop) in dB is compared
  with an adaptive threshold between the noise floor (the 5th percentile of the frame levels) and the loud level
  (a high percentile): ``floor + threshold_ratio * (loud - floor)``, at least ``min_snr_db`` above the floor.
  Audio without that much contrast is all speech when it is louder than ``speech_floor_db`` and none otherwise.
  Speech regions closer than ``merge_gap_s`` are merged (short pauses inside a sentence), padded by ``pad_s``
  on each side, those shorter than ``min_s`` dropped, and those longer than ``window_s`` split into equal parts
  of at most ``window_s``.

Times are in seconds from the start of ``wave``. Only numpy: this is the base layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emoslm.audio import TARGET_SR
from emoslm.errors import EmoslmError

MODES = ("fixed", "energy")
#: frame levels are clamped here (digital silence would be -inf dB)
_DB_FLOOR = -120.0


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float  # seconds

    @property
    def duration(self) -> float:
        return self.end - self.start


def segment_wave(
    wave: np.ndarray,
    sr: int = TARGET_SR,
    *,
    mode: str = "fixed",
    window_s: float = 4.0,
    hop_s: float | None = None,
    min_s: float = 0.5,
    frame_s: float = 0.025,
    frame_hop_s: float = 0.010,
    merge_gap_s: float = 0.3,
    pad_s: float = 0.1,
    threshold_ratio: float = 0.35,
    min_snr_db: float = 10.0,
    speech_floor_db: float = -50.0,
    threshold_db: float | None = None,
) -> list[Segment]:
    """Segments of a mono waveform (see the module doc); ``threshold_db`` fixes the energy threshold (dBFS)."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise EmoslmError(f"segment_wave expects a mono waveform, got shape {wave.shape}")
    if not sr > 0:
        raise EmoslmError(f"invalid sampling rate {sr}")
    if not window_s > 0:
        raise EmoslmError(f"window_s must be > 0, got {window_s}")
    if hop_s is not None and not hop_s > 0:
        raise EmoslmError(f"hop_s must be > 0, got {hop_s}")
    if min_s < 0:
        raise EmoslmError(f"min_s must be >= 0, got {min_s}")
    if mode not in MODES:
        raise EmoslmError(f"unknown segmentation mode {mode!r}; known: {', '.join(MODES)}")
    duration = wave.size / sr
    if wave.size == 0:
        return []
    if mode == "fixed":
        return _fixed(duration, window_s, window_s if hop_s is None else hop_s, min_s)
    return _energy(wave, sr, window_s=window_s, min_s=min_s, frame_s=frame_s, frame_hop_s=frame_hop_s,
                   merge_gap_s=merge_gap_s, pad_s=pad_s, threshold_ratio=threshold_ratio, min_snr_db=min_snr_db,
                   speech_floor_db=speech_floor_db, threshold_db=threshold_db)


def _fixed(duration: float, window: float, hop: float, min_s: float) -> list[Segment]:
    spans: list[list[float]] = []
    start = 0.0
    while True:
        end = min(start + window, duration)
        spans.append([start, end])
        if end >= duration - 1e-9:
            break
        start += hop
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_s:
        spans.pop()
        spans[-1][1] = duration
    return [Segment(round(s, 6), round(e, 6)) for s, e in spans]


def frame_levels(wave: np.ndarray, sr: int = TARGET_SR, frame_s: float = 0.025, hop_s: float = 0.010
                 ) -> tuple[np.ndarray, float]:
    """RMS level in dBFS of frames of ``frame_s`` every ``hop_s`` (the last frames are cut at the end of the
    audio); returns (levels, hop in seconds). Frame i starts at ``i * hop``."""
    frame = max(1, int(round(frame_s * sr)))
    hop = max(1, int(round(hop_s * sr)))
    n = wave.size
    n_frames = max(1, math.ceil(n / hop))
    csum = np.concatenate([[0.0], np.cumsum(np.square(wave, dtype=np.float64))])
    starts = np.arange(n_frames) * hop
    ends = np.minimum(starts + frame, n)
    power = (csum[ends] - csum[starts]) / np.maximum(ends - starts, 1)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(np.maximum(power, 0.0))
    return np.maximum(db, _DB_FLOOR), hop / sr


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs where ``mask`` is True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _energy(wave: np.ndarray, sr: int, *, window_s: float, min_s: float, frame_s: float, frame_hop_s: float,
            merge_gap_s: float, pad_s: float, threshold_ratio: float, min_snr_db: float, speech_floor_db: float,
            threshold_db: float | None) -> list[Segment]:
    duration = wave.size / sr
    db, hop = frame_levels(wave, sr, frame_s, frame_hop_s)
    if threshold_db is None:
        floor, loud = float(np.percentile(db, 5)), float(np.percentile(db, 99))
        if loud - floor < min_snr_db:  # no contrast: one level throughout, all speech or all background
            speech = np.full(db.shape, loud > speech_floor_db)
        else:
            speech = db > floor + max(threshold_ratio * (loud - floor), min_snr_db)
    else:
        speech = db > threshold_db
    frame_len = frame_s
    regions = [[s * hop, min((e - 1) * hop + frame_len, duration)] for s, e in _runs(speech)]
    merged: list[list[float]] = []
    for r in regions:  # bridge short pauses
        if merged and r[0] - merged[-1][1] < merge_gap_s:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    out: list[Segment] = []
    for i, (s, e) in enumerate(merged):  # pad, never into the neighbour regions
        lo = max(0.0, s - pad_s, merged[i - 1][1] if i else 0.0)
        hi = min(duration, e + pad_s, merged[i + 1][0] if i + 1 < len(merged) else duration)
        if hi - lo < min_s:
            continue
        n = max(1, math.ceil((hi - lo) / window_s - 1e-9))
        step = (hi - lo) / n
        out.extend(Segment(round(lo + j * step, 6), round(hi if j == n - 1 else lo + (j + 1) * step, 6))
                   for j in range(n))
    return out

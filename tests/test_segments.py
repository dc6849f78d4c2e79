"""Long audio cut into segments: fixed windows tile the audio; the energy detector finds the silences between tones."""

from __future__ import annotations

import numpy as np
import pytest

from emoslm.audio.segments import Segment, segment_wave
from emoslm.errors import EmoslmError
from emoslm.service.testing import tone

SR = 16000
#: tone spans (seconds) of the 70 s test signal; between them silence with faint noise
SPANS = [(0.5, 9.0), (11.0, 16.0), (17.5, 30.0), (33.0, 34.5), (36.0, 52.0), (55.0, 69.0)]


def long_signal(seconds: float = 70.0, spans=SPANS, noise: float = 1e-4) -> np.ndarray:
    rng = np.random.default_rng(0)
    wave = (noise * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    for i, (a, b) in enumerate(spans):
        wave[int(a * SR): int(a * SR) + int((b - a) * SR)] += tone(110 + 25 * i, b - a)
    return wave


def test_fixed_windows_tile_the_audio():
    wave = long_signal()
    segs = segment_wave(wave, SR, mode="fixed", window_s=4.0)
    assert len(segs) == 18 and segs[0] == Segment(0.0, 4.0) and segs[-1] == Segment(68.0, 70.0)
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))
    # a last window shorter than min_s is merged into the one before it
    segs = segment_wave(wave, SR, mode="fixed", window_s=6.9, min_s=2.0)
    assert len(segs) == 10 and segs[-1].start == pytest.approx(62.1) and segs[-1].end == 70.0
    # overlapping windows: every hop_s, the last one ends at the end
    segs = segment_wave(wave, SR, mode="fixed", window_s=4.0, hop_s=2.0)
    assert [s.start for s in segs[:3]] == [0.0, 2.0, 4.0] and segs[-1] == Segment(66.0, 70.0)
    # audio shorter than a window is one segment, even below min_s (nothing to merge it into)
    assert segment_wave(wave[: SR // 4], SR, window_s=4.0) == [Segment(0.0, 0.25)]


def test_energy_mode_finds_the_silence_gaps():
    segs = segment_wave(long_signal(), SR, mode="energy", window_s=4.0)
    assert all(s.duration <= 4.0 + 1e-6 and s.duration >= 0.5 for s in segs)
    for s in segs:  # each segment inside one tone span (plus the padding)
        assert any(a - 0.2 <= s.start and s.end <= b + 0.2 for a, b in SPANS), s
    for a, b in SPANS:  # each span covered from end to end, in pieces that follow each other
        inside = [s for s in segs if a - 0.2 <= s.start and s.end <= b + 0.2]
        assert inside[0].start == pytest.approx(a - 0.1, abs=0.05)
        assert inside[-1].end == pytest.approx(b + 0.1, abs=0.05)
        assert all(x.end == pytest.approx(y.start) for x, y in zip(inside, inside[1:]))
        assert len(inside) == int(np.ceil((b - a + 0.2) / 4.0 - 1e-6))
    gaps = [(b, a) for (_, b), (a, _) in zip(SPANS, SPANS[1:])]
    for g0, g1 in gaps:
        mid = (g0 + g1) / 2
        assert not any(s.start < mid < s.end for s in segs), (g0, g1)


def test_energy_mode_bridges_short_pauses_and_drops_clicks():
    wave = long_signal(10.0, [(1.0, 3.0), (3.15, 5.0), (7.0, 7.1)])
    segs = segment_wave(wave, SR, mode="energy", window_s=8.0, min_s=0.5)
    assert len(segs) == 1  # the 0.15 s pause is bridged; the 0.1 s click is shorter than min_s
    assert segs[0].start == pytest.approx(0.9, abs=0.05) and segs[0].end == pytest.approx(5.1, abs=0.05)


def test_energy_mode_without_contrast():
    assert segment_wave(np.zeros(5 * SR, np.float32), SR, mode="energy") == []
    assert segment_wave(np.full(5 * SR, 1e-4, np.float32), SR, mode="energy") == []  # faint hum: no speech
    segs = segment_wave(tone(150, 6.0), SR, mode="energy", window_s=4.0)  # all loud: all speech, split in two
    assert segs == [Segment(0.0, 3.0), Segment(3.0, 6.0)]


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "vad"}, "unknown segmentation mode 'vad'"),
    ({"window_s": 0}, "window_s must be > 0"),
    ({"hop_s": -1.0}, "hop_s must be > 0"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(EmoslmError, match=match):
        segment_wave(tone(150, 1.0), SR, **kwargs)
    with pytest.raises(EmoslmError, match="mono"):
        segment_wave(np.zeros((2, SR), np.float32), SR)

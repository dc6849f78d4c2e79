"""The three ways an utterance's emotion cues reach the waveform (:data:`emoslm.synth.prosody.RENDER_METHODS`).

``engine`` is the corpus of SYNTH_VERSION 3: espeak-ng's own prosody carries pitch, range, rate and pauses.
``tape`` and ``sox`` let the engine speak at the speaker's baseline and put the cues on the waveform, so the same
cue values sound different: a tape-speed change moves pitch and tempo together (and the formants with them), sox's
WSOLA ``pitch`` and ``tempo`` move them apart. A corpus can hold a method out of training and test on it: a model
that reads the enrollment labels should still find out how *this* speaker's emotions sound.
"""

from __future__ import annotations

import numpy as np
import soxr

from emoslm.data.channel import run_sox as sox
from emoslm.errors import EmoslmError
from emoslm.synth.effects import apply_voice_quality, soft_limit
from emoslm.synth.prosody import RENDER_METHODS, RenderParams

#: Semitones per espeak-ng pitch unit for the waveform methods: the prototype fear cue (+12 units) becomes
#: +2.4 semitones, surprise (+16) +3.2, within the range reported for acted emotional speech.
SEMITONES_PER_PITCH_UNIT = 0.2


class RenderError(EmoslmError):
    pass


def pitch_semitones(p: RenderParams) -> float:
    return (p.pitch - p.base_pitch) * SEMITONES_PER_PITCH_UNIT


def tempo_factor(p: RenderParams) -> float:
    """> 1 = faster than the speaker's baseline."""
    return p.rate / max(p.base_rate, 1)


def engine_settings(p: RenderParams) -> dict[str, int]:
    """The espeak-ng prosody the engine speaks with: the cues themselves (engine) or the baseline."""
    if p.method == "engine":
        return {"rate": p.rate, "pitch": p.pitch, "pitch_range": p.pitch_range, "word_gap": p.word_gap}
    if p.method not in RENDER_METHODS:
        raise RenderError(f"unknown rendering method {p.method!r}; expected one of {RENDER_METHODS}")
    return {"rate": p.base_rate, "pitch": p.base_pitch, "pitch_range": p.base_range, "word_gap": 0}


def tape_speed(x: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Play ``x`` faster by 2^(semitones/12): pitch up by ``semitones``, duration shorter by the same factor."""
    factor = 2.0 ** (semitones / 12.0)
    if abs(factor - 1.0) < 1e-4:
        return x
    # resampling to sr/factor and playing back at sr raises every frequency by `factor`
    return soxr.resample(x, sr, sr / factor).astype(np.float32)


def _db(x: float) -> str:
    return f"{x:.2f}"


def sox_chain(p: RenderParams) -> list[str]:
    """sox effects that render ``p``'s cues on a baseline utterance."""
    chain: list[str] = []
    cents = pitch_semitones(p) * 100.0
    if abs(cents) > 1:
        chain += ["pitch", f"{cents:.1f}"]
    tempo = tempo_factor(p)
    if abs(tempo - 1.0) > 1e-3:
        chain += ["tempo", "-s", f"{tempo:.4f}"]
    if p.bright > 1e-3:
        chain += ["treble", _db(8.0 * p.bright)]
    elif p.bright < -1e-3:
        chain += ["treble", _db(8.0 * p.bright), "bass", _db(-4.0 * p.bright)]
    if p.harsh > 1e-3:
        chain += ["overdrive", _db(4.0 + 16.0 * p.harsh), "20"]
    if p.tremolo > 1e-3:
        chain += ["tremolo", f"{p.tremolo_hz:.2f}", f"{min(90.0, 60.0 * p.tremolo):.1f}"]
    chain += ["gain", _db(p.loudness_db)]
    return chain


def run_sox(x: np.ndarray, sr: int, chain: list[str]) -> np.ndarray:
    """Float32 mono audio through ``sox`` with an effects chain (piped, no temporary files)."""
    raw = ["-t", "f32", "-r", str(sr), "-c", "1"]
    try:
        out = sox([*raw, "-", *raw, "-", *chain], x.astype(np.float32).tobytes(), what=f"effects {' '.join(chain)}")
    except EmoslmError as e:  # the 'sox' rendering method named, with sox's own message
        raise RenderError(f"the 'sox' rendering method: {e}") from e
    return np.frombuffer(out, dtype=np.float32).copy()


def render_cues(x: np.ndarray, sr: int, p: RenderParams, rng: np.random.Generator) -> np.ndarray:
    """Put the cues the engine did not render on the waveform ``x`` (float32 in [-1, 1], spoken by the engine
    with :func:`engine_settings`)."""
    if p.method == "engine":
        return apply_voice_quality(x, sr, p, rng)
    if p.method == "tape":
        return apply_voice_quality(tape_speed(x, sr, pitch_semitones(p)), sr, p, rng)
    if p.method == "sox":
        return soft_limit(run_sox(x, sr, sox_chain(p)))
    raise RenderError(f"unknown rendering method {p.method!r}; expected one of {RENDER_METHODS}")

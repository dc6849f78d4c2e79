"""A corpus laid out exactly like RAVDESS (``Actor_NN/03-01-EE-II-SS-RR-AA.wav`` at 48 kHz), with real speech:
each actor is an espeak-ng voice, each emotion a prosody of its own (rate, pitch, range, loudness), so that a user's
own corpus can be prepared, split, trained on, evaluated, predicted and served in a test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

# RAVDESS emotion codes -> (rate wpm, pitch, pitch range, volume) of espeak-ng
PROSODY = {
    "01": (165, 45, 30, 90),  # neutral
    "02": (140, 40, 20, 70),  # calm
    "03": (190, 70, 85, 120),  # happy
    "04": (120, 30, 15, 60),  # sad
    "05": (210, 55, 90, 170),  # angry
    "06": (230, 80, 70, 100),  # fearful
    "07": (130, 35, 60, 110),  # disgust
    "08": (180, 90, 100, 130),  # surprised
}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
VOICES = ["en-us", "en+f3", "en-gb-x-rp", "en+f2", "en-029", "en+f4", "en-gb-scotland", "en-us+f1"]


def make_ravdess_speech(root: Path, actors: int = 6, statements: tuple[str, ...] = ("01", "02"),
                        intensities: tuple[str, ...] = ("01",)) -> Path:
    """Write the corpus under ``root`` and return it; ``actors`` voices, every emotion x statement x intensity."""
    from emoslm.synth.tts import Espeak

    tts = Espeak()
    for a in range(1, actors + 1):
        voice = VOICES[(a - 1) % len(VOICES)]
        shift = (a * 7) % 15 - 7  # each actor a little higher or lower than the voice's default
        for emo, (rate, pitch, rng, vol) in PROSODY.items():
            for st in statements:
                for inten in intensities:
                    if emo == "01" and inten == "02":  # RAVDESS has no strong neutral
                        continue
                    wave, sr = tts.synth(voice, STATEMENTS[st], rate=rate + 3 * shift, pitch=pitch + shift,
                                         pitch_range=rng, volume=vol)
                    x = np.interp(np.arange(0, len(wave), sr / 48000), np.arange(len(wave)), wave.astype(np.float32))
                    path = root / f"Actor_{a:02d}" / f"03-01-{emo}-{inten}-{st}-01-{a:02d}.wav"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(path, (x / 32768.0).astype(np.float32), 48000, subtype="PCM_16")
    return root

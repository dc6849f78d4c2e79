"""Pitch, energy and tempo levels of a real corpus, measured from its audio (paper 002's attribute tasks).

The synthetic corpus knows each utterance's levels from how it was rendered; a real corpus (IEMOCAP,
MSP-Podcast, ...) does not. Like TextrolSpeech's labels, the levels here are terciles of a measurement:

- pitch: mean F0 in semitones (openSMILE eGeMAPS ``F0semitoneFrom27.5Hz_sma3nz_amean``), with thresholds per
  gender (a "high" male voice is not a high female voice) when the gender is known;
- energy: mean loudness (``loudness_sma3_amean``);
- tempo: syllables per second of the transcript (vowel groups) over the utterance's duration when there is a
  transcript, else openSMILE's voiced segments per second.

Thresholds (the 1/3 and 2/3 quantiles) are computed on the ``reference`` split (train) and applied to every
split. Existing levels are kept unless ``overwrite``. The measurements are cached (eGeMAPS ``.npz`` cache).

    emoslm levels data/iemocap [--out data/iemocap_levels] [--overwrite]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from emoslm.egemaps import egemaps_for, feature_names

PITCH_FEATURE = "F0semitoneFrom27.5Hz_sma3nz_amean"
LOUDNESS_FEATURE = "loudness_sma3_amean"
VOICED_RATE_FEATURE = "VoicedSegmentsPerSec"
LEVEL_NAMES = ("low", "normal", "high")


def syllables(text: str) -> int:
    """A rough English syllable count: vowel groups per word (at least one per word)."""
    words = re.findall(r"[a-zA-Z']+", text.lower())
    return sum(max(1, len(re.findall(r"[aeiouy]+", w.rstrip("e") or w))) for w in words)


def measurements(prepared: Mapping[str, Any], cache: str | Path | None = None, workers: int = 1,
                 progress: bool = True) -> dict[str, dict[str, float]]:
    """``{supervision id: {"pitch", "energy", "tempo"}}`` for every supervision of every split."""
    names = feature_names()
    i_pitch, i_loud, i_voiced = (names.index(n) for n in (PITCH_FEATURE, LOUDNESS_FEATURE, VOICED_RATE_FEATURE))
    items, sups = [], {}
    for parts in prepared.values():
        recs = parts["recordings"]
        for s in parts["supervisions"]:
            items.append((s.id, str(recs[s.recording_id].sources[0].source), float(s.start), float(s.duration)))
            sups[s.id] = s
    feats = egemaps_for(items, cache=cache, workers=workers, progress=progress)
    out = {}
    for uid, x in feats.items():
        s = sups[uid]
        tempo = syllables(s.text) / max(s.duration, 1e-3) if s.text else float(x[i_voiced])
        out[uid] = {"pitch": float(x[i_pitch]), "energy": float(x[i_loud]), "tempo": tempo,
                    "tempo_from": "transcript" if s.text else "voiced segments"}
    return out


def _level(value: float, thresholds: tuple[float, float]) -> str:
    lo, hi = thresholds
    return LEVEL_NAMES[0] if value < lo else LEVEL_NAMES[2] if value > hi else LEVEL_NAMES[1]


def thresholds(values: list[float]) -> tuple[float, float]:
    if len(values) < 3:
        raise ValueError(f"need at least 3 reference utterances to set level thresholds, got {len(values)}")
    lo, hi = np.quantile(np.asarray(values, dtype=float), [1 / 3, 2 / 3])
    return float(lo), float(hi)


def derive_levels(prepared: Mapping[str, Any], reference: str = "train", overwrite: bool = False,
                  cache: str | Path | None = None, workers: int = 1, progress: bool = True) -> dict[str, Any]:
    """Write ``pitch_level``/``energy_level``/``tempo_level`` into the supervisions' ``custom`` (in memory);
    return the thresholds and the level counts."""
    if reference not in prepared:
        raise ValueError(f"no {reference!r} split to set thresholds on (splits: {', '.join(prepared)})")
    m = measurements(prepared, cache, workers, progress)
    ref = list(prepared[reference]["supervisions"])
    th: dict[str, Any] = {"energy": thresholds([m[s.id]["energy"] for s in ref]),
                          "tempo": thresholds([m[s.id]["tempo"] for s in ref])}
    genders = {s.gender for s in ref if s.gender in ("M", "F")}
    by_gender = {g: [m[s.id]["pitch"] for s in ref if s.gender == g] for g in genders}
    th["pitch"] = {g: thresholds(v) for g, v in by_gender.items() if len(v) >= 3}
    th["pitch"]["*"] = thresholds([m[s.id]["pitch"] for s in ref])
    counts: dict[str, dict[str, int]] = {k: dict.fromkeys(LEVEL_NAMES, 0) for k in ("pitch", "energy", "tempo")}
    for parts in prepared.values():
        for s in parts["supervisions"]:
            x = m[s.id]
            levels = {"pitch": _level(x["pitch"], th["pitch"].get(s.gender or "", th["pitch"]["*"])),
                      "energy": _level(x["energy"], th["energy"]), "tempo": _level(x["tempo"], th["tempo"])}
            custom = dict(s.custom or {})
            for k, v in levels.items():
                key = f"{k}_level"
                if overwrite or custom.get(key) is None:
                    custom[key] = v
                counts[k][custom[key]] += 1
            s.custom = custom
    return {"thresholds": th, "counts": counts, "reference": reference, "utterances": len(m)}

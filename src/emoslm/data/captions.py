"""Speaking-style captions: the text form of an utterance's paralinguistic attributes.

A caption says, in words, what the paralinguistic embeddings of paper 002 carry: gender, pitch, tempo,
energy and emotion ("A woman speaks in a high-pitched voice, quickly and loudly, sounding angry."). It is
used where the paper replaces the paralinguistic embeddings by text (Equivalence Replacement Regularization),
in the styled transcripts the frozen LLM answers when it writes the dual-information targets, and by the
conversation judge. Missing attributes are left out of the sentence; with none at all the caption is empty.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

GENDER_WORDS = {"M": ("A man", "male"), "F": ("A woman", "female")}
PITCH_WORDS = {"low": "a low-pitched voice", "normal": "a normal-pitched voice", "high": "a high-pitched voice"}
TEMPO_WORDS = {"low": "slowly", "normal": "at a normal speed", "high": "quickly"}
ENERGY_WORDS = {"low": "softly", "normal": "at a normal volume", "high": "loudly"}
EMOTION_WORDS = {"neutral": "neutral", "anger": "angry", "joy": "happy", "sadness": "sad", "fear": "afraid",
                 "disgust": "disgusted", "surprise": "surprised", "calm": "calm", "boredom": "bored",
                 "contempt": "contemptuous", "frustration": "frustrated", "excitement": "excited"}

#: Templates, one drawn per caption when ``rng`` is given (the first otherwise).
TEMPLATES = (
    "{who} speaks in {pitch}, {tempo} and {energy}, sounding {emotion}.",
    "{who} talks {tempo} and {energy} in {pitch}; the tone is {emotion}.",
    "Spoken by {who_lower} in {pitch}, {tempo}, {energy}, with a {emotion} tone.",
)


def style_caption(attrs: Mapping[str, Any], rng: np.random.Generator | None = None) -> str:
    """A one-sentence caption from ``gender`` (M/F), ``pitch_level``/``tempo_level``/``energy_level``
    (low/normal/high) and ``emotion`` (canonical label); any of them may be missing or None."""
    g = GENDER_WORDS.get(attrs.get("gender") or "")
    parts = {
        "who": g[0] if g else "The speaker",
        "who_lower": g[0].lower() if g else "a speaker",
        "pitch": PITCH_WORDS.get(attrs.get("pitch_level") or ""),
        "tempo": TEMPO_WORDS.get(attrs.get("tempo_level") or ""),
        "energy": ENERGY_WORDS.get(attrs.get("energy_level") or ""),
        "emotion": EMOTION_WORDS.get(attrs.get("emotion") or ""),
    }
    if all(parts[k] is None for k in ("pitch", "tempo", "energy", "emotion")):
        return f"{parts['who']} speaks." if g else ""
    if any(parts[k] is None for k in ("pitch", "tempo", "energy", "emotion")):  # partial: a plain list
        bits = [b for b in (f"in {parts['pitch']}" if parts["pitch"] else None, parts["tempo"], parts["energy"],
                            f"sounding {parts['emotion']}" if parts["emotion"] else None) if b]
        return f"{parts['who']} speaks {', '.join(bits)}."
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))] if rng is not None else TEMPLATES[0]
    return template.format(**parts)


def styled_transcript(text: str, attrs: Mapping[str, Any]) -> str:
    """The transcript with its caption, as the frozen LLM reads a spoken turn: ``[caption] "text"``."""
    cap = style_caption(attrs)
    return f'[{cap}] "{text}"' if cap else text

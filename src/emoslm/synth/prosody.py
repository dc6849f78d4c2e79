"""How a synthetic speaker sounds, and how they render each emotion relative to their own baseline.

A speaker has a baseline (pitch level and range, speaking rate, loudness, spectral tilt, breathiness) drawn
around a gender-dependent population mean, an *expressivity* that scales all their emotional changes, and
*idiosyncrasies* as real people have them: some render two emotions alike, some use one cue the opposite way
(e.g. speak slower, not faster, when afraid). Each emotion is a vector of cues (:data:`EMOTION_CUES`) added to
the speaker's baseline after scaling by expressivity and a per-speaker perturbation.

The consequence, measured in ``benchmarks/speaker_dependence.py``: from absolute acoustics a
speaker-independent model confuses one speaker's baseline with another's emotion, while a few labelled
utterances of the same speaker reveal both the baseline and the speaker's own way of expressing emotion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from emoslm.labels import EKMAN7

#: Cue dimensions. Units: ``pitch`` and ``range`` in espeak-ng units (0-100 scale), ``rate`` as a log factor of
#: words per minute, ``loudness`` in dB, ``tremolo``/``breath``/``harsh`` as effect strengths in [0, 1],
#: ``bright`` as spectral tilt (+ brighter / - darker), ``gap`` as extra pause between words in 10 ms units.
CUES = ("pitch", "range", "rate", "loudness", "tremolo", "breath", "harsh", "bright", "gap")

#: The population-average way each emotion departs from neutral (prototypes from the vocal-affect literature:
#: high-arousal emotions raise pitch, loudness and rate; sadness lowers them; fear trembles; anger and disgust
#: are harsh; surprise widens the pitch range).
EMOTION_CUES: dict[str, dict[str, float]] = {
    "neutral": {},
    "anger": {"pitch": 6, "range": 18, "rate": 0.10, "loudness": 6, "harsh": 0.7, "bright": 0.5},
    "joy": {"pitch": 10, "range": 24, "rate": 0.08, "loudness": 3, "bright": 0.3},
    "sadness": {"pitch": -8, "range": -20, "rate": -0.22, "loudness": -5, "breath": 0.35, "bright": -0.5, "gap": 3},
    "fear": {"pitch": 12, "range": -10, "rate": 0.18, "loudness": -2, "tremolo": 0.6, "breath": 0.25},
    "disgust": {"pitch": -5, "range": 6, "rate": -0.15, "loudness": 1, "harsh": 0.35, "bright": -0.3, "gap": 2},
    "surprise": {"pitch": 16, "range": 32, "rate": -0.02, "loudness": 4, "bright": 0.2},
}

#: Spread of a speaker's own departure from the prototype, per cue (same units as the cues).
_CUE_JITTER = {"pitch": 3.0, "range": 6.0, "rate": 0.05, "loudness": 1.5, "tremolo": 0.15, "breath": 0.08,
               "harsh": 0.15, "bright": 0.15, "gap": 1.0}

#: Utterance-to-utterance variation of one speaker's rendering (same units).
_UTT_JITTER = {"pitch": 1.5, "range": 3.0, "rate": 0.03, "loudness": 0.8}


def cue_vector(cues: dict[str, float]) -> np.ndarray:
    return np.array([cues.get(c, 0.0) for c in CUES], dtype=np.float64)


@dataclass
class SpeakerProfile:
    id: str
    voice: str
    voice_kind: str
    gender: str
    pitch: float  # espeak-ng pitch (0-100)
    pitch_range: float  # espeak-ng range (0-100)
    rate: float  # words per minute
    loudness: float  # dB relative to the engine's output
    bright: float  # spectral tilt
    breath: float  # breathiness floor
    expressivity: float
    idiosyncrasies: list[str] = field(default_factory=list)
    #: how the emotion cues reach the waveform (:data:`RENDER_METHODS`)
    render_method: str = "engine"
    #: the cues this speaker uses at all (all of :data:`CUES` unless the corpus varies them)
    cues_used: list[str] = field(default_factory=lambda: list(CUES))
    #: the speaker's own cue vector per emotion, already scaled by expressivity
    emotion_cues: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_speaker(
    speaker_id: str,
    voice: str,
    voice_kind: str,
    gender: str,
    rng: np.random.Generator,
    emotions: Sequence[str] = EKMAN7,
    *,
    p_alike: float = 0.25,
    p_reversed: float = 0.25,
    variation: CueVariation | None = None,
    render_method: str = "engine",
) -> SpeakerProfile:
    """Draw one speaker: baseline, expressivity, idiosyncrasies and their personal emotion cues.

    ``variation`` (None: the corpus of SYNTH_VERSION 3, whose random draws it leaves unchanged) makes speakers
    differ in which cues they use, in which direction and how strongly."""
    female = gender == "F"
    prof = SpeakerProfile(
        id=speaker_id, voice=voice, voice_kind=voice_kind, gender=gender,
        pitch=float(rng.uniform(45, 85) if female else rng.uniform(18, 55)),
        pitch_range=float(rng.uniform(30, 75)),
        rate=float(rng.uniform(135, 195)),
        loudness=float(rng.uniform(-8, 2)),
        bright=float(rng.uniform(-0.5, 0.5)),
        breath=float(rng.uniform(0.0, 0.15)),
        expressivity=float(np.clip(rng.lognormal(0.0, 0.35), 0.4, 2.0)),
    )
    cues = {}
    for e in emotions:
        v = cue_vector(EMOTION_CUES[e])
        if e != "neutral":
            v = v + np.array([rng.normal(0, _CUE_JITTER[c]) for c in CUES])
        cues[e] = v
    non_neutral = [e for e in emotions if e != "neutral"]
    if len(non_neutral) >= 2 and rng.random() < p_alike:
        a, b = rng.choice(non_neutral, size=2, replace=False)
        cues[b] = cues[a] + np.array([rng.normal(0, _CUE_JITTER[c]) * 0.3 for c in CUES])
        prof.idiosyncrasies.append(f"renders {b} like {a}")
    if non_neutral and rng.random() < p_reversed:
        e = str(rng.choice(non_neutral))
        c = str(rng.choice(["pitch", "rate", "loudness"]))
        i = CUES.index(c)
        cues[e][i] = -cues[e][i]
        prof.idiosyncrasies.append(f"reverses {c} for {e}")
    prof.render_method = render_method
    if variation is not None:
        cues = variation.personalise(prof, cues, non_neutral, rng)
    for e, v in cues.items():
        v = v * prof.expressivity
        # strengths of effects stay within [0, 1]
        for c in ("tremolo", "breath", "harsh"):
            v[CUES.index(c)] = float(np.clip(v[CUES.index(c)], 0.0, 1.0))
        prof.emotion_cues[e] = [round(float(x), 4) for x in v]
    return prof


@dataclass(frozen=True)
class CueVariation:
    """How much speakers differ in the way they express emotion, beyond the prototype's jitter.

    Real speakers do not all use the same cues: one gets louder when angry, another only faster; one speaks
    more slowly when happy. A model that learns the population's prototype then fails on such a speaker, and
    only that speaker's labelled enrollment utterances tell how they sound.
    """

    #: probability that a speaker uses a cue at all (per speaker and cue; at least ``min_cues`` are kept)
    p_use: float = 0.7
    min_cues: int = 3
    #: probability that a speaker moves a prosodic cue the opposite way for one emotion (per speaker, emotion, cue)
    p_flip: float = 0.08
    #: log-normal spread of a speaker's strength per cue (one factor per speaker and cue, all emotions), kept
    #: within [1/max_strength, max_strength] so that no cue becomes absurd (a whispered joy)
    strength_sd: float = 0.5
    max_strength: float = 2.0

    def personalise(self, prof: SpeakerProfile, cues: dict[str, np.ndarray], non_neutral: Sequence[str],
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
        n = len(CUES)
        use = rng.random(n) < self.p_use
        if use.sum() < self.min_cues:
            use[rng.choice(n, size=self.min_cues, replace=False)] = True
        strength = np.clip(np.exp(rng.normal(0.0, self.strength_sd, n)), 1 / self.max_strength, self.max_strength)
        flips = []
        out = {}
        for e, v in cues.items():
            v = v * strength * use
            if e in non_neutral:
                for c in ("pitch", "rate", "loudness", "range"):
                    i = CUES.index(c)
                    if use[i] and rng.random() < self.p_flip:
                        v[i] = -v[i]
                        flips.append(f"{c} for {e}")
            out[e] = v
        prof.cues_used = [c for c, u in zip(CUES, use) if u]
        if flips:
            prof.idiosyncrasies.append("reverses " + ", ".join(flips))
        return out


#: How the emotion cues of an utterance reach the waveform:
#: ``engine``: pitch, range, rate and pauses by the TTS engine's prosody; voice quality and loudness in numpy;
#: ``tape``: the engine speaks at the speaker's baseline, pitch by a tape-speed change of the waveform (which
#: changes the tempo with it; the rate cue itself is not rendered), no range or pause cues; voice quality in numpy;
#: ``sox``: the engine speaks at the baseline; pitch, tempo, loudness, tilt, harshness and tremolo by sox's
#: WSOLA pitch shift and effects (formants move with the pitch, unlike the engine's), no breath, range or pauses.
RENDER_METHODS = ("engine", "tape", "sox")


@dataclass(frozen=True)
class RenderParams:
    """Everything needed to render one utterance: engine parameters and post-processing strengths."""

    pitch: int
    pitch_range: int
    rate: int
    word_gap: int
    loudness_db: float
    bright: float
    breath: float
    harsh: float
    tremolo: float
    tremolo_hz: float
    method: str = "engine"
    #: the speaker's baseline engine settings, used by the methods that render the cues on the waveform
    base_pitch: int = 50
    base_range: int = 50
    base_rate: int = 175


def render_params(prof: SpeakerProfile, emotion: str, rng: np.random.Generator) -> RenderParams:
    """The speaker's rendering of ``emotion`` for one utterance (baseline + personal cue + utterance jitter)."""
    v = dict(zip(CUES, prof.emotion_cues[emotion]))
    j = {c: rng.normal(0, s) for c, s in _UTT_JITTER.items()}
    return RenderParams(
        pitch=int(round(np.clip(prof.pitch + v["pitch"] + j["pitch"], 0, 100))),
        pitch_range=int(round(np.clip(prof.pitch_range + v["range"] + j["range"], 0, 100))),
        rate=int(round(np.clip(prof.rate * np.exp(v["rate"] + j["rate"]), 80, 400))),
        word_gap=int(round(max(0.0, v["gap"]))),
        loudness_db=float(prof.loudness + v["loudness"] + j["loudness"]),
        bright=float(np.clip(prof.bright + v["bright"], -1.0, 1.0)),
        breath=float(np.clip(prof.breath + v["breath"], 0.0, 1.0)),
        harsh=float(v["harsh"]),
        tremolo=float(v["tremolo"]),
        tremolo_hz=float(rng.uniform(4.5, 7.5)),
        method=prof.render_method,
        base_pitch=int(round(np.clip(prof.pitch, 0, 100))),
        base_range=int(round(np.clip(prof.pitch_range, 0, 100))),
        base_rate=int(round(np.clip(prof.rate, 80, 400))),
    )

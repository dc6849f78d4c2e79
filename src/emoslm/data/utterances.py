"""One utterance record for every task that reads a prepared corpus utterance by utterance.

A prepared corpus is lhotse manifests (:mod:`emoslm.data.manifests`); a task that needs its utterances one by one
(paper 002's questions and ASR, paper 001's SER heads) reads them as :class:`Utterance`: where the audio is, the
transcript, the label in the task's label set, and the supervision's other attributes (gender, the pitch/tempo/
energy levels, the canonical emotion). Feature caches key their entries by ``id`` and the audio span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from emoslm.audio import load_audio
from emoslm.data.manifests import attr, emotion_of, load_prepared
from emoslm.labels import LabelSet

#: the supervision attributes every utterance carries in ``attrs``
ATTRIBUTES = ("gender", "pitch_level", "tempo_level", "energy_level", "emotion")


@dataclass(frozen=True)
class Utterance:
    id: str
    split: str
    speaker: str
    audio: str  # the recording's file
    start: float = 0.0  # seconds into the file
    duration: float | None = None  # None: to the end of the file
    text: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)  # gender, levels, the canonical emotion, ...
    label: str | None = None  # the emotion in the task's label set (None: unlabelled or not one of its classes)

    def load_wave(self) -> np.ndarray:
        """The utterance's samples, 16 kHz mono float32."""
        return load_audio(self.audio, offset=self.start, duration=self.duration)


def from_supervision(sup, recordings: Mapping[str, Any], split: str, label_set: LabelSet | None = None,
                     whole_file: bool = False) -> Utterance:
    """The utterance of a lhotse supervision; ``label_set`` maps its emotion into the task's classes;
    ``whole_file`` reads the recording to its end (``duration`` None)."""
    emotion = emotion_of(sup)
    label = label_set.map(emotion) if label_set is not None and emotion else None
    return Utterance(sup.id, split, str(sup.speaker), str(recordings[sup.recording_id].sources[0].source),
                     float(sup.start), None if whole_file else float(sup.duration), sup.text or "",
                     {k: attr(sup, k) for k in ATTRIBUTES}, label)


def load_utterances(data: str, split: str, limit: int | None = None, seed: int = 0) -> list[Utterance]:
    """The utterances of a prepared corpus's split (a seeded subset of ``limit`` when given)."""
    prepared = load_prepared(data)
    if split not in prepared:
        raise ValueError(f"{data} has no {split!r} split (has: {', '.join(prepared)})")
    recs = prepared[split]["recordings"]
    sups = list(prepared[split]["supervisions"])
    if limit is not None and limit < len(sups):
        keep = sorted(np.random.default_rng(seed).choice(len(sups), limit, replace=False))
        sups = [sups[i] for i in keep]
    return [from_supervision(s, recs, split) for s in sups]

"""Canonical emotion labels and the named label sets tasks use.

Every corpus adapter maps its own labels to the canonical vocabulary below and keeps the original label
beside it (``custom["emotion_orig"]``), so a task can choose its label set without knowing the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from emoslm.errors import LabelError

#: The seven emotions of paper 000, in the order of its instruction text's list reversed to the
#: conventional "neutral first" order. This is the default label set of emoslm.
EKMAN7: tuple[str, ...] = ("neutral", "anger", "joy", "sadness", "fear", "disgust", "surprise")

#: Every canonical label a corpus adapter may emit. Labels outside EKMAN7 come from corpora that annotate
#: more classes (RAVDESS "calm", EmoDB "boredom", IEMOCAP "frustration"/"excitement", MSP-Podcast "contempt").
CANONICAL: tuple[str, ...] = EKMAN7 + ("calm", "boredom", "contempt", "frustration", "excitement", "other")

#: Spellings that mean a canonical label (lower-cased keys). Corpus adapters use their own tables; this one
#: serves user input (CLI ``FILE:LABEL``, CSV manifests, API requests).
ALIASES: dict[str, str] = {
    "neu": "neutral", "neutral": "neutral", "n": "neutral",
    "ang": "anger", "angry": "anger", "anger": "anger", "a": "anger",
    "hap": "joy", "happy": "joy", "happiness": "joy", "joy": "joy", "cheerful": "joy", "h": "joy",
    "sad": "sadness", "sadness": "sadness", "s": "sadness",
    "fea": "fear", "fear": "fear", "fearful": "fear", "afraid": "fear", "f": "fear",
    "dis": "disgust", "disgust": "disgust", "disgusted": "disgust", "d": "disgust",
    "sur": "surprise", "surprise": "surprise", "surprised": "surprise", "u": "surprise",
    "calm": "calm", "boredom": "boredom", "bored": "boredom", "contempt": "contempt", "c": "contempt",
    "fru": "frustration", "frustration": "frustration", "frustrated": "frustration",
    "exc": "excitement", "excitement": "excitement", "excited": "excitement",
    "oth": "other", "other": "other", "o": "other",
}


def canonical_emotion(label: str) -> str:
    """Map a user-written label ("Angry", "hap", "joy") to its canonical form; raise LabelError if unknown."""
    key = str(label).strip().lower()
    if key in ALIASES:
        return ALIASES[key]
    raise LabelError(f"unknown emotion label {label!r}; known labels: {', '.join(CANONICAL)}")


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of class labels with a mapping from canonical labels into it.

    ``merge`` maps canonical labels that are folded into a class (IEMOCAP's common 4-class setting folds
    excitement into joy); canonical labels that are neither in ``labels`` nor in ``merge`` are outside the task.
    ``display`` gives the word used in prompts for each label (paper 000 writes "Anger", "Joy", ...).
    """

    name: str
    labels: tuple[str, ...]
    merge: Mapping[str, str] = field(default_factory=dict)
    display: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def map(self, canonical: str) -> str | None:
        """The class of a canonical label in this set, or None when the label is outside the task."""
        if canonical in self.labels:
            return canonical
        return self.merge.get(canonical)

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise LabelError(f"label {label!r} is not in label set {self.name!r} ({', '.join(self.labels)})") from None

    def word(self, label: str) -> str:
        """The word written in prompts for a label."""
        self.index(label)
        return self.display.get(label, label.capitalize())

    def parse(self, text: str) -> str | None:
        """The label whose prompt word (or canonical name or alias) ``text`` is, or None."""
        key = text.strip().strip(".").lower()
        for lab in self.labels:
            if key in (lab, self.word(lab).lower()):
                return lab
        try:
            return self.map(canonical_emotion(key))
        except LabelError:
            return None

    def check(self, label: str) -> str:
        """Canonicalise a user-given label and return its class; raise LabelError if it is not in the set."""
        mapped = self.map(canonical_emotion(label))
        if mapped is None:
            raise LabelError(f"label {label!r} is not in label set {self.name!r} ({', '.join(self.labels)})")
        return mapped


LABEL_SETS: dict[str, LabelSet] = {
    "ekman7": LabelSet(
        "ekman7",
        EKMAN7,
        display={"neutral": "Neutral", "anger": "Anger", "joy": "Joy", "sadness": "Sadness", "fear": "Fear",
                 "disgust": "Disgust", "surprise": "Surprise"},
    ),
    # The common IEMOCAP benchmark: 4 classes, excitement merged into happiness.
    "iemocap4": LabelSet("iemocap4", ("neutral", "anger", "joy", "sadness"), merge={"excitement": "joy"}),
    # The five emotions of E-chat (paper 003), written with its words.
    "echat5": LabelSet(
        "echat5",
        ("neutral", "joy", "fear", "anger", "sadness"),
        display={"neutral": "neutral", "joy": "cheerful", "fear": "fearful", "anger": "angry", "sadness": "sad"},
    ),
}


def get_label_set(name_or_labels: str | Sequence[str] | LabelSet) -> LabelSet:
    """A LabelSet by name ("ekman7"), or an ad-hoc one from a list of canonical labels."""
    if isinstance(name_or_labels, LabelSet):
        return name_or_labels
    if isinstance(name_or_labels, str):
        if name_or_labels in LABEL_SETS:
            return LABEL_SETS[name_or_labels]
        raise LabelError(f"unknown label set {name_or_labels!r}; known: {', '.join(LABEL_SETS)}")
    labels = tuple(canonical_emotion(x) for x in name_or_labels)
    return LabelSet("custom:" + ",".join(labels), labels)

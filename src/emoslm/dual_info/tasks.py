"""Instruction tasks over one utterance (paper 002, III-B): attribute classification and ASR.

Each paralinguistic task asks about one attribute with an instruction and its list of choices, and expects a
one-sentence answer ("The speaker sounds angry."), the natural form of an instruction-following LLM; the
answer is parsed back by finding the choice word in it. The linguistic task is ASR. Several system prompts
and several instruction wordings exist per task; one of each is drawn per example (IV-A), and the test
sets draw theirs with a fixed seed.

The attributes come from the corpus manifests (``gender``; ``pitch_level``/``tempo_level``/``energy_level``;
``emotion``): the synthetic corpus has them all; for a real corpus, :mod:`emoslm.data.levels` derives the
three levels from the audio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np

#: system prompts per task family, one drawn per example
SYSTEM_PROMPTS: dict[str, tuple[str, ...]] = {
    "paralinguistic": (
        "You are a helpful assistant that listens carefully to how people speak.",
        "You are an expert in voice and speaking style analysis.",
        "You answer questions about a speaker's voice accurately and briefly.",
    ),
    "linguistic": (
        "You are a helpful assistant that transcribes speech accurately.",
        "You are a careful transcriber of spoken English.",
        "You write down exactly what people say.",
    ),
    "conversation": (
        "You are a helpful and empathetic assistant. Pay attention to what the user says and how they say it.",
        "You are a kind conversational partner who responds to both the words and the feelings of the user.",
        "You are a friendly assistant having a spoken conversation.",
    ),
}


@dataclass(frozen=True)
class AttributeTask:
    """A paralinguistic question: manifest field, label -> choice word, instructions, answer template."""

    name: str
    field: str
    choices: Mapping[str, str]
    instructions: tuple[str, ...]
    answer: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.choices)

    def prompt(self, rng: np.random.Generator | None = None) -> str:
        ins = self.instructions[int(rng.integers(len(self.instructions)))] if rng is not None else self.instructions[0]
        return f"{ins} Choose one of: {', '.join(self.choices.values())}."

    def target(self, label: str) -> str:
        if label not in self.choices:
            raise ValueError(f"{self.name}: unknown label {label!r} (known: {', '.join(self.choices)})")
        return self.answer.format(self.choices[label])

    def parse(self, text: str) -> str | None:
        """The label whose choice word comes first in ``text`` (None when no choice word is there)."""
        low = text.lower()
        best, pos = None, len(low) + 1
        for label, word in self.choices.items():
            m = re.search(rf"\b{re.escape(word.lower())}\b", low)
            if m and m.start() < pos:
                best, pos = label, m.start()
        return best


LEVEL_CHOICES = {"low": "low", "normal": "normal", "high": "high"}

ATTRIBUTE_TASKS: dict[str, AttributeTask] = {t.name: t for t in (
    AttributeTask("gender", "gender", {"M": "male", "F": "female"}, (
        "What is the gender of the speaker?", "Is the speaker male or female?",
        "Identify the speaker's gender."), "The speaker is {}."),
    AttributeTask("pitch", "pitch_level", LEVEL_CHOICES, (
        "How high is the pitch of the speaker's voice?", "Describe the pitch level of this voice.",
        "What is the pitch of the speech?"), "The pitch is {}."),
    AttributeTask("tempo", "tempo_level", {"low": "slow", "normal": "normal", "high": "fast"}, (
        "How fast does the speaker talk?", "What is the speaking rate?", "Describe the tempo of the speech."),
        "The speaking speed is {}."),
    AttributeTask("energy", "energy_level", LEVEL_CHOICES, (
        "How loud is the speaker?", "What is the energy level of the voice?", "Describe the volume of the speech."),
        "The energy is {}."),
    AttributeTask("emotion", "emotion", {
        "neutral": "neutral", "anger": "angry", "joy": "happy", "sadness": "sad", "fear": "fearful",
        "disgust": "disgusted", "surprise": "surprised"}, (
        "What emotion does the speaker express?", "How does the speaker feel?",
        "Recognize the emotion in this speech."), "The speaker sounds {}."),
)}

ASR_INSTRUCTIONS = (
    "Transcribe the speech.",
    "Write down exactly what the speaker says.",
    "What are the words spoken? Reply with the transcript only.",
)


def draw(options: tuple[str, ...], rng: np.random.Generator | None) -> str:
    return options[int(rng.integers(len(options)))] if rng is not None else options[0]


def system_message(family: str, rng: np.random.Generator | None) -> dict[str, str]:
    return {"role": "system", "content": draw(SYSTEM_PROMPTS[family], rng)}

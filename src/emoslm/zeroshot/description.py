"""A target corpus as its papers and web pages describe it, and the LLM prompts built from that description.

Paper 001 prompts an LLM with "viable information from released documents (papers, website descriptions) of
target corpora". A description is a small YAML file holding exactly that (packaged examples in
``emoslm/zeroshot/configs/descriptions/``: ``iemocap``, ``msp_podcast`` and ``synth_target``, the embedded synthetic
corpus described the way a paper would)::

    name: IEMOCAP
    sources: [Busso et al. 2008, https://sail.usc.edu/iemocap/]   # where the facts come from
    language: en
    scenario: ten actors in dyadic sessions, improvised and scripted ...
    speakers: {count: 10, female: 5, male: 5, description: professional actors}
    label_set: iemocap4          # optional: a named label set (folds the corpus's extra labels into its classes)
    emotions: {neutral: 0.31, anger: 0.20, joy: 0.30, sadness: 0.19}   # class -> share; the shares sum to 1
    utterances: {style: spontaneous conversational turns ..., min_words: 3, max_words: 25}
    topics: [a breakup, a job loss, ...]                           # optional: rotated over the prompts
    examples: {sadness: ["I really thought we would make it."]}    # optional: few-shot lines per class

Every field is checked when the file is read; an error names the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emoslm.errors import EmoslmError, LabelError
from emoslm.labels import LabelSet, canonical_emotion, get_label_set

DESCRIPTION_DIR = Path(__file__).resolve().parent / "configs" / "descriptions"

#: How far the shares may be from summing to 1 (descriptions copy rounded percentages from papers).
SHARE_TOLERANCE = 0.02

#: The adjective a prompt uses for each canonical label ("a speaker feeling angry").
ADJECTIVES = {
    "neutral": "neutral, stating plain facts without any emotion", "anger": "angry", "joy": "happy", "sadness": "sad",
    "fear": "afraid", "disgust": "disgusted", "surprise": "surprised", "calm": "calm", "boredom": "bored",
    "contempt": "contemptuous", "frustration": "frustrated", "excitement": "excited",
}

#: Few-shot lines used when a description gives none for a class: short, everyday, clearly of that class.
DEFAULT_EXAMPLES = {
    "neutral": ["I will send you the file tomorrow morning.", "The meeting moved to the second floor.",
                "We usually take the bus on Mondays."],
    "anger": ["You never listen to a word I say!", "This is the third time you lied to me.",
              "Get out of my office right now."],
    "joy": ["We got the apartment, I can't believe it!", "This is the best news I've had all year.",
            "I passed the exam, let's celebrate tonight."],
    "sadness": ["I really thought we would make it this time.", "He left and he is not coming back.",
                "I just miss how things used to be."],
    "fear": ["Did you hear that noise downstairs?", "What if they find out what we did?",
             "Please don't leave me alone here tonight."],
    "disgust": ["That smell is making me sick.", "How can you eat something that old?",
                "I can't believe he would do something so vile."],
    "surprise": ["Wait, you're getting married?", "I had no idea you were back in town!",
                 "You did all of this by yourself?"],
}

_LANGUAGES = {"en": "English"}


class DescriptionError(EmoslmError):
    """A corpus description that is malformed; names the file and the field."""

    def __init__(self, where: object, field_name: str, reason: str):
        self.where, self.field = str(where), field_name
        super().__init__(f"{where}: field {field_name!r}: {reason}")


@dataclass(frozen=True)
class Speakers:
    count: int
    female: int | None = None
    male: int | None = None
    description: str = ""


@dataclass(frozen=True)
class UtteranceStyle:
    style: str
    min_words: int = 3
    max_words: int = 25


@dataclass(frozen=True)
class CorpusDescription:
    name: str
    scenario: str
    speakers: Speakers
    emotions: dict[str, float]  # canonical class -> share (sums to 1)
    utterances: UtteranceStyle
    language: str = "en"
    sources: tuple[str, ...] = ()
    label_set_name: str | None = None
    topics: tuple[str, ...] = ()
    examples: dict[str, tuple[str, ...]] = field(default_factory=dict)
    path: str = ""

    @property
    def label_set(self) -> LabelSet:
        """The task's classes: the named label set (with its merges), else the described classes in order."""
        if self.label_set_name:
            return get_label_set(self.label_set_name)
        return get_label_set(list(self.emotions))

    def targets(self, total: int) -> dict[str, int]:
        """Utterances per class for ``total`` utterances in the described proportions (largest remainders)."""
        raw = {e: p * total for e, p in self.emotions.items()}
        out = {e: int(v) for e, v in raw.items()}
        for e in sorted(raw, key=lambda e: out[e] - raw[e])[: total - sum(out.values())]:
            out[e] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


# ------------------------------------------------------------------------------------------------ loading


def _require(data: dict, key: str, kind: type | tuple[type, ...], where: object) -> Any:
    if key not in data or data[key] is None:
        raise DescriptionError(where, key, "is missing")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DescriptionError(where, key, f"must be a {want}, got {type(value).__name__} {value!r}")
    return value


def _text(data: dict, key: str, where: object) -> str:
    value = _require(data, key, str, where).strip()
    if not value:
        raise DescriptionError(where, key, "is empty")
    return value


_KNOWN = {"name", "sources", "language", "scenario", "speakers", "label_set", "emotions", "utterances", "topics",
          "examples"}


def parse_description(data: Any, where: object = "<description>") -> CorpusDescription:
    """A :class:`CorpusDescription` from parsed YAML; raises :class:`DescriptionError` naming the field."""
    if not isinstance(data, dict):
        raise DescriptionError(where, "<top>", f"expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise DescriptionError(where, unknown[0], f"unknown field; known: {', '.join(sorted(_KNOWN))}")
    name, scenario = _text(data, "name", where), _text(data, "scenario", where)
    language = str(data.get("language", "en"))
    if language not in _LANGUAGES:
        raise DescriptionError(where, "language", f"{language!r} is not supported (supported: {', '.join(_LANGUAGES)})")
    sources = data.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise DescriptionError(where, "sources", "must be a list of strings")

    spk = _require(data, "speakers", dict, where)
    bad = sorted(set(spk) - {"count", "female", "male", "description"})
    if bad:
        raise DescriptionError(where, f"speakers.{bad[0]}", "unknown field (known: count, female, male, description)")
    count = _require(spk, "count", int, f"{where}: speakers")
    if count < 1:
        raise DescriptionError(where, "speakers.count", f"must be >= 1, got {count}")
    for g in ("female", "male"):
        if spk.get(g) is not None and (not isinstance(spk[g], int) or spk[g] < 0):
            raise DescriptionError(where, f"speakers.{g}", f"must be an integer >= 0, got {spk[g]!r}")
    if spk.get("female") is not None and spk.get("male") is not None and spk["female"] + spk["male"] != count:
        raise DescriptionError(where, "speakers", f"female {spk['female']} + male {spk['male']} != count {count}")
    speakers = Speakers(count, spk.get("female"), spk.get("male"), str(spk.get("description", "")))

    label_set_name = data.get("label_set")
    label_set = None
    if label_set_name is not None:
        try:
            label_set = get_label_set(str(label_set_name))
        except LabelError as e:
            raise DescriptionError(where, "label_set", str(e)) from None
    raw = _require(data, "emotions", dict, where)
    if not raw:
        raise DescriptionError(where, "emotions", "names no class")
    emotions: dict[str, float] = {}
    for lab, share in raw.items():
        try:
            canon = canonical_emotion(str(lab))
        except LabelError as e:
            raise DescriptionError(where, f"emotions.{lab}", str(e)) from None
        if label_set is not None and canon not in label_set.labels:
            raise DescriptionError(where, f"emotions.{lab}", f"is not a class of label set {label_set.name} "
                                                             f"({', '.join(label_set.labels)})")
        if canon in emotions:
            raise DescriptionError(where, f"emotions.{lab}", f"repeats class {canon!r}")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise DescriptionError(where, f"emotions.{lab}", f"share must be a number in (0, 1], got {share!r}")
        emotions[canon] = float(share)
    if label_set is not None and set(emotions) != set(label_set.labels):
        missing = [x for x in label_set.labels if x not in emotions]
        raise DescriptionError(where, "emotions", f"gives no share for {', '.join(missing)} of label set "
                                                  f"{label_set.name}")
    total = sum(emotions.values())
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise DescriptionError(where, "emotions", f"shares sum to {total:.3f}, not 1 (tolerance {SHARE_TOLERANCE})")
    emotions = {e: p / total for e, p in emotions.items()}

    utt = _require(data, "utterances", dict, where)
    bad = sorted(set(utt) - {"style", "min_words", "max_words"})
    if bad:
        raise DescriptionError(where, f"utterances.{bad[0]}", "unknown field (known: style, min_words, max_words)")
    style = _text(utt, "style", f"{where}: utterances")
    lo, hi = utt.get("min_words", 3), utt.get("max_words", 25)
    for key, v in (("min_words", lo), ("max_words", hi)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DescriptionError(where, f"utterances.{key}", f"must be an integer >= 1, got {v!r}")
    if lo > hi:
        raise DescriptionError(where, "utterances", f"min_words {lo} > max_words {hi}")

    topics = data.get("topics", [])
    if not isinstance(topics, list) or not all(isinstance(t, str) and t.strip() for t in topics):
        raise DescriptionError(where, "topics", "must be a list of non-empty strings")
    examples: dict[str, tuple[str, ...]] = {}
    for lab, lines in (data.get("examples") or {}).items():
        try:
            canon = canonical_emotion(str(lab))
        except LabelError as e:
            raise DescriptionError(where, f"examples.{lab}", str(e)) from None
        if canon not in emotions:
            raise DescriptionError(where, f"examples.{lab}", f"class {canon!r} is not in emotions")
        if not isinstance(lines, list) or not lines or not all(isinstance(x, str) and x.strip() for x in lines):
            raise DescriptionError(where, f"examples.{lab}", "must be a non-empty list of strings")
        examples[canon] = tuple(x.strip() for x in lines)
    return CorpusDescription(name=name, scenario=" ".join(scenario.split()), speakers=speakers, emotions=emotions,
                             utterances=UtteranceStyle(" ".join(style.split()), lo, hi), language=language,
                             sources=tuple(sources), label_set_name=label_set_name, topics=tuple(topics),
                             examples=examples, path=str(where))


def packaged_descriptions() -> list[str]:
    return sorted(p.stem for p in DESCRIPTION_DIR.glob("*.yaml"))


def load_description(name_or_path: str | Path) -> CorpusDescription:
    """A description from a YAML file, or a packaged one by name (``iemocap``, ``msp_podcast``, ``synth_target``)."""
    p = Path(name_or_path)
    if not p.is_file():
        packaged = DESCRIPTION_DIR / f"{p.name}.yaml" if p.suffix == "" else DESCRIPTION_DIR / p.name
        if not packaged.is_file():
            raise EmoslmError(f"description {name_or_path} does not exist (packaged: "
                              f"{', '.join(packaged_descriptions())})")
        p = packaged
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise DescriptionError(p, "<yaml>", f"is not valid YAML: {e}") from None
    return parse_description(data, p)


# ------------------------------------------------------------------------------------------------ prompts


def adjective(label: str) -> str:
    return ADJECTIVES.get(label, label)


def system_prompt(desc: CorpusDescription) -> str:
    """What the documents say, as the LLM's instructions."""
    spk = desc.speakers
    who = f"{spk.count} speakers" + (f" ({spk.female} female, {spk.male} male)" if spk.female is not None
                                     and spk.male is not None else "")
    if spk.description:
        who += f", {spk.description}"
    return (f"You write lines for an emotional speech corpus like {desc.name}. Setting: {desc.scenario} "
            f"Speakers: {who}. Style: {desc.utterances.style} Each line is one utterance of "
            f"{desc.utterances.min_words} to {desc.utterances.max_words} words in {_LANGUAGES[desc.language]}.")


def _json_lines(label: str, lines: list[str]) -> str:
    return json.dumps([{"emotion": label, "text": t} for t in lines], ensure_ascii=False)


def build_messages(desc: CorpusDescription, emotion: str, n: int, call_index: int) -> list[dict[str, str]]:
    """The chat messages of one generation call: instructions, one few-shot exchange showing the JSON format
    (with another class's example lines), then the request for ``n`` lines of ``emotion``."""
    if emotion not in desc.emotions:
        raise LabelError(f"{emotion!r} is not a class of description {desc.name} ({', '.join(desc.emotions)})")
    classes = list(desc.emotions)
    others = [e for e in classes if e != emotion] or classes
    shot = others[call_index % len(others)]
    shot_lines = list(desc.examples.get(shot) or DEFAULT_EXAMPLES.get(shot) or DEFAULT_EXAMPLES["neutral"])[:3]
    topic = f" The conversation is about {desc.topics[call_index % len(desc.topics)]}." if desc.topics else ""
    ask = ("Write {k} different lines a speaker says when feeling {adj}.{topic} Answer only with a JSON list of "
           '{{"emotion": "{label}", "text": "..."}} objects, each text at most {w} words.')
    w = desc.utterances.max_words
    return [
        {"role": "system", "content": system_prompt(desc)},
        {"role": "user", "content": ask.format(k=len(shot_lines), adj=adjective(shot), topic="", label=shot, w=w)},
        {"role": "assistant", "content": _json_lines(shot, shot_lines)},
        {"role": "user", "content": ask.format(k=n, adj=adjective(emotion), topic=topic, label=emotion, w=w)},
    ]

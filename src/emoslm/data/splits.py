"""Named split protocols: how a corpus is cut into train/dev/test, recorded with every result.

Peers' users keep asking which split a published number used; here a split is an object with a name and
parameters, and ``describe()`` is what gets logged beside the metrics (see :func:`emoslm.metrics.evaluate`).

Every protocol yields folds ``(fold_name, {"train": [...], "dev": [...], "test": [...]})`` of the original
supervisions (input order kept inside each split); ``apply()`` returns the splits of a one-fold protocol.
Input is a list (or SupervisionSet) of supervisions, or a prepared corpus ``{split: {"supervisions": ...}}``
(the split names are then known to :class:`Predefined`).

Protocols:

- ``leave_one_session_out``: one fold per value of ``custom["session"]`` (5 on IEMOCAP); test = that
  session; dev = a seeded, speaker-disjoint fraction (``dev_fraction``, default 0: no dev) of the speakers of
  the other sessions, stratified by gender; train = the rest. Not a proposal of dev = the other speaker of
  the test session: that would leak the test session into model selection.
- ``leave_one_speaker_out``: one fold per speaker, dev chosen as above.
- ``speaker_disjoint``: a seeded random partition of the speakers with fractions for train/dev/test,
  stratified by gender when known; no speaker is in two splits.
- ``predefined``: the corpus's own splits as prepared (names mapped to train/dev/test).

:func:`split_overlap` audits what one split shares with another beyond speakers (sentences, TTS base voices):
speaker-disjoint splits can still leak through the text or the voice (issue 14).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Iterable, Iterator, Mapping, NamedTuple, Sequence

from lhotse import SupervisionSegment

from emoslm.data.manifests import attr
from emoslm.metrics.text import normalize_text

ROLES = ("train", "dev", "test")

Splits = dict[str, list[SupervisionSegment]]


class Fold(NamedTuple):
    name: str
    splits: Splits


# -------------------------------------------------------------------------------------------- helpers


def _flatten(data: Any) -> list[tuple[SupervisionSegment, str | None]]:
    """(supervision, its corpus split name or None) for a prepared corpus or an iterable of supervisions."""
    if isinstance(data, Mapping):
        out = []
        for split, parts in data.items():
            sups = parts["supervisions"] if isinstance(parts, Mapping) else parts
            out += [(s, str(split)) for s in sups]
        return out
    return [(s, (s.custom or {}).get("split")) for s in data]


def _speaker_values(sups: Iterable[SupervisionSegment], key: str | None) -> dict[str, str | None]:
    """Each speaker's value of ``key`` (e.g. gender) when all its supervisions agree, else None."""
    values: dict[str, set] = {}
    for s in sups:
        values.setdefault(s.speaker, set()).add(attr(s, key) if key else None)
    return {spk: (next(iter(v)) if len(v) == 1 else None) for spk, v in values.items()}


def _stratified_order(strata: Mapping[str, str | None], rng: random.Random) -> list[str]:
    """The speakers in a seeded order in which every contiguous run is close to stratum-proportional.

    Each stratum is shuffled, then the strata are interleaved by fractional rank ((i + offset) / size, with a
    random offset per stratum), so that the first n speakers hold each stratum within one of its share.
    """
    groups: dict[str, list[str]] = {}
    for spk in sorted(strata):
        groups.setdefault(str(strata[spk]), []).append(spk)
    keyed = []
    for g in sorted(groups):
        members = groups[g]
        rng.shuffle(members)
        offset = rng.random()
        keyed += [((i + offset) / len(members), g, spk) for i, spk in enumerate(members)]
    return [spk for _, _, spk in sorted(keyed)]


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split n items by fractions (largest remainder); every positive fraction gets at least one item."""
    positive = sum(f > 0 for f in fractions)
    if n < positive:
        raise ValueError(f"{n} speakers cannot fill {positive} non-empty splits")
    raw = [n * f for f in fractions]
    counts = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0:
            counts[max(range(len(counts)), key=lambda j: counts[j])] -= 1
            counts[i] = 1
    return counts


def _split_by_speakers(sups: Sequence[SupervisionSegment], roles: Mapping[str, str]) -> Splits:
    out: Splits = {r: [] for r in ROLES}
    for s in sups:
        role = roles.get(s.speaker)
        if role is not None:
            out[role].append(s)
    return out


def speaker_overlap(splits: Mapping[str, Sequence[SupervisionSegment]]) -> dict[tuple[str, str], set[str]]:
    """Speakers shared by two splits, for each pair of splits that share any (empty when speaker-disjoint)."""
    spk = {name: {s.speaker for s in sups} for name, sups in splits.items()}
    names = list(spk)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if spk[a] & spk[b]:
                out[(a, b)] = spk[a] & spk[b]
    return out


#: Fields of a supervision's ``custom`` that name its TTS voice, most specific first (the synthetic corpus
#: writes ``voice``; lhotse recordings carry no custom metadata, so only supervisions are read).
VOICE_FIELDS = ("base_voice", "voice")
#: How many shared speakers / base voices an audit lists by name.
N_EXAMPLES = 5

def base_voice(sup: SupervisionSegment) -> str | None:
    """The TTS voice of a supervision without its variant (espeak-ng "en-us+m3" -> "en-us"; mbrola "mb-us1"
    stays), None when its metadata names no voice. Pitch and rate are separate fields, so they never enter."""
    for key in VOICE_FIELDS:
        value = (sup.custom or {}).get(key)
        if value:
            return str(value).split("+", 1)[0]
    return None


def _supervisions_of(parts: Any) -> list[SupervisionSegment]:
    return list(parts["supervisions"] if isinstance(parts, Mapping) else parts)


def split_overlap(prepared: Mapping[str, Any], reference: str = "train", target: str = "test") -> dict[str, Any]:
    """What the ``target`` split shares with the ``reference`` split: speakers, sentences, TTS base voices.

    Sentences: ``text_share`` is the share of the target's utterances with a text whose normalised text
    (:func:`emoslm.metrics.text.normalize_text`) also occurs in the reference; ``shared_sentences`` counts those distinct texts;
    both None when the target has no text. Base voices (:func:`base_voice`): None when either split names
    none. A split may be given as ``{"supervisions": ...}`` or as the supervisions themselves.
    """
    ref = _supervisions_of(prepared[reference])
    tgt = _supervisions_of(prepared[target])
    speakers = {s.speaker for s in tgt} & {s.speaker for s in ref}
    ref_texts = {normalize_text(s.text) for s in ref if s.text} - {""}
    tgt_texts = [t for t in (normalize_text(s.text) for s in tgt if s.text) if t]
    ref_voices = {v for v in (base_voice(s) for s in ref) if v}
    tgt_voices = {v for v in (base_voice(s) for s in tgt) if v}
    voices = ref_voices & tgt_voices if ref_voices and tgt_voices else None
    return {
        "reference": reference, "target": target, "target_utterances": len(tgt),
        "shared_speakers": len(speakers), "shared_speaker_examples": sorted(speakers)[:N_EXAMPLES],
        "utterances_with_text": len(tgt_texts),
        "text_share": (sum(t in ref_texts for t in tgt_texts) / len(tgt_texts)) if tgt_texts else None,
        "shared_sentences": len(set(tgt_texts) & ref_texts) if tgt_texts else None,
        "shared_base_voices": None if voices is None else len(voices),
        "shared_base_voice_examples": [] if voices is None else sorted(voices)[:N_EXAMPLES],
    }


def describe_overlap(audit: Mapping[str, Any]) -> str:
    """One line of :func:`split_overlap`'s numbers (or an audit ``{"unknown": why}``), without a title."""
    if "unknown" in audit:
        return f"unknown ({audit['unknown']})"
    target, reference = audit["target"], audit["reference"]

    def count(n: int, noun: str) -> str:
        return f"{n} {noun}{'' if n == 1 else 's'}"

    def named(n: int, noun: str, examples: Sequence[str]) -> str:
        more = ", ..." if n > len(examples) else ""
        return count(n, noun) + (f" ({', '.join(examples)}{more})" if n else "")

    parts = [named(audit["shared_speakers"], "shared speaker", audit["shared_speaker_examples"])]
    if audit["text_share"] is None:
        parts.append("sentences unknown (no transcripts)")
    else:
        parts.append(f"{100 * audit['text_share']:.0f} % of {target} utterances have a sentence that also occurs "
                     f"in {reference} ({count(audit['shared_sentences'], 'sentence')})")
    if audit["shared_base_voices"] is None:
        parts.append("base voices unknown")
    else:
        parts.append(named(audit["shared_base_voices"], "shared base voice", audit["shared_base_voice_examples"]))
    return "; ".join(parts)


def leakage_title(audit: Mapping[str, Any]) -> str:
    return f"Leakage check ({audit['target']} vs {audit.get('reference') or 'training data'})"


def leakage_line(audit: Mapping[str, Any]) -> str:
    """E.g. "Leakage check (test vs train): 0 shared speakers; 83 % of test utterances have a sentence ..."."""
    return f"{leakage_title(audit)}: {describe_overlap(audit)}"


# ------------------------------------------------------------------------------------------- protocols


class SplitProtocol(ABC):
    """A named way of cutting a corpus into folds of train/dev/test."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: True when test speakers are never seen in training; None when it depends on the corpus.
    speaker_independent: ClassVar[bool | None]

    def params(self) -> dict[str, Any]:
        fields = asdict(self)  # type: ignore[call-overload]  # every concrete protocol is a dataclass
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}

    def describe(self, fold: str | None = None) -> dict[str, Any]:
        """A JSON-serialisable description, logged with every result (``fold`` names the fold evaluated)."""
        d = {"name": self.name, "params": self.params(), "speaker_independent": self.speaker_independent,
             "summary": self.summary}
        if fold is not None:
            d["fold"] = fold
        return d

    @abstractmethod
    def folds(self, data: Any) -> Iterator[Fold]:
        """Yield ``Fold(name, {"train": [...], "dev": [...], "test": [...]})``."""

    def apply(self, data: Any) -> Splits:
        """The splits of a one-fold protocol; ValueError for a protocol with several folds (use folds())."""
        folds = list(self.folds(data))
        if len(folds) != 1:
            raise ValueError(f"{self.name} has {len(folds)} folds on this data; iterate over folds() instead")
        return folds[0].splits


def _check_fraction(name: str, x: float, upper_open: bool = True) -> None:
    ok = 0 <= x < 1 if upper_open else 0 <= x <= 1
    if not ok:
        raise ValueError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {x!r}")


@dataclass(frozen=True)
class _LeaveOneOut(SplitProtocol):
    """Shared by leave-one-session-out and leave-one-speaker-out: test = one group, dev from the others."""

    dev_fraction: float = 0.0
    seed: int = 0
    stratify: str | None = "gender"

    def __post_init__(self) -> None:
        _check_fraction("dev_fraction", self.dev_fraction)

    @abstractmethod
    def _group(self, sup: SupervisionSegment) -> str: ...

    def folds(self, data: Any) -> Iterator[Fold]:
        sups = [s for s, _ in _flatten(data)]
        if not sups:
            raise ValueError(f"{self.name}: no supervisions")
        groups = [self._group(s) for s in sups]
        groups_of: dict[str, set[str]] = {}
        for s, g in zip(sups, groups):
            groups_of.setdefault(s.speaker, set()).add(g)
        shared = {spk: sorted(gs) for spk, gs in groups_of.items() if len(gs) > 1}
        if shared:
            some = ", ".join(f"{spk} in {gs}" for spk, gs in sorted(shared.items())[:3])
            raise ValueError(f"{self.name}: {len(shared)} speakers span several groups ({some}); the folds "
                             "would not be speaker-independent, use leave_one_speaker_out instead")
        for g in sorted(set(groups)):
            test = [s for s, gs in zip(sups, groups) if gs == g]
            rest = [s for s, gs in zip(sups, groups) if gs != g]
            rest_speakers = _speaker_values(rest, self.stratify)
            roles: dict[str, str] = {}
            if self.dev_fraction > 0:
                n = len(rest_speakers)
                n_dev = max(1, round(self.dev_fraction * n))
                if n_dev >= n:
                    raise ValueError(f"{self.name} fold {g}: {n} training speakers cannot give {n_dev} to dev")
                order = _stratified_order(rest_speakers, random.Random(f"{self.seed}:{self.name}:{g}"))
                roles = {spk: "dev" for spk in order[:n_dev]}
            splits: Splits = {"train": [], "dev": [], "test": test}
            for s in rest:
                splits[roles.get(s.speaker, "train")].append(s)
            yield Fold(g, splits)


@dataclass(frozen=True)
class LeaveOneSessionOut(_LeaveOneOut):
    """One fold per session (``custom[session_key]``; IEMOCAP: 5 folds)."""

    name: ClassVar[str] = "leave_one_session_out"
    summary: ClassVar[str] = ("one fold per session: test = the session, dev = a seeded speaker-disjoint "
                              "fraction of the other sessions' speakers, train = the rest")
    speaker_independent: ClassVar[bool] = True
    session_key: str = "session"

    def _group(self, sup: SupervisionSegment) -> str:
        value = attr(sup, self.session_key)
        if value is None:
            raise ValueError(f"{self.name}: supervision {sup.id} has no {self.session_key!r}")
        return str(value)


@dataclass(frozen=True)
class LeaveOneSpeakerOut(_LeaveOneOut):
    """One fold per speaker."""

    name: ClassVar[str] = "leave_one_speaker_out"
    summary: ClassVar[str] = ("one fold per speaker: test = the speaker, dev = a seeded fraction of the other "
                              "speakers, train = the rest")
    speaker_independent: ClassVar[bool] = True

    def _group(self, sup: SupervisionSegment) -> str:
        if not sup.speaker:
            raise ValueError(f"{self.name}: supervision {sup.id} has no speaker")
        return str(sup.speaker)


@dataclass(frozen=True)
class SpeakerDisjoint(SplitProtocol):
    """A seeded random partition of the speakers into train/dev/test by fractions of speakers.

    Speakers are stratified by ``stratify`` (a supervision field, default gender; speakers whose value is
    unknown or inconsistent form their own stratum; None: no stratification). Each split with a positive
    fraction gets at least one speaker; fractions must sum to 1.
    """

    name: ClassVar[str] = "speaker_disjoint"
    summary: ClassVar[str] = "seeded random speaker-disjoint train/dev/test by fractions of speakers"
    speaker_independent: ClassVar[bool] = True
    train: float = 0.8
    dev: float = 0.1
    test: float = 0.1
    seed: int = 0
    stratify: str | None = "gender"

    def __post_init__(self) -> None:
        fr = (self.train, self.dev, self.test)
        for role, x in zip(ROLES, fr):
            _check_fraction(role, x, upper_open=False)
        if abs(sum(fr) - 1) > 1e-6:
            raise ValueError(f"train + dev + test must be 1, got {self.train} + {self.dev} + {self.test}")

    def folds(self, data: Any) -> Iterator[Fold]:
        sups = [s for s, _ in _flatten(data)]
        if not sups:
            raise ValueError(f"{self.name}: no supervisions")
        strata = _speaker_values(sups, self.stratify)
        order = _stratified_order(strata, random.Random(f"{self.seed}:{self.name}"))
        n_train, n_dev, _ = _counts(len(order), (self.train, self.dev, self.test))
        roles = {spk: ("train" if i < n_train else "dev" if i < n_train + n_dev else "test")
                 for i, spk in enumerate(order)}
        yield Fold(self.name, _split_by_speakers(sups, roles))


@dataclass(frozen=True)
class Predefined(SplitProtocol):
    """The corpus's own splits as prepared; each role lists the corpus split names it takes.

    The split name of a supervision is its prepared-corpus key, or ``custom["split"]`` (as
    :func:`emoslm.data.manifests.to_cuts` sets it). A split name mapped to no role and not in ``ignore`` is
    an error (nothing is dropped unnoticed). Speaker independence depends on the corpus (check with
    :func:`speaker_overlap`).
    """

    name: ClassVar[str] = "predefined"
    summary: ClassVar[str] = "the corpus's own train/dev/test splits as prepared"
    speaker_independent: ClassVar[None] = None
    train: tuple[str, ...] = ("train",)
    dev: tuple[str, ...] = ("dev", "valid", "validation", "val")
    test: tuple[str, ...] = ("test",)
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in ("train", "dev", "test", "ignore"):
            v = getattr(self, f)
            object.__setattr__(self, f, (v,) if isinstance(v, str) else tuple(v))
        seen: dict[str, str] = {}
        for role in (*ROLES, "ignore"):
            for split in getattr(self, role):
                if split in seen:
                    raise ValueError(f"split {split!r} is given to both {seen[split]} and {role}")
                seen[split] = role

    def folds(self, data: Any) -> Iterator[Fold]:
        role_of = {split: role for role in ROLES for split in getattr(self, role)}
        out: Splits = {r: [] for r in ROLES}
        unmapped: dict[str, int] = {}
        for s, split in _flatten(data):
            if split is None:
                raise ValueError(f"{self.name}: supervision {s.id} has no split name; pass a prepared corpus "
                                 "{split: {'supervisions': ...}} or supervisions with custom['split']")
            if split in self.ignore:
                continue
            if split not in role_of:
                unmapped[split] = unmapped.get(split, 0) + 1
                continue
            out[role_of[split]].append(s)
        if unmapped:
            raise ValueError(f"{self.name}: corpus splits {unmapped} map to no role; pass e.g. "
                             f"test=('test1', 'test2') or ignore=(...)")
        yield Fold(self.name, out)


PROTOCOLS: dict[str, type[SplitProtocol]] = {
    p.name: p for p in (LeaveOneSessionOut, LeaveOneSpeakerOut, SpeakerDisjoint, Predefined)
}


def get_protocol(name: str, **params: Any) -> SplitProtocol:
    """A split protocol by name with its parameters, e.g. ``get_protocol("speaker_disjoint", seed=1)``."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    try:
        return PROTOCOLS[name](**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for split protocol {name!r}: {e}") from None


def resplit(prepared: Mapping[str, Mapping[str, Any]], protocol: SplitProtocol, fold: str | None = None) -> dict:
    """A prepared corpus cut anew by a protocol: ``{"train"|"dev"|"test": {"recordings", "supervisions"}}``.

    For a corpus prepared as one split (RAVDESS, CREMA-D, a user's table) that must be trained on. ``fold`` picks
    one fold of a many-fold protocol (default: the first). Empty roles are left out; each role keeps only the
    recordings its supervisions use."""
    from lhotse import RecordingSet, SupervisionSet

    folds = list(protocol.folds(prepared))
    if fold is not None:
        names = [f.name for f in folds]
        if fold not in names:
            raise ValueError(f"{protocol.name} has no fold {fold!r}; its folds: {', '.join(names)}")
        chosen = folds[names.index(fold)]
    else:
        chosen = folds[0]
    recordings = {r.id: r for parts in prepared.values() for r in parts["recordings"]}
    out = {}
    for role in ROLES:
        sups = chosen.splits[role]
        if sups:
            used = dict.fromkeys(s.recording_id for s in sups)
            out[role] = {"recordings": RecordingSet.from_recordings(recordings[r] for r in used),
                         "supervisions": SupervisionSet.from_segments(sups)}
    return out

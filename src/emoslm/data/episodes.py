"""In-context-learning episodes: a target utterance and k enrollment (utterance, label) pairs of its speaker.

Enrollment settings of paper 000 (IV-A, IV-B), one choice on the target and one on the labels:

- target: ``TU`` uncontrolled; ``TO`` the target's emotion appears among the pairs; ``TE`` it does not;
- label: ``LU`` uncontrolled; ``LO`` all pairs share one emotion (``lo_label`` fixes it, e.g. "neutral" for
  paper 000's TU+LO (Neutral) and 1-shot_N); ``LD`` the pairs' emotions are pairwise different.

The target utterance is never in its own context, and the pairs come in random order. Sampling is uniform
over the valid choices as far as is practical; each setting says how in :func:`sample_enrollment`.
Episodes are deterministic for a seed (each target gets its own generator seeded by the seed, the setting
and the target id, so adding a speaker changes no other episode) and can be written to JSONL so that several
models are evaluated on the very same episodes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from emoslm.errors import EpisodeError
from emoslm.labels import LabelSet

log = logging.getLogger(__name__)

TARGET_SETTINGS = ("TU", "TO", "TE")
LABEL_SETTINGS = ("LU", "LO", "LD")

Pair = tuple[str, str]


def _rng(rng: random.Random | int | str | None) -> random.Random:
    """A generator from a Random or a seed; required, so that no episode depends on hidden global state."""
    if rng is None:
        raise TypeError("rng is required: pass a random.Random or a seed")
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def _check_setting(target: str, label: str, k: int) -> None:
    if target not in TARGET_SETTINGS:
        raise ValueError(f"target setting must be one of {TARGET_SETTINGS}, got {target!r}")
    if label not in LABEL_SETTINGS:
        raise ValueError(f"label setting must be one of {LABEL_SETTINGS}, got {label!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")


def setting_name(target: str, label: str, lo_label: str | None = None) -> str:
    """``"TU+LD"``, or ``"TU+LO(neutral)"`` when LO fixes the label."""
    return f"{target}+{label}" + (f"({lo_label})" if label == "LO" and lo_label else "")


def parse_setting(name: str) -> tuple[str, str, str | None]:
    """``"TU+LO(neutral)"`` -> ``("TU", "LO", "neutral")``; ``"TE+LD"`` -> ``("TE", "LD", None)``."""
    m = re.fullmatch(r"\s*(T[UOE])\s*\+\s*(L[UOD])\s*(?:\(\s*([^)]+?)\s*\))?\s*", name)
    if not m or (m.group(3) and m.group(2) != "LO"):
        raise ValueError(f"not an enrollment setting: {name!r} (expected e.g. TU+LD, TE+LU, TU+LO(neutral))")
    return m.group(1), m.group(2), m.group(3)


def _weighted_choice(rng: random.Random, weights: Sequence[int]) -> int:
    """An index drawn with probability proportional to integer weights (exact for big integers)."""
    x = rng.randrange(sum(weights))
    for i, w in enumerate(weights):
        if x < w:
            return i
        x -= w
    raise AssertionError("unreachable")


def _by_label(pairs: Iterable[Pair]) -> dict[str, list[Pair]]:
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(p[1], []).append(p)
    return groups


def sample_enrollment(
    target_id: str,
    target_label: str,
    pool: Sequence[Pair],
    k: int,
    target: str = "TU",
    label: str = "LU",
    rng: random.Random | int | str | None = None,
    lo_label: str | None = None,
    *,
    speaker: str | None = None,
) -> list[Pair]:
    """k enrollment pairs for a target utterance from its speaker's ``pool`` of (utterance_id, label).

    ``rng`` (a random.Random or a seed) is required. The target (by id) is never chosen. ``k=0`` returns
    ``[]`` for every setting (the zero-shot episode; TO's condition is then taken as vacuous). How each
    setting samples:

    - TU+LU: a uniformly random k-subset of the candidates (MetaICL's SelectProcedure).
    - TE+LU: a uniformly random k-subset of the candidates whose label differs from the target's.
    - TO+LU: uniform over the k-subsets holding at least one target-label utterance: the number j >= 1 of
      target-label utterances is drawn with probability proportional to C(m, j)·C(n-m, k-j), then j of them
      and k-j others are drawn uniformly.
    - LO: with ``lo_label`` a uniform k-subset of that label's utterances; without it a label is drawn
      uniformly among the labels with at least k candidates (TO: the target's label; TE: any other), then a
      uniform k-subset of it.
    - LD: k distinct labels drawn uniformly among the candidate labels (TE: other than the target's; TO: the
      target's label and k-1 others), then one utterance drawn uniformly for each label.

    The pairs are returned in random order. Raises EpisodeError naming the speaker, the setting, k and what
    is missing when the setting cannot be met; ValueError for a malformed request.
    """
    _check_setting(target, label, k)
    if lo_label is not None and label != "LO":
        raise ValueError(f"lo_label={lo_label!r} only applies to the LO setting, not {label}")
    rng = _rng(rng)
    who = f"speaker {speaker}" if speaker is not None else "the pool"
    name = setting_name(target, label, lo_label)
    if k == 0:
        return []

    def fail(missing: str) -> EpisodeError:
        return EpisodeError(f"{who}, target {target_id} ({target_label}): {name} with k={k} {missing}")

    cands = [(str(i), lab) for i, lab in pool if str(i) != str(target_id)]
    for i, lab in cands:
        if lab is None:
            raise ValueError(f"{who}: pool utterance {i} has no label")
    groups = _by_label(cands)
    same = groups.get(target_label, [])
    others = [p for p in cands if p[1] != target_label]

    if label == "LU":
        if target == "TU":
            if len(cands) < k:
                raise fail(f"needs {k} utterances besides the target, {who} has {len(cands)}")
            chosen = rng.sample(cands, k)
        elif target == "TE":
            if len(others) < k:
                raise fail(f"needs {k} utterances of emotions other than {target_label}, {who} has {len(others)}")
            chosen = rng.sample(others, k)
        else:  # TO
            if not same:
                raise fail(f"needs another {target_label} utterance, {who} has none besides the target")
            if len(cands) < k:
                raise fail(f"needs {k} utterances besides the target, {who} has {len(cands)}")
            m, rest = len(same), len(others)
            js = [j for j in range(1, min(k, m) + 1) if k - j <= rest]
            j = js[_weighted_choice(rng, [math.comb(m, j) * math.comb(rest, k - j) for j in js])]
            chosen = rng.sample(same, j) + rng.sample(others, k - j)

    elif label == "LO":
        if target == "TO":
            if lo_label is not None and lo_label != target_label:
                raise fail(f"cannot hold: the target's emotion is {target_label}, LO asks for {lo_label} only")
            if len(same) < k:
                raise fail(f"needs {k} other {target_label} utterances, {who} has {len(same)}")
            eligible = [target_label]
        elif lo_label is not None:
            if target == "TE" and lo_label == target_label:
                raise fail(f"cannot hold: the target's emotion is the LO emotion {lo_label}")
            have = len(groups.get(lo_label, []))
            if have < k:
                raise fail(f"needs {k} {lo_label} utterances besides the target, {who} has {have}")
            eligible = [lo_label]
        else:
            eligible = sorted(lab for lab, g in groups.items()
                              if len(g) >= k and not (target == "TE" and lab == target_label))
            if not eligible:
                counts = {lab: len(g) for lab, g in sorted(groups.items())
                          if not (target == "TE" and lab == target_label)}
                raise fail(f"needs one emotion with {k} utterances, {who} has {counts or 'none'}")
        chosen = rng.sample(groups[rng.choice(eligible)], k)

    else:  # LD
        labels = sorted(groups)
        if target == "TE":
            labels = [lab for lab in labels if lab != target_label]
            if len(labels) < k:
                raise fail(f"needs {k} distinct emotions other than {target_label}, {who} has {len(labels)} "
                           f"({', '.join(labels) or 'none'})")
            picked = rng.sample(labels, k)
        elif target == "TO":
            if not same:
                raise fail(f"needs another {target_label} utterance, {who} has none besides the target")
            rest = [lab for lab in labels if lab != target_label]
            if len(rest) < k - 1:
                raise fail(f"needs {k - 1} distinct emotions besides {target_label}, {who} has {len(rest)} "
                           f"({', '.join(rest) or 'none'})")
            picked = [target_label] + rng.sample(rest, k - 1)
        else:
            if len(labels) < k:
                raise fail(f"needs {k} distinct emotions, {who} has {len(labels)} besides the target "
                           f"({', '.join(labels) or 'none'})")
            picked = rng.sample(labels, k)
        chosen = [rng.choice(groups[lab]) for lab in picked]

    rng.shuffle(chosen)
    return chosen


def select_procedure(
    target_id: str,
    target_label: str,
    pool: Sequence[Pair],
    rng: random.Random | int | str,
    k_max: int = 7,
    k: int | None = None,
    *,
    speaker: str | None = None,
) -> list[Pair]:
    """MetaICL's SelectProcedure (paper 000, Eq. 19): TU+LU pairs from the target's speaker, excluding the
    target, with k drawn uniformly from 0..k_max (or the given k), capped by the number of candidates."""
    rng = _rng(rng)
    if k is None:
        if not isinstance(k_max, int) or k_max < 0:
            raise ValueError(f"k_max must be an int >= 0, got {k_max!r}")
        k = rng.randint(0, k_max)
    n_cands = sum(1 for i, _ in pool if str(i) != str(target_id))
    return sample_enrollment(target_id, target_label, pool, min(k, n_cands), "TU", "LU", rng, speaker=speaker)


# --------------------------------------------------------------------------------------------- episodes


@dataclass(frozen=True)
class Episode:
    """One ICL test item: a target utterance and its enrollment pairs (in context order)."""

    target_id: str
    target_label: str
    speaker: str
    enrollment: tuple[Pair, ...]
    setting: str
    k: int
    lo_label: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "enrollment", tuple((str(i), str(lab)) for i, lab in self.enrollment))

    def to_json(self) -> str:
        d = asdict(self)
        d["enrollment"] = [list(p) for p in self.enrollment]
        return json.dumps(d, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Episode":
        return cls(
            target_id=str(d["target_id"]), target_label=str(d["target_label"]), speaker=str(d["speaker"]),
            enrollment=tuple(tuple(p) for p in d["enrollment"]), setting=str(d["setting"]), k=int(d["k"]),
            lo_label=d.get("lo_label"), seed=d.get("seed"),
        )


@dataclass
class EpisodeList:
    """The episodes of one sampling run, with what could not be sampled (never silently dropped)."""

    episodes: list[Episode]
    n_skipped: int = 0
    skipped_per_speaker: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def save(self, path: Path | str) -> Path:
        return save_episodes(self.episodes, path)


def save_episodes(episodes: Iterable[Episode], path: Path | str) -> Path:
    """Write episodes as JSONL, one per line, in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ep in episodes:
            f.write(ep.to_json() + "\n")
    return path


def load_episodes(path: Path | str) -> EpisodeList:
    """Read episodes written by :func:`save_episodes`; a malformed line is an error naming it."""
    path = Path(path)
    eps = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                eps.append(Episode.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}, line {n}: not an episode ({e})") from None
    return EpisodeList(eps)


def _item_of(x: Any) -> tuple[str, str, str | None]:
    """(id, speaker, label) of a supervision or of an (id, speaker, label) tuple."""
    if hasattr(x, "speaker") and hasattr(x, "custom"):
        return str(x.id), str(x.speaker), (x.custom or {}).get("emotion")
    uid, spk, lab = x
    return str(uid), str(spk), lab


class EpisodeSampler:
    """Episodes for every (or a seeded subset of the) utterances of a set, enrollment from the same speaker.

    Built from supervisions (emotion in ``custom["emotion"]``) or (id, speaker, label) tuples. Items without
    a label, or (with ``label_set``) whose label is outside the label set, take no part; they are counted in
    ``n_excluded``. With ``label_set`` labels are mapped into it (IEMOCAP4 folds excitement into joy), so LD
    and TE compare the task's classes.
    """

    def __init__(self, items: Iterable[Any], *, label_set: LabelSet | None = None):
        self.label_set = label_set
        self.n_excluded = 0
        self.pools: dict[str, list[Pair]] = {}
        self._speaker_of: dict[str, str] = {}
        self._label_of: dict[str, str] = {}
        for x in items:
            uid, spk, lab = _item_of(x)
            if lab is not None and label_set is not None:
                lab = label_set.map(lab)
            if lab is None:
                self.n_excluded += 1
                continue
            if uid in self._speaker_of:
                raise ValueError(f"utterance id {uid!r} appears twice")
            self._speaker_of[uid], self._label_of[uid] = spk, lab
            self.pools.setdefault(spk, []).append((uid, lab))
        if not self.pools:
            raise ValueError("no labelled utterances to build episodes from")

    @property
    def speakers(self) -> list[str]:
        return sorted(self.pools)

    def __len__(self) -> int:
        return len(self._speaker_of)

    def enrollment(
        self, target_id: str, k: int, target: str = "TU", label: str = "LU",
        rng: random.Random | int | str | None = None, lo_label: str | None = None,
    ) -> list[Pair]:
        """:func:`sample_enrollment` for one utterance of the set, from its speaker's pool."""
        spk = self._speaker_of[target_id]
        return sample_enrollment(target_id, self._label_of[target_id], self.pools[spk], k, target, label, rng,
                                 lo_label, speaker=spk)

    def select_procedure(
        self, target_id: str, rng: random.Random | int | str, k_max: int = 7, k: int | None = None
    ) -> Episode:
        """A MetaICL training episode (TU+LU, k uniform in 0..k_max) for one utterance of the set."""
        spk, lab = self._speaker_of[target_id], self._label_of[target_id]
        pairs = select_procedure(target_id, lab, self.pools[spk], rng, k_max, k, speaker=spk)
        return Episode(target_id, lab, spk, tuple(pairs), "TU+LU", len(pairs))

    def episodes(
        self,
        k: int,
        target: str = "TU",
        label: str = "LU",
        seed: int = 0,
        lo_label: str | None = None,
        per_speaker: int | None = None,
        on_error: str = "raise",
    ) -> EpisodeList:
        """One episode per target utterance, speakers in sorted order, utterances in input order.

        ``per_speaker`` keeps a seeded random subset of that many targets per speaker (all when the
        speaker has fewer). ``on_error="raise"`` (default) raises the first EpisodeError; ``"skip"`` leaves
        out the targets whose setting cannot be met and counts them in the result's ``n_skipped`` and
        ``skipped_per_speaker`` (and logs a warning).
        """
        _check_setting(target, label, k)
        if lo_label is not None and label != "LO":
            raise ValueError(f"lo_label={lo_label!r} only applies to the LO setting, not {label}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if per_speaker is not None and per_speaker < 1:
            raise ValueError(f"per_speaker must be >= 1 or None, got {per_speaker!r}")
        name = setting_name(target, label, lo_label)
        out = EpisodeList([])
        for spk in self.speakers:
            pool = self.pools[spk]
            targets = pool
            if per_speaker is not None and per_speaker < len(pool):
                keep = set(random.Random(f"{seed}:targets:{spk}").sample(range(len(pool)), per_speaker))
                targets = [p for i, p in enumerate(pool) if i in keep]
            for uid, lab in targets:
                rng = random.Random(f"{seed}:{name}:{k}:{uid}")
                try:
                    pairs = sample_enrollment(uid, lab, pool, k, target, label, rng, lo_label, speaker=spk)
                except EpisodeError:
                    if on_error == "raise":
                        raise
                    out.n_skipped += 1
                    out.skipped_per_speaker[spk] = out.skipped_per_speaker.get(spk, 0) + 1
                    continue
                out.episodes.append(Episode(uid, lab, spk, tuple(pairs), f"{target}+{label}", k, lo_label, seed))
        if out.n_skipped:
            log.warning("%s k=%d: skipped %d targets that cannot meet the setting (%s)", name, k, out.n_skipped,
                        ", ".join(f"{s}: {n}" for s, n in sorted(out.skipped_per_speaker.items())))
        return out


def derange_labels(labels: Sequence[str], label_names: Sequence[str], rng) -> list[str]:
    """Every label replaced by a different one, drawn uniformly among the other labels of the set: the
    enrollment-label control that leaves no correct label in place (a permutation can, and at k=1 always does)."""
    out = []
    for lab in labels:
        others = [x for x in label_names if x != lab]
        out.append(others[int(rng.integers(len(others)))])
    return out

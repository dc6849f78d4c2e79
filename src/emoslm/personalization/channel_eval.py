"""Does the same utterance get the same answer over a phone line? The recognizer on degraded copies of test audio.

For each fixed channel of :data:`emoslm.data.channel.EVAL_CHANNELS`, every query of a prepared corpus's split is
sent through the channel and predicted with its speaker's enrollment (one utterance of each emotion, as in
``benchmarks/personalization.py``), twice: enrolled on the clean audio (a speaker enrolled in an app, then heard
over the phone), and enrolled through the same channel (a whole call on one line). Per channel and enrollment:

- ``ua_spk``: UA_spk, the mean over speakers of each speaker's accuracy (paper 000's measure), and plain ``ua``;
- ``agreement``: the fraction of queries whose label equals the label of the clean query with clean enrollment,
  whatever the truth: how much the channel alone changes the answer.

Labels are the argmax of the probabilities (a recognizer's abstention threshold is not applied). The degradation
of an utterance is seeded by its id (:func:`~emoslm.data.channel.utterance_seed`): runs are repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from tqdm import tqdm

from emoslm.data.channel import EVAL_CHANNELS, Channel, apply_channel, utterance_seed
from emoslm.data.manifests import load_prepared
from emoslm.data.utterances import Utterance, from_supervision
from emoslm.errors import EmoslmError
from emoslm.metrics import ua_spk, unweighted_accuracy
from emoslm.personalization.inference import EmotionRecognizer

#: the two enrollments of every channel
ENROLLMENTS = ("clean", "same channel")


@dataclass
class ChannelScore:
    channel: str  # its name in the channels measured
    description: str  # its stages
    enrollment: str  # one of ENROLLMENTS
    ua_spk: float
    ua: float
    agreement: float  # with the clean query's label under clean enrollment
    n: int  # queries
    speakers: int


@dataclass
class SpeakerQueries:
    enroll: list[Utterance]  # one utterance of each emotion
    queries: list[Utterance]


def pick_speakers(corpus: str | Path, label_set, split: str = "test", n_speakers: int | None = None,
                  queries_per_speaker: int | None = None, seed: int = 0) -> dict[str, SpeakerQueries]:
    """The first ``n_speakers`` speakers of a split (sorted by name) with their enrollment (one utterance of each
    emotion of the label set they have, picked at random) and up to ``queries_per_speaker`` other utterances."""
    prepared = load_prepared(corpus)
    if split not in prepared:
        raise EmoslmError(f"{corpus} has no {split!r} split (has: {', '.join(prepared)})")
    recs = prepared[split]["recordings"]
    by_spk: dict[str, list[Utterance]] = {}
    for sup in prepared[split]["supervisions"]:
        u = from_supervision(sup, recs, split, label_set)
        if u.label is not None:
            by_spk.setdefault(u.speaker, []).append(u)
    rng = np.random.default_rng(seed)
    out: dict[str, SpeakerQueries] = {}
    for spk in sorted(by_spk)[:n_speakers]:
        utts = by_spk[spk]
        enroll, seen = [], set()
        for i in rng.permutation(len(utts)):
            if utts[i].label not in seen:
                seen.add(utts[i].label)
                enroll.append(utts[i])
        enrolled = {u.id for u in enroll}
        queries = [u for u in utts if u.id not in enrolled][:queries_per_speaker]
        if queries:
            out[spk] = SpeakerQueries(enroll, queries)
    if not out:
        raise EmoslmError(f"{corpus} ({split}): no speaker has a labelled utterance besides its enrollment")
    return out


def channel_robustness(rec: EmotionRecognizer, corpus: str | Path, *, split: str = "test",
                       n_speakers: int | None = None, queries_per_speaker: int | None = None,
                       channels: Mapping[str, Channel] = EVAL_CHANNELS, seed: int = 0,
                       progress: bool = False) -> list[ChannelScore]:
    """Scores of ``rec`` per channel and enrollment (see the module docs); the clean channel first, once."""
    speakers = pick_speakers(corpus, rec.label_set, split, n_speakers, queries_per_speaker, seed)
    for s in speakers.values():  # a label set larger than the model's context: the first max_enroll emotions
        s.enroll = s.enroll[: rec.max_enroll]
    waves = {u.id: u.load_wave() for s in speakers.values() for u in s.enroll + s.queries}
    queries = [u for s in speakers.values() for u in s.queries]
    refs = [u.label for u in queries]
    spk_of = [u.speaker for u in queries]
    names = {"clean": Channel(), **{k: v for k, v in channels.items() if not v.is_clean}}
    prefix = "channel_eval:"  # enrolled speakers of this measurement, removed afterwards

    def degraded(u: Utterance, ch: Channel) -> np.ndarray:
        return apply_channel(waves[u.id], ch, utterance_seed(seed, u.id))

    def predict(ch: Channel, heard: list[np.ndarray], enrolled_as: str) -> list[str]:
        preds = rec.predict_batch(heard, [f"{prefix}{enrolled_as}:{u.speaker}" for u in queries])
        if any(not p.ok for p in preds):
            raise EmoslmError(f"channel {ch.describe()}: {next(p.error for p in preds if not p.ok)}")
        return [max(p.probs, key=p.probs.get) for p in preds]

    def score(name: str, ch: Channel, enrollment: str, preds: list[str], clean: list[str]) -> ChannelScore:
        return ChannelScore(name, ch.describe(), enrollment, ua_spk(refs, preds, spk_of).mean,
                            unweighted_accuracy(refs, preds), float(np.mean([p == c for p, c in zip(preds, clean)])),
                            len(preds), len(speakers))

    scores: list[ChannelScore] = []
    try:
        for spk, s in speakers.items():
            rec.enroll(f"{prefix}clean:{spk}", [(waves[u.id], u.label) for u in s.enroll])
        clean = predict(Channel(), [waves[u.id] for u in queries], "clean")
        for name, ch in tqdm(names.items(), desc="channels", unit="channel", disable=not progress):
            if ch.is_clean:
                scores.append(score(name, ch, "clean", clean, clean))
                continue
            heard = [degraded(u, ch) for u in queries]
            scores.append(score(name, ch, "clean", predict(ch, heard, "clean"), clean))
            for spk, s in speakers.items():
                rec.enroll(f"{prefix}{name}:{spk}", [(degraded(u, ch), u.label) for u in s.enroll])
            scores.append(score(name, ch, "same channel", predict(ch, heard, name), clean))
    finally:
        for spk in [k for k in rec.speakers if k.startswith(prefix)]:
            rec.remove(spk)
    return scores


def format_table(scores: list[ChannelScore]) -> str:
    """A markdown table of the scores, one row per channel and enrollment."""
    lines = ["| channel | stages | enrollment | UA_spk | UA | agreement with clean | queries |",
             "|---|---|---|---|---|---|---|"]
    for s in scores:
        lines.append(f"| {s.channel} | {s.description} | {s.enrollment} | {s.ua_spk:.3f} | {s.ua:.3f} | "
                     f"{s.agreement:.3f} | {s.n} |")
    return "\n".join(lines)

"""E-chat200-style emotional dialogue data (paper 003, Sec. 4): (question text, response, emotion, question speech).

- Questions whose wording does not give the emotion away (no word of :data:`EMOTION_WORDS`), each paired with
  one to three of the paper's five emotions drawn with Table 1's proportions, so the same question appears
  with several emotions as in Fig. 3.
- A response per (question, emotion) written by an LLM that is told the true emotion: by default the packaged
  SmolLM2-135M-Instruct offline; :class:`~emoslm.models.text_llm.OpenAIChatBackend` (any OpenAI-compatible endpoint) for users with a
  stronger model. The prompt is the voice service's (:func:`emoslm.models.text_llm.with_emotion`), so the
  cascade baseline with perfect ASR and emotion recognition reproduces these responses exactly.
- The question spoken by the synthetic corpus's emotional TTS (:mod:`emoslm.synth.corpus`): speakers drawn
  like the corpus's, emotion rendered relative to each speaker's baseline, one speaker per entry.
- Train/valid/test splits disjoint by question and by speaker (:data:`SPLIT_PROTOCOL`), in the paper's
  143k/12k/23k proportions: every question text is in one split with all its emotions, every speaker in one
  split's pool, so the test split is unseen questions in unseen voices and stage 1 (ASR on the training
  questions) never hears a test question. ``manifest.jsonl`` with all fields, ``stats.json`` (with the split
  protocol and the questions and speakers per split) and ``table1.md`` (the paper's Table 1).

Output (``out_dir``)::

    wav/<speaker>/<id>.wav, manifest.jsonl, responses.jsonl (response cache), stats.json, table1.md

Responses are cached by (question, emotion, backend), so a second build, or a build with more questions,
writes only the missing ones; audio is kept when its file exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from emoslm.errors import EmoslmError
from emoslm.labels import get_label_set
from emoslm.models.text_llm import EmotionCue, clean_response, load_backend
from emoslm.synth.corpus import (
    UtterancePlan,
    existing_samples,
    init_worker,
    render_speaker,
    voice_pools,
)
from emoslm.synth.prosody import render_params, sample_speaker
from emoslm.synth.sentences import WORDS

log = logging.getLogger(__name__)

ECHAT = get_label_set("echat5")
#: Table 1 of paper 003: share of each emotion in E-chat200 (cheerful 38 %, fearful 11 %, angry 17 %, sad 20 %,
#: neutral 14 %), by canonical label.
TABLE1_SHARE = {"joy": 0.38, "fear": 0.11, "anger": 0.17, "sadness": 0.20, "neutral": 0.14}
#: Paper 003's split sizes (k entries): 143 train, 12 valid, 23 test.
SPLIT_SHARE = {"train": 143 / 178, "valid": 12 / 178, "test": 23 / 178}
#: How the splits are made (recorded in ``stats.json``, checked by :func:`check_disjoint`). Entry-random splits
#: put the same question, said with another emotion, and the same voice in train and test, and stage 1 then
#: learned to transcribe the test questions.
SPLIT_PROTOCOL = "disjoint by question and by speaker"

#: Questions and statements a user could say in any of the five emotions (Fig. 1, Fig. 3 style).
_QUESTIONS = (
    "My phone won't turn on, what should I do?",
    "I'm getting a new job next year.",
    "We have another meeting tonight.",
    "My sister is moving to {city} on {day}.",
    "The {vehicle} to {city} leaves at {time}, what should I take with me?",
    "{name} wants to talk to me on {day}.",
    "I have to give a presentation on {day}.",
    "My landlord is raising the rent next month.",
    "The doctor called me back this morning.",
    "I found a {thing} in the {room} that is not mine.",
    "Our team got a new manager today.",
    "I just got my exam results.",
    "{name} told me the {thing} is still in the {room}.",
    "I'm going to {city} alone next week.",
    "The power went out in the whole building.",
    "My flight was moved to {time} on {day}.",
    "I have been waiting for the {vehicle} for an hour.",
    "There is a letter from the bank on the {furniture}.",
    "My neighbour keeps knocking on the wall.",
    "I will start learning to drive on {day}.",
    "Can you tell me how to fix a broken {thing}?",
    "{name} invited me to a party on {day}.",
    "My laptop made a strange noise and shut down.",
    "I have to move out of my flat by {day}.",
    "What should I cook for dinner tonight?",
    "My cat did not come home last night.",
    "The results of the interview come out on {day}.",
    "I'm meeting {name}'s parents for the first time.",
    "Someone parked in front of my garage again.",
    "We are having a baby in the spring.",
    "The {room} is flooded after the rain.",
    "How do I get from {place} to the {room}?",
    "My grandmother is coming to stay with us.",
    "I lost the key to the {room}.",
    "The company is closing our office in {city}.",
    "I have a job interview at {time} tomorrow.",
)


def question_bank(size: int) -> list[str]:
    """``size`` distinct questions (templates filled with the synthetic corpus's word lists), deterministic."""
    out: list[str] = []
    for step in range(100):
        for q_i, template in enumerate(_QUESTIONS):
            fields = {slot: words[(step * (s_i + 3) + q_i + s_i) % len(words)]
                      for s_i, (slot, words) in enumerate(WORDS.items())}
            q = template.format(**fields)
            if q not in out:
                out.append(q)
                if len(out) >= size:
                    return out
    return out


@dataclass(frozen=True)
class DialogueConfig:
    n_questions: int
    n_speakers: int = 12  # 9 train, 1 valid, 2 test: two test voices, one of each gender
    max_emotions_per_question: int = 3
    seed: int = 0
    max_tokens: int = 48


PRESETS: dict[str, DialogueConfig] = {
    "tiny": DialogueConfig(n_questions=6, n_speakers=3, max_tokens=16),  # tests: seconds; a speaker per split
    "demo": DialogueConfig(n_questions=60),  # ~130 entries: the benchmark, minutes on 1 CPU thread
    "full": DialogueConfig(n_questions=1000),
}


@dataclass(frozen=True)
class Entry:
    id: str
    question: str
    emotion: str  # canonical label (echat5: neutral, joy, fear, anger, sadness)
    speaker: str
    split: str


def split_sizes(n: int, what: str) -> dict[str, int]:
    """How many of ``n`` questions or speakers (``what``) go to each split: :data:`SPLIT_SHARE`, at least one each."""
    if n < len(SPLIT_SHARE):
        raise EmoslmError(f"the dialogue data needs at least {len(SPLIT_SHARE)} {what}, one for each of the splits "
                          f"{'/'.join(SPLIT_SHARE)} ({SPLIT_PROTOCOL}); got {n}")
    held_out = {s: max(1, round(n * SPLIT_SHARE[s])) for s in ("valid", "test")}
    return {"train": n - sum(held_out.values()), **held_out}  # train keeps >= 1 for any n >= 3


def plan_entries(cfg: DialogueConfig, speakers: Sequence[str]) -> list[Entry]:
    """(question, emotion) pairs with Table 1's emotion shares, a speaker each, splits disjoint by question and by
    speaker.

    The questions are shuffled (seeded) into the splits whole, with all their emotions. The speakers are cut in
    order into one pool per split (consecutive speakers alternate gender, so a pool of two has both), and an
    entry's speaker comes from its split's pool, the pool's speakers taking turns in a seeded order. Emotions
    have their own random stream, so split and speaker settings never change which (question, emotion)
    responses are needed from the response cache.
    """
    questions = question_bank(cfg.n_questions)
    question_counts = split_sizes(len(questions), "questions")
    speaker_counts = split_sizes(len(speakers), "speakers")
    emotion_rng = np.random.default_rng(cfg.seed)
    split_rng = np.random.default_rng([cfg.seed, 2])

    labels = list(TABLE1_SHARE)
    share = np.array([TABLE1_SHARE[e] for e in labels])
    pairs = []  # (question index, question, emotion)
    for q_i, q in enumerate(questions):
        n = int(emotion_rng.integers(1, cfg.max_emotions_per_question + 1))
        pairs += [(q_i, q, str(e)) for e in emotion_rng.choice(labels, size=n, replace=False, p=share)]

    shuffled = split_rng.permutation(len(questions))
    split_of_question: dict[int, str] = {}
    pools: dict[str, list[str]] = {}
    q_start = s_start = 0
    for split in SPLIT_SHARE:
        split_of_question.update({int(i): split for i in shuffled[q_start:q_start + question_counts[split]]})
        pools[split] = list(speakers[s_start:s_start + speaker_counts[split]])
        q_start += question_counts[split]
        s_start += speaker_counts[split]

    speaker_of: dict[tuple[int, str], str] = {}
    for split, pool in pools.items():
        mine = [(q_i, e) for q_i, _, e in pairs if split_of_question[q_i] == split]
        turns = split_rng.permutation(np.resize(np.arange(len(pool)), len(mine)))
        speaker_of.update({key: pool[int(t)] for key, t in zip(mine, turns)})
    return [Entry(f"echat_{q_i:05d}_{e}", q, e, speaker_of[(q_i, e)], split_of_question[q_i]) for q_i, q, e in pairs]


def check_disjoint(rows: Sequence[Mapping[str, Any]], data_dir: str | Path | None = None) -> None:
    """Raise :class:`~emoslm.errors.EmoslmError` when a question text or a speaker is in more than one split of
    ``rows`` (manifest rows: ``question``, ``speaker``, ``split``), as in data built before the splits were
    disjoint; rebuilding ``data_dir`` in place reuses its cached responses."""
    overlaps = []
    for key in ("question", "speaker"):
        splits_of: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            splits_of[r[key]].add(r["split"])
        shared = sorted(v for v, splits in splits_of.items() if len(splits) > 1)
        if shared:
            overlaps.append(f"{len(shared)} {key}(s) in more than one split, e.g. {shared[0]!r} in "
                            f"{'/'.join(sorted(splits_of[shared[0]]))}")
    if overlaps:
        raise EmoslmError(f"{data_dir or 'the planned entries'}: the splits overlap ({'; '.join(overlaps)}); they "
                          f"must be {SPLIT_PROTOCOL}, or the test split scores questions and voices seen in "
                          f"training (data made by an older emoslm). Rebuild it with `emoslm synth dialogue --out "
                          f"{data_dir or 'DIR'}` (same --preset; its cached responses are reused)")


# ------------------------------------------------------------------------------------------------ responses


def respond(backend, question: str, emotion: str, max_tokens: int) -> str:
    """The response of ``backend`` to ``question`` said with ``emotion`` (canonical label), greedy."""
    info = EmotionCue(label=emotion, probabilities={emotion: 1.0})
    return clean_response(backend.reply([{"role": "user", "content": question}], info, max_tokens, 0.0).text)


def write_responses(entries: Sequence[Entry], backend, cache: Path, max_tokens: int, progress: bool = True
                    ) -> dict[tuple[str, str], str]:
    """Responses for every (question, emotion), read from / appended to the JSONL ``cache``."""
    from tqdm import tqdm

    done: dict[tuple[str, str], str] = {}
    if cache.is_file():
        for line in cache.read_text().splitlines():
            r = json.loads(line)
            if r["backend"] == backend.name and r["max_tokens"] == max_tokens:
                done[(r["question"], r["emotion"])] = clean_response(r["response"])
    todo = sorted({(e.question, e.emotion) for e in entries} - set(done))
    with cache.open("a") as f:
        for q, e in tqdm(todo, desc="responses", unit="resp", disable=not progress):
            done[(q, e)] = respond(backend, q, e, max_tokens)
            f.write(json.dumps({"question": q, "emotion": e, "backend": backend.name, "max_tokens": max_tokens,
                                "response": done[(q, e)]}) + "\n")
            f.flush()
    return done


# ------------------------------------------------------------------------------------------------ speech


def render_questions(entries: Sequence[Entry], out: Path, cfg: DialogueConfig, workers: int | None = None,
                     progress: bool = True) -> dict[str, float]:
    """Speak every entry's question with its speaker and emotion; return durations (s) by entry id."""
    from tqdm import tqdm

    rng = np.random.default_rng([cfg.seed, 1])
    pools = voice_pools(rng)
    profiles = {}
    for i, spk in enumerate(sorted({e.speaker for e in entries})):
        gender = "F" if i % 2 else "M"
        voice = pools[gender][i // 2 % len(pools[gender])][0]
        profiles[spk] = sample_speaker(spk, voice, "espeak", gender, rng, ECHAT.labels)
    tasks: dict[str, list] = {}
    durations: dict[str, float] = {}
    for n, e in enumerate(entries):
        path = out / "wav" / e.speaker / f"{e.id}.wav"
        plan = UtterancePlan(e.id, e.speaker, e.split, e.emotion, e.question, profiles[e.speaker].voice,
                             render_params(profiles[e.speaker], e.emotion, rng), (cfg.seed, n))
        have = existing_samples(path)
        if have:
            durations[e.id] = have / 16000
        else:
            tasks.setdefault(e.speaker, []).append((plan, str(path)))
    bar = tqdm(total=sum(len(t) for t in tasks.values()), desc="speaking", unit="utt", disable=not progress)
    with mp.get_context("fork").Pool(workers or min(2, os.cpu_count() or 1), initializer=init_worker,
                                     initargs=(str(out / "synth_stderr.log"),), maxtasksperchild=1) as pool:
        for results in pool.imap_unordered(render_speaker, list(tasks.values())):
            for uid, n, err in results:
                if err:
                    raise EmoslmError(f"{uid}: speech synthesis failed: {err}")
                durations[uid] = n / 16000
            bar.update(len(results))
    bar.close()
    return durations


# ------------------------------------------------------------------------------------------------ dataset


def table1(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paper 003's Table 1: entries, speech duration and share per emotion, then the sum."""
    out = []
    for lab in TABLE1_SHARE:
        sel = [r for r in rows if r["emotion"] == lab]
        out.append({"emotion": ECHAT.word(lab).capitalize(), "entries": len(sel),
                    "minutes": round(sum(r["duration"] for r in sel) / 60, 2),
                    "percent": round(100 * len(sel) / max(1, len(rows)), 1)})
    out.append({"emotion": "Sum", "entries": len(rows), "minutes": round(sum(r["duration"] for r in rows) / 60, 2),
                "percent": 100.0})
    return out


def table1_markdown(t1: Sequence[dict[str, Any]]) -> str:
    lines = ["| Emotion | Entries | Speech duration (min) | Percentage (%) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['emotion']} | {r['entries']} | {r['minutes']:.2f} | {r['percent']:.1f} |" for r in t1]
    return "\n".join(lines)


def build_dialogue_dataset(out_dir: str | Path, preset: str | DialogueConfig = "demo", *, backend=None,
                           n_questions: int | None = None, n_speakers: int | None = None, seed: int | None = None,
                           workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Build (or complete) the dataset in ``out_dir``; return its statistics (also in ``stats.json``).

    ``backend`` is a chat backend (default: the packaged SmolLM2, loaded only when responses are missing).
    """
    from dataclasses import replace

    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    cfg = replace(cfg, **{k: v for k, v in {"n_questions": n_questions, "n_speakers": n_speakers,
                                            "seed": seed}.items() if v is not None})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    entries = plan_entries(cfg, [f"echat_spk{i + 1:02d}" for i in range(cfg.n_speakers)])
    check_disjoint([asdict(e) for e in entries])
    responses = write_responses(entries, backend or load_backend("smollm2"), out / "responses.jsonl",
                                cfg.max_tokens, progress)
    t_resp = time.perf_counter() - t0
    durations = render_questions(entries, out, cfg, workers, progress)
    rows = [{**asdict(e), "emotion_word": ECHAT.word(e.emotion), "response": responses[(e.question, e.emotion)],
             "audio": str((out / "wav" / e.speaker / f"{e.id}.wav").resolve()), "duration": durations[e.id]}
            for e in entries]
    with (out / "manifest.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    t1 = table1(rows)
    (out / "table1.md").write_text(table1_markdown(t1) + "\n")
    stats = {"config": asdict(cfg), "entries": len(rows), "questions": len({r["question"] for r in rows}),
             "speakers": len({r["speaker"] for r in rows}),
             "splits": {s: sum(r["split"] == s for r in rows) for s in SPLIT_SHARE},
             "split_protocol": SPLIT_PROTOCOL,
             "split_questions": {s: len({r["question"] for r in rows if r["split"] == s}) for s in SPLIT_SHARE},
             "split_speakers": {s: len({r["speaker"] for r in rows if r["split"] == s}) for s in SPLIT_SHARE},
             "table1": t1,
             "seconds": round(time.perf_counter() - t0, 1), "response_seconds": round(t_resp, 1)}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def load_manifest(data_dir: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``manifest.jsonl`` (of one split when given); data whose splits overlap is refused
    (:func:`check_disjoint`)."""
    path = Path(data_dir) / "manifest.jsonl"
    if not path.is_file():
        raise EmoslmError(f"{path} is missing: build the dataset with `emoslm synth dialogue --out {data_dir}`")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    check_disjoint(rows, data_dir)
    return [r for r in rows if split is None or r["split"] == split]


def manifest_digest(data_dir: str | Path) -> str | None:
    """``sha256:`` and 16 hex digits of the data's ``manifest.jsonl`` (None when there is none): recorded in a
    training run's settings, so that a run trained on other data (other splits, other responses) is not
    reused."""
    path = Path(data_dir) / "manifest.jsonl"
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


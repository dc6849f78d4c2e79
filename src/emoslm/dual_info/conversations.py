"""Dual-information conversation data (paper 002, Sec. III-B "dual information tasks" and Sec. IV-A).

The paper aligns the speech LM's replies with the frozen LLM's replies to equivalent text input: multi-turn
dialogues (StyleTalk, DailyTalk) are truncated at various midpoints, and the target of each truncation is the
response the underlying LLM writes from the true transcript and speaking-style caption. This module builds the
same kind of data from a prepared emotional corpus (by default the synthetic one, ``emoslm synth corpus``):

- A conversation is ``n`` user turns (``turns`` = (min, max), drawn uniformly) spoken by ONE speaker of the
  split: distinct utterances of that speaker, distinct sentences when the speaker has enough, each in a
  random emotion (the corpus has every sentence in every emotion, so the words never give the emotion away).
- The assistant turns are written by the backend (the frozen LLM; the packaged SmolLM2 by default, or
  :class:`~emoslm.models.text_llm.OpenAIChatBackend`), turn by turn, from the history in which every user turn
  is its styled transcript ``[caption] "text"`` (:func:`emoslm.data.captions.styled_transcript`, true caption).
  The writer's system message is the conversation's system prompt plus :data:`WRITER_NOTE`, which explains the
  bracketed captions; the note is not part of the example (the speech LM hears the voice instead).
- The system prompt of a conversation is drawn from :data:`SYSTEM_PROMPTS` (several prompts for the task, as
  in the paper).
- Truncating at every user turn ``m`` gives one example: ``context`` = the ``m - 1`` earlier exchanges as text,
  the spoken turn ``m`` (its audio, transcript, caption and attributes) and ``response`` = the backend's reply
  to turn ``m``. Earlier user turns keep their styled transcripts by default (``context_style="styled"``):
  that is exactly what the writer saw, so the only information the speech LM lacks against the target's
  writer is the style of the spoken turn, which it must perceive from the audio. ``context_style="plain"``
  puts only the words of earlier turns in the context.

Output (``out_dir``)::

    conversations_{train,dev,test}.jsonl   one example a line (fields: see :func:`build_conversations`)
    replies.jsonl                          the reply cache (:class:`~emoslm.models.reply_cache.ReplyCache`)
    summary.json                           counts, timings and the configuration

Every reply is appended to the cache and flushed as soon as it is written, keyed by the full message list, the
backend name and ``max_tokens``: a killed build loses nothing and a rerun generates only what is missing.

Not built: the paper's role-reversed evaluation set (StyleTalk's test split with assistant and user swapped, so
the model must also lead the conversation). Here the spoken turns are the corpus's recordings of emotion-free
read sentences; reversing the roles would make the LLM-written replies the spoken turns, which have no
recording, no speaking style of their own and no true caption. Rendering them with the corpus's TTS in a drawn
style would be possible, but would evaluate on a different kind of speech than the model is trained on.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emoslm.data.captions import style_caption, styled_transcript
from emoslm.data.manifests import attr, load_prepared
from emoslm.errors import EmoslmError
from emoslm.models.reply_cache import ReplyCache
from emoslm.models.text_llm import clean_response, load_backend
from emoslm.threads import set_torch_threads

SPLITS = ("train", "dev", "test")
ATTRS = ("gender", "pitch_level", "tempo_level", "energy_level", "emotion")

#: System prompts of the dual-information conversation task; one is drawn per conversation (paper IV-A).
SYSTEM_PROMPTS = (
    ("You are a friendly voice assistant. Listen to how the user sounds as well as what they say, and reply in "
     "one or two short sentences."),
    "You are a caring conversation partner. Respond to the user's words and to the feeling in their voice.",
    ("You are a helpful assistant in a spoken conversation. Keep your replies short, natural and suited to the "
     "user's mood."),
    "You are an empathetic companion. Pay attention to the user's tone of voice and answer warmly and briefly.",
    "You are a polite voice assistant. Answer the user briefly, taking into account how they said it.",
    ("You are chatting with a user by voice. Reply naturally in a sentence or two, matching what they said and "
     "how they said it."),
)

#: Added to the writer's system message only: how to read the styled transcripts (the speech LM hears the voice).
#: SmolLM2-135M follows it only partly: its replies often name the speaker's state ("The man is afraid of his
#: umbrella."), which still depends on both the words and the style, the two things the targets must carry.
WRITER_NOTE = ("Each user message is what the user said aloud, with a note in square brackets on how they said "
               "it. Talk to the user directly, reply to what they said in one short sentence, and let the way they "
               "said it shape your tone. Never describe the user or their voice.")


@dataclass(frozen=True)
class ConversationConfig:
    per_split: Mapping[str, int]
    turns: tuple[int, int] = (2, 4)
    max_tokens: int = 64
    seed: int = 0
    context_style: str = "styled"  # "styled": earlier user turns as [caption] "text"; "plain": words only
    system_prompts: tuple[str, ...] = field(default=SYSTEM_PROMPTS)


PRESETS: dict[str, ConversationConfig] = {
    # tests: a few conversations, seconds with tiny-llama
    "tiny": ConversationConfig(per_split={"train": 3, "dev": 1, "test": 1}, turns=(2, 3), max_tokens=16),
    # the lead's training data: ~600 SmolLM2 replies (measured ~1 s each on 2 cores), well under 15 minutes
    "demo": ConversationConfig(per_split={"train": 150, "dev": 20, "test": 30}, turns=(2, 4), max_tokens=64),
}


# ------------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class Turn:
    supervision_id: str
    recording_id: str
    audio: str
    start: float
    duration: float
    text: str
    attrs: dict[str, str | None]


@dataclass(frozen=True)
class ConversationPlan:
    id: str
    split: str
    speaker: str
    system: str
    turns: tuple[Turn, ...]


def _split_seed(split: str) -> int:
    return zlib.crc32(split.encode())


def _turn_of(sup, recordings) -> Turn:
    rec = recordings[sup.recording_id]
    return Turn(sup.id, sup.recording_id, str(rec.sources[0].source), float(sup.start), float(sup.duration),
                sup.text or "", {a: attr(sup, a) for a in ATTRS})


def plan_conversations(parts: Mapping[str, Any], split: str, n: int, cfg: ConversationConfig
                       ) -> list[ConversationPlan]:
    """``n`` conversations of one split. Conversation ``i`` depends only on (seed, split, i), so a larger ``n``
    extends a smaller plan (and its cached replies) instead of replacing it."""
    sups = sorted(parts["supervisions"], key=lambda s: s.id)
    recordings = parts["recordings"]
    by_speaker: dict[str, list] = {}
    for s in sups:
        by_speaker.setdefault(s.speaker, []).append(s)
    speakers = sorted(by_speaker)
    if not speakers:
        raise EmoslmError(f"split {split} has no supervisions")
    order = [speakers[i] for i in np.random.default_rng([cfg.seed, _split_seed(split)]).permutation(len(speakers))]
    lo, hi = cfg.turns
    if not 1 <= lo <= hi:
        raise EmoslmError(f"turns must be 1 <= min <= max, got {cfg.turns}")
    plans = []
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, _split_seed(split), i])
        spk = order[i % len(order)]  # round robin: every speaker of the split is used before any twice
        mine = by_speaker[spk]
        n_turns = int(rng.integers(lo, hi + 1))
        by_text: dict[str, list] = {}
        for s in mine:
            by_text.setdefault(s.text or "", []).append(s)
        texts = sorted(by_text)
        if len(texts) >= n_turns:  # distinct sentences, each in a random one of its emotions
            chosen_texts = [texts[j] for j in rng.permutation(len(texts))[:n_turns]]
            chosen = [by_text[t][int(rng.integers(len(by_text[t])))] for t in chosen_texts]
        else:  # too few sentences: distinct utterances (the same sentence may return in another emotion)
            n_turns = min(n_turns, len(mine))
            chosen = [mine[j] for j in rng.permutation(len(mine))[:n_turns]]
        system = cfg.system_prompts[int(rng.integers(len(cfg.system_prompts)))]
        plans.append(ConversationPlan(f"{split}_conv{i:05d}", split, spk, system,
                                      tuple(_turn_of(s, recordings) for s in chosen)))
    return plans


# ------------------------------------------------------------------------------------------------ writing

_LEADING_CAPTION = re.compile(r"^\s*\[[^\]]*\]\s*")


def clean_reply(text: str) -> str:
    """The reply without a repeated caption ``[...]`` or voice note at its start."""
    return clean_response(_LEADING_CAPTION.sub("", clean_response(text)))


def write_conversation(plan: ConversationPlan, backend, cache: ReplyCache, max_tokens: int) -> list[str]:
    """The assistant's reply to each user turn of ``plan``, each from the history before it (cached)."""
    messages = [{"role": "system", "content": f"{plan.system}\n{WRITER_NOTE}"}]
    replies = []
    for t in plan.turns:
        messages.append({"role": "user", "content": styled_transcript(t.text, t.attrs)})
        reply = clean_reply(cache.reply(backend, [dict(m) for m in messages], max_tokens)["text"])
        messages.append({"role": "assistant", "content": reply})
        replies.append(reply)
    return replies


def examples_of(plan: ConversationPlan, replies: Sequence[str], backend_name: str, context_style: str = "styled"
                ) -> list[dict[str, Any]]:
    """One example per truncation point ``m`` (1-based): the context before turn ``m``, turn ``m``, its reply."""
    if context_style not in ("styled", "plain"):
        raise EmoslmError(f"context_style must be 'styled' or 'plain', got {context_style!r}")
    rows = []
    for m, (t, reply) in enumerate(zip(plan.turns, replies), start=1):
        context = []
        for prev, prev_reply in zip(plan.turns[: m - 1], replies[: m - 1]):
            user = styled_transcript(prev.text, prev.attrs) if context_style == "styled" else prev.text
            context += [{"role": "user", "content": user}, {"role": "assistant", "content": prev_reply}]
        rows.append({
            "id": f"{plan.id}_t{m}", "split": plan.split, "conversation_id": plan.id, "turn": m,
            "n_turns": len(plan.turns), "speaker": plan.speaker, "system": plan.system, "context": context,
            "supervision_id": t.supervision_id, "recording_id": t.recording_id, "audio": t.audio,
            "start": t.start, "duration": t.duration, "text": t.text, "caption": style_caption(t.attrs),
            "user_turn": styled_transcript(t.text, t.attrs), "attrs": dict(t.attrs), "response": reply,
            "backend": backend_name,
        })
    return rows


def _resolve(per_split, turns, max_tokens, seed, context_style, preset) -> ConversationConfig:
    if isinstance(per_split, str):  # a preset's name in place of the counts
        per_split, preset = None, per_split
    if isinstance(preset, str) and preset not in PRESETS:
        raise EmoslmError(f"no conversation preset {preset!r}; have {sorted(PRESETS)}")
    base = PRESETS[preset] if isinstance(preset, str) else preset
    if base is None:
        if per_split is None:
            raise EmoslmError("give per_split={'train': N, ...} or a preset ('tiny', 'demo')")
        base = ConversationConfig(per_split=per_split)
    over = {"per_split": per_split, "turns": tuple(turns) if turns is not None else None, "max_tokens": max_tokens,
            "seed": seed, "context_style": context_style}
    return replace(base, **{k: v for k, v in over.items() if v is not None})


def build_conversations(corpus_dir: str | Path, out_dir: str | Path, backend=None, *,
                        turns: tuple[int, int] | None = None, per_split: Mapping[str, int] | str | None = None,
                        preset: str | ConversationConfig | None = None, seed: int | None = None,
                        max_tokens: int | None = None, context_style: str | None = None,
                        threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Build (or complete) the conversation examples of every split in ``per_split``; return the summary.

    ``per_split`` is ``{"train": N, "dev": M, "test": K}`` or a preset's name. ``backend`` is a chat backend
    (``emoslm.models.text_llm.load_backend``); default the packaged SmolLM2 with ``threads`` torch threads (2 by
    default; pass 1 when another job shares the cores). Arguments left ``None`` come from ``preset``
    (``tiny``/``demo``); without a preset ``per_split`` is required and the rest defaults to
    :class:`ConversationConfig`'s values.

    Each line of ``conversations_{split}.jsonl``: ``id, split, conversation_id, turn, n_turns, speaker, system,
    context`` (list of ``{role, content}``), ``supervision_id, recording_id, audio`` (path), ``start, duration,
    text, caption, user_turn`` (the styled transcript), ``attrs`` (gender, pitch/tempo/energy level, emotion),
    ``response`` and ``backend``.
    """
    from tqdm import tqdm

    cfg = _resolve(per_split, turns, max_tokens, seed, context_style, preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared = load_prepared(corpus_dir)
    missing = [s for s in cfg.per_split if s not in prepared]
    if missing:
        raise EmoslmError(f"{corpus_dir} has no split(s) {missing}; it has {sorted(prepared)}")
    plans = {s: plan_conversations(prepared[s], s, n, cfg) for s, n in cfg.per_split.items()}
    if backend is None:
        set_torch_threads(threads, "smollm2")
        backend = load_backend("smollm2")
    cache = ReplyCache(out / "replies.jsonl")
    n_cached_before = len(cache)
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"corpus": str(Path(corpus_dir).resolve()), "backend": backend.name,
                               "config": {**asdict(cfg), "per_split": dict(cfg.per_split)}, "splits": {}}
    n_total = sum(len(p) for p in plans.values())
    bar = tqdm(total=n_total, desc="conversations", unit="conv", disable=not progress)
    for split, ps in plans.items():
        rows = []
        for p in ps:
            rows += examples_of(p, write_conversation(p, backend, cache, cfg.max_tokens), backend.name,
                                cfg.context_style)
            bar.update(1)
        tmp = out / f"conversations_{split}.jsonl.tmp"
        with tmp.open("w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(out / f"conversations_{split}.jsonl")
        summary["splits"][split] = {
            "conversations": len(ps), "examples": len(rows), "speakers": len({p.speaker for p in ps}),
            "turns": dict(sorted(Counter(len(p.turns) for p in ps).items())),
            "emotions": dict(sorted(Counter(r["attrs"]["emotion"] for r in rows).items())),
            "systems": len({p.system for p in ps}), "empty_responses": sum(not r["response"] for r in rows),
            "mean_response_words": round(float(np.mean([len(r["response"].split()) for r in rows])), 1)
            if rows else 0.0,
        }
    bar.close()
    summary.update({
        "replies": len(cache), "replies_generated_now": cache.n_generated,
        "replies_cached_before": n_cached_before, "seconds": round(time.perf_counter() - t0, 1),
        "seconds_generating": round(cache.seconds_generating, 1),
        "seconds_per_generated_reply": round(cache.seconds_generating / cache.n_generated, 3)
        if cache.n_generated else None,
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_conversations(out_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """The examples of ``split`` written by :func:`build_conversations`."""
    path = Path(out_dir) / f"conversations_{split}.jsonl"
    if not path.is_file():
        raise EmoslmError(f"{path} is missing: build it with `emoslm synth conversations --out {out_dir}`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

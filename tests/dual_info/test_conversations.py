"""Dual-information conversation data (paper 002, IV-A): plans, truncation, context, resume, end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from emoslm.cli import main
from emoslm.data.captions import styled_transcript
from emoslm.data.manifests import load_prepared
from emoslm.dual_info.conversations import (
    PRESETS,
    SYSTEM_PROMPTS,
    WRITER_NOTE,
    ConversationConfig,
    build_conversations,
    load_conversations,
    plan_conversations,
)
from emoslm.models.reply_cache import ReplyCache
from emoslm.synth.corpus import PRESETS as CORPUS_PRESETS
from emoslm.synth.corpus import synthesize_corpus

CORPUS = replace(CORPUS_PRESETS["tiny"], n_speakers=4, sentences_per_speaker=3, dev_speakers=1, test_speakers=1)
SMALL = {"train": 3, "test": 1}
FIELDS = {"id", "split", "conversation_id", "turn", "system", "context", "supervision_id", "recording_id", "audio",
          "start", "duration", "text", "caption", "user_turn", "attrs", "response", "backend"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("conv") / "synth"
    synthesize_corpus(out, CORPUS, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_llm():
    from emoslm.models.text_llm import load_backend

    return load_backend("tiny-llama")


class StopAfter:
    """The real backend, killed (an exception) after ``k`` replies -- a build interrupted mid-way."""

    def __init__(self, backend, k: int):
        self.backend, self.k, self.calls = backend, k, 0
        self.name = backend.name

    def reply(self, *args, **kwargs):
        if self.calls >= self.k:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return self.backend.reply(*args, **kwargs)


def test_plan_one_speaker_distinct_sentences_and_prefix_stable(corpus):
    parts = load_prepared(corpus)["train"]
    cfg = ConversationConfig(per_split={"train": 12}, turns=(2, 3))
    plans = plan_conversations(parts, "train", 12, cfg)
    sup = {s.id: s for s in parts["supervisions"]}
    assert len({p.speaker for p in plans}) == len({s.speaker for s in parts["supervisions"]})  # round robin
    for p in plans:
        assert 2 <= len(p.turns) <= 3
        assert {sup[t.supervision_id].speaker for t in p.turns} == {p.speaker}
        assert len({t.text for t in p.turns}) == len(p.turns)  # 3 sentences per speaker: distinct sentences
        for t in p.turns:
            assert t.attrs["emotion"] == sup[t.supervision_id].custom["emotion"]
            assert t.attrs["gender"] == sup[t.supervision_id].gender
    assert plans[:5] == plan_conversations(parts, "train", 5, cfg)  # more conversations extend, not replace
    assert plans != plan_conversations(parts, "train", 12, replace(cfg, seed=1))
    # too few sentences for the turns: distinct utterances of the speaker instead
    long = plan_conversations(parts, "train", 4, replace(cfg, turns=(5, 5)))
    assert all(len({t.supervision_id for t in p.turns}) == 5 for p in long)


def test_system_prompt_drawn_from_list(corpus):
    parts = load_prepared(corpus)["train"]
    plans = plan_conversations(parts, "train", 30, ConversationConfig(per_split={"train": 30}))
    systems = [p.system for p in plans]
    assert set(systems) <= set(SYSTEM_PROMPTS) and len(set(systems)) >= 3
    assert all(WRITER_NOTE not in s for s in systems)  # the writer's note is not part of the example


@pytest.mark.parametrize("context_style", ["styled", "plain"])
def test_truncation_context_and_targets(corpus, tiny_llm, tmp_path, context_style):
    summary = build_conversations(corpus, tmp_path, tiny_llm, per_split=SMALL, turns=(2, 3), max_tokens=8,
                                  context_style=context_style, progress=False)
    cache = ReplyCache(tmp_path / "replies.jsonl")
    by_messages = {json.dumps(r["messages"]): r for r in cache.records.values()}
    for split, n in SMALL.items():
        rows = load_conversations(tmp_path, split)
        assert summary["splits"][split]["conversations"] == n
        assert summary["splits"][split]["examples"] == len(rows)
        convs: dict[str, list] = {}
        for r in rows:
            assert FIELDS <= set(r) and r["split"] == split
            convs.setdefault(r["conversation_id"], []).append(r)
        assert len(convs) == n
        for rs in convs.values():
            assert [r["turn"] for r in rs] == list(range(1, len(rs) + 1)) and 2 <= len(rs) <= 3
            assert len({r["speaker"] for r in rs}) == 1 and len({r["system"] for r in rs}) == 1
            for m, r in enumerate(rs, start=1):
                ctx = r["context"]
                assert len(ctx) == 2 * (m - 1)
                assert [c["role"] for c in ctx] == ["user", "assistant"] * (m - 1)
                for j, prev in enumerate(rs[: m - 1]):
                    want = prev["user_turn"] if context_style == "styled" else prev["text"]
                    assert ctx[2 * j]["content"] == want
                    assert ctx[2 * j + 1]["content"] == prev["response"]
                assert r["user_turn"] == styled_transcript(r["text"], r["attrs"])
                assert r["caption"] and r["caption"] in r["user_turn"]
                assert Path(r["audio"]).is_file() and r["duration"] > 0
                # the target is the writer's reply to the styled history up to turn m
                writer = [{"role": "system", "content": f"{r['system']}\n{WRITER_NOTE}"}]
                for prev in rs[: m - 1]:
                    writer += [{"role": "user", "content": prev["user_turn"]},
                               {"role": "assistant", "content": prev["response"]}]
                writer.append({"role": "user", "content": r["user_turn"]})
                rec = by_messages[json.dumps(writer)]
                assert rec["backend"] == tiny_llm.name == r["backend"] and rec["max_tokens"] == 8
                assert r["response"].strip() in rec["text"]


def test_resume_after_interruption_loses_and_regenerates_nothing(corpus, tiny_llm, tmp_path):
    ref = build_conversations(corpus, tmp_path / "ref", tiny_llm, per_split=SMALL, max_tokens=8, progress=False)
    n_total = ref["replies"]
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_conversations(corpus, out, StopAfter(tiny_llm, 4), per_split=SMALL, max_tokens=8, progress=False)
    lines = (out / "replies.jsonl").read_text().splitlines()
    assert len(lines) == 4
    with (out / "replies.jsonl").open("a") as f:  # a line cut short by a kill -9
        f.write('{"key": "abc", "tex')
    second = StopAfter(tiny_llm, 10**6)
    summary = build_conversations(corpus, out, second, per_split=SMALL, max_tokens=8, progress=False)
    assert second.calls == n_total - 4 == summary["replies_generated_now"]
    assert summary["replies"] == n_total
    assert (out / "replies.jsonl").read_text().splitlines()[:4] == lines  # kept as written
    for split in SMALL:
        assert load_conversations(out, split) == load_conversations(tmp_path / "ref", split)
    third = StopAfter(tiny_llm, 0)  # everything cached: a rerun calls the backend not once
    assert build_conversations(corpus, out, third, per_split=SMALL, max_tokens=8, progress=False)[
        "replies_generated_now"] == 0
    # another max_tokens is another request
    with pytest.raises(KeyboardInterrupt):
        build_conversations(corpus, out, StopAfter(tiny_llm, 0), per_split=SMALL, max_tokens=9, progress=False)


def test_tiny_preset_end_to_end_cli(corpus, tmp_path, capsys):
    out = tmp_path / "conv"
    args = ["synth", "conversations", "--corpus", str(corpus), "--out", str(out), "--preset", "tiny",
            "--backend", "tiny-llama", "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "emoslm-tiny-llama" and summary["replies_generated_now"] > 0
    for split, n in PRESETS["tiny"].per_split.items():
        rows = load_conversations(out, split)
        assert len({r["conversation_id"] for r in rows}) == n == summary["splits"][split]["conversations"]
        assert all(FIELDS <= set(r) for r in rows)
    assert "train: 3 conversations" in capsys.readouterr().out
    assert main(args) == 0
    assert json.loads((out / "summary.json").read_text())["replies_generated_now"] == 0

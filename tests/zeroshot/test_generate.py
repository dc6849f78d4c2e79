"""LLM output handling (paper 001): lenient parsing, strict validation, deduplication, balance, resume.

The backend here is a scripted object: these tests are about what happens to an LLM's answers, not the LLM.
"""

from __future__ import annotations

import json

import pytest

from emoslm.errors import EmoslmError
from emoslm.models.text_llm import Reply
from emoslm.zeroshot.description import parse_description
from emoslm.zeroshot.generate import (
    GenerationConfig,
    Item,
    check_item,
    extract_items,
    generate_utterances,
)

DESC = parse_description({
    "name": "Test corpus", "scenario": "Two people talk.", "speakers": {"count": 4},
    "emotions": {"neutral": 0.5, "anger": 0.25, "joy": 0.25},
    "utterances": {"style": "Short turns.", "min_words": 3, "max_words": 12},
})


class ScriptedBackend:
    """Answers each call with lines numbered by a per-class counter; every ``dup_every``-th line repeats."""

    name = "scripted"

    def __init__(self, fail_after: int | None = None, dup_every: int = 3):
        self.calls, self.fail_after, self.dup_every = 0, fail_after, dup_every
        self.count: dict[str, int] = {}

    def reply(self, messages, emotion, max_tokens, temperature):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # the run is stopped here
        self.calls += 1
        ask = messages[-1]["content"]
        label = next(e for e, adj in (("neutral", "neutral"), ("anger", "angry"), ("joy", "happy")) if adj in ask)
        lines = []
        for _ in range(3):
            k = self.count.get(label, 0)
            self.count[label] = k + 1
            n = 0 if k % self.dup_every == self.dup_every - 1 else k  # a repeat of the class's first line
            lines.append({"emotion": label, "text": f"This is {label} line number {n} here."})
        lines.append({"emotion": "fear", "text": "Something is behind the door!"})  # not a class
        return Reply(json.dumps(lines)[:-1] + ", {\"emotion\": \"jo", 10, 40, "length")  # cut, as by max_tokens


def test_extract_items_is_lenient():
    assert extract_items('[{"emotion": "anger", "text": "Go away now."}]') == [Item("Go away now.", "anger")]
    fenced = '```json\n[{"label": "joy", "line": "We won the game!"}]\n```'
    assert extract_items(fenced) == [Item("We won the game!", "joy")]
    prose = 'Sure! Here: {"emotion": "joy", "text": "Yes we did it."} and {"emotion": "joy", "text": "Great day."}'
    assert [i.text for i in extract_items(prose)] == ["Yes we did it.", "Great day."]
    cut = '[{"emotion": "sadness", "text": "He left me today."}, {"emotion": "sadness", "text": "I miss'
    assert extract_items(cut) == [Item("He left me today.", "sadness")]
    lines = 'anger: You lied to me again.\n1. "I am done with this."\n- Leave me alone now'
    assert extract_items(lines) == [Item("You lied to me again.", "anger"), Item("I am done with this.", None),
                                    Item("Leave me alone now", None)]
    assert extract_items('{"lines": ["One two three."]}') == [Item("One two three.", None)]
    assert extract_items("") == [] and extract_items("I cannot help with that") == []


@pytest.mark.parametrize("item, reason", [
    (Item("You never listen to me!", "rage"), "unknown label 'rage'"),
    (Item("You never listen to me!", "fear"), "unknown label 'fear'"),   # a canonical label outside the classes
    (Item("You never listen to me!", "joy"), "is not the requested"),
    (Item("No.", "anger"), "too short"),
    (Item(" ".join(["word"] * 13), None), "too long"),
    (Item("Warum hörst du mir nie zu?", None), "not English"),
    (Item("Почему ты меня не слушаешь?", None), "not English"),
    (Item("I am so so so so so so so so mad", None), "repetitive"),
    (Item('{"emotion": "anger"} and more', None), "markup"),
    (Item("You never listen to a word I say!", None), "copies a prompt example"),
])
def test_check_item_rejects_with_a_reason(item, reason):
    got, _ = check_item(item, "anger", DESC, DESC.label_set)
    assert got is not None and reason in got


def test_check_item_accepts_aliases_and_unlabelled_lines():
    for label in ("anger", "Angry", "ANG", None):
        assert check_item(Item(' "You broke my phone again!" ', label), "anger", DESC, DESC.label_set) == (
            None, "You broke my phone again!")
    assert check_item(Item("The bus leaves at noon today.", "neutral"), "neutral", DESC, DESC.label_set)[0] is None


def test_generation_validates_deduplicates_balances_and_logs(tmp_path):
    backend = ScriptedBackend()
    res = generate_utterances(DESC, backend, tmp_path, GenerationConfig(n_utterances=12, per_call=3, seed=1),
                              progress=False)
    per = res.stats["per_class"]
    assert per == {"neutral": 6, "anger": 3, "joy": 3}  # the described 50/25/25 shares
    texts = [u["text"] for u in res.utterances]
    assert len(set(texts)) == len(texts)
    rejected = [json.loads(x) for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    reasons = {r["reason"].split(" (")[0] for r in rejected}
    assert "duplicate" in reasons and any(r.startswith("unknown label 'fear'") for r in reasons)
    assert res.stats["rejection_reasons"]["duplicate"] >= 1
    saved = [json.loads(x) for x in (tmp_path / "utterances.jsonl").read_text().splitlines()]
    assert saved == res.utterances and all(u["id"].startswith("test_corpus_") for u in saved)


def test_balance_shrinks_to_what_the_weakest_class_allows(tmp_path):
    class NoJoy(ScriptedBackend):
        def reply(self, messages, emotion, max_tokens, temperature):
            r = super().reply(messages, emotion, max_tokens, temperature)
            return Reply(r.text.replace('"joy"', '"fear"'), 10, 40, "stop") if "happy" in messages[-1]["content"] else r

    with pytest.raises(EmoslmError, match="no usable utterance.*joy': 0"):
        generate_utterances(DESC, NoJoy(), tmp_path, GenerationConfig(n_utterances=8, per_call=3), progress=False)
    assert (tmp_path / "rejected.jsonl").is_file() and (tmp_path / "generation.json").is_file()


def test_resume_after_interruption_loses_nothing_and_gives_the_same_corpus(tmp_path):
    cfg = GenerationConfig(n_utterances=12, per_call=3, seed=1)
    whole = generate_utterances(DESC, ScriptedBackend(), tmp_path / "whole", cfg, progress=False)

    with pytest.raises(KeyboardInterrupt):
        generate_utterances(DESC, ScriptedBackend(fail_after=3), tmp_path / "cut", cfg, progress=False)
    cache = tmp_path / "cut" / "generations.jsonl"
    assert len(cache.read_text().splitlines()) == 3  # every answer before the interruption is on disk
    with cache.open("a") as f:
        f.write('{"emotion": "joy", "index": 9, "raw": "half a li')  # a line cut by a kill mid-write

    again = ScriptedBackend()
    again.count = {"neutral": 3, "anger": 3, "joy": 3}  # the scripted LLM goes on where it was stopped
    res = generate_utterances(DESC, again, tmp_path / "cut", cfg, progress=False)
    assert res.stats["cached_calls"] == 3 and res.stats["new_calls"] == again.calls
    assert res.stats["calls"] == whole.stats["calls"]
    assert res.utterances == whole.utterances

    done = ScriptedBackend(fail_after=0)  # a finished run asks the LLM nothing
    assert generate_utterances(DESC, done, tmp_path / "cut", cfg, progress=False).utterances == whole.utterances


def test_bad_generation_settings(tmp_path):
    with pytest.raises(EmoslmError, match="below the number of classes"):
        generate_utterances(DESC, ScriptedBackend(), tmp_path, GenerationConfig(n_utterances=2), progress=False)
    with pytest.raises(EmoslmError, match="per_call"):
        generate_utterances(DESC, ScriptedBackend(), tmp_path, GenerationConfig(per_call=0), progress=False)


def test_time_budget_is_the_corpus_budget_so_a_rerun_makes_no_new_call(tmp_path):
    cfg = GenerationConfig(n_utterances=12, per_call=3, max_minutes=1e-9)
    first = ScriptedBackend()
    with pytest.raises(EmoslmError, match="no usable utterance"):  # one call: the budget is spent at once
        generate_utterances(DESC, first, tmp_path, cfg, progress=False)
    assert first.calls == 1
    stats = json.loads((tmp_path / "generation.json").read_text())
    assert stats["stopped_by_time_budget"] and stats["new_calls"] == 1
    with pytest.raises(EmoslmError):
        generate_utterances(DESC, ScriptedBackend(fail_after=0), tmp_path, cfg, progress=False)

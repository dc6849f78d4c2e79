"""Judge sanity check before Table IV: a judge that cannot rank a relevant reply above an irrelevant one on 80 % of
the pairs gets no scores printed, one that can gets its scores printed, and the check's numbers are in the results.

The failing judge is the package's own :class:`Judge` on the tiny test LLM (random weights: it cannot read); the
passing one is a real, if simple, scorer: the share of the reply's words that the conversation already used.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch

from emoslm.data.captions import styled_transcript
from emoslm.dual_info.evaluation import table_iv_results, to_markdown, write_report
from emoslm.dual_info.judge import METRICS, Judge
from emoslm.dual_info.judge_sanity import JUDGE_PASS_RATE, judge_sanity, pick_pairs, verdict
from emoslm.metrics.text import SentenceSimilarity
from emoslm.models.text_llm import load_backend


class WordOverlapJudge:
    """Scores a reply by the share of its words (four letters or more) that the user said, in this turn or an
    earlier one: a judge that knows nothing of style or emotion but does see whether a reply is about what the user
    talked about."""

    prompts_version = "none"

    def __init__(self, local: bool = True):
        self.name = "word overlap"
        self.local = local

    @staticmethod
    def words(text: str) -> set[str]:
        return {w for w in re.findall(r"[a-z']+", text.lower()) if len(w) >= 4}

    def score(self, context: Sequence[Mapping[str, str]], user_turn: str, response: str) -> dict[str, Any]:
        said = self.words(" ".join([*(m["content"] for m in context if m["role"] == "user"), user_turn]))
        reply = self.words(response)
        share = len(reply & said) / len(reply) if reply else 0.0
        return {"content": 1 + 4 * share, "style": 3.0, "C1": 10 * share, "C2": 5.0, "C3": 5.0, "C4": 5.0}


#: (what the conversation is about, the user's second turn, the reply on its topic) per conversation; no two topics
#: share a word of four letters or more (the first turns differ only in the topic's noun)
TOPICS = [
    ("table", "Lena moved the table to the office on Saturday.",
     "Moving the table to the office sounds like hard work."),
    ("train", "The train was late again this morning.", "Waiting for a late morning train is frustrating."),
    ("keys", "I lost my keys in the garden.", "Keys often hide in the garden grass; retrace each step."),
    ("sister", "My sister passed her driving exam.", "Congratulations to her on passing the driving exam!"),
    ("kettle", "The kettle broke while making tea.", "A broken kettle ruins tea time; maybe boil water in a pot."),
    ("football", "Our football team won the final.", "Winning the football final must feel wonderful for the team."),
    ("library", "The library closes early on Fridays.", "Early library closing on Fridays is inconvenient."),
    ("pancakes", "I burned the pancakes for breakfast.", "Burned pancakes happen; breakfast can still be saved."),
    ("printer", "The printer jammed before my meeting.", "A jammed printer right before a meeting is stressful."),
    ("kitten", "We adopted a kitten from the shelter.", "Adopting a shelter kitten is lovely; enjoy the kitten."),
]
ATTRS = [{"gender": "F", "emotion": "sadness"}, {"gender": "M", "emotion": "anger"}]


def conversation_examples() -> list[dict[str, Any]]:
    """Two turns per conversation, in the layout of ``emoslm synth conversations`` (the fields the judge reads)."""
    out = []
    for c, (noun, said, reply) in enumerate(TOPICS):
        turns = [(f"Something happened with the {noun}.", f"Tell me more about the {noun}."), (said, reply)]
        context: list[dict[str, str]] = []
        for t, (text, answer) in enumerate(turns):
            attrs = ATTRS[(c + t) % 2]
            out.append({"id": f"test_conv{c:05d}_t{t + 1}", "conversation_id": f"test_conv{c:05d}",
                        "context": list(context), "text": text, "attrs": attrs,
                        "user_turn": styled_transcript(text, attrs), "response": answer})
            context += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    return out


SYSTEMS = {"on topic": 1, "off topic": 3}  # system -> how far along TOPICS its replies are taken from


def system_replies(examples: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each system answers every example with the reply of the conversation ``SYSTEMS[name] - 1`` further on."""
    replies = {name: [] for name in SYSTEMS}
    for ex in examples:
        c = int(ex["conversation_id"][-5:])
        for name, shift in SYSTEMS.items():
            replies[name].append(TOPICS[(c + shift - 1) % len(TOPICS)][2])
    replies["reference"] = [ex["response"] for ex in examples]
    return replies


@pytest.fixture(autouse=True)
def _one_thread():
    # the tiny LLM's many small forward passes: a second thread only adds contention on a shared machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sim() -> SentenceSimilarity:
    return SentenceSimilarity()


@pytest.fixture(scope="module")
def examples() -> list[dict[str, Any]]:
    return [ex for ex in conversation_examples() if ex["id"].endswith("_t2")][:4]


def table_iv_section(markdown: str) -> str:
    return markdown[markdown.index("### Table IV"):]


def test_pairs_come_from_distinct_conversations_and_are_reproducible():
    data = conversation_examples()
    pairs = pick_pairs(data, 6, seed=0)
    assert len(pairs) == 6 and pick_pairs(data, 6, seed=0) == pairs and pick_pairs(data, 6, seed=1) != pairs
    by_id = {ex["id"]: ex for ex in data}
    own = [by_id[p.example_id] for p in pairs]
    assert len({ex["conversation_id"] for ex in own}) == 6
    for p, ex in zip(pairs, own):
        assert p.relevant == ex["response"] and p.user_turn == ex["user_turn"] and p.context == ex["context"]
        other = next(o for o in data if o["response"] == p.irrelevant)
        assert other["conversation_id"] != ex["conversation_id"]
    assert len(pick_pairs(data, 50)) == len(TOPICS)  # one per conversation at most
    assert pick_pairs(data[:2], 5) == []  # one conversation: no irrelevant reply to pair with


def test_word_overlap_judge_passes_and_an_empty_check_does_not():
    check = judge_sanity(WordOverlapJudge(), pick_pairs(conversation_examples(), 10))
    assert (check.wins, check.ties, check.losses, check.unparsed, check.n) == (10, 0, 0, 0, 10)
    assert check.win_rate == 1.0 and check.passed and check.pass_rate == JUDGE_PASS_RATE == 0.80
    assert check.outcomes["C1"]["win"] == 10 and check.outcomes["mean of six"]["win"] == 10
    assert check.parsed == dict.fromkeys(METRICS, 20)
    assert check.verdict == ("judge sanity check passed: judge `word overlap` ranked the relevant reply first on "
                             "10/10 pairs (needs >= 80 %)")
    empty = judge_sanity(WordOverlapJudge(), [])
    assert empty.n == 0 and not empty.passed and math.isnan(empty.win_rate)
    assert "could not be checked" in empty.verdict


def test_a_failing_judge_gets_no_scores_in_table_iv(examples, sim, tmp_path):
    """(a) the package's judge on the tiny LLM fails the check: Table IV says so, and prints no judge score."""
    judge = Judge(load_backend("tiny-llama"), cache=tmp_path / "judge.jsonl")
    pairs = pick_pairs(conversation_examples(), 10)
    res = table_iv_results(examples, system_replies(examples), judge, pairs, "reference", sim, progress=False)
    check = res["judge_check"]
    assert check["n"] == 10 and not check["passed"] and check["wins"] < JUDGE_PASS_RATE * 10
    assert check["wins"] + check["ties"] + check["losses"] + check["unparsed"] == 10
    # no scores were computed for the systems, so none can be printed; SIM (not the judge's) stays
    assert all(set(row) == {"n", "judge", "prompts_version", "sim"} for row in res["table4"].values())
    section = table_iv_section(to_markdown(res))
    assert (f"no capable judge available offline (judge `{judge.name}` ranked the relevant reply first on "
            f"{check['wins']}/10 pairs; needs >= 80 %)") in section
    assert section.splitlines()[2] == "| System | SIM | n |"
    assert not any(m in section for m in ("Content", "Style", "C1", "parsed/n"))
    assert "| reference | 100.0 | 4 |" in section
    # the judge's outputs for the check are cached with its other outputs: a rerun judges nothing again
    lines = (tmp_path / "judge.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 10  # CS and EGS, relevant and irrelevant reply, per pair
    again = Judge(load_backend("tiny-llama"), cache=tmp_path / "judge.jsonl")
    assert judge_sanity(again, pairs).to_dict() == judge_sanity(judge, pairs).to_dict()
    assert again.cache.n_generated == 0


def test_a_passing_judge_gets_its_scores_printed(examples, sim):
    """(b) a judge that ranks the relevant reply first gets its scores in Table IV, with the check's verdict."""
    replies = system_replies(examples)
    res = table_iv_results(examples, replies, WordOverlapJudge(), pick_pairs(conversation_examples(), 10),
                           "reference", sim, progress=False)
    assert res["judge_check"]["passed"] and res["judge_check"]["wins"] == 10
    on, off = res["table4"]["on topic"], res["table4"]["off topic"]
    assert on["content"] > 2 and off["content"] == 1.0 and on["n_parsed"] == on["n"] == 4
    assert on["sim"] > off["sim"]
    section = table_iv_section(to_markdown(res))
    assert "Table IV: conversations, judge word overlap (prompts none)" in section
    assert "| System | Content | Style | C1 | C2 | C3 | C4 | SIM | parsed/n |" in section
    assert f"| on topic | {on['content']:.2f} | 3.00 | {on['C1']:.2f} |" in section
    assert "| off topic | 1.00 | 3.00 | 0.00 |" in section
    assert ("judge sanity check passed: judge `word overlap` ranked the relevant reply first on 10/10 pairs"
            in section)


def test_the_check_is_in_the_results_and_the_report(examples, tmp_path):
    """(c) the sanity numbers are kept in the results (JSON) and shown in the HTML report."""
    for judge, want in ((WordOverlapJudge(), "judge sanity check passed"),
                        (OffTopicFavouringJudge(), "no capable judge available offline")):
        res = table_iv_results(examples, system_replies(examples), judge, pick_pairs(conversation_examples(), 10),
                               "reference", progress=False)
        saved = json.loads(json.dumps(res))
        check = saved["judge_check"]
        assert {"wins", "ties", "losses", "unparsed", "n", "win_rate", "passed", "pass_rate", "outcomes", "parsed",
                "pairs"} <= set(check)
        assert check["n"] == len(check["pairs"]) == 10 and check["judge"] == judge.name
        assert sum(check["outcomes"]["content"].values()) == 10 and check["parsed"]["content"] == 20
        html = write_report(saved, tmp_path / "report.html").read_text()
        assert want in html and f"{check['wins']}/10 pairs" in html


class OffTopicFavouringJudge(WordOverlapJudge):
    """The overlap scale turned upside down: a judge that prefers replies about something else."""

    def __init__(self, local: bool = True):
        super().__init__(local)
        self.name = "off-topic favouring"

    def score(self, context, user_turn, response):
        s = super().score(context, user_turn, response)
        return {**s, "content": 6 - s["content"]}


def test_an_endpoint_judge_that_fails_is_not_called_offline():
    check = judge_sanity(OffTopicFavouringJudge(local=False), pick_pairs(conversation_examples(), 10)).to_dict()
    assert not check["passed"] and check["losses"] == 10
    assert verdict(check) == ("the judge failed its sanity check (judge `off-topic favouring` ranked the relevant "
                              "reply first on 0/10 pairs; needs >= 80 %)")
    # results written before the check have no judge_check: their scores are not printed either
    assert "not sanity-checked" in verdict(None)

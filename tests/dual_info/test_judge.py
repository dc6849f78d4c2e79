"""The LLM judge of paper 002's Table IV: prompt files, parsing, ranges, aggregation, caching.

The judge's outputs come from a scripted backend here: these tests are about reading and averaging them.
"""

from __future__ import annotations

import math
import shutil
from importlib.resources import files

import pytest

from emoslm.dual_info import judge as J
from emoslm.dual_info.judge import (
    CS_RANGES,
    EGS_RANGES,
    METRICS,
    Judge,
    judge_table,
    load_prompts,
    parse_scores,
    table_iv_markdown,
)
from emoslm.errors import EmoslmError
from emoslm.models.text_llm import Reply


class ScriptedJudge:
    """Answers the CS / EGS prompt with a fixed output chosen by the reply being judged."""

    name = "scripted"

    def __init__(self, outputs: dict[str, tuple[str, str]]):
        self.outputs = outputs  # response -> (cs output, egs output)
        self.calls: list[list[dict]] = []

    def reply(self, messages, emotion, max_tokens, temperature=0.0):
        self.calls.append(messages)
        prompt = messages[-1]["content"]
        response = prompt.split("Assistant's reply: ", 1)[1].split("\n", 1)[0]
        cs, egs = self.outputs[response]
        return Reply(cs if '"content"' in prompt else egs, 10, 5, "stop")


EXAMPLES = [
    {"id": "a", "context": [], "user_turn": '[A man speaks loudly, sounding angry.] "The bus is late."'},
    {"id": "b", "context": [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi!"}],
     "text": "I lost my keys.", "attrs": {"gender": "F", "emotion": "sadness"}},
]


def test_prompt_files_are_packaged_and_versioned():
    root = files("emoslm") / "assets" / "judge_prompts"
    assert "Sources" in (root / "README.md").read_text()
    p = load_prompts("v1")
    assert set(p) == {"system", "cs", "egs"}
    for kind in ("cs", "egs"):
        assert all(ph in p[kind] for ph in ("{context}", "{user_turn}", "{response}"))
        assert p[kind] == (root / "v1" / f"{kind}.txt").read_text().strip()
    assert all(f'"{m}"' in p["cs"] for m in CS_RANGES) and all(f'"{m}"' in p["egs"] for m in EGS_RANGES)
    with pytest.raises(EmoslmError, match="v0"):
        load_prompts("v0")


@pytest.mark.parametrize("text, want", [
    ('{"content": 4, "style": 5}', (4, 5)),
    ('Sure! ```json\n{"content": 3, "style": 2}\n```', (3, 2)),
    ("{'content': '4/5', 'style': 2.5}", (4, 2.5)),
    ("Content: 4.\nStyle score: 3/5", (4, 3)),
    ("**Content** = 2, style - 5", (2, math.nan)),  # "style - 5" reads as a negative number: out of range
    ("The reply is friendly and relevant.", (math.nan, math.nan)),
    ('{"content": <1-5>, "style": <1-5>}', (math.nan, math.nan)),  # the answer form echoed
    ("content: 0, style: 6", (math.nan, math.nan)),  # out of 1-5
    ("content: 1, style: 5", (1, 5)),  # bounds included
    ("", (math.nan, math.nan)),
])
def test_parse_cs(text, want):
    got = parse_scores(text, CS_RANGES)
    for m, w in zip(("content", "style"), want):
        assert (math.isnan(got[m]) and math.isnan(w)) or got[m] == w, (text, got)


def test_parse_egs_names_ranges_and_garbage():
    assert parse_scores('{"C1": 8, "C2": 10, "C3": 0, "C4": 9}', EGS_RANGES) == {"C1": 8, "C2": 10, "C3": 0, "C4": 9}
    got = parse_scores("C1: 8\nC2 = 9\nC3 (positive emotion display): 7\nC4: 11", EGS_RANGES)
    assert (got["C1"], got["C2"], got["C3"]) == (8, 9, 7) and math.isnan(got["C4"])
    got = parse_scores('{"Content relevance": 5, "positive_impact": "6"}', EGS_RANGES)
    assert (got["C1"], got["C4"]) == (5, 6) and math.isnan(got["C2"])
    assert all(math.isnan(v) for v in parse_scores("@@#1 2 3 ... 10", EGS_RANGES).values())


def test_score_table_and_markdown():
    backend = ScriptedJudge({
        "good": ('{"content": 5, "style": 4}', '{"C1": 9, "C2": 10, "C3": 8, "C4": 7}'),
        "bad": ("Content: 1\nStyle: 2", "C1: 1, C2: 3, C3: 2, C4: 1"),
        "odd": ("no idea", '{"C1": 40, "C2": 5, "C3": 5, "C4": 5}'),
    })
    judge = Judge(backend)
    s = judge.score(EXAMPLES[0]["context"], EXAMPLES[0]["user_turn"], "good")
    assert {m: s[m] for m in METRICS} == {"content": 5, "style": 4, "C1": 9, "C2": 10, "C3": 8, "C4": 7}
    assert s["raw"] == {"cs": '{"content": 5, "style": 4}', "egs": '{"C1": 9, "C2": 10, "C3": 8, "C4": 7}'}
    table = judge_table(EXAMPLES, {"ours": ["good", "bad"], "baseline": ["odd", "good"]}, judge, progress=False)
    ours, base = table["ours"], table["baseline"]
    assert ours["content"] == 3 and ours["style"] == 3 and ours["C1"] == 5 and ours["C4"] == 4
    assert (ours["n_parsed"], ours["n"]) == (2, 2)
    # unparsed / out-of-range scores are left out of the means, and counted
    assert base["content"] == 5 and base["C1"] == 9 and base["C2"] == 7.5
    assert base["n_parsed"] == 1 and base["n_parsed_by_metric"]["content"] == 1
    assert base["per_example"][0]["raw"]["cs"] == "no idea" and base["per_example"][1]["id"] == "b"
    assert ours["judge"] == "scripted, generate" and ours["prompts_version"] == "v1"
    # the prompt carries the context, the styled spoken turn (built from text + attrs when absent) and the reply
    prompt = next(c for c in backend.calls if "lost my keys" in c[-1]["content"])[-1]["content"]
    assert "User: Hello.\nAssistant: Hi!" in prompt and "sounding sad" in prompt
    assert backend.calls[0][0] == {"role": "system", "content": load_prompts("v1")["system"]}
    md = table_iv_markdown(table)
    lines = md.splitlines()
    assert "Judge: scripted, generate (prompts v1)" in md and all(line.count("|") == 9 for line in lines)
    assert "| ours | 3.00 | 3.00 | 5.00 |" in md and "| 2 / 2 |" in md
    with pytest.raises(EmoslmError, match="1 responses"):
        judge_table(EXAMPLES, {"short": ["good"]}, judge, progress=False)


def test_all_unparsed_gives_nan_and_dash():
    backend = ScriptedJudge({"x": ("?", "?")})
    table = judge_table(EXAMPLES, {"sys": ["x", "x"]}, Judge(backend), progress=False)
    assert all(math.isnan(table["sys"][m]) for m in METRICS) and table["sys"]["n_parsed"] == 0
    assert "| sys | - | - | - | - | - | - | 0 / 2 |" in table_iv_markdown(table)


def test_cache_resumes_and_is_keyed_by_prompt_version(tmp_path, monkeypatch):
    outputs = {"good": ('{"content": 5, "style": 4}', '{"C1": 9, "C2": 10, "C3": 8, "C4": 7}')}
    cache = tmp_path / "judge.jsonl"
    first = ScriptedJudge(outputs)
    a = Judge(first, cache=cache).score([], "hi", "good")
    again = Judge(first, cache=cache)
    again.score([], "hi", "good")
    assert len(first.calls) == 2  # one CS and one EGS output, both read back from the file the second time
    assert len(cache.read_text().splitlines()) == 2
    fresh = ScriptedJudge(outputs)
    b = Judge(fresh, cache=cache).score([], "hi", "good")
    assert fresh.calls == [] and a == b
    # a new prompt version is a new request, even with the same backend
    root = tmp_path / "prompts"
    shutil.copytree(J.PROMPTS_ROOT / "v1", root / "v1")
    shutil.copytree(J.PROMPTS_ROOT / "v1", root / "v2")
    monkeypatch.setattr(J, "PROMPTS_ROOT", root)
    Judge(fresh, prompts_version="v2", cache=cache).score([], "hi", "good")
    assert len(fresh.calls) == 2 and len(cache.read_text().splitlines()) == 4


# ------------------------------------------------------------------------------------------------ probability method


def test_probability_judge_reads_every_score_from_a_local_model(tmp_path):
    from emoslm.dual_info.judge import CS_RANGES, EGS_RANGES, Judge
    from emoslm.errors import EmoslmError
    from emoslm.models.text_llm import load_backend

    backend = load_backend("tiny-llama")
    judge = Judge(backend, cache=tmp_path / "j.jsonl")
    assert judge.method == "probability" and "probability" in judge.name
    ctx = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    s = judge.score(ctx, '[A man speaks loudly, sounding angry.] "The bus is late."', "That is annoying.")
    for m, (lo, hi) in {**CS_RANGES, **EGS_RANGES}.items():
        assert lo <= s[m] <= hi, (m, s[m])  # an expected score: never unparsed
    assert s["raw"]["cs"].startswith('{"content":') and s["raw"]["egs"].endswith("}")
    # cached: a second judge on the same file reads the scores back without the model
    again = Judge(backend, cache=tmp_path / "j.jsonl")
    again.scorer = None
    s2 = again.score(ctx, '[A man speaks loudly, sounding angry.] "The bus is late."', "That is annoying.")
    assert {k: s2[k] for k in CS_RANGES} == {k: s[k] for k in CS_RANGES}

    class Endpoint:  # text only, like an OpenAI-compatible endpoint
        name = "endpoint"

        def reply(self, *a, **k):
            raise AssertionError("not called")

    assert Judge(Endpoint()).method == "generate"
    with pytest.raises(EmoslmError, match="local model"):
        Judge(Endpoint(), method="probability")

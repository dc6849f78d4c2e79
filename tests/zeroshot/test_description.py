"""The corpus description schema (paper 001): packaged descriptions, malformed ones, prompts."""

from __future__ import annotations

import json

import pytest
import yaml

from emoslm.errors import LabelError
from emoslm.zeroshot.description import (
    DescriptionError,
    build_messages,
    load_description,
    packaged_descriptions,
    parse_description,
)

GOOD = {
    "name": "Test corpus", "scenario": "Two people talk.", "speakers": {"count": 4, "female": 2, "male": 2},
    "emotions": {"neutral": 0.5, "anger": 0.3, "joy": 0.2},
    "utterances": {"style": "Short turns.", "min_words": 2, "max_words": 12},
}


def test_packaged_descriptions_load_with_shares_summing_to_one():
    assert {"iemocap", "msp_podcast", "synth_target"} <= set(packaged_descriptions())
    for name in packaged_descriptions():
        d = load_description(name)
        assert abs(sum(d.emotions.values()) - 1) < 1e-9
        assert set(d.emotions) == set(d.label_set.labels)
        assert d.sources and d.scenario and d.utterances.min_words <= d.utterances.max_words
    iemocap = load_description("iemocap")
    assert iemocap.label_set.map("excitement") == "joy"  # IEMOCAP's 4-class setting
    assert iemocap.speakers.count == 10


def test_targets_follow_the_shares_and_sum_to_the_total():
    d = parse_description(GOOD)
    for n in (3, 10, 11, 97):
        t = d.targets(n)
        assert sum(t.values()) == n
        assert all(abs(t[e] - p * n) < 1 for e, p in d.emotions.items())


def _with(**changes):
    data = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        node = data
        *head, last = path.split("__")
        for k in head:
            node = node[k]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return data


@pytest.mark.parametrize("changes, field, message", [
    ({"scenario": None}, "scenario", "missing"),
    ({"name": 3}, "name", "must be a str"),
    ({"speakers__count": 0}, "speakers.count", ">= 1"),
    ({"speakers__female": 3}, "speakers", "!= count"),
    ({"emotions": {"neutral": 0.5, "anger": 0.3, "rage": 0.2}}, "emotions.rage", "unknown emotion label"),
    ({"emotions": {"neutral": 0.5, "anger": 0.3, "joy": 0.1}}, "emotions", "sum to 0.900"),
    ({"emotions": {"neutral": 0.5, "anger": 0.3, "angry": 0.2}}, "emotions.angry", "repeats class"),
    ({"emotions": {"neutral": 1.5}}, "emotions.neutral", "share must be a number in (0, 1]"),
    ({"emotions": {}}, "emotions", "names no class"),
    ({"utterances__min_words": 20}, "utterances", "min_words 20 > max_words 12"),
    ({"utterances__max_words": "long"}, "utterances.max_words", "integer"),
    ({"utterances__style": None}, "style", "missing"),
    ({"language": "xx"}, "language", "not supported"),
    ({"color": "blue"}, "color", "unknown field"),
    ({"label_set": "iemocap4"}, "emotions", "gives no share for sadness"),
    ({"label_set": "nope"}, "label_set", "unknown label set"),
    ({"examples": {"fear": ["Boo."]}}, "examples.fear", "not in emotions"),
    ({"topics": ["", "x"]}, "topics", "non-empty strings"),
])
def test_malformed_descriptions_name_the_field(changes, field, message):
    with pytest.raises(DescriptionError) as e:
        parse_description(_with(**changes), "desc.yaml")
    assert e.value.field == field
    assert message in str(e.value) and "desc.yaml" in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(DescriptionError, match="not valid YAML"):
        load_description(bad)
    with pytest.raises(Exception, match="does not exist"):
        load_description(tmp_path / "missing.yaml")
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(_with(emotions={"Neutral": 0.5, "angry": 0.3, "happy": 0.2})))
    assert list(load_description(ok).emotions) == ["neutral", "anger", "joy"]  # aliases canonicalised


def test_prompt_shows_the_json_format_with_another_class_and_asks_for_the_requested_one():
    d = load_description("iemocap")
    msgs = build_messages(d, "anger", 5, call_index=2)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "IEMOCAP" in msgs[0]["content"] and "3 to 25 words" in msgs[0]["content"]
    shot = json.loads(msgs[2]["content"])
    assert shot and all(x["emotion"] != "anger" and x["text"] for x in shot)
    assert "feeling angry" in msgs[3]["content"] and "Write 5" in msgs[3]["content"]
    assert "conversation is about" in msgs[3]["content"]  # topics rotate over calls
    assert build_messages(d, "anger", 5, 3)[3]["content"] != msgs[3]["content"]
    with pytest.raises(LabelError):
        build_messages(d, "fear", 5, 0)

"""Evaluating on any prepared corpus: which split is evaluated, where the eGeMAPS peer is fitted, and cutting a
corpus prepared as one split into train/dev/test (``emoslm split``)."""

from __future__ import annotations

import json

import pytest

from emoslm.cli import main
from emoslm.corpora import prepare
from emoslm.data.manifests import load_prepared
from emoslm.data.splits import get_protocol, resplit, speaker_overlap
from emoslm.errors import EmoslmError
from emoslm.personalization.evaluation import EvalPlan, eval_split, peer_training_corpus
from tests.corpora.fixtures import make_ravdess

FILES = [f"03-01-{emo:02d}-01-01-01-{actor:02d}.wav" for actor in range(1, 7) for emo in (1, 3, 4, 5)]


@pytest.fixture(scope="module")
def one_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    prepare("ravdess", make_ravdess(root / "RAVDESS", files=FILES), root / "own")
    return root / "own"


def test_a_corpus_of_one_split_is_evaluated_on_that_split(one_split):
    assert sorted(load_prepared(one_split)) == ["all"]
    assert eval_split(one_split) == "all"
    with pytest.raises(EmoslmError, match="has no split 'test'.*its splits: all"):
        eval_split(one_split, "test")


def test_the_peer_is_fitted_elsewhere_when_the_corpus_has_no_training_split(one_split, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no embedded corpus here
    plan = EvalPlan(corpus=str(one_split), out_dir=str(tmp_path / "eval"))
    with pytest.raises(EmoslmError, match="needs a training corpus: data/synth_demo does not exist.*--peer-train"):
        peer_training_corpus(plan, "all")
    plan.peer_train = str(one_split)
    with pytest.raises(EmoslmError, match="has no train split"):
        peer_training_corpus(plan, "all")


def test_resplit_is_speaker_disjoint_and_keeps_every_utterance(one_split):
    prepared = load_prepared(one_split)
    parts = resplit(prepared, get_protocol("speaker_disjoint", train=0.5, dev=0.17, test=0.33))
    assert sorted(parts) == ["dev", "test", "train"]
    sups = {k: list(v["supervisions"]) for k, v in parts.items()}
    assert not any(speaker_overlap(sups).values())
    assert sum(len(v) for v in sups.values()) == len(FILES)
    for v in parts.values():  # each split keeps exactly the recordings its supervisions use
        assert {r.id for r in v["recordings"]} == {s.recording_id for s in v["supervisions"]}


def test_split_command_writes_train_dev_test_and_the_protocol(one_split, tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["split", str(one_split), str(out), "--set", "train=0.5", "--set", "dev=0.17",
                 "--set", "test=0.33", "--set", "seed=3"]) == 0
    assert sorted(load_prepared(out)) == ["dev", "test", "train"]
    meta = json.loads((out / "split.json").read_text())
    assert meta["protocol"]["name"] == "speaker_disjoint" and meta["protocol"]["params"]["seed"] == 3
    printed = capsys.readouterr().out
    assert "train: 12 utterances, 3 speakers" in printed
    # every RAVDESS actor here says statement 01: disjoint speakers, all sentences shared
    for role in ("dev", "test"):
        assert (f"Leakage check ({role} vs train): 0 shared speakers; 100 % of {role} utterances have a sentence "
                "that also occurs in train (1 sentence); base voices unknown") in printed
        assert meta["leakage_check"][role]["text_share"] == 1
    # a train split that evaluation then finds as the peer's own training data
    assert peer_training_corpus(EvalPlan(corpus=str(out), out_dir=str(tmp_path)), "test") == str(out)


def test_split_command_errors_are_one_line(one_split, tmp_path, capsys):
    assert main(["split", str(one_split), str(tmp_path / "x"), "--set", "train=2"]) == 2
    assert main(["split", str(one_split), str(tmp_path / "x"), "--protocol", "nope"]) == 2
    assert main(["split", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("emoslm: error:") for line in err)
    assert "unknown split protocol 'nope'" in err[1] and "no prepared corpus" in err[2]

import json
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emoslm.data.manifests import make_supervision
from emoslm.data.splits import (
    PROTOCOLS, LeaveOneSessionOut, Predefined, SpeakerDisjoint, get_protocol, leakage_line, speaker_overlap,
    split_overlap,
)


def sup(uid, speaker, gender=None, session=None, **custom):
    s = make_supervision(uid, uid, 1.0, speaker=speaker, emotion="neutral", corpus="t", gender=gender,
                         session=session)
    s.custom.update(custom)
    return s


def iemocap_like(n_utts=3):
    """5 sessions, each with one female and one male speaker (Ses01F, Ses01M, ...)."""
    return [sup(f"Ses0{s}{g}_{i}", f"Ses0{s}{g}", g, f"Ses0{s}")
            for s in range(1, 6) for g in "FM" for i in range(n_utts)]


def many_speakers(n=100, n_utts=2):
    return [sup(f"p{p}_{i}", f"p{p}", "F" if p % 2 else "M") for p in range(n) for i in range(n_utts)]


def speakers(sups):
    return {s.speaker for s in sups}


def test_leave_one_session_out_folds():
    data = iemocap_like()
    folds = list(get_protocol("leave_one_session_out").folds(data))
    assert [f.name for f in folds] == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
    for name, splits in folds:
        assert {s.custom["session"] for s in splits["test"]} == {name}
        assert speakers(splits["test"]) == {f"{name}F", f"{name}M"}
        assert splits["dev"] == [] and len(splits["train"]) == len(data) - 6
        assert not speaker_overlap(splits)


def test_leave_one_session_out_dev_is_speaker_disjoint_and_gender_stratified():
    proto = LeaveOneSessionOut(dev_fraction=0.25, seed=3)
    for name, splits in proto.folds(iemocap_like()):
        assert not speaker_overlap(splits)
        dev = speakers(splits["dev"])
        assert len(dev) == 2  # 25% of the 8 other speakers
        assert sorted(s[-1] for s in dev) == ["F", "M"]
        assert name not in {s[:5] for s in dev}
        assert sum(len(v) for v in splits.values()) == 30
    # deterministic for a seed
    again = LeaveOneSessionOut(dev_fraction=0.25, seed=3)
    assert list(proto.folds(iemocap_like())) == list(again.folds(iemocap_like()))


def test_leave_one_session_out_errors():
    data = iemocap_like() + [sup("x", "Ses01F", "F", None)]
    with pytest.raises(ValueError, match="supervision x has no 'session'"):
        list(LeaveOneSessionOut().folds(data))
    data = iemocap_like() + [sup("y", "Ses01F", "F", "Ses02")]
    with pytest.raises(ValueError, match="span several groups"):
        list(LeaveOneSessionOut().folds(data))
    with pytest.raises(ValueError, match="dev_fraction"):
        LeaveOneSessionOut(dev_fraction=1.0)
    with pytest.raises(ValueError, match="folds"):
        LeaveOneSessionOut().apply(iemocap_like())


def test_leave_one_speaker_out():
    data = iemocap_like()
    folds = list(get_protocol("leave_one_speaker_out", dev_fraction=0.2, seed=1).folds(data))
    assert len(folds) == 10
    for name, splits in folds:
        assert speakers(splits["test"]) == {name}
        assert len(speakers(splits["dev"])) == 2  # round(0.2 * 9)
        assert not speaker_overlap(splits)


def test_speaker_disjoint_fractions_and_stratification():
    data = many_speakers()
    splits = SpeakerDisjoint(train=0.8, dev=0.1, test=0.1, seed=0).apply(data)
    assert [len(speakers(splits[r])) for r in ("train", "dev", "test")] == [80, 10, 10]
    assert not speaker_overlap(splits)
    for role in ("dev", "test"):
        genders = Counter(s.gender for s in splits[role] if s.id.endswith("_0"))
        assert abs(genders["F"] - genders["M"]) <= 2, (role, genders)
    assert sum(len(v) for v in splits.values()) == len(data)


def test_speaker_disjoint_deterministic_and_order_independent():
    data = many_speakers(30)
    a = SpeakerDisjoint(seed=5).apply(data)
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    b = SpeakerDisjoint(seed=5).apply(shuffled)
    assert {r: speakers(v) for r, v in a.items()} == {r: speakers(v) for r, v in b.items()}
    c = SpeakerDisjoint(seed=6).apply(data)
    assert speakers(a["test"]) != speakers(c["test"])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 40), seed=st.integers(0, 10**6),
       fr=st.sampled_from([(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.0, 0.5), (1 / 3, 1 / 3, 1 / 3)]),
       stratify=st.sampled_from(["gender", None]))
def test_speaker_disjoint_never_shares_a_speaker(n, seed, fr, stratify):
    data = many_speakers(n, n_utts=1)
    splits = SpeakerDisjoint(*fr, seed=seed, stratify=stratify).apply(data)
    assert not speaker_overlap(splits)
    assert sum(len(v) for v in splits.values()) == n
    for role, f in zip(("train", "dev", "test"), fr):
        assert (len(splits[role]) > 0) == (f > 0)


def test_speaker_disjoint_errors():
    with pytest.raises(ValueError, match="must be 1"):
        SpeakerDisjoint(0.5, 0.1, 0.1)
    with pytest.raises(ValueError, match="cannot fill"):
        SpeakerDisjoint().apply(many_speakers(2))


def test_predefined_from_prepared_corpus():
    prepared = {
        "train": {"supervisions": [sup("a", "s1"), sup("b", "s2")]},
        "validation": {"supervisions": [sup("c", "s3")]},
        "test": {"supervisions": [sup("d", "s4")]},
    }
    splits = get_protocol("predefined").apply(prepared)
    assert {r: [s.id for s in v] for r, v in splits.items()} == {"train": ["a", "b"], "dev": ["c"], "test": ["d"]}
    prepared["test2"] = {"supervisions": [sup("e", "s5")]}
    with pytest.raises(ValueError, match="test2"):
        Predefined().apply(prepared)
    assert [s.id for s in Predefined(test=("test", "test2")).apply(prepared)["test"]] == ["d", "e"]
    assert len(Predefined(ignore="test2").apply(prepared)["test"]) == 1
    with pytest.raises(ValueError, match="both"):
        Predefined(train=("train", "test"))


def test_predefined_from_custom_split():
    data = [sup("a", "s1", split="train"), sup("b", "s2", split="test")]
    splits = Predefined().apply(data)
    assert [s.id for s in splits["test"]] == ["b"] and splits["dev"] == []
    with pytest.raises(ValueError, match="no split name"):
        Predefined().apply([sup("c", "s3")])


def test_describe_and_registry():
    for name in ("leave_one_session_out", "leave_one_speaker_out", "speaker_disjoint", "predefined"):
        assert name in PROTOCOLS
        d = get_protocol(name).describe()
        assert d["name"] == name and "summary" in d and "params" in d
        json.dumps(d)
    d = get_protocol("speaker_disjoint", seed=4, train=0.7, dev=0.15, test=0.15).describe(fold="speaker_disjoint")
    assert d["params"] == {"train": 0.7, "dev": 0.15, "test": 0.15, "seed": 4, "stratify": "gender"}
    assert d["speaker_independent"] is True and d["fold"] == "speaker_disjoint"
    d = get_protocol("leave_one_session_out", dev_fraction=0.1).describe(fold="Ses03")
    assert d["params"] == {"dev_fraction": 0.1, "seed": 0, "stratify": "gender", "session_key": "session"}
    assert get_protocol("predefined").describe()["params"]["test"] == ["test"]
    assert get_protocol("predefined").describe()["speaker_independent"] is None
    with pytest.raises(ValueError, match="unknown split protocol"):
        get_protocol("random")
    with pytest.raises(ValueError, match="bad parameters"):
        get_protocol("speaker_disjoint", folds=5)


def said(uid, speaker, text, voice=None):
    s = make_supervision(uid, uid, 1.0, speaker=speaker, emotion="neutral", corpus="t", text=text)
    if voice:
        s.custom["voice"] = voice
    return s


def test_split_overlap_counts_shared_speakers_sentences_and_base_voices():
    prepared = {
        "train": {"supervisions": [said("a1", "A", "Kids are talking by the door.", "mb-us1"),
                                   said("a2", "A", "Dogs are sitting by the door", "mb-us1"),
                                   said("b1", "B", "Hello there", "en-us+m3")]},
        "test": {"supervisions": [said("c1", "C", "kids are  talking, by the door", "mb-us1"),
                                  said("c2", "C", "A new sentence.", "mb-us1"),
                                  said("d1", "D", "Hello there!", "en-gb+f2"),
                                  said("d2", "D", "HELLO   there.", "en-gb+f2"),
                                  said("a3", "A", None, "mb-us1")]},
    }
    audit = split_overlap(prepared)
    assert audit["shared_speakers"] == 1 and audit["shared_speaker_examples"] == ["A"]
    # 3 of the 4 test utterances with a text say a training sentence; 2 distinct sentences are shared
    assert audit["utterances_with_text"] == 4 and audit["text_share"] == 0.75 and audit["shared_sentences"] == 2
    # en-us+m3 and en-gb+f2 are different base voices; mb-us1 is in both
    assert audit["shared_base_voices"] == 1 and audit["shared_base_voice_examples"] == ["mb-us1"]
    assert leakage_line(audit) == (
        "Leakage check (test vs train): 1 shared speaker (A); 75 % of test utterances have a sentence that also "
        "occurs in train (2 sentences); 1 shared base voice (mb-us1)")
    # the other way round: the reference is the test split
    assert split_overlap(prepared, "test", "train")["text_share"] == pytest.approx(2 / 3)


def test_split_overlap_without_texts_or_voices_says_unknown():
    prepared = {"train": [said("a1", "A", None)], "dev": [said("b1", "B", "")]}
    audit = split_overlap(prepared, "train", "dev")
    assert audit["text_share"] is None and audit["shared_sentences"] is None
    assert audit["shared_base_voices"] is None
    assert leakage_line(audit) == ("Leakage check (dev vs train): 0 shared speakers; sentences unknown (no "
                                   "transcripts); base voices unknown")

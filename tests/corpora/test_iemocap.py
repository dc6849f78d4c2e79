import logging

import pytest

from emoslm.corpora import prepare_iemocap
from emoslm.data.manifests import load_prepared
from emoslm.errors import CorpusError, ManifestError

from .fixtures import iemocap_label_line, make_iemocap


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def prepared(corpus):
    return prepare_iemocap(corpus)


def sups(prepared, split):
    return {s.id: s for s in prepared[split]["supervisions"]}


def test_one_split_per_session_and_xxx_dropped(prepared):
    assert list(prepared) == [f"Session{n}" for n in range(1, 6)]
    assert [len(prepared[s]["supervisions"]) for s in prepared] == [5, 2, 2, 2, 2]
    assert "Ses01F_impro01_F001" not in sups(prepared, "Session1")  # xxx: no agreement


def test_labels_speakers_texts(prepared):
    s1 = sups(prepared, "Session1")
    f000 = s1["Ses01F_impro01_F000"]
    assert (f000.speaker, f000.gender, f000.language, f000.text) == ("iemocap_Ses01F", "F", "en", "Excuse me.")
    assert f000.custom["emotion"] == "neutral" and f000.custom["emotion_orig"] == "neu"
    assert f000.custom["session"] == "Session1" and f000.custom["corpus"] == "iemocap"
    assert f000.custom["dialog"] == "Ses01F_impro01"
    assert (f000.custom["valence"], f000.custom["arousal"], f000.custom["dominance"]) == (2.5, 2.5, 2.5)
    # the speaker is the gender letter of the utterance, not of the dialogue name
    m000 = s1["Ses01F_impro01_M000"]
    assert (m000.speaker, m000.gender, m000.custom["emotion"]) == ("iemocap_Ses01M", "M", "anger")
    assert {k: s1[k].custom["emotion"] for k in ("Ses01F_impro01_M001", "Ses01F_script01_1_F000",
                                                 "Ses01F_script01_1_M000")} == {
        "Ses01F_impro01_M001": "frustration", "Ses01F_script01_1_F000": "excitement",
        "Ses01F_script01_1_M000": "joy"}
    s3 = sups(prepared, "Session3")
    assert s3["Ses03M_impro02_F000"].speaker == "iemocap_Ses03F"
    assert s3["Ses03M_impro02_F000"].custom["emotion"] == "sadness"
    speakers = {s.speaker for p in prepared.values() for s in p["supervisions"]}
    assert speakers == {f"iemocap_Ses0{n}{g}" for n in range(1, 6) for g in "FM"}


def test_recordings_match_audio(prepared):
    rec = prepared["Session1"]["recordings"]["Ses01F_impro01_F000"]
    assert rec.sampling_rate == 16000 and rec.num_samples == 4800
    assert rec.sources[0].source.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    assert sups(prepared, "Session1")["Ses01F_impro01_F000"].duration == pytest.approx(0.3)


def test_drop_is_counted_and_logged(corpus, caplog):
    with caplog.at_level(logging.INFO, logger="emoslm.corpora"):
        prepare_iemocap(corpus, sessions=[1])
    assert any("no agreed label (xxx)" in r.message and ": 1 (Ses01F_impro01_F001)" in r.message
               for r in caplog.records)


def test_keep_unlabeled(corpus):
    prepared = prepare_iemocap(corpus, sessions=[1], keep_unlabeled=True)
    f001 = sups(prepared, "Session1")["Ses01F_impro01_F001"]
    assert f001.custom["emotion"] is None and f001.custom["emotion_orig"] == "xxx"


def test_writes_lhotse_manifests(corpus, tmp_path):
    out = tmp_path / "out"
    prepare_iemocap(corpus, out, num_jobs=2)
    assert (out / "iemocap_recordings_Session1.jsonl.gz").is_file()
    assert (out / "iemocap_supervisions_Session5.jsonl.gz").is_file()
    back = load_prepared(out)
    assert sorted(back) == [f"Session{n}" for n in range(1, 6)]
    assert sups(back, "Session1")["Ses01F_impro01_F000"].custom["emotion_orig"] == "neu"


def test_missing_session_folder(tmp_path):
    root = make_iemocap(tmp_path, {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu", (2, 2, 2), "Hi.")]}})
    with pytest.raises(CorpusError, match="Session2"):
        prepare_iemocap(root)
    assert len(prepare_iemocap(tmp_path, sessions=[1])["Session1"]["supervisions"]) == 1  # parent dir works too


def test_missing_label_folder(tmp_path):
    root = make_iemocap(tmp_path, {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu", (2, 2, 2), "Hi.")]}})
    import shutil
    shutil.rmtree(root / "Session1" / "dialog" / "EmoEvaluation")
    with pytest.raises(CorpusError, match="EmoEvaluation"):
        prepare_iemocap(root, sessions=[1])


def _corrupt(root, line):
    path = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    lines = path.read_text().splitlines()
    lines[2] = line  # the first utterance line (row 3)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_label_line(tmp_path):
    root = make_iemocap(tmp_path, {1: IEMOCAP_ONE})
    path = _corrupt(root, "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu")
    with pytest.raises(ManifestError) as e:
        prepare_iemocap(root, sessions=[1])
    assert e.value.path == str(path) and e.value.row == 3


def test_unknown_label_code(tmp_path):
    root = make_iemocap(tmp_path, {1: IEMOCAP_ONE})
    path = _corrupt(root, iemocap_label_line("Ses01F_impro01_F000", "joy", (2, 2, 2)))
    with pytest.raises(ManifestError, match="unknown label code 'joy'") as e:
        prepare_iemocap(root, sessions=[1])
    assert e.value.path == str(path) and e.value.row == 3


IEMOCAP_ONE = {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu", (2, 2, 2), "Hi.")]}


def test_labelled_utterance_without_audio_is_reported(tmp_path, caplog):
    root = make_iemocap(tmp_path, {1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu", (2, 2, 2), "Hi."),
                                                          ("Ses01F_impro01_M000", "sad", (2, 2, 2), "Oh.")]}})
    (root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_M000.wav").unlink()
    with caplog.at_level(logging.WARNING, logger="emoslm.corpora"):
        prepared = prepare_iemocap(root, sessions=[1])
    assert [s.id for s in prepared["Session1"]["supervisions"]] == ["Ses01F_impro01_F000"]
    assert any("labelled utterances without audio: 1" in r.message for r in caplog.records)

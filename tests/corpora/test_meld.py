import logging

import pytest

from emoslm.corpora import prepare_meld
from emoslm.data.manifests import load_prepared
from emoslm.errors import CorpusError, ManifestError

from .fixtures import make_meld


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_meld(tmp_path_factory.mktemp("meld"))


def sups(prepared, split):
    return {s.id: s for s in prepared[split]["supervisions"]}


def test_splits_labels_speakers(corpus, caplog):
    with caplog.at_level(logging.INFO, logger="emoslm.corpora"):
        prepared = prepare_meld(corpus)
    assert {s: len(p["supervisions"]) for s, p in prepared.items()} == {"train": 3, "dev": 2, "test": 2}
    assert any("rows whose clip is missing: 1 (train/dia0_utt3)" in r.message for r in caplog.records)
    joy = sups(prepared, "train")["train_dia0_utt2"]
    assert (joy.speaker, joy.gender, joy.text, joy.language) == ("meld_Chandler", None, "That I did. That I did.", "en")
    assert joy.custom["emotion"] == "joy" and joy.custom["emotion_orig"] == "joy"
    assert joy.custom["sentiment"] == "positive" and joy.custom["dialog"] == "train_dia0"
    assert (joy.custom["season"], joy.custom["episode"], joy.custom["utterance_index"]) == (8, 21, 2)
    assert sups(prepared, "train")["train_dia0_utt1"].speaker == "meld_The Interviewer"
    assert {s.custom["emotion"] for s in prepared["dev"]["supervisions"]} == {"sadness", "surprise"}
    assert sups(prepared, "test")["test_dia0_utt1"].custom["emotion"] == "anger"
    # the WAV is taken over the MP4 beside it
    assert prepared["dev"]["recordings"]["dev_dia0_utt0"].sources[0].source.endswith("dia0_utt0.wav")


def test_writes_lhotse_manifests(corpus, tmp_path):
    prepare_meld(corpus, tmp_path, splits=["dev"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meld_recordings_dev.jsonl.gz",
                                                          "meld_supervisions_dev.jsonl.gz"]
    assert len(load_prepared(tmp_path, "meld")["dev"]["supervisions"]) == 2


def test_missing_csv(tmp_path):
    make_meld(tmp_path)
    (tmp_path / "test_sent_emo.csv").unlink()
    with pytest.raises(CorpusError, match="test_sent_emo.csv"):
        prepare_meld(tmp_path)


def test_missing_clip_folder(tmp_path):
    make_meld(tmp_path)
    import shutil
    shutil.rmtree(tmp_path / "output_repeated_splits_test")
    with pytest.raises(CorpusError, match="output_repeated_splits_test"):
        prepare_meld(tmp_path)


def test_unknown_emotion(tmp_path):
    rows = {"dev": [("Hi.", "Ross", "neutral", "neutral", 0, 0, True),
                    ("Ugh.", "Ross", "bored", "negative", 0, 1, True)]}
    make_meld(tmp_path, rows)
    with pytest.raises(ManifestError, match="unknown Emotion 'bored'") as e:
        prepare_meld(tmp_path, splits=["dev"])
    assert e.value.path.endswith("dev_sent_emo.csv") and e.value.row == 3


def test_malformed_row(tmp_path):
    make_meld(tmp_path, {"dev": [("Hi.", "Ross", "neutral", "neutral", 0, 0, True)]})
    path = tmp_path / "dev_sent_emo.csv"
    path.write_text(path.read_text() + "2,Hey.,Ross,neutral,neutral,zero,1,8,21,x,y\n")
    with pytest.raises(ManifestError, match="Dialogue_ID must be an integer") as e:
        prepare_meld(tmp_path, splits=["dev"])
    assert e.value.row == 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # lhotse falls back to audioread for MP4
def test_unreadable_mp4_clip_is_dropped_and_reported(tmp_path, caplog):
    make_meld(tmp_path, {"dev": [("Hi.", "Ross", "neutral", "neutral", 0, 0, True),
                                 ("Hey.", "Joey", "joy", "positive", 0, 1, False)]})
    (tmp_path / "dev_splits_complete" / "dia0_utt1.mp4").write_text("not a video")
    with caplog.at_level(logging.WARNING, logger="emoslm.corpora"):
        prepared = prepare_meld(tmp_path, splits=["dev"])
    assert [s.id for s in prepared["dev"]["supervisions"]] == ["dev_dia0_utt0"]
    assert any("unreadable audio: 1" in r.message and "dia0_utt1.mp4" in r.message for r in caplog.records)

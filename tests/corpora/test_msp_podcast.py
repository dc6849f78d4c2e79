import logging

import pytest

from emoslm.corpora import prepare_msp_podcast
from emoslm.data.manifests import load_prepared
from emoslm.errors import CorpusError, ManifestError

from .fixtures import MSP_ROWS, make_msp_podcast


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_msp_podcast(tmp_path_factory.mktemp("msp"))


def sups(prepared, split):
    return {s.id: s for s in prepared[split]["supervisions"]}


def test_splits_labels_speakers(corpus, caplog):
    with caplog.at_level(logging.INFO, logger="emoslm.corpora"):
        prepared = prepare_msp_podcast(corpus)
    assert {s: len(p["supervisions"]) for s, p in prepared.items()} == {"train": 2, "dev": 1, "test1": 1, "test2": 1}
    assert any("no agreed label (X" in r.message and ": 1 (MSP-PODCAST_0001_0010.wav)" in r.message
               for r in caplog.records)
    train = sups(prepared, "train")
    n = train["MSP-PODCAST_0001_0008"]
    assert (n.speaker, n.gender, n.text, n.language) == ("msp_podcast_127", "F", "so what we did was", "en")
    assert n.custom["emotion"] == "neutral" and n.custom["emotion_orig"] == "N"
    assert (n.custom["arousal"], n.custom["valence"], n.custom["dominance"]) == (4.2, 4.0, 4.4)
    assert n.custom["speaker_known"] is True and n.custom["podcast"] == "0001"
    h = train["MSP-PODCAST_0001_0009"]
    assert (h.speaker, h.gender, h.text, h.custom["speaker_known"]) == ("msp_podcast_unknown", None, None, False)
    assert h.custom["emotion"] == "joy"
    a = sups(prepared, "dev")["MSP-PODCAST_0002_0001"]
    assert (a.speaker, a.gender, a.custom["emotion"]) == ("msp_podcast_45", "M", "anger")
    assert sups(prepared, "test1")["MSP-PODCAST_0003_0001"].custom["emotion"] == "sadness"
    assert sups(prepared, "test2")["MSP-PODCAST_0004_0001"].custom["emotion"] == "contempt"


def test_keep_unlabeled_and_split_selection(corpus):
    prepared = prepare_msp_podcast(corpus, splits=["train"], keep_unlabeled=True)
    assert list(prepared) == ["train"]
    x = sups(prepared, "train")["MSP-PODCAST_0001_0010"]
    assert x.custom["emotion"] is None and x.custom["emotion_orig"] == "X"


def test_writes_lhotse_manifests(corpus, tmp_path):
    prepare_msp_podcast(corpus, tmp_path / "out")
    assert (tmp_path / "out" / "msp_podcast_supervisions_test2.jsonl.gz").is_file()
    back = load_prepared(tmp_path / "out")
    assert sorted(back) == ["dev", "test1", "test2", "train"]
    assert back["dev"]["recordings"]["MSP-PODCAST_0002_0001"].sampling_rate == 16000


def test_missing_label_file(tmp_path):
    make_msp_podcast(tmp_path)
    (tmp_path / "Labels" / "labels_consensus.csv").unlink()
    with pytest.raises(CorpusError, match="labels_consensus.csv"):
        prepare_msp_podcast(tmp_path)


def test_missing_audio_folder(tmp_path):
    (tmp_path / "Labels").mkdir()
    (tmp_path / "Labels" / "labels_consensus.csv").write_text("FileName\n")
    with pytest.raises(CorpusError, match="Audios"):
        prepare_msp_podcast(tmp_path)


def test_unknown_emotion_class(tmp_path):
    rows = [MSP_ROWS[0], ("MSP-PODCAST_0001_0011.wav", "Q", "3", "3", "3", "127", "Female", "Train", None)]
    make_msp_podcast(tmp_path, rows)
    with pytest.raises(ManifestError, match="unknown EmoClass 'Q'") as e:
        prepare_msp_podcast(tmp_path)
    assert e.value.path.endswith("labels_consensus.csv") and e.value.row == 3


def test_malformed_row(tmp_path):
    rows = [MSP_ROWS[0], ("MSP-PODCAST_0001_0011.wav", "N", "high", "3", "3", "127", "Female", "Train", None)]
    make_msp_podcast(tmp_path, rows)
    with pytest.raises(ManifestError, match="EmoAct must be a number") as e:
        prepare_msp_podcast(tmp_path)
    assert e.value.row == 3

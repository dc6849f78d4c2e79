import logging

import pytest

from emoslm.corpora import prepare_esd
from emoslm.corpora.esd import split_of_number
from emoslm.data.manifests import load_prepared
from emoslm.errors import CorpusError, ManifestError

from .fixtures import make_esd, write_text, write_wav


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_esd(tmp_path_factory.mktemp("esd"))


@pytest.fixture(scope="module")
def prepared(corpus):
    return prepare_esd(corpus)


def sups(prepared):
    return {s.id: s for p in prepared.values() for s in p["supervisions"]}


def test_splits_from_folders_and_numbers(prepared):
    ids = {split: sorted(s.id for s in p["supervisions"]) for split, p in prepared.items()}
    assert ids == {
        "train": ["0001_000051", "0001_000700", "0004_001400", "0011_000051", "0011_001750"],
        "dev": ["0001_000001", "0004_000701", "0011_000001", "0011_001401"],
        "test": ["0001_000021", "0011_000021"],
    }


def test_documented_split_rule():
    # per speaker and emotion: first 20 evaluation, next 30 test, last 300 train
    assert [split_of_number(n) for n in (1, 20, 21, 50, 51, 350, 351, 371, 401, 1750)] == [
        "dev", "dev", "test", "test", "train", "train", "dev", "test", "train", "train"]


def test_labels_speakers_languages_texts(prepared):
    s = sups(prepared)
    zh = s["0001_000001"]
    assert (zh.speaker, zh.gender, zh.language, zh.text) == ("esd_0001", "F", "zh", "打远一看，它们的确很是美丽，")
    assert zh.custom["emotion"] == "neutral" and zh.custom["emotion_orig"] == "Neutral"
    assert s["0001_000700"].custom["emotion"] == "anger" and s["0001_000700"].text == "我不想去！"
    utf16 = s["0004_000701"]  # UTF-16 transcript
    assert (utf16.speaker, utf16.gender, utf16.text, utf16.custom["emotion"]) == ("esd_0004", "M", "太好了！", "joy")
    assert s["0004_001400"].custom["emotion"] == "sadness"
    en = s["0011_000001"]
    assert (en.speaker, en.gender, en.language) == ("esd_0011", "M", "en")
    assert en.text == "Author of the danger trail, Philip Steels, etc."
    assert s["0011_000051"].text == "Let the glass globe be."  # line without the emotion column
    assert s["0011_001401"].custom["emotion"] == "surprise"


def test_language_filter_and_manifests(corpus, tmp_path):
    prepared = prepare_esd(corpus.parent.parent, tmp_path, languages=["en"])  # the folder holding the release
    assert {s.speaker for p in prepared.values() for s in p["supervisions"]} == {"esd_0011"}
    back = load_prepared(tmp_path)
    assert sorted(back) == ["dev", "test", "train"]
    assert (tmp_path / "esd_supervisions_dev.jsonl.gz").is_file()
    assert back["dev"]["recordings"]["0011_000001"].sampling_rate == 16000


def test_transcript_emotion_disagreement_is_logged(tmp_path, caplog):
    write_wav(tmp_path / "0012" / "Sad" / "0012_001051.wav")
    write_text(tmp_path / "0012" / "0012.txt", "0012_001051\tSo I went.\tHappy\n")
    with caplog.at_level(logging.WARNING, logger="emoslm.corpora"):
        prepared = prepare_esd(tmp_path)
    assert prepared["dev"]["supervisions"][0].custom["emotion"] == "sadness"
    assert any("disagrees with the folder" in r.message and ": 1 " in r.message for r in caplog.records)


def test_not_esd(tmp_path):
    (tmp_path / "Angry").mkdir()
    with pytest.raises(CorpusError, match="0001"):
        prepare_esd(tmp_path)


def test_speaker_without_emotion_folders(tmp_path):
    write_text(tmp_path / "0013" / "0013.txt", "0013_000001\tHello.\tNeutral\n")
    with pytest.raises(CorpusError, match="Neutral"):
        prepare_esd(tmp_path)


def test_malformed_transcript_line(tmp_path):
    write_wav(tmp_path / "0011" / "Neutral" / "0011_000001.wav")
    path = write_text(tmp_path / "0011" / "0011.txt", "0011_000001\tHello.\tNeutral\nHello again.\tNeutral\n")
    with pytest.raises(ManifestError) as e:
        prepare_esd(tmp_path)
    assert e.value.path == str(path) and e.value.row == 2


def test_unexpected_file_name(tmp_path):
    bad = write_wav(tmp_path / "0011" / "Neutral" / "0012_000001.wav")
    with pytest.raises(ManifestError, match="0011_<6 digits>") as e:
        prepare_esd(tmp_path)
    assert e.value.path == str(bad)

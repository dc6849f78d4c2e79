import logging

import pytest

from emoslm.corpora import prepare_ravdess
from emoslm.data.manifests import load_prepared
from emoslm.errors import CorpusError, ManifestError

from .fixtures import make_ravdess, write_wav


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_ravdess(tmp_path_factory.mktemp("ravdess"))


def test_labels_from_file_names(corpus):
    prepared = prepare_ravdess(corpus)
    assert list(prepared) == ["all"]
    sups = {s.id: s for s in prepared["all"]["supervisions"]}
    assert len(sups) == 5
    angry = sups["03-01-05-02-02-02-01"]
    assert (angry.speaker, angry.gender, angry.text, angry.language) == (
        "ravdess_Actor_01", "M", "Dogs are sitting by the door", "en")
    assert angry.custom["emotion"] == "anger" and angry.custom["emotion_orig"] == "angry"
    assert angry.custom["intensity"] == "strong" and angry.custom["vocal_channel"] == "speech"
    assert angry.custom["repetition"] == 2
    calm = sups["03-01-02-01-01-01-02"]
    assert (calm.speaker, calm.gender, calm.text) == ("ravdess_Actor_02", "F", "Kids are talking by the door")
    assert (calm.custom["emotion"], calm.custom["intensity"]) == ("calm", "normal")
    assert sups["03-02-03-01-01-01-01"].custom["vocal_channel"] == "song"
    assert sups["03-01-08-02-02-01-02"].custom["emotion"] == "surprise"
    rec = prepared["all"]["recordings"]["03-01-01-01-01-01-01"]
    assert rec.sampling_rate == 48000 and rec.num_samples == 14400


def test_song_can_be_left_out(corpus, caplog):
    with caplog.at_level(logging.INFO, logger="emoslm.corpora"):
        prepared = prepare_ravdess(corpus, include_song=False)
    assert len(prepared["all"]["supervisions"]) == 4
    assert any("song files" in r.message and ": 1 " in r.message for r in caplog.records)


def test_writes_lhotse_manifests(corpus, tmp_path):
    prepare_ravdess(corpus, tmp_path)
    back = load_prepared(tmp_path, "ravdess")
    assert len(back["all"]["supervisions"]) == 5
    assert (tmp_path / "ravdess_recordings_all.jsonl.gz").is_file()


def test_not_ravdess(tmp_path):
    with pytest.raises(CorpusError, match="Actor_01"):
        prepare_ravdess(tmp_path)


def test_unknown_emotion_code(tmp_path):
    bad = write_wav(tmp_path / "Actor_03" / "03-01-09-01-01-01-03.wav", sr=48000)
    with pytest.raises(ManifestError, match="unknown emotion code '09'") as e:
        prepare_ravdess(tmp_path)
    assert e.value.path == str(bad)


def test_malformed_file_name(tmp_path):
    bad = write_wav(tmp_path / "Actor_03" / "03-01-01-01-01-03.wav", sr=48000)
    with pytest.raises(ManifestError, match="seven two-digit fields") as e:
        prepare_ravdess(tmp_path)
    assert e.value.path == str(bad)


def test_actor_must_match_folder(tmp_path):
    write_wav(tmp_path / "Actor_03" / "03-01-01-01-01-01-04.wav", sr=48000)
    with pytest.raises(ManifestError, match="Actor_03"):
        prepare_ravdess(tmp_path)

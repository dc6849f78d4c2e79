import logging

import pytest

from emoslm.corpora import prepare_crema_d
from emoslm.data.manifests import load_prepared
from emoslm.errors import CorpusError, ManifestError

from .fixtures import make_crema_d, write_text, write_wav


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_crema_d(tmp_path_factory.mktemp("crema"))


def test_labels_speakers_texts(corpus):
    prepared = prepare_crema_d(corpus)
    sups = {s.id: s for s in prepared["all"]["supervisions"]}
    assert len(sups) == 4
    ang = sups["1001_DFA_ANG_XX"]
    assert (ang.speaker, ang.gender, ang.text, ang.language) == ("crema_d_1001", "M", "Don't forget a jacket", "en")
    assert ang.custom["emotion"] == "anger" and ang.custom["emotion_orig"] == "ANG"
    assert (ang.custom["intensity"], ang.custom["age"], ang.custom["sentence"]) == ("unspecified", 51, "DFA")
    hap = sups["1001_IEO_HAP_HI"]
    assert (hap.custom["emotion"], hap.custom["intensity"], hap.text) == ("joy", "high", "It's eleven o'clock")
    sad = sups["1002_TIE_SAD_LO"]
    assert (sad.speaker, sad.gender, sad.custom["emotion"], sad.custom["intensity"]) == (
        "crema_d_1002", "F", "sadness", "low")
    neu = sups["1091_WSI_NEU_XX"]
    assert (neu.gender, neu.text, neu.custom["emotion"]) == ("F", "We'll stop in a couple of minutes", "neutral")


def test_writes_lhotse_manifests(corpus, tmp_path):
    prepare_crema_d(corpus, tmp_path)
    back = load_prepared(tmp_path)
    assert back["all"]["recordings"]["1002_TIE_SAD_LO"].sampling_rate == 16000


def test_actor_missing_from_demographics_is_reported(tmp_path, caplog):
    make_crema_d(tmp_path, files=["1001_DFA_ANG_XX.wav", "1050_ITS_FEA_MD.wav"])
    with caplog.at_level(logging.WARNING, logger="emoslm.corpora"):
        prepared = prepare_crema_d(tmp_path)
    fea = {s.id: s for s in prepared["all"]["supervisions"]}["1050_ITS_FEA_MD"]
    assert fea.gender is None and fea.custom["emotion"] == "fear" and fea.custom["intensity"] == "medium"
    assert any("missing from VideoDemographics.csv" in r.message for r in caplog.records)


def test_empty_audio_file_is_dropped_and_reported(tmp_path, caplog):
    make_crema_d(tmp_path)
    (tmp_path / "AudioWAV" / "1076_MTI_SAD_XX.wav").write_bytes(b"")  # the release has one such file
    with caplog.at_level(logging.WARNING, logger="emoslm.corpora"):
        prepared = prepare_crema_d(tmp_path)
    assert len(prepared["all"]["supervisions"]) == 4
    assert any("unreadable audio: 1" in r.message and "1076_MTI_SAD_XX.wav" in r.message for r in caplog.records)


def test_missing_audio_folder(tmp_path):
    write_text(tmp_path / "VideoDemographics.csv", "ActorID,Age,Sex,Race,Ethnicity\n")
    with pytest.raises(CorpusError, match="AudioWAV"):
        prepare_crema_d(tmp_path)


def test_missing_demographics(tmp_path):
    write_wav(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    with pytest.raises(CorpusError, match="VideoDemographics.csv"):
        prepare_crema_d(tmp_path)


def test_unknown_codes(tmp_path):
    make_crema_d(tmp_path, files=["1001_DFA_ANG_XX.wav", "1001_XYZ_ANG_XX.wav"])
    with pytest.raises(ManifestError, match="unknown sentence code 'XYZ'") as e:
        prepare_crema_d(tmp_path)
    assert e.value.path.endswith("1001_XYZ_ANG_XX.wav")
    (tmp_path / "AudioWAV" / "1001_XYZ_ANG_XX.wav").rename(tmp_path / "AudioWAV" / "1001_DFA_JOY_XX.wav")
    with pytest.raises(ManifestError, match="unknown emotion code 'JOY'"):
        prepare_crema_d(tmp_path)


def test_malformed_demographics_row(tmp_path):
    make_crema_d(tmp_path, demographics=[("1001", "51", "Male", "Caucasian", "Not Hispanic"),
                                         ("1002", "21", "F", "Caucasian", "Not Hispanic")])
    with pytest.raises(ManifestError, match="unknown Sex 'F'") as e:
        prepare_crema_d(tmp_path)
    assert e.value.path.endswith("VideoDemographics.csv") and e.value.row == 3

import pytest

from emoslm.corpora import prepare_emodb
from emoslm.data.manifests import load_prepared
from emoslm.errors import CorpusError, ManifestError

from .fixtures import make_emodb, write_wav


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_emodb(tmp_path_factory.mktemp("emodb"))


def test_labels_speakers_texts(corpus):
    prepared = prepare_emodb(corpus)
    sups = {s.id: s for s in prepared["all"]["supervisions"]}
    assert len(sups) == 5
    f = sups["03a01Fa"]
    assert (f.speaker, f.gender, f.language, f.text) == ("emodb_03", "M", "de", "Der Lappen liegt auf dem Eisschrank.")
    assert f.custom["emotion"] == "joy" and f.custom["emotion_orig"] == "F" and f.custom["version"] == "a"
    assert f.custom["age"] == 31 and f.custom["emotion_word"] == "Freude"
    assert sups["03a01Nc"].custom["emotion"] == "neutral" and sups["03a01Nc"].custom["version"] == "c"
    w = sups["08a02Wa"]
    assert (w.speaker, w.gender, w.custom["emotion"], w.text) == (
        "emodb_08", "F", "anger", "Das will sie am Mittwoch abgeben.")
    t = sups["16b10Tb"]
    assert (t.gender, t.custom["emotion"]) == ("F", "sadness")
    assert t.text == "Die wird auf dem Platz sein, wo wir sie immer hinlegen."
    assert sups["11b03Lb"].custom["emotion"] == "boredom" and sups["11b03Lb"].gender == "M"


def test_writes_lhotse_manifests(corpus, tmp_path):
    prepare_emodb(corpus, tmp_path)
    back = load_prepared(tmp_path)
    assert back["all"]["recordings"]["16b10Tb"].sampling_rate == 16000
    assert {s.speaker for s in back["all"]["supervisions"]} == {"emodb_03", "emodb_08", "emodb_11", "emodb_16"}


def test_missing_wav_folder(tmp_path):
    with pytest.raises(CorpusError, match="wav"):
        prepare_emodb(tmp_path)


def test_unknown_emotion_letter(tmp_path):
    bad = write_wav(tmp_path / "wav" / "03a01Xa.wav")
    with pytest.raises(ManifestError, match="unknown emotion letter 'X'") as e:
        prepare_emodb(tmp_path)
    assert e.value.path == str(bad)


def test_unknown_text_code(tmp_path):
    write_wav(tmp_path / "wav" / "03a03Fa.wav")
    with pytest.raises(ManifestError, match="unknown text code 'a03'"):
        prepare_emodb(tmp_path)


def test_malformed_file_name(tmp_path):
    write_wav(tmp_path / "wav" / "speaker3_happy.wav")
    with pytest.raises(ManifestError, match="03a01Fa"):
        prepare_emodb(tmp_path)

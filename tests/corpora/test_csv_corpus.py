import csv

import pytest

from emoslm.corpora import prepare_csv
from emoslm.data.manifests import load_prepared
from emoslm.errors import CorpusError, ManifestError

from .fixtures import write_wav


def make_table(root, rows):
    for r in rows:
        write_wav(root / "audio" / r["audio_path"].split("/")[-1])
    path = root / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


ROWS = [
    {"id": "u1", "audio_path": "audio/u1.wav", "speaker": "spk_a", "emotion": "Angry", "split": "train", "gender": "F",
     "text": "no", "mood_score": "0.3"},
    {"id": "u2", "audio_path": "audio/u2.wav", "speaker": "spk_b", "emotion": "calme", "split": "test", "gender": "M",
     "text": "", "mood_score": ""},
]


def test_table_with_label_map(tmp_path):
    path = make_table(tmp_path, ROWS)
    prepared = prepare_csv(path, tmp_path / "out", corpus="mydata", label_map={"calme": "calm"})
    assert {s: len(p["supervisions"]) for s, p in prepared.items()} == {"train": 1, "test": 1}
    u1 = prepared["train"]["supervisions"][0]
    assert (u1.speaker, u1.gender, u1.text) == ("spk_a", "F", "no")
    assert u1.custom["emotion"] == "anger" and u1.custom["emotion_orig"] == "Angry"
    assert u1.custom["corpus"] == "mydata" and u1.custom["mood_score"] == "0.3"
    assert prepared["test"]["supervisions"][0].custom["emotion"] == "calm"
    back = load_prepared(tmp_path / "out", "mydata")
    assert sorted(back) == ["test", "train"]


def test_unknown_label_names_the_row(tmp_path):
    path = make_table(tmp_path, ROWS)
    with pytest.raises(ManifestError) as e:
        prepare_csv(path)
    assert e.value.row == 3 and "calme" in str(e.value)


def test_missing_or_directory(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        prepare_csv(tmp_path / "nope.csv")
    with pytest.raises(CorpusError, match="directory"):
        prepare_csv(tmp_path)

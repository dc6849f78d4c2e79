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


# ------------------------------------------------------------------ column aliases, derived ids, label maps


def write_rows(path, header, rows, sep=","):
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n")
    return path


@pytest.mark.parametrize("audio_col", ["path", "file", "wav", "audio", "filename", "audio_file", " Path ", "WAV",
                                       "Audio_File"])
def test_audio_label_and_speaker_columns_by_other_names(tmp_path, audio_col):
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    table = write_rows(tmp_path / "t.csv", [audio_col, " Speaker_ID", "LABEL ", "Split"],
                       [["a.wav", "s1", "angry", "train"], ["b.wav", "s2", "sad", "train"]])
    sups = prepare_csv(table)["train"]["supervisions"]
    assert [(s.id, s.speaker, s.custom["emotion"]) for s in sups] == [("a", "s1", "anger"), ("b", "s2", "sadness")]
    assert not {"path", "file", "label", "speaker_id"} & set(sups[0].custom)  # renamed, not kept as extras


def test_the_first_accepted_name_wins_and_the_others_stay_extra_columns(tmp_path):
    write_wav(tmp_path / "a.wav")
    table = write_rows(tmp_path / "t.csv", ["wav", "file", "spk", "emotion", "label"],  # file before wav
                       [["elsewhere.wav", "a.wav", "s1", "joy", "happy-ish"]])
    s = prepare_csv(table)["all"]["supervisions"][0]
    assert s.recording_id.endswith("a.wav") and s.speaker == "s1" and s.custom["emotion"] == "joy"
    assert s.custom["wav"] == "elsewhere.wav" and s.custom["label"] == "happy-ish"


def test_ids_derived_from_audio_stems_unique_and_deterministic(tmp_path):
    for name in ("a", "b", "talk", "dup"):
        write_wav(tmp_path / "w" / f"{name}.wav", seconds=1.0)
    write_wav(tmp_path / "v" / "a.wav")  # same stem, another folder
    rows = [["w/a.wav", "s1", "neutral", "", ""], ["w/b.wav", "s1", "angry", "", ""],
            ["w/talk.wav", "s2", "joy", "0", "0.4"], ["w/talk.wav", "s2", "sad", "0.5", "0.4"],
            ["w/dup.wav", "s3", "fear", "", ""], ["w/dup.wav", "s3", "fear", "", ""], ["v/a.wav", "s4", "calm", "", ""]]
    table = write_rows(tmp_path / "t.csv", ["audio", "speaker", "emotion", "start", "duration"], rows)
    ids = [s.id for s in prepare_csv(table)["all"]["supervisions"]]
    assert ids == ["a", "b", "talk_0", "talk_0.5", "dup", "dup_2", "a_2"]
    assert [s.id for s in prepare_csv(table)["all"]["supervisions"]] == ids


def test_an_id_column_with_an_empty_id_is_still_an_error(tmp_path):
    write_wav(tmp_path / "a.wav")
    table = write_rows(tmp_path / "t.csv", ["id", "audio_path", "speaker", "emotion"], [["", "a.wav", "s1", "joy"]])
    with pytest.raises(ManifestError, match="missing required column 'id'"):
        prepare_csv(table)


def test_a_missing_column_lists_the_columns_found_and_the_accepted_names(tmp_path):
    write_wav(tmp_path / "a.wav")
    table = write_rows(tmp_path / "t.csv", ["wave_file", "who", "emotion"], [["a.wav", "s1", "joy"]])
    with pytest.raises(ManifestError) as e:
        prepare_csv(table)
    msg = str(e.value)
    assert "no audio_path and no speaker column" in msg
    assert "Columns found: 'wave_file', 'who', 'emotion'" in msg
    assert "audio_path: audio_path, path, file, wav, audio, filename, audio_file" in msg
    assert "speaker: speaker, speaker_id, spk" in msg


MAPS = {
    "map.yaml": "calme: calm\nheureux: happy\n",
    "map.json": '{"calme": "calm", "heureux": "joy"}',
    "map.csv": "ours,emotion\ncalme,calm\nheureux,joy\n",
    "bare.csv": "calme,calm\nheureux,Happy\n",
    "map.tsv": "calme\tcalm\nheureux\tjoy\n",
}


@pytest.fixture
def french_table(tmp_path):
    for name in ("u1", "u2", "u3"):
        write_wav(tmp_path / f"{name}.wav")
    return write_rows(tmp_path / "t.csv", ["file", "speaker", "label"],
                      [["u1.wav", "s1", "calme"], ["u2.wav", "s1", "Heureux"], ["u3.wav", "s2", "angry"]])


@pytest.mark.parametrize("name", sorted(MAPS))
def test_label_map_files(french_table, name):
    (french_table.parent / name).write_text(MAPS[name])
    sups = prepare_csv(french_table, label_map=french_table.parent / name)["all"]["supervisions"]
    assert [s.custom["emotion"] for s in sups] == ["calm", "joy", "anger"]  # keys matched in any case
    assert [s.custom["emotion_orig"] for s in sups] == ["calme", "Heureux", "angry"]


def test_label_map_on_the_command_line(french_table, capsys):
    from emoslm.cli import main

    root = french_table.parent
    (root / "map.yaml").write_text(MAPS["map.yaml"])
    assert main(["prepare", "csv", str(french_table), str(root / "o1"), "--label-map", str(root / "map.yaml")]) == 0
    assert main(["prepare", "csv", str(french_table), str(root / "o2"), "--set", f"label_map={root / 'map.yaml'}"]) == 0
    assert main(["prepare", "csv", str(french_table), str(root / "o3"), "--set",
                 "label_map={calme: calm, heureux: joy}", "--set", "corpus=fr"]) == 0
    assert "all: 3 utterances, 2 speakers" in capsys.readouterr().out
    assert [s.custom["emotion"] for s in load_prepared(root / "o1")["all"]["supervisions"]] == ["calm", "joy", "anger"]
    assert len(load_prepared(root / "o3", "fr")["all"]["supervisions"]) == 3
    assert main(["prepare", "csv", str(french_table), str(root / "o4"), "--label-map", str(root / "map.yaml"),
                 "--set", "label_map={a: b}"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["prepare", "ravdess", str(root), str(root / "o5"), "--label-map", str(root / "map.yaml")]) == 2
    assert "has no option(s) label_map" in capsys.readouterr().err


def test_unknown_labels_are_listed_with_their_rows_and_the_allowed_ones(french_table):
    with pytest.raises(ManifestError) as e:
        prepare_csv(french_table)
    msg = str(e.value)
    assert "unknown emotion label(s) 'calme' (row 2), 'Heureux' (row 3)." in msg
    assert "Allowed: neutral, anger, joy, sadness, fear, disgust, surprise, calm" in msg and "--label-map" in msg
    assert e.value.row == 2
    with pytest.raises(ManifestError, match=r"'Heureux' \(row 3\) \(after the label map\)"):
        prepare_csv(french_table, label_map={"calme": "calm"})


def test_bad_label_maps(tmp_path, french_table):
    cases = {
        "target.yaml": ("calme: tranquil\n", "'calme' -> 'tranquil': not a canonical label; canonical labels: neutral"),
        "list.yaml": ("- calme\n", "expected a mapping"),
        "bad.json": ("{calme", "not valid JSON"),
        "three.csv": ("a,b,c\n", "two columns"),
        "map.txt": ("calme: calm\n", "use a .yaml"),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ManifestError, match=words.replace("(", r"\(")):
            prepare_csv(french_table, label_map=tmp_path / name)
    with pytest.raises(ManifestError, match="no such file"):
        prepare_csv(french_table, label_map=tmp_path / "nope.yaml")
    with pytest.raises(CorpusError, match="label_map must be"):
        prepare_csv(french_table, label_map=3)

"""Flat CSV/JSONL manifests round-trip with lhotse manifests; the command line reports errors clearly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from emoslm.cli import main
from emoslm.data.manifests import export_table, import_table, load_prepared
from emoslm.synth.corpus import PRESETS, synthesize_corpus

TINY = replace(PRESETS["tiny"], n_speakers=4, sentences_per_speaker=1, dev_speakers=1, test_speakers=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "synth"
    synthesize_corpus(out, TINY, workers=1, progress=False)
    return out


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_flat_table_round_trip(corpus, tmp_path, suffix):
    prepared = load_prepared(corpus, "synth")
    table = export_table(prepared, tmp_path / f"all{suffix}")
    back = import_table(table, corpus="synth")
    assert set(back) == set(prepared)
    for split in prepared:
        a = {s.id: s for s in prepared[split]["supervisions"]}
        b = {s.id: s for s in back[split]["supervisions"]}
        assert a.keys() == b.keys()
        for uid, s in a.items():
            t = b[uid]
            assert (t.speaker, t.gender, t.text) == (s.speaker, s.gender, s.text)
            assert abs(t.duration - s.duration) < 1e-6
            for key in ("emotion", "emotion_orig", "pitch_level", "tempo_level", "energy_level", "voice"):
                assert str(t.custom[key]) == str(s.custom[key]), key


def test_cli_manifest_export_import_and_info(corpus, tmp_path, capsys):
    assert main(["manifest", "export", str(corpus), str(tmp_path / "t.csv"), "--corpus", "synth"]) == 0
    assert main(["manifest", "import", str(tmp_path / "t.csv"), str(tmp_path / "imp"), "--corpus", "mine"]) == 0
    out = capsys.readouterr().out
    assert "train:" in out and "utterances" in out
    assert len(load_prepared(tmp_path / "imp", "mine")["train"]["supervisions"]) == 2 * 7
    assert main(["info"]) == 0
    assert "espeak-ng backend" in capsys.readouterr().out


def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys):
    assert main(["prepare", "ravdess", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emoslm: error:") and "nowhere" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("id,audio_path,speaker,emotion\nu1,missing.wav,s1,angry\n")
    assert main(["manifest", "import", str(bad), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "row 2" in err and "missing.wav" in err
    assert main(["train", "speech_lm", "--config", "no_such_config"]) == 2
    assert "packaged configs" in capsys.readouterr().err
    assert main(["predict"]) == 2  # nothing to predict: one line, not argparse's usage dump
    assert "emoslm: error:" in capsys.readouterr().err

"""Batch inference and long audio: batches give the single-file answers, a broken file costs only its own row, long
audio is predicted segment by segment, and ``emoslm predict`` reads files, folders, lists and manifests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoslm.cli import main
from emoslm.errors import AudioError, EmoslmError
from emoslm.personalization.inference import EmotionRecognizer
from emoslm.service.testing import build_tiny_bundle, tone
from tests.test_segments import SPANS, long_signal  # the 70 s signal of tones and silences

SR = 16000
LABELS4 = ["anger", "joy", "neutral", "sadness"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def rec(bundle) -> EmotionRecognizer:
    rec = EmotionRecognizer.load(bundle)
    rec.enroll("alice", [(tone(120 + 20 * i), lab) for i, lab in enumerate(LABELS4)])
    return rec


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two speakers' folders of tone clips (varied lengths; one clip nested a level down, one as FLAC)."""
    root = tmp_path_factory.mktemp("clips")
    for s, spk in enumerate(["alice", "bob"]):
        for i in range(5):
            sub = root / spk / ("more" if i == 4 else "")
            sub.mkdir(parents=True, exist_ok=True)
            ext = "flac" if i == 3 else "wav"
            sf.write(sub / f"{spk}_{i}.{ext}", tone(100 + 30 * i + 7 * s, 0.4 + 0.3 * i), SR)
    return root


def _close(a, b, atol=1e-4):
    assert a.label == b.label and a.n_enroll == b.n_enroll and a.probs.keys() == b.probs.keys()
    assert np.allclose(list(a.probs.values()), list(b.probs.values()), atol=atol)
    assert b.confidence == pytest.approx(max(b.probs.values()))


def test_batch_equals_single_predictions(rec):
    items = [tone(90 + 17 * i, 0.3 + 0.11 * i) for i in range(11)]  # lengths differ: padding is exercised
    for spk in (None, "alice"):
        single = [rec.predict(x, speaker=spk, embeddings=True) for x in items]
        batch = rec.predict_batch(items, speaker=spk, batch_size=4, embeddings=True)
        assert len(batch) == len(items)
        for a, b in zip(single, batch):
            _close(a, b)
            assert np.allclose(a.embedding, b.embedding, atol=1e-5) and len(b.embedding) == len(a.embedding)
        assert all(p.enroll_ids == rec.speakers["alice"].ids for p in batch) if spk else True
    # a speaker per item: grouped, each against its own enrollment, answers back in the items' order
    mixed = rec.predict_batch(items, speaker=["alice" if i % 2 else None for i in range(len(items))], batch_size=3)
    for i, (x, p) in enumerate(zip(items, mixed)):
        _close(rec.predict(x, speaker="alice" if i % 2 else None), p)
    # inline enrollment pairs, as predict takes them
    pairs = [(tone(200), "fear"), (tone(260), "joy")]
    for x, p in zip(items[:4], rec.predict_batch(items[:4], enroll_pairs=pairs, batch_size=16)):
        _close(rec.predict(x, enroll_pairs=pairs), p)
        assert p.n_enroll == 2


def test_batch_equals_single_with_multi_token_labels(bundle, monkeypatch):
    """Labels of several tokens (e.g. SmolLM2's tokenizer) take the per-(target, label) path."""
    rec = EmotionRecognizer.load(bundle)
    ids = rec.model._label_ids
    monkeypatch.setattr(rec.model, "_label_ids", [x + ids[(j + 1) % len(ids)] if j % 2 else x
                                                  for j, x in enumerate(ids)])
    rec.enroll("bob", [(tone(130), "anger"), (tone(170), "sadness")])
    items = [tone(100 + 40 * i, 0.5 + 0.2 * i) for i in range(5)]
    for x, p in zip(items, rec.predict_batch(items, speaker="bob", batch_size=2)):
        _close(rec.predict(x, speaker="bob"), p)


def test_broken_file_gives_an_error_row_and_the_others_proceed(rec, tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(150), SR)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(good.read_bytes()[:30])
    items = [str(good), str(broken), str(tmp_path / "missing.wav"), tone(150)[:300], tone(180)]
    preds = rec.predict_batch(items, speaker="alice", batch_size=2)
    assert [p.ok for p in preds] == [True, False, False, False, True]
    assert "broken.wav" in preds[1].error and "missing.wav" in preds[2].error and "too short" in preds[3].error
    assert preds[1].label == "" and preds[1].probs == {} and preds[1].confidence is None
    _close(rec.predict(str(good), speaker="alice"), preds[0])
    _close(rec.predict(tone(180), speaker="alice"), preds[4])
    with pytest.raises(EmoslmError, match="batch_size"):
        rec.predict_batch(items, batch_size=0)


def test_predict_segments_of_long_audio(rec, tmp_path):
    wave = long_signal()  # 70 s: longer than what load_audio (and predict) take
    path = tmp_path / "long.wav"
    sf.write(path, wave, SR)
    with pytest.raises(AudioError, match="too long: 70.0 s .*use predict_segments"):
        rec.predict(str(path))
    fixed = rec.predict_segments(str(path), speaker="alice", window_s=4.0)
    assert len(fixed) == 18 and (fixed[0].start, fixed[-1].end) == (0.0, 70.0)
    assert all(p.label in p.probs and abs(sum(p.probs.values()) - 1) < 1e-5 for p in fixed)
    # each window's answer is predict's answer for that stretch of audio
    third = rec.predict(wave[8 * SR: 12 * SR], speaker="alice")
    assert np.allclose(list(third.probs.values()), list(fixed[2].probs.values()), atol=1e-4)
    energy = rec.predict_segments(wave, mode="energy", window_s=4.0)
    assert energy and all(any(a - 0.2 <= p.start and p.end <= b + 0.2 for a, b in SPANS) for p in energy)
    with pytest.raises(AudioError, match=r"too long: 70\.0 s .*max_seconds=60 s"):
        rec.predict_segments(str(path), max_seconds=60)
    with pytest.raises(AudioError, match="max_seconds=30"):
        rec.predict_segments(wave, max_seconds=30)
    with pytest.raises(EmoslmError, match="unknown segmentation mode"):
        rec.predict_segments(wave, mode="vad")


# ------------------------------------------------------------------------------------------ the command line


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_one_target_prints_the_pretty_answer(bundle, clips, capsys):
    f = clips / "alice" / "alice_0.wav"
    assert main(["predict", str(f), "--bundle", str(bundle), "--enroll", f"{clips / 'alice' / 'alice_1.wav'}:joy"]) == 0
    out = capsys.readouterr().out
    assert "(1-shot," in out and out.count("%") == 7


def test_cli_folder_and_list_to_jsonl_and_csv(bundle, clips, tmp_path, capsys):
    broken = tmp_path / "broken.wav"
    broken.write_bytes((clips / "bob" / "bob_0.wav").read_bytes()[:40])
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my files\n{clips / 'bob' / 'bob_1.wav'}\n\nbroken.wav\n")  # relative to the list's folder
    out = tmp_path / "o.jsonl"
    args = ["predict", str(clips / "alice"), f"@{lst}", "--bundle", str(bundle), "--out", str(out), "--embeddings",
            "--enroll", f"{clips / 'bob' / 'bob_2.wav'}:anger", "--batch-size", "3", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "utterances/s" in printed and "predicted labels" in printed and "1 of 7 rows failed" in printed
    rows = _jsonl(out)
    assert [r["id"] for r in rows[:5]] == ["alice_0.wav", "alice_1.wav", "alice_2.wav", "alice_3.flac",
                                           "more/alice_4.wav"]
    assert rows[-1]["path"] == str(broken) and "broken.wav" in rows[-1]["error"] and rows[-1]["label"] == ""
    ok = [r for r in rows if r["error"] is None]
    assert len(ok) == 6 and all(r["n_enroll"] == 1 and r["enroll_ids"] == [str(clips / "bob" / "bob_2.wav")]
                                and abs(sum(r["probs"].values()) - 1) < 1e-5 and len(r["embedding"]) > 0
                                and r["confidence"] == pytest.approx(max(r["probs"].values())) for r in ok)
    # the same through --list and CSV; the probabilities are the JSONL's
    out_csv = tmp_path / "o.csv"
    assert main(["predict", "--list", str(lst), str(clips / "alice"), "--bundle", str(bundle), "--out",
                 str(out_csv), "--enroll", f"{clips / 'bob' / 'bob_2.wav'}:anger", "--quiet"]) == 0
    table = list(csv.DictReader(out_csv.open()))
    assert len(table) == 7 and {"id", "path", "label", "confidence", "p_anger", "p_neutral", "n_enroll",
                                "enroll_ids", "error"} <= set(table[0])
    by_path = {r["path"]: r for r in table}
    for r in ok:
        assert float(by_path[r["path"]]["p_joy"]) == pytest.approx(r["probs"]["joy"], abs=1e-5)
    assert by_path[str(broken)]["error"] and by_path[str(broken)]["p_joy"] == ""


def _manifest(clips: Path, out: Path) -> Path:
    from lhotse import Recording, RecordingSet, SupervisionSet

    from emoslm.data.manifests import make_supervision, save_prepared

    recs, sups = [], []
    for spk in ("alice", "bob"):
        for i, f in enumerate(sorted((clips / spk).rglob("*.wav"))):
            r = Recording.from_file(f, recording_id=f.stem)
            recs.append(r)
            sups.append(make_supervision(f.stem, f.stem, r.duration, speaker=spk, emotion=LABELS4[i % 4],
                                         corpus="mine"))
    save_prepared({"test": {"recordings": RecordingSet.from_recordings(recs),
                            "supervisions": SupervisionSet.from_segments(sups)}}, out, "mine")
    return out


def test_cli_manifest_with_an_enrollment_table(bundle, clips, tmp_path, capsys):
    man = _manifest(clips, tmp_path / "man")
    table = tmp_path / "enroll.csv"
    table.write_text("speaker,file,label\n"
                     f"alice,{clips / 'alice' / 'alice_0.wav'},neutral\nalice,{clips / 'alice' / 'alice_1.wav'},joy\n"
                     f"bob,{clips / 'bob' / 'bob_0.wav'},anger\n")
    out = tmp_path / "m.jsonl"
    assert main(["predict", "--manifest", str(man), "--enroll-table", str(table), "--bundle", str(bundle),
                 "--out", str(out), "--quiet"]) == 0
    assert "accuracy against the manifest's emotions" in capsys.readouterr().out
    rows = _jsonl(out)
    assert len(rows) == 8 and {r["speaker"] for r in rows} == {"alice", "bob"}
    assert all(r["n_enroll"] == (2 if r["speaker"] == "alice" else 1) for r in rows)
    assert all(r["reference"] in LABELS4 for r in rows)
    # the same predictions as one speaker at a time through the API
    rec = EmotionRecognizer.load(bundle)
    rec.enroll("alice", [(str(clips / "alice" / "alice_0.wav"), "neutral"), (str(clips / "alice" / "alice_1.wav"),
                                                                            "joy")])
    r0 = next(r for r in rows if r["id"] == "alice_2")
    p = rec.predict(str(clips / "alice" / "alice_2.wav"), speaker="alice")
    assert np.allclose([r0["probs"][k] for k in p.probs], list(p.probs.values()), atol=1e-4)
    # --speaker keeps one speaker's utterances; files with a many-speaker table need --speaker
    assert main(["predict", "--manifest", str(man), "--enroll-table", str(table), "--speaker", "bob", "--bundle",
                 str(bundle), "--out", str(out), "--quiet"]) == 0
    assert {r["speaker"] for r in _jsonl(out)} == {"bob"}
    assert main(["predict", str(clips / "bob"), "--enroll-table", str(table), "--bundle", str(bundle)]) == 2
    assert "--speaker" in capsys.readouterr().err
    assert main(["predict", "--manifest", str(man), "--split", "dev", "--bundle", str(bundle)]) == 2
    assert "no split dev (has: test)" in capsys.readouterr().err


def test_cli_segments_rows_with_times(bundle, tmp_path, capsys):
    path = tmp_path / "long.wav"
    sf.write(path, long_signal(), SR)
    out = tmp_path / "seg.csv"
    assert main(["predict", str(path), "--segment", "fixed", "--window", "5", "--bundle", str(bundle), "--out",
                 str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 14 and [float(r["start"]) for r in rows[:3]] == [0.0, 5.0, 10.0] and rows[-1]["end"] == "70.0"
    assert all(r["label"] and r["p_anger"] for r in rows)
    capsys.readouterr()
    assert main(["predict", str(path), "--segment", "energy", "--bundle", str(bundle)]) == 0
    printed = capsys.readouterr().out
    first = printed.split()[0]  # a row per speech region: start-end, label, confidence
    assert float(first.split("-")[0]) == pytest.approx(0.4, abs=0.05) and printed.count("%") > len(SPANS)
    assert main(["predict", str(path), "--segment", "energy", "--max-seconds", "60", "--bundle", str(bundle)]) == 0
    assert "max_seconds=60" in capsys.readouterr().out  # the file's row carries the error


@pytest.mark.parametrize("args, message", [
    (["predict"], "nothing to predict"),
    (["predict", "x.wav", "--out", "o.txt"], "--out must end in .jsonl or .csv"),
    (["predict", "x.wav", "--enroll-table", "nowhere.csv"], "cannot read enrollment table"),
    (["predict", "x.wav", "--enroll", "x.wav"], "--enroll expects FILE:LABEL"),
    (["predict", "x.wav"], "x.wav: no such file"),
    (["predict", "a.wav", "b.wav", "--decode", "beam"], "--decode beam predicts one file"),
])
def test_cli_errors_exit_2_without_a_traceback(bundle, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "o.txt").write_text("")
    assert main(args + ["--bundle", str(bundle), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emoslm: error:") and message in err and "Traceback" not in err

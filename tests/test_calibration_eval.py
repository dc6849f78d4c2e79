"""Calibration end to end (issue 14): ``emoslm eval`` fits a temperature on the dev split and reports the ECE
before and after; ``emoslm calibrate`` writes a bundle's calibration.json, which the recognizer then applies; and
abstention (``min_confidence``) in the Python API and ``emoslm predict``."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from emoslm.cli import main
from emoslm.corpora import prepare
from emoslm.errors import EmoslmError
from emoslm.personalization.evaluation import (
    EvalPlan,
    ICLModelSpec,
    run_eval,
    write_report,
)
from emoslm.personalization.inference import (
    CALIBRATION_FILE,
    EmotionRecognizer,
    read_calibration,
    save_bundle,
)
from emoslm.personalization.report import Results
from emoslm.service.testing import build_tiny_bundle, tone
from tests.corpora.fixtures import make_ravdess

FILES = [f"03-01-{emo:02d}-01-01-01-{actor:02d}.wav" for actor in range(1, 7) for emo in (1, 3, 4, 5)]
LABELS4 = ["anger", "joy", "neutral", "sadness"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A RAVDESS-like corpus of one split, and the same cut into train/dev/test (speaker-disjoint)."""
    root = tmp_path_factory.mktemp("calibration")
    prepare("ravdess", make_ravdess(root / "RAVDESS", files=FILES), root / "own")
    assert main(["split", str(root / "own"), str(root / "split"), "--set", "train=0.5", "--set", "dev=0.17",
                 "--set", "test=0.33"]) == 0
    return root / "own", root / "split"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny"))


def _plan(corpus, out, bundle, k_max: int = 2) -> EvalPlan:
    return EvalPlan(corpus=str(corpus), out_dir=str(out), icl=[ICLModelSpec("tiny", str(bundle / "speech_lm"),
                                                                            str(bundle / "encoder"))],
                    peer=False, shuffled_control=False, k_max=k_max, lo_k_max=0)


def test_eval_fits_a_temperature_on_dev_and_reports_the_ece(corpora, bundle, tmp_path):
    _, split = corpora
    results = run_eval(_plan(split, tmp_path / "eval", bundle), progress=False)
    paths = write_report(results, tmp_path / "eval")
    cal = results.calibration
    assert cal["status"] == "fitted on the dev split" and cal["split"] == "dev"
    fit = cal["models"]["tiny"]
    assert fit["temperature"] > 0 and fit["n_dev"] > 0
    test = fit["test"]
    assert sorted(test["per_k"]) == ["0", "1", "2"] and test["n"] == sum(p["n"] for p in test["per_k"].values())
    # the test ECE is measured on the same episodes the tables score: n of the 0-shot entry
    assert test["per_k"]["0"]["n"] == results.get("tiny", None, 0).result["n"]
    for key in ("ece_before", "ece_after"):
        assert 0 <= test[key] <= 1
    assert sum(b["count"] for b in test["reliability_after"]) == test["n"]
    # scaling that lowers the dev NLL cannot raise it on the data it was fitted on; test NLL is reported too
    assert fit["dev_ece_after"] >= 0 and test["nll_after"] > 0
    # the three renderings: results.json keeps it, report.md has the table, report.html the reliability diagram
    again = Results.from_json(paths["json"])
    assert again.calibration["models"]["tiny"]["temperature"] == pytest.approx(fit["temperature"])
    md = paths["markdown"].read_text()
    assert "### Calibration: expected calibration error" in md and "fitted on the dev split" in md
    assert f"{fit['temperature']:.3f}" in md
    html = paths["html"].read_text()
    assert "<h2>Calibration</h2>" in html and 'alt="reliability diagram"' in html
    # the leakage check: the speakers are disjoint, but every RAVDESS actor says the same statement
    leak = results.metadata.leakage_check
    assert (leak["reference"], leak["target"], leak["shared_speakers"]) == ("train", "test", 0)
    assert leak["text_share"] == 1 and leak["shared_sentences"] == 1 and leak["shared_base_voices"] is None
    line = ("Leakage check (test vs train)**: 0 shared speakers; 100 % of test utterances have a sentence that "
            "also occurs in train (1 sentence); base voices unknown")
    assert line in md and again.metadata.leakage_check == leak
    assert "Leakage check (test vs train)</td><td>0 shared speakers; 100 %" in html
    # the dev episodes are cached beside the test ones, and at most the cap per k
    dev_files = sorted(p.name for p in (tmp_path / "eval" / "episodes" / "dev").iterdir())
    assert dev_files == ["0-shot_k0.jsonl", "TU+LD_k1.jsonl", "TU+LD_k2.jsonl"]


def test_the_egemaps_peer_normalisation_is_chosen_on_dev(corpora, bundle, tmp_path):
    """The peer at its best: each normalisation fitted on train and scored on the dev episodes; the best one is
    the peer the test episodes see, and the report says what the choice rested on."""
    _, split = corpora
    plan = replace(_plan(split, tmp_path / "eval", bundle), peer=True)
    results = run_eval(plan, progress=False)
    peer = next(m for m in results.models if m.kind == "peer")
    scores = peer.settings["dev_ua_spk"]
    assert sorted(scores) == ["enroll_mean", "enroll_z"] and all(0 <= v <= 1 for v in scores.values())
    assert peer.settings["norm"] == max(scores, key=lambda n: (scores[n], n == "enroll_mean"))
    assert peer.settings["selected_on"].startswith("dev episodes")
    assert results.get(peer.name, None, 0).result["n"] > 0


def test_eval_without_a_dev_split_says_calibration_was_not_fitted(corpora, bundle, tmp_path, monkeypatch, capsys):
    one, _ = corpora
    monkeypatch.chdir(tmp_path)  # no embedded corpus here: the training data of the models are unknown
    results = run_eval(_plan(one, tmp_path / "eval", bundle, k_max=1), progress=False)
    paths = write_report(results, tmp_path / "eval")
    assert results.calibration["models"] == {}
    md = paths["markdown"].read_text()
    assert "Calibration**: temperature scaling not fitted (the corpus has no dev split)" in md
    assert ("Leakage check (all vs training data)**: unknown (the corpus has no train split of its own and "
            "data/synth_demo does not exist)") in md
    assert "Leakage check (all vs training data)" in capsys.readouterr().out  # the terminal report
    assert "### Calibration" not in md and "<h2>Calibration</h2>" not in paths["html"].read_text()


def test_calibrate_writes_the_temperature_that_predictions_then_use(corpora, bundle, tmp_path, capsys):
    _, split = corpora
    assert main(["calibrate", "--bundle", str(bundle), "--corpus", str(split), "--k", "0,1,2", "--quiet"]) == 0
    out = capsys.readouterr().out
    info = json.loads((bundle / CALIBRATION_FILE).read_text())
    assert info["temperature"] > 0 and info["split"] == "dev" and info["ks"] == [0, 1, 2] and info["n"] > 0
    assert "ece_before" in info and "ece_after" in info and "dev split" in info["fitted_on"]
    assert f"temperature {info['temperature']:.3f}" in out and "ECE on those episodes" in out
    raw = EmotionRecognizer.load(bundle, calibrated=False)
    cal = EmotionRecognizer.load(bundle)
    assert cal.temperature == pytest.approx(info["temperature"]) and raw.temperature is None
    items = [tone(100 + 37 * i, 0.5 + 0.1 * i) for i in range(4)]
    for rec in (raw, cal):
        rec.enroll("alice", [(tone(120 + 20 * i), lab) for i, lab in enumerate(LABELS4)])
    for single_raw, single_cal, batch_cal, x in zip([raw.predict(x, "alice") for x in items],
                                                    [cal.predict(x, "alice") for x in items],
                                                    cal.predict_batch(items, "alice", batch_size=3), items):
        assert single_cal.calibrated and not single_raw.calibrated
        assert single_cal.label == single_raw.label  # scaling keeps the argmax
        assert not np.allclose(list(single_cal.probs.values()), list(single_raw.probs.values()), atol=1e-4)
        # probs = softmax(log p / T) of the uncalibrated ones
        logp = np.log(np.array(list(single_raw.probs.values())))
        expect = np.exp(logp / cal.temperature) / np.exp(logp / cal.temperature).sum()
        assert np.allclose(list(single_cal.probs.values()), expect, atol=1e-4)
        assert np.allclose(list(batch_cal.probs.values()), list(single_cal.probs.values()), atol=1e-4)
        assert batch_cal.calibrated
    segs = cal.predict_segments(np.concatenate(items), "alice", window_s=0.5)
    assert segs and all(s.calibrated for s in segs)
    # a bundle rewritten with another model drops the temperature fitted for the old one
    save_bundle(tmp_path / "re", bundle / "encoder", cal.model)
    (tmp_path / "re" / CALIBRATION_FILE).write_text("{}")
    save_bundle(tmp_path / "re", bundle / "encoder", cal.model)
    assert read_calibration(tmp_path / "re") is None


def test_calibrate_errors_are_one_line(corpora, bundle, tmp_path, capsys):
    one, split = corpora
    assert main(["calibrate", "--bundle", str(bundle), "--corpus", str(one), "--quiet"]) == 2
    assert main(["calibrate", "--bundle", str(bundle), "--corpus", str(split), "--k", "0,x"]) == 2
    assert main(["calibrate", "--bundle", str(bundle), "--corpus", str(split), "--k", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("emoslm: error:") for line in err)
    assert "no split 'dev'" in err[0] and "--k expects whole numbers" in err[1] and "k must be" in err[2]


def test_abstain_in_the_python_api(bundle):
    rec = EmotionRecognizer.load(bundle, calibrated=False)
    x = tone(150)
    p = rec.predict(x)
    assert not p.abstained and p.label is not None
    never, always = rec.predict(x, min_confidence=0.0), rec.predict(x, min_confidence=1.0)
    assert not never.abstained and never.label == p.label
    assert always.abstained and always.label is None and always.probs == pytest.approx(p.probs)
    # the recognizer's default, overridden per call
    strict = EmotionRecognizer.load(bundle, calibrated=False, min_confidence=p.confidence + 1e-3)
    assert strict.predict(x).abstained and not strict.predict(x, min_confidence=0.0).abstained
    batch = strict.predict_batch([x, tone(90)], batch_size=2)
    assert [b.abstained for b in batch] == [b.confidence < strict.min_confidence for b in batch]
    assert all(b.label is None for b in batch if b.abstained)
    segs = rec.predict_segments(np.concatenate([x, x, x]), window_s=0.8, min_confidence=1.0)
    assert segs and all(s.abstained and s.label is None for s in segs)
    for bad in (2, -0.1, "abc", float("nan")):
        with pytest.raises(EmoslmError, match="min_confidence must be a number between 0 and 1"):
            rec.predict(x, min_confidence=bad)


def test_abstain_in_emoslm_predict(bundle, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"c{i}.wav", tone(100 + 40 * i, 0.6), 16000)
    assert main(["predict", str(folder), "--bundle", str(bundle), "--min-confidence", "1", "--out",
                 str(tmp_path / "o.csv"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert len(rows) == 3 and all(r["label"] == "" and r["abstained"] == "True" for r in rows)
    assert all(float(r["confidence"]) > 0 for r in rows)
    assert main(["predict", str(folder), "--bundle", str(bundle), "--min-confidence", "0", "--out",
                 str(tmp_path / "o.jsonl"), "--quiet"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "o.jsonl")]
    assert all(r["abstained"] is False and r["label"] for r in rows)
    assert main(["predict", str(folder), "--bundle", str(bundle), "--min-confidence", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count(": abstain (") == 3  # the rows on the terminal, and the summary counts them
    assert main(["predict", str(folder / "c0.wav"), "--bundle", str(bundle), "--min-confidence", "0.99"]) == 0
    assert "abstain (confidence" in capsys.readouterr().out
    assert main(["predict", str(folder), "--bundle", str(bundle), "--out", str(tmp_path / "plain.jsonl"),
                 "--quiet"]) == 0
    assert "abstained" not in json.loads(open(tmp_path / "plain.jsonl").readline())  # no threshold: no column
    for bad in ("2", "abc"):
        assert main(["predict", str(folder), "--bundle", str(bundle), "--min-confidence", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("emoslm: error: min_confidence must be a number between 0 and 1")


def test_a_plan_restricted_to_some_k_and_settings_scores_the_full_plans_episodes(corpora, bundle, tmp_path):
    """A slow model is scored on a subset (``ks``, ``settings``): the same episodes and results as the full plan's,
    only fewer sets; the label controls at k = 0 are the model's own 0-shot result (no label to change)."""
    _, split = corpora
    full_plan = replace(_plan(split, tmp_path / "full", bundle), shuffled_control=True, calibrate=False)
    sub_plan = replace(full_plan, out_dir=str(tmp_path / "sub"), ks=(0, 2), settings=("TU+LD",))
    full, sub = run_eval(full_plan, progress=False), run_eval(sub_plan, progress=False)
    assert sorted((e.k, e.setting or "") for e in sub.of("tiny")) == [(0, ""), (2, "TU+LD")]
    assert len(full.of("tiny")) > len(sub.of("tiny"))
    for setting, k in ((None, 0), ("TU+LD", 2)):
        assert sub.get("tiny", setting, k).result == full.get("tiny", setting, k).result
    assert (tmp_path / "sub" / "episodes" / "TU+LD_k2.jsonl").read_text() == \
        (tmp_path / "full" / "episodes" / "TU+LD_k2.jsonl").read_text()
    for control in ("shuffled", "deranged"):
        name = f"tiny, {control} enrollment labels"
        assert sub.get(name, None, 0).result == sub.get("tiny", None, 0).result
        assert sub.get(name, "TU+LD", 2).result == full.get(name, "TU+LD", 2).result

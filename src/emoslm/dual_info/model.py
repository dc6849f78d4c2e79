"""The dual-information speech LM of paper 002: frozen speech encoder, frozen LLM, two adapters.

- :class:`~emoslm.models.adapters.ParalinguisticAdapter` (Eq. 4): one transformer layer (8 heads, dropout 0.1)
  over the frozen encoder's frames, masked adaptive average pooling along time to a fixed number of vectors
  ``p_len``, and a linear projection to the LLM's input size. Its output is a soft prompt ("P-Embs").
- :class:`~emoslm.models.adapters.LinguisticAdapter` (Eq. 5): every ``k`` adjacent frames concatenated (50 Hz
  Whisper frames, k = 5: 10 Hz), then two linear layers with a ReLU between (hidden size ``l_hidden``). Its
  output stands where the text-content embeddings would be ("L-Embs"), one vector per ``k`` frames.

Input layout (Fig. 2), in the LLM's own chat template: the context (system prompt and earlier turns) as text
embeddings, then the P-Embs, then the L-Embs, then the rest of the user turn (the task's instruction) and the
assistant header; the target follows, and the loss is on the target only.

Each slot has a *source* (:data:`SOURCES`): ``speech`` (the adapter's output), ``text`` (the caption for the
paralinguistic slot, the transcript for the linguistic one, embedded by the LLM's embedding table: what
Equivalence Replacement Regularization swaps in), or ``none`` (left out). An example also says which adapters
learn from it (``train_p``/``train_l``): the other adapter's output is computed without gradients, which is
how stage 2 trains one adapter with the other frozen (:mod:`emoslm.dual_info.recipe`).

The speech encoder's frames are precomputed (:mod:`emoslm.models.frozen_speech`): the model starts at them.
The shell is the shared :class:`~emoslm.models.speech_llm.SpeechLLM` (``model.speech_llm``): the LLM is frozen
(eval mode) and a registered submodule (``llm.*``); checkpoints hold the adapters only (the LLM's weights are
the package's), except for the random tiny test presets, which are saved whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# the adapters are shared (emoslm.models.adapters) and stay importable from here
from emoslm.models.adapters import LinguisticAdapter, ParalinguisticAdapter
from emoslm.models.encoders import lengths_to_mask
from emoslm.models.io import config_from_dict, config_to_dict
from emoslm.models.llm import LLMSpec, load_backbone
from emoslm.models.speech_llm import SpeechLLM, checkpoint_config

SOURCES = ("speech", "text", "none")
SPEECH_MARK = "\x00SPEECH\x00"  # where the speech slots go in the rendered chat template
_KIND = "a dual-information SLM"  # what the checkpoint errors say a folder is not


@dataclass
class DualInfoConfig:
    """Sizes of :class:`DualInfoSLM`. ``speech_dim``/``frame_rate`` are the frozen encoder's."""

    speech_dim: int = 384
    frame_rate: float = 50.0
    llm: dict = field(default_factory=lambda: {"name": "smollm2"})
    p_len: int = 8  # paralinguistic embeddings per utterance
    p_heads: int = 8
    p_layers: int = 1
    p_ff: int = 1024
    dropout: float = 0.1
    l_stack: int = 5  # k: 50 Hz -> 10 Hz
    l_hidden: int = 1024
    max_new_tokens: int = 48


@dataclass
class Example:
    """One instruction-tuning example of paper 002.

    ``frames``: the frozen encoder's output ``[T, d]`` for the spoken turn; ``context``: chat messages before
    the spoken turn (a system prompt and earlier turns); ``instruction``: text after the speech in the same
    user turn ("" for conversations); ``target``: the expected answer. ``p_source``/``l_source`` in
    :data:`SOURCES`; ``caption``/``transcript``: their text replacements.
    """

    frames: np.ndarray
    context: list[dict[str, str]]
    instruction: str
    target: str = ""
    p_source: str = "speech"
    l_source: str = "speech"
    caption: str = ""
    transcript: str = ""
    train_p: bool = True
    train_l: bool = True
    task: str = ""

    def __post_init__(self) -> None:
        for name in ("p_source", "l_source"):
            if getattr(self, name) not in SOURCES:
                raise ValueError(f"{name} must be one of {SOURCES}, got {getattr(self, name)!r}")


class DualInfoSLM(nn.Module):
    """Paper 002's speech LM over precomputed frozen-encoder frames."""

    #: the shared shell over this model's parts (attached in __init__, not a submodule: SpeechLLM.attach)
    speech_llm: SpeechLLM

    def __init__(self, cfg: DualInfoConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = load_backbone(LLMSpec(**{**cfg.llm, "mode": "frozen"}))
        self.llm = self.backbone.model  # registered: part of state_dict, train()/eval() and .to()
        hidden = self.backbone.hidden_size
        self.para = ParalinguisticAdapter(cfg.speech_dim, hidden, cfg.p_len, cfg.p_heads, cfg.p_layers, cfg.p_ff,
                                          cfg.dropout)
        self.ling = LinguisticAdapter(cfg.speech_dim, hidden, cfg.l_stack, cfg.l_hidden)
        self.tokenizer = self.backbone.tokenizer
        self._ids_cache: dict[str, list[int]] = {}
        SpeechLLM(self.backbone, {"para": self.para, "ling": self.ling}, llm_trainable=False).attach(self)

    def train(self, mode: bool = True) -> "DualInfoSLM":
        super().train(mode)
        self.speech_llm.train(mode)  # the frozen LLM back in eval mode: no dropout
        return self

    @property
    def device(self) -> torch.device:
        return self.speech_llm.device

    # ------------------------------------------------------------------------------------ text

    def _ids(self, text: str) -> list[int]:
        if text not in self._ids_cache:
            if len(self._ids_cache) > 50000:
                self._ids_cache.clear()
            self._ids_cache[text] = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._ids_cache[text]

    def _embed_text(self, text: str) -> torch.Tensor:
        ids = self._ids(text)
        if not ids:
            return torch.zeros(0, self.backbone.hidden_size, device=self.device)
        return self.speech_llm.embed(ids)

    def render(self, context: list[dict[str, str]], instruction: str) -> tuple[str, str]:
        """The chat template's text before and after the speech slots of the user turn."""
        content = SPEECH_MARK + (" " + instruction if instruction else "")
        messages = [*context, {"role": "user", "content": content}]
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:  # the tiny test tokenizers: a plain role-prefixed layout
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        before, after = text.split(SPEECH_MARK)
        return before, after

    @property
    def end_ids(self) -> list[int]:
        tok = self.tokenizer
        return [tok.eos_token_id]

    # ------------------------------------------------------------------------------------ speech

    def _frames(self, arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([max(1, a.shape[0]) for a in arrays])
        x = torch.zeros(len(arrays), int(lengths.max()), self.cfg.speech_dim, device=self.device)
        for i, a in enumerate(arrays):
            x[i, : a.shape[0]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
        return x, lengths_to_mask(lengths.to(self.device), x.shape[1])

    def _speech_slots(self, batch: Sequence[Example]) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """P-Embs and L-Embs (valid frames only) of the examples whose slots come from speech."""
        p_out: dict[int, torch.Tensor] = {}
        l_out: dict[int, torch.Tensor] = {}
        for side, out in (("p", p_out), ("l", l_out)):
            for grad in (True, False):
                idx = [i for i, e in enumerate(batch) if getattr(e, f"{side}_source") == "speech"
                       and (getattr(e, f"train_{side}") == grad)]
                if not idx:
                    continue
                frames, mask = self._frames([batch[i].frames for i in idx])
                adapter = self.para if side == "p" else self.ling
                was_training = adapter.training
                if not grad:
                    adapter.eval()  # a frozen adapter (ERR) is used as at inference: no dropout, no gradient
                try:
                    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                        if side == "p":
                            emb = self.para(frames, mask)
                            for j, i in enumerate(idx):
                                out[i] = emb[j]
                        else:
                            emb, m = self.ling(frames, mask)
                            for j, i in enumerate(idx):
                                out[i] = emb[j][m[j]]
                finally:
                    adapter.train(was_training)
        return p_out, l_out

    def prefix(self, ex: Example, p: torch.Tensor | None, lemb: torch.Tensor | None) -> torch.Tensor:
        """Embeddings ``[L, H]``: context, P slot, L slot, instruction and assistant header."""
        before, after = self.render(ex.context, ex.instruction)
        parts = [self._embed_text(before)]
        if ex.p_source == "speech":
            parts.append(p)
        elif ex.p_source == "text":
            parts.append(self._embed_text(ex.caption + " "))
        if ex.l_source == "speech":
            parts.append(lemb)
        elif ex.l_source == "text":
            parts.append(self._embed_text(ex.transcript))
        parts.append(self._embed_text(after))
        return torch.cat(parts)

    # ------------------------------------------------------------------------------------ training

    def loss(self, batch: Sequence[Example]) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-token loss on the targets (and the end token) of a batch."""
        p_out, l_out = self._speech_slots(batch)
        seqs, labels = [], []
        for i, ex in enumerate(batch):
            pre = self.prefix(ex, p_out.get(i), l_out.get(i))
            target = torch.tensor(self._ids(ex.target) + self.end_ids, device=self.device)
            seqs.append(torch.cat([pre, self.speech_llm.embed(target)]))
            labels.append(torch.cat([torch.full((pre.shape[0],), -100, device=self.device), target]))
        n = max(x.shape[0] for x in seqs)
        embeds = torch.stack([F.pad(x, (0, 0, 0, n - x.shape[0])) for x in seqs])
        att = torch.stack([torch.arange(n, device=self.device) < x.shape[0] for x in seqs]).long()
        lab = torch.stack([F.pad(y, (0, n - y.shape[0]), value=-100) for y in labels])
        # the output layer only where a target token is predicted (a 49k-word vocabulary over every prefix
        # position would cost a fifth of the step)
        hidden = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=att).last_hidden_state
        shifted = lab[:, 1:]
        where = shifted != -100
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][where])
        loss = F.cross_entropy(logits.float(), shifted[where])
        return loss, {"loss": float(loss.detach()), "tokens": float(where.sum())}

    # ------------------------------------------------------------------------------------ inference

    @torch.no_grad()
    def generate(self, batch: Sequence[Example], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers, the batch left-padded into one ``generate`` call."""
        if not batch:
            return []
        p_out, l_out = self._speech_slots(batch)
        pres = [self.prefix(ex, p_out.get(i), l_out.get(i)) for i, ex in enumerate(batch)]
        n = max(x.shape[0] for x in pres)
        embeds = torch.stack([F.pad(x, (0, 0, n - x.shape[0], 0)) for x in pres])
        att = torch.stack([torch.arange(n, device=self.device) >= n - x.shape[0] for x in pres]).long()
        tok = self.tokenizer
        ids = self.llm.generate(inputs_embeds=embeds, attention_mask=att,
                                max_new_tokens=max_new_tokens or self.cfg.max_new_tokens, do_sample=False,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return [tok.decode(row, skip_special_tokens=True).strip() for row in ids]

    # ------------------------------------------------------------------------------------ checkpoints

    def adapters(self) -> list[nn.Module]:
        return [self.para, self.ling]

    def save_pretrained(self, path: str | Path) -> Path:
        return self.speech_llm.save_pretrained(path, {"_class": "DualInfoSLM", **config_to_dict(self.cfg)})

    def load_weights(self, path: str | Path) -> "DualInfoSLM":
        self.speech_llm.load_weights(path, _KIND)
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "DualInfoSLM":
        """The model a checkpoint folder holds, on ``map_location``, in eval mode."""
        model = cls(config_from_dict(DualInfoConfig, checkpoint_config(path, _KIND))).load_weights(path)
        return model.to(map_location).eval()

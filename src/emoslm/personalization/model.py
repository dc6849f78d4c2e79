"""The speech LM of paper 000: frozen speech encoder -> Q-Former -> LLM, with in-context enrollment pairs.

Input (Eqs. 10-13): the instruction text W, then for each of k enrollment pairs the speech query vectors U_i and
the label text Z_i, then the target's query vectors. Every position gets a *segment* embedding (text or
speech) and a *sequence-position* embedding (which example it belongs to: 0..k-1 for the enrollment pairs, k for
the target, the instruction gets its own index). Both are initialised small (std 0.02) so that they do not
drown the label tokens at the start of training.

Two backbone kinds:
- decoder-only (Llama-style, SmolLM2): ``[BOS] W (U_1 Z_1) ... (U_k Z_k) U_t`` -> predict Z_t. A training
  sequence of n same-speaker examples with a loss on *every* label position trains k = 0..n-1 at once, the
  targets' contexts being random same-speaker pairs -- MetaICL's TU+LU_{0:n-1} in one pass;
- encoder-decoder (T5-style, as the paper): the encoder reads ``W (U_1 Z_1) ... (U_k Z_k) U_t``, the decoder
  writes Z_t.

The speech encoder is not part of this module: its outputs are computed once (frozen, Eq. 8's H) and cached by
the caller; this module maps them through the Q-Former and a projection into the LLM's embedding space.

The shell (the LLM as a registered part whose LLMSpec mode says what of it trains, the device, checkpoints) is
the shared :class:`~emoslm.models.speech_llm.SpeechLLM` (``model.speech_llm``); this module keeps the layout.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from emoslm.labels import LabelSet, get_label_set
from emoslm.models.io import config_from_dict
from emoslm.models.llm import Backbone, LLMSpec, load_backbone
from emoslm.models.qformer import QFormer, QFormerConfig
from emoslm.models.speech_llm import SpeechLLM, checkpoint_config

#: Paper 000, section V-A.
INSTRUCTION = ("Please select the appropriate emotion for the input speech from the following: "
               "Neutral, Surprise, Sadness, Joy, Fear, Disgust, Anger.")

TEXT, SPEECH = 0, 1
_KIND = "a SpeechICLModel"  # what the checkpoint errors say a folder is not


@dataclass
class SpeechICLConfig:
    d_encoder: int
    qformer: dict = field(default_factory=dict)  # QFormerConfig fields
    llm: dict = field(default_factory=dict)  # LLMSpec fields
    label_set: str = "ekman7"
    instruction: str = INSTRUCTION
    max_examples: int = 16
    emb_init_std: float = 0.02
    #: add to each speech block a learned projection of its difference from the mean of the speech blocks
    #: before it (the speaker's enrollment utterances): an explicit speaker-relative input (off = the paper's)
    relative_context: bool = False
    #: add to each example's label-token embeddings a learned projection of that example's (mean) speech vector,
    #: so that a single attention step from the target's speech to the similar enrollment labels can copy them
    #: (without it the LLM must first learn a two-step induction circuit; off = the paper's)
    bind_labels: bool = False

    def qformer_config(self) -> QFormerConfig:
        return QFormerConfig(**{**self.qformer, "d_encoder": self.d_encoder})

    def llm_spec(self) -> LLMSpec:
        return LLMSpec(**self.llm)


@dataclass
class Example:
    """One (speech, label) pair of an episode: ``speech`` is the projected query block [n_q, H]."""

    speech: torch.Tensor
    label: int | None  # index into the label set; None for the target at inference


class SpeechICLModel(nn.Module):
    #: the shared shell over this model's parts (attached in __init__, not a submodule: SpeechLLM.attach)
    speech_llm: SpeechLLM

    def __init__(self, cfg: SpeechICLConfig, backbone: Backbone | None = None):
        super().__init__()
        self.cfg = cfg
        self.label_set: LabelSet = get_label_set(cfg.label_set)
        self.qformer = QFormer(cfg.qformer_config())
        self.backbone = backbone if backbone is not None else load_backbone(cfg.llm_spec())
        # registered as a submodule: its trainable parameters (full, or LoRA) reach the optimizer, DDP, train()/
        # eval() and the checkpoint (``Backbone`` itself is a plain dataclass)
        self.llm = self.backbone.model
        hidden = self.backbone.hidden_size
        self.proj = nn.Linear(self.qformer.config.d_model, hidden)
        # Speech vectors must live at the scale of the LLM's token embeddings: unnormalised projections came out
        # ~50x larger than the label embeddings and drowned them, so the in-context labels were ignored.
        self.rel_proj = None
        if cfg.relative_context:
            self.rel_proj = nn.Linear(hidden, hidden)
            nn.init.zeros_(self.rel_proj.weight)
            nn.init.zeros_(self.rel_proj.bias)
        self.bind_proj = None
        if cfg.bind_labels:
            self.bind_proj = nn.Linear(hidden, hidden)
            nn.init.zeros_(self.bind_proj.weight)
            nn.init.zeros_(self.bind_proj.bias)
        self.speech_norm = nn.LayerNorm(hidden)
        emb = self.backbone.base_model.get_input_embeddings().weight
        self.speech_scale = nn.Parameter(emb.detach().float().pow(2).mean().sqrt().reshape(1).clone())
        self.segment = nn.Embedding(2, hidden)
        self.seqpos = nn.Embedding(cfg.max_examples + 2, hidden)  # + instruction + target slot
        for emb in (self.segment, self.seqpos):
            nn.init.normal_(emb.weight, std=cfg.emb_init_std)
        tok = self.backbone.tokenizer
        self._instruction_ids = tok(cfg.instruction, add_special_tokens=False)["input_ids"]
        self._label_ids = [tok(" " + self.label_set.word(l), add_special_tokens=False)["input_ids"]
                           for l in self.label_set.labels]
        unk = getattr(tok, "unk_token_id", None)
        for lab, ids in zip(self.label_set.labels, self._label_ids):
            if not ids or (unk is not None and unk in ids):
                raise ValueError(f"label {lab!r} does not tokenize cleanly with this LLM's tokenizer: {ids}")
        self._bos = tok.bos_token_id
        self._eos = tok.eos_token_id
        lengths = {len(ids) for ids in self._label_ids}
        #: every label has the same number of tokens: episodes can be laid out as tensors (fast path)
        self.label_len = lengths.pop() if len(lengths) == 1 else None
        if self.label_len is not None:
            self.register_buffer("_label_table", torch.tensor(self._label_ids, dtype=torch.long), persistent=False)
        # every part trains; the LLM as its LLMSpec mode says (and it follows train(), even when frozen)
        SpeechLLM(self.backbone, {"qformer": self.qformer, "proj": self.proj, "rel_proj": self.rel_proj,
                                  "bind_proj": self.bind_proj, "speech_norm": self.speech_norm,
                                  "speech_scale": self.speech_scale, "segment": self.segment, "seqpos": self.seqpos},
                  llm_trainable=True).attach(self)

    def train(self, mode: bool = True) -> "SpeechICLModel":
        super().train(mode)
        self.speech_llm.train(mode)  # frozen parts back in eval mode
        return self

    # ------------------------------------------------------------------------------------ embeddings

    @property
    def is_encoder_decoder(self) -> bool:
        return self.backbone.is_encoder_decoder

    @property
    def device(self) -> torch.device:
        return self.speech_llm.device

    def speech_tokens(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Frozen-encoder outputs [B, T, d_enc] (+ valid mask) -> LLM-space query vectors [B, n_q, H]."""
        return self.speech_norm(self.proj(self.qformer(hidden, mask))) * self.speech_scale

    def _text(self, ids: Sequence[int], pos: int) -> torch.Tensor:
        return self.speech_llm.embed(list(ids)) + self.segment.weight[TEXT] + self.seqpos.weight[pos]

    def _label(self, ids: Sequence[int], pos: int, speech: torch.Tensor) -> torch.Tensor:
        """Embeddings of the label text of example ``pos`` whose speech block is ``speech`` [n_q, H]."""
        out = self._text(ids, pos)
        return out if self.bind_proj is None else out + self.bind_proj(speech.mean(0))

    def _speech(self, u: torch.Tensor, pos: int, before: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Embeddings of a speech block at example index ``pos``; ``before``: the speech of the examples
        preceding it (used by ``relative_context``)."""
        if self.rel_proj is not None and len(before):
            u = u + self.rel_proj(u - torch.stack(list(before)).mean(0))
        return u + self.segment.weight[SPEECH] + self.seqpos.weight[pos]

    def _prefix(self) -> list[torch.Tensor]:
        ids = ([self._bos] if self._bos is not None and not self.is_encoder_decoder else []) + self._instruction_ids
        return [self._text(ids, self.cfg.max_examples + 1)]

    def _check_k(self, k: int) -> None:
        if k > self.cfg.max_examples:
            raise ValueError(f"{k} enrollment pairs, but the model was built for at most {self.cfg.max_examples}")

    # ------------------------------------------------------------------------------------ training

    def sequence(self, examples: Sequence[Example], train_from: int | None = None
                 ) -> tuple[torch.Tensor, list[int], list[int]]:
        """Embeddings of one decoder-only episode and the (position, token) pairs to predict.

        Every example's label tokens are predicted from the positions before them; ``train_from`` limits the
        loss to examples with index >= train_from (``len(examples)-1``: only the last, the classic k-shot).
        """
        parts = self._prefix()
        n = sum(p.shape[0] for p in parts)
        positions, targets = [], []
        first = 0 if train_from is None else train_from
        for i, ex in enumerate(examples):
            parts.append(self._speech(ex.speech, i, [e.speech for e in examples[:i]]))
            n += ex.speech.shape[0]
            ids = self._label_ids[ex.label]
            if i >= first:
                positions.extend(range(n - 1, n - 1 + len(ids)))
                targets.extend(ids)
            parts.append(self._label(ids, i, ex.speech))
            n += len(ids)
        return torch.cat(parts), positions, targets

    def uniform_embeds(self, speech: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Vectorised layout of B episodes with n examples each (all labels of equal token length L).

        ``speech`` [B, n, q, H] projected query vectors, ``labels`` [B, n] label indices. Returns the embeddings
        [B, P + n (q + L), H] of ``[BOS] W (U_1 Z_1) ... (U_n Z_n)``, the prefix length P and the block width
        q + L; label token m of example i sits at P + i (q + L) + q + m.
        """
        b, n, q, _ = speech.shape
        seg, pos = self.segment.weight, self.seqpos.weight[:n]
        lab_ids = self._label_table[labels]  # [B, n, L]
        lab = self.speech_llm.embed(lab_ids) + seg[TEXT] + pos[None, :, None, :]
        if self.bind_proj is not None:
            lab = lab + self.bind_proj(speech.mean(2))[:, :, None, :]
        sp = speech
        if self.rel_proj is not None and n > 1:
            # mean of the speech blocks before each example (zero for the first, which has none)
            count = torch.arange(n, device=speech.device, dtype=speech.dtype).clamp(min=1)[None, :, None, None]
            prev = (speech.cumsum(1) - speech) / count
            rel = self.rel_proj(speech - prev)
            rel = torch.cat([torch.zeros_like(rel[:, :1]), rel[:, 1:]], dim=1)
            sp = speech + rel
        sp = sp + seg[SPEECH] + pos[None, :, None, :]
        blocks = torch.cat([sp, lab], dim=2).reshape(b, n * (q + lab.shape[2]), -1)
        prefix = torch.cat(self._prefix())
        return torch.cat([prefix.expand(b, -1, -1), blocks], dim=1), prefix.shape[0], q + lab.shape[2]

    def uniform_loss(self, speech: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.1,
                     all_positions: bool = True) -> tuple[torch.Tensor, dict]:
        """:meth:`loss` for tensor episodes (decoder-only, equal label lengths): a handful of large ops."""
        embeds, p, w = self.uniform_embeds(speech, labels)
        n, q, L = speech.shape[1], speech.shape[2], self.label_len
        hidden = self._decoder_hidden(embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device))
        first = 0 if all_positions else n - 1
        pos = torch.tensor([p + i * w + q + m - 1 for i in range(first, n) for m in range(L)], device=self.device)
        h = hidden[:, pos]  # [B, (n - first) L, H]
        logits = self.backbone.model.get_output_embeddings()(h).float()
        target = self._label_table[labels[:, first:]].reshape(labels.shape[0], -1)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), label_smoothing=label_smoothing)
        acc = (logits.argmax(-1) == target).float().mean().item()
        return loss, {"token_acc": acc, "n_targets": int(target.numel())}

    @torch.no_grad()
    def uniform_scores(self, ctx_speech: torch.Tensor, ctx_labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Label log-likelihoods [B, n_labels] for B episodes with the same k (single-token labels).

        ``ctx_speech`` [B, k, q, H], ``ctx_labels`` [B, k], ``target`` [B, q, H]."""
        b, k = ctx_labels.shape
        speech = torch.cat([ctx_speech, target[:, None]], dim=1)
        labels = torch.cat([ctx_labels, ctx_labels.new_zeros(b, 1)], dim=1)
        embeds, p, w = self.uniform_embeds(speech, labels)
        embeds = embeds[:, : embeds.shape[1] - self.label_len]  # the target has no label
        hidden = self._decoder_hidden(embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device))
        lp = self.backbone.model.get_output_embeddings()(hidden[:, -1]).float().log_softmax(-1)
        return lp[:, self._label_table[:, 0]]

    def loss(self, episodes: Sequence[Sequence[Example]], *, label_smoothing: float = 0.1,
             all_positions: bool = True) -> tuple[torch.Tensor, dict]:
        """Cross-entropy over the episodes' label tokens (label smoothing as paper 000 V-C)."""
        if self.is_encoder_decoder:
            return self._loss_encoder_decoder(episodes, label_smoothing)
        seqs, pos, tgt = [], [], []
        for b, ep in enumerate(episodes):
            s, p, t = self.sequence(ep, None if all_positions else len(ep) - 1)
            seqs.append(s)
            pos.extend((b, x) for x in p)
            tgt.extend(t)
        embeds, mask = _pad(seqs)
        hidden = self._decoder_hidden(embeds, mask)
        idx_b = torch.tensor([b for b, _ in pos], device=self.device)
        idx_t = torch.tensor([t for _, t in pos], device=self.device)
        logits = self.backbone.model.get_output_embeddings()(hidden[idx_b, idx_t])
        target = torch.tensor(tgt, device=self.device)
        loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
        acc = (logits.argmax(-1) == target).float().mean().item()
        return loss, {"token_acc": acc, "n_targets": len(tgt)}

    def _decoder_hidden(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True,
                                  logits_to_keep=1, use_cache=False)
        return out.hidden_states[-1]

    def _encoder_inputs(self, context: Sequence[Example], target: torch.Tensor) -> torch.Tensor:
        parts = self._prefix()
        for i, ex in enumerate(context):
            parts.append(self._speech(ex.speech, i, [e.speech for e in context[:i]]))
            parts.append(self._label(self._label_ids[ex.label], i, ex.speech))
        parts.append(self._speech(target, len(context), [e.speech for e in context]))
        return torch.cat(parts)

    def _loss_encoder_decoder(self, episodes, label_smoothing):
        enc = [self._encoder_inputs(ep[:-1], ep[-1].speech) for ep in episodes]
        embeds, mask = _pad(enc)
        lab = [self._label_ids[ep[-1].label] + [self._eos] for ep in episodes]
        width = max(len(x) for x in lab)
        labels = torch.full((len(lab), width), -100, dtype=torch.long, device=self.device)
        for i, x in enumerate(lab):
            labels[i, : len(x)] = torch.tensor(x)
        out = self.backbone.model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        logits = out.logits
        valid = labels != -100
        loss = F.cross_entropy(logits[valid].float(), labels[valid], label_smoothing=label_smoothing)
        acc = (logits[valid].argmax(-1) == labels[valid]).float().mean().item()
        return loss, {"token_acc": acc, "n_targets": int(valid.sum())}

    # ------------------------------------------------------------------------------------ inference

    @torch.no_grad()
    def prefix_cache(self, context: Sequence[Example]):
        """Key/value cache of ``[BOS] W (U_1 Z_1) ... (U_k Z_k)`` (decoder-only): computed once per speaker's
        enrollment set and reused for each of their queries."""
        embeds = self._prefix_embeds(context)[None]
        out = self.backbone.model(inputs_embeds=embeds, use_cache=True)
        return PrefixCache(out.past_key_values, embeds.shape[1], len(context))

    def _prefix_embeds(self, context: Sequence[Example]) -> torch.Tensor:
        """Embeddings [P, H] of ``[BOS] W (U_1 Z_1) ... (U_k Z_k)``."""
        self._check_k(len(context))
        parts = self._prefix()
        for i, ex in enumerate(context):
            parts += [self._speech(ex.speech, i, [e.speech for e in context[:i]]),
                      self._label(self._label_ids[ex.label], i, ex.speech)]
        return torch.cat(parts)

    @torch.no_grad()
    def label_log_probs(self, context: Sequence[Example], target: torch.Tensor,
                        cache: "PrefixCache | None" = None) -> torch.Tensor:
        """log P(label | W, context, target) for every label of the label set (sum over its tokens)."""
        self._check_k(len(context))
        n_lab = len(self._label_ids)
        if self.is_encoder_decoder:
            enc = self._encoder_inputs(context, target)[None]
            lab = [ids + [self._eos] for ids in self._label_ids]
            width = max(map(len, lab))
            labels = torch.full((n_lab, width), -100, dtype=torch.long, device=self.device)
            for i, x in enumerate(lab):
                labels[i, : len(x)] = torch.tensor(x)
            out = self.backbone.model(inputs_embeds=enc.expand(n_lab, -1, -1), labels=labels)
            lp = out.logits.log_softmax(-1)
            valid = labels != -100
            tok = lp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * valid
            return tok.sum(-1)
        return self._score_after_prefix(cache, context, target[None])[0]

    @torch.no_grad()
    def score_batch(self, contexts: Sequence[Sequence[Example]], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        """Label log-likelihoods [B, n_labels] for many episodes at once (each its own context: evaluation runs).

        Exact: every label's full token sequence is scored. When every label is a single token (the tiny
        tokenizer) one sequence per episode suffices; otherwise each episode's sequence is run once and every
        label's further tokens continue from its key/value cache."""
        if self.is_encoder_decoder:
            return torch.stack([self.label_log_probs(c, t) for c, t in zip(contexts, targets)])
        single = all(len(ids) == 1 for ids in self._label_ids)
        ks = {len(c) for c in contexts}
        if single and len(ks) == 1:
            k = ks.pop()
            tgt = torch.stack(list(targets))
            if k == 0:
                cs = tgt.new_zeros(len(targets), 0, *tgt.shape[1:])
                cl = torch.zeros(len(targets), 0, dtype=torch.long, device=self.device)
            else:
                cs = torch.stack([torch.stack([ex.speech for ex in c]) for c in contexts])
                cl = torch.tensor([[ex.label for ex in c] for c in contexts], device=self.device)
            return self.uniform_scores(cs, cl, tgt)
        label_ids = self._label_ids
        bases, suffixes = [], []
        for ctx, tgt in zip(contexts, targets):
            self._check_k(len(ctx))
            parts = []  # after the instruction, whose cache all episodes share
            for i, ex in enumerate(ctx):
                parts += [self._speech(ex.speech, i, [e.speech for e in ctx[:i]]),
                          self._label(label_ids[ex.label], i, ex.speech)]
            parts.append(self._speech(tgt, len(ctx), [e.speech for e in ctx]))
            bases.append(torch.cat(parts))
            suffixes.append(self._label_suffix(len(ctx), tgt))
        # The instruction is run once for the batch, then one row per episode: its sequence (right-padded to the
        # longest) followed by the multi-token labels' first len-1 tokens, each label placed by positions and a
        # tree-shaped mask right after the episode's own last token and seeing only the episode and its own
        # earlier tokens: the log-likelihoods of one full sequence per (episode, label), in one forward.
        instruction = self.prefix_cache([])
        n_ins, n = instruction.length, len(bases)
        past = _fork(instruction.past)
        past.batch_repeat_interleave(n)
        width = max(x.shape[0] for x in bases)
        n_suffix = suffixes[0].shape[0]  # the same labels follow every episode
        rows = bases[0].new_zeros(n, width + n_suffix, bases[0].shape[-1])
        lengths = torch.tensor([x.shape[0] for x in bases], device=self.device)
        allowed = torch.zeros(n, width + n_suffix, n_ins + width + n_suffix, dtype=torch.bool, device=self.device)
        allowed[:, :, :n_ins] = True  # every row sees the instruction (the padding rows too: no empty row)
        positions = torch.zeros(n, width + n_suffix, dtype=torch.long, device=self.device)
        offsets = self._suffix_offsets()
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        for i, (base, suffix) in enumerate(zip(bases, suffixes)):
            size = base.shape[0]
            rows[i, :size], rows[i, width:] = base, suffix
            allowed[i, :size, n_ins: n_ins + size] = causal[:size, :size]
            positions[i, :size] = n_ins + torch.arange(size)
            for off, m in offsets.values():
                r = width + off  # the row of its first token, and its key: n_ins + r
                allowed[i, r: r + m, n_ins: n_ins + size] = True
                allowed[i, r: r + m, n_ins + r: n_ins + r + m] = causal[:m, :m]
                positions[i, r: r + m] = n_ins + size + torch.arange(m)
        out = self.backbone.model(inputs_embeds=rows, position_ids=positions, past_key_values=past, use_cache=False,
                                  attention_mask=_attention_mask(allowed, self.backbone.model, rows.dtype),
                                  output_hidden_states=True, logits_to_keep=1)
        hidden = out.hidden_states[-1]  # [episodes, width + suffix, H] after the final norm
        return self._scores_from_hidden(hidden[torch.arange(n, device=self.device), lengths - 1], hidden[:, width:])

    @torch.no_grad()
    def predict_proba(self, context: Sequence[Example], target: torch.Tensor, cache=None) -> torch.Tensor:
        """A probability per label (softmax over the label set's sequence log-likelihoods)."""
        return self.label_log_probs(context, target, cache).softmax(-1)

    @torch.no_grad()
    def predict_proba_batch(self, context: Sequence[Example], targets: torch.Tensor,
                            cache=None) -> torch.Tensor:
        """Label probabilities [B, n_labels] of B targets: the softmax of :meth:`label_log_probs_batch`."""
        return self.label_log_probs_batch(context, targets, cache).softmax(-1)

    @torch.no_grad()
    def label_log_probs_batch(self, context: Sequence[Example], targets: torch.Tensor,
                              cache=None) -> torch.Tensor:
        """log P(label | W, context, target) [B, n_labels] of B targets ([B, n_q, H]) with one enrollment
        context: one LLM forward over the batch, against the context's prefix cache when given (one row per
        target, see :meth:`_score_after_prefix`). Encoder-decoder backbones are scored target by target."""
        if self.is_encoder_decoder:
            return torch.stack([self.label_log_probs(context, t) for t in targets])
        self._check_k(len(context))
        return self._score_after_prefix(cache, context, targets)

    def _score_after_prefix(self, cache: "PrefixCache | None", context: Sequence[Example],
                            targets: torch.Tensor) -> torch.Tensor:
        """Label log-likelihoods [B, n_labels] of B targets ([B, n_q, H]) after one context's prefix, in one LLM
        forward of one row per target: against the prefix's cache when given, else with the prefix in the row.

        After the prefix a row holds the target's speech block, then the first len-1 tokens of every label of
        several tokens, each label's tokens placed (positions and a tree-shaped attention mask) as if they alone
        followed the target: they see the prefix, the target and their own label's earlier tokens, not the other
        labels'. A label's first token is scored at the target's last position and its later ones at its own
        tokens. Exact (every label's full token sequence), and one forward whatever the number of labels: on a
        CPU a forward of a few tokens costs what reading the LLM's weights costs, so a long enrollment prefix adds
        little to a cached query (the 7-shot latency target). The shared prefix cache is never written: the row
        continues a fork of it."""
        k, b, q = len(context), targets.shape[0], targets.shape[1]
        rows = self._speech(targets, k, [e.speech for e in context])  # [B, n_q, H] (broadcasts over B)
        rows = torch.cat([rows, torch.stack([self._label_suffix(k, targets[i]) for i in range(b)])], 1)
        tri = lambda n: torch.ones(n, n, dtype=torch.bool, device=self.device).tril()  # noqa: E731
        if cache is None:  # the prefix goes in the row: one forward for the whole sequence
            prefix = self._prefix_embeds(context)
            rows = torch.cat([prefix[None].expand(b, -1, -1), rows], 1)
            n_prefix = ahead = prefix.shape[0]
        else:
            n_prefix, ahead = cache.length, 0
        # the target starts at row `ahead`; row r is key r + shift (a cached prefix comes before the row)
        shift, width = n_prefix - ahead, rows.shape[1]
        allowed = torch.zeros(width, shift + width, dtype=torch.bool, device=self.device)
        allowed[:, :n_prefix] = True  # everything sees the whole prefix ...
        allowed[:ahead, :ahead] = tri(ahead)  # ... causally, when it is in the row
        allowed[ahead: ahead + q, n_prefix: n_prefix + q] = tri(q)
        positions = list(range(n_prefix + q))[-(ahead + q):]
        for off, n in self._suffix_offsets().values():
            start = ahead + q + off  # the row of its first token
            positions += range(n_prefix + q, n_prefix + q + n)
            allowed[start: start + n, n_prefix: n_prefix + q] = True
            allowed[start: start + n, shift + start: shift + start + n] = tri(n)
        llm = self.backbone.model
        past = None
        if cache is not None:
            past = _fork(cache.past)
            if b > 1:
                past.batch_repeat_interleave(b)
        out = llm(inputs_embeds=rows, attention_mask=_attention_mask(allowed, llm, rows.dtype).expand(b, 1, -1, -1),
                  position_ids=torch.tensor(positions, device=self.device)[None].expand(b, -1), past_key_values=past,
                  use_cache=False, output_hidden_states=True, logits_to_keep=1)
        hidden = out.hidden_states[-1][:, ahead:]  # [B, target and label tokens, H] after the final norm
        return self._scores_from_hidden(hidden[:, q - 1], hidden[:, q:])

    def _suffix_offsets(self) -> dict[int, tuple[int, int]]:
        """Label index -> (offset, length) of its tokens in :meth:`_label_suffix`: the labels of several tokens."""
        out, off = {}, 0
        for j, ids in enumerate(self._label_ids):
            if len(ids) > 1:
                out[j] = (off, len(ids) - 1)
                off += len(ids) - 1
        return out

    def _label_suffix(self, k: int, target: torch.Tensor) -> torch.Tensor:
        """The inputs [S, H] that predict the 2nd, 3rd, ... token of every multi-token label after a target at
        example index ``k``: each such label's first len-1 tokens, one label after another (S = 0 when every
        label is one token)."""
        parts = [self._label(self._label_ids[j], k, target)[:n] for j, (_, n) in self._suffix_offsets().items()]
        return torch.cat(parts) if parts else target[:0]

    def _scores_from_hidden(self, last: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
        """Label log-likelihoods [B, n_labels] from the final hidden states at the target's last position [B, H]
        (every label's first token) and at its :meth:`_label_suffix` [B, S, H] (the later tokens)."""
        head, label_ids = self.backbone.model.get_output_embeddings(), self._label_ids
        scores = head(last).float().log_softmax(-1)[:, torch.tensor([ids[0] for ids in label_ids])].clone()
        for j, (off, n) in self._suffix_offsets().items():
            lp = head(suffix[:, off: off + n]).float().log_softmax(-1)  # [B, n, V]
            scores[:, j] += lp[:, torch.arange(n), torch.tensor(label_ids[j][1:])].sum(-1)
        return scores

    @torch.no_grad()
    def generate_label(self, context: Sequence[Example], target: torch.Tensor, num_beams: int = 4,
                       max_new_tokens: int | None = None) -> tuple[str | None, str]:
        """Beam search (paper: beam 4); returns (label if the text exactly matches one, else None; the text)."""
        max_new_tokens = max_new_tokens or max(map(len, self._label_ids)) + 1
        if self.is_encoder_decoder:
            enc = self._encoder_inputs(context, target)[None]
            out = self.backbone.model.generate(inputs_embeds=enc, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                               do_sample=False)
        else:
            embeds = torch.cat([self._prefix_embeds(context),
                                self._speech(target, len(context), [e.speech for e in context])])[None]
            out = self.backbone.model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2]),
                                               num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False,
                                               pad_token_id=self.backbone.tokenizer.pad_token_id)
        text = self.backbone.tokenizer.decode(out[0], skip_special_tokens=True).strip()
        # exact match against the label words (paper V-D: a generated result is correct if it matches exactly)
        for lab in self.label_set.labels:
            if text == self.label_set.word(lab):
                return lab, text
        return None, text

    # ------------------------------------------------------------------------------------ checkpoints

    def save_pretrained(self, path: str | Path) -> Path:
        return self.speech_llm.save_pretrained(path, {"_class": type(self).__name__, **asdict(self.cfg)})

    def load_weights(self, path: str | Path) -> "SpeechICLModel":
        """Load a checkpoint's weights into this model (built from its own config: e.g. other dropout). The LLM's
        may be absent (a packaged one); relative-context and label-binding projections absent from an older
        checkpoint keep their zero init (= no effect)."""
        self.speech_llm.load_weights(path, _KIND, ("rel_proj.", "bind_proj."))
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "SpeechICLModel":
        """The model a checkpoint folder holds, on ``map_location`` (in train mode, as built)."""
        model = cls(config_from_dict(SpeechICLConfig, checkpoint_config(path, _KIND)))
        model.speech_llm.load_weights(path, _KIND)
        return model.to(map_location)


@dataclass
class PrefixCache:
    past: object
    length: int
    k: int


def _fork(past):
    """A copy of a key/value cache that a forward pass may extend without touching the original: new layer
    objects holding the same tensors (a DynamicLayer's update and batch repeat rebind its tensors, never write
    into them). Any other cache kind is deep-copied."""
    layers = getattr(past, "layers", None)
    if type(past) is not DynamicCache or layers is None or any(type(x) is not DynamicLayer for x in layers):
        return copy.deepcopy(past)
    fork = copy.copy(past)
    fork.layers = [copy.copy(x) for x in layers]
    return fork


def _attention_mask(allowed: torch.Tensor, llm, dtype: torch.dtype) -> torch.Tensor:
    """A custom [B, 1, queries, keys] attention mask from ``allowed`` ([queries, keys], B = 1, or [B, queries,
    keys]; True: may attend), in the form the LLM's attention takes as it is: booleans for SDPA, else additive
    (0 or the dtype's minimum)."""
    mask = (allowed[None] if allowed.dim() == 2 else allowed)[:, None]
    if getattr(llm.config, "_attn_implementation", "sdpa") == "sdpa":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def _pad(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad [L_i, H] sequences to [B, L, H] with an attention mask [B, L]."""
    width = max(s.shape[0] for s in seqs)
    out = seqs[0].new_zeros(len(seqs), width, seqs[0].shape[-1])
    mask = torch.zeros(len(seqs), width, dtype=torch.long, device=seqs[0].device)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = 1
    return out, mask

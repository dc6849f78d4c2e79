"""Recipe: the dual-information speech LM's three training stages (paper 002, III-C).

- ``stage: 1`` joint training of both adapters on linguistic (ASR) and paralinguistic (gender, pitch, tempo,
  energy, emotion) tasks, both kinds of embeddings from speech.
- ``stage: 2`` Equivalence Replacement Regularization (ERR). Each example trains one adapter with the other
  frozen (its output computed without gradients): a linguistic example (ASR) trains the linguistic adapter,
  with the paralinguistic slot filled, with equal probability, from speech (the frozen paralinguistic
  adapter), from text (the speaking-style caption) or left empty; a paralinguistic example (an attribute
  question) trains the paralinguistic adapter, with the linguistic slot from speech, the transcript, or empty
  (:func:`err_sources`). Half the examples of a batch are of each kind, so both adapters learn every step.
  Both proportions are settings: ``err_p_share`` (the share of examples that train the paralinguistic
  adapter) and ``err_other_sources`` (the odds of speech, text and none for the other slot). With
  ``err_p_share: 1`` and ``err_other_sources: {none: 1}`` stage 2 trains the paralinguistic adapter alone on
  attribute questions with the P-Embs as the only speech input, what Table I's P-Embs column asks of it.
  ``err_asr_trains: p`` changes what the ASR examples do (not in the paper): both slots from speech, the
  paralinguistic adapter learning from them and the linguistic one frozen for the whole stage. A stage that
  teaches the P-Embs alone the attributes then also keeps them from disrupting P&L ASR, which they did when
  trained on attribute questions alone after ERR, and leaves the L-Embs-only ASR learned before untouched. (In the
  README's run the P-Embs then helped P&L ASR beyond what the L-Embs carry alone: not the paper's separation.)
  ``err_asr_trains: lp`` draws each ASR example one way or the other with even odds: ERR's (the linguistic
  adapter trained, the other slot drawn with ``err_other_sources``) or P&L ASR training the paralinguistic one.
- ``stage: 3`` holistic fine-tuning: dual-information examples (a conversation's context turns as text and
  the spoken user turn; the target is the frozen LLM's reply to the true text and caption) mixed with a
  ``1 - dual_share`` portion of single-information examples; both adapters learn, both slots from speech.
  The paper's single-information share "constrains" the stage; ``stage3_single: err`` (not the default) draws it
  as in stage 2 instead (one adapter trained, the other slot from speech, text or none), to keep ERR's
  constraint: with both slots always from speech, the L-Embs-only ASR learned in ERR was lost. (In the README's
  dev run it kept the L-Embs-only ASR but broke P&L ASR and the attributes: not the default.)

The speech encoder (Whisper tiny.en by default) and the LLM (SmolLM2-135M-Instruct) are frozen; the
encoder's frames are computed once per utterance (:class:`emoslm.models.frozen_speech.FeatureCache`).
AdamW, warmup then linear decay, weight decay 0.05; the checkpoint with the best dev score (minus the
teacher-forced loss on a fixed dev set of the stage's own mixture) is kept.

    emoslm train dual_info --config dual_info_stage1 [--set train.max_steps=...]
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emoslm.data.captions import style_caption
from emoslm.data.utterances import Utterance, load_utterances
from emoslm.dual_info.conversations import load_conversations
from emoslm.dual_info.model import SOURCES, DualInfoConfig, DualInfoSLM, Example
from emoslm.dual_info.tasks import (
    ASR_INSTRUCTIONS,
    ATTRIBUTE_TASKS,
    draw,
    system_message,
)
from emoslm.models.frozen_speech import (
    FeatureCache,
    build_frozen_encoder,
    frames_per_token,
)
from emoslm.training.trainer import (
    TrainArgs,
    Trainer,
    rank_zero_first,
    start_run,
    write_run_config,
)
from emoslm.training.trainer import best_checkpoint as _best_checkpoint

log = logging.getLogger(__name__)

STAGES = (1, 2, 3)


def has_attributes(u: Utterance, tasks: Sequence[str]) -> bool:
    """Whether ``u`` has a known answer to every one of the attribute ``tasks`` (and a transcript for ASR)."""
    return bool(u.text) and all(u.attrs.get(ATTRIBUTE_TASKS[t].field) in ATTRIBUTE_TASKS[t].choices for t in tasks)


def utterance_features(cache: FeatureCache, utts: Sequence[Utterance], progress: bool = True,
                       desc: str = "speech features") -> dict[str, np.ndarray]:
    return cache.fill([(u.id, u.load_wave) for u in utts], progress=progress, desc=desc)


# ------------------------------------------------------------------------------------------------ examples


def attribute_example(u: Utterance, frames: np.ndarray, task: str, rng: np.random.Generator | None,
                      p_source: str = "speech", l_source: str = "speech", train_p: bool = True,
                      train_l: bool = True) -> Example:
    t = ATTRIBUTE_TASKS[task]
    label = u.attrs.get(t.field)
    return Example(frames, [system_message("paralinguistic", rng)], t.prompt(rng),
                   t.target(label) if label is not None else "", p_source, l_source,
                   style_caption(u.attrs, rng), u.text, train_p, train_l, task)


def asr_example(u: Utterance, frames: np.ndarray, rng: np.random.Generator | None, p_source: str = "speech",
                l_source: str = "speech", train_p: bool = True, train_l: bool = True) -> Example:
    return Example(frames, [system_message("linguistic", rng)], draw(ASR_INSTRUCTIONS, rng), u.text, p_source,
                   l_source, style_caption(u.attrs, rng), u.text, train_p, train_l, "asr")


def conversation_example(row: dict[str, Any], frames: np.ndarray, p_source: str = "speech",
                         l_source: str = "speech") -> Example:
    context = [{"role": "system", "content": row["system"]}, *row["context"]]
    return Example(frames, context, "", row.get("response", ""), p_source, l_source, row["caption"], row["text"],
                   True, True, "conversation")


def err_sources(side: str, rng: np.random.Generator,
                odds: dict[str, float] | None = None) -> tuple[str, str]:
    """ERR's (p_source, l_source) for an example training the ``side`` adapter ("p" or "l"): the other slot
    is speech, text or none with ``odds`` (default: equal); the trained slot is always speech."""
    weights = np.array([float((odds or {}).get(src, 0.0)) for src in SOURCES])
    if odds is None or (weights[0] > 0 and np.all(weights == weights[0])):  # equal odds: the draw it always was
        other = SOURCES[int(rng.integers(len(SOURCES)))]
    else:
        other = SOURCES[int(rng.choice(len(SOURCES), p=weights / weights.sum()))]
    if side == "l":
        return other, "speech"
    if side == "p":
        return "speech", other
    raise ValueError(f"side must be 'p' or 'l', got {side!r}")


# ------------------------------------------------------------------------------------------------ recipe


@dataclass
class DualInfoRecipeConfig:
    data: str = "data/synth_demo"
    conversations: str | None = "data/conversations_demo"  # needed by stage 3 (emoslm synth conversations)
    features: str = "data/features"
    encoder: dict = field(default_factory=lambda: {"kind": "whisper", "model": "tiny.en"})
    out_dir: str = "runs/dual_info/stage1"
    stage: int = 1
    init_from: str | None = None
    model: dict = field(default_factory=lambda: {"llm": {"name": "smollm2"}, "p_len": 8, "p_heads": 8,
                                                 "p_layers": 1, "p_ff": 1024, "dropout": 0.1, "l_hidden": 1024})
    tasks: list[str] = field(default_factory=lambda: list(ATTRIBUTE_TASKS))
    asr_share: float = 0.4  # stages 1 and 3: the share of ASR among single-information examples
    dual_share: float = 0.3  # stage 3: the share of conversation examples (chosen on dev over 0.6)
    # stage 3: how its single-information examples are drawn: "both" (both slots from speech, both adapters
    # trained, ASR in an asr_share of them) or "err" (as in stage 2, with the err_* settings: one adapter trained,
    # the other slot from speech, text or none), meant to keep what ERR separated (on dev it broke P&L ASR)
    stage3_single: str = "both"
    # stage 2: the share of examples that train the paralinguistic adapter (the rest train the linguistic one)
    err_p_share: float = 0.5
    # stage 2: odds of each source (speech, text, none) for the slot of the adapter not trained
    err_other_sources: dict = field(default_factory=lambda: {"speech": 1.0, "text": 1.0, "none": 1.0})
    # stage 2: the adapter the ASR examples train: "l" (ERR), "p" (P&L ASR, the linguistic adapter frozen), or
    # "lp" (each ASR example one of the two, even odds)
    err_asr_trains: str = "l"
    max_train_utterances: int | None = None
    dev_examples: int = 48
    batch_size: int = 8
    threads: int = 2
    progress: bool = True
    train: TrainArgs = field(default_factory=lambda: TrainArgs(
        max_steps=300, lr=1e-3, warmup_steps=30, weight_decay=0.05, optimizer="adamw", schedule="linear",
        min_lr_ratio=0.0, eval_every=100, save_every=100))


class DualInfoRecipe:
    def __init__(self, cfg: DualInfoRecipeConfig):
        if cfg.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {cfg.stage!r}")
        unknown = set(cfg.tasks) - set(ATTRIBUTE_TASKS)
        if unknown:
            raise ValueError(f"unknown paralinguistic tasks {sorted(unknown)} (known: {', '.join(ATTRIBUTE_TASKS)})")
        if cfg.stage > 1 and not cfg.init_from:
            log.warning("stage %d without init_from: the adapters start untrained", cfg.stage)
        if cfg.stage == 3 and not cfg.conversations:
            raise ValueError("stage 3 needs conversations (build them with: emoslm synth conversations)")
        if not 0.0 <= cfg.err_p_share <= 1.0:
            raise ValueError(f"err_p_share must be in [0, 1], got {cfg.err_p_share}")
        odds = cfg.err_other_sources
        if set(odds) - set(SOURCES) or any(float(v) < 0 for v in odds.values()) or not sum(map(float, odds.values())):
            raise ValueError(f"err_other_sources: non-negative odds of {', '.join(SOURCES)}, not all zero; got {odds}")
        if cfg.err_asr_trains not in ("l", "p", "lp"):
            raise ValueError(f"err_asr_trains must be 'l' (ERR), 'p' (P&L ASR, the linguistic adapter frozen) or 'lp' "
                             f"(each ASR example one of the two), got {cfg.err_asr_trains!r}")
        if cfg.stage3_single not in ("both", "err"):
            raise ValueError(f"stage3_single must be 'both' (both slots from speech, both adapters trained) or 'err' "
                             f"(drawn as in stage 2), got {cfg.stage3_single!r}")
        self.cfg = cfg

    def setup(self) -> None:
        cfg = self.cfg
        self.rank, self.world = start_run(cfg.threads, cfg.train.seed)
        encoder = build_frozen_encoder(cfg.encoder)
        self.model = DualInfoSLM(DualInfoConfig(**{
            "speech_dim": encoder.dim, "frame_rate": encoder.frame_rate,
            "l_stack": frames_per_token(encoder.frame_rate), **cfg.model}))
        if cfg.init_from:
            self.model.load_weights(cfg.init_from)
        cache = FeatureCache(cfg.features, encoder)

        def load():  # only utterances that answer every task get their features computed
            train = [u for u in load_utterances(cfg.data, "train", cfg.max_train_utterances, cfg.train.seed)
                     if has_attributes(u, cfg.tasks)]
            dev = [u for u in load_utterances(cfg.data, "dev") if has_attributes(u, cfg.tasks)]
            conv = {"train": [], "dev": []}
            if cfg.stage == 3:
                conv = {s: load_conversations(cfg.conversations, s) for s in conv}
            extra = [conversation_utterance(r) for s in conv for r in conv[s]]
            feats = utterance_features(cache, train + dev + extra, cfg.progress and self.rank == 0)
            return train, dev, conv, feats

        self.train_utts, self.dev_utts, self.conv, self.feats = rank_zero_first(load)
        if not self.train_utts:
            raise ValueError(f"{cfg.data}: no training utterance has all of the attributes {cfg.tasks}")
        if cfg.stage == 3 and not self.conv["train"]:
            raise ValueError(f"{cfg.conversations} has no training conversations")
        rng = np.random.default_rng(cfg.train.seed + 1)
        sides = self.stage2_sides(cfg.dev_examples) if cfg.stage == 2 else [None] * cfg.dev_examples
        self.dev_set = ([self.draw(self.dev_utts, self.conv["dev"], rng, side) for side in sides]
                        if self.dev_utts else [])

    def stage2_sides(self, n: int, interleaved: bool = True) -> list[str]:
        """Which adapter each of ``n`` stage-2 examples trains, ``err_p_share`` of them the paralinguistic one:
        interleaved (p, l, p, l at a half share, as the dev set always was) or the p's first (as batches were)."""
        share = self.cfg.err_p_share
        if interleaved:
            return ["p" if math.ceil((i + 1) * share - 1e-9) > math.ceil(i * share - 1e-9) else "l" for i in range(n)]
        n_p = int(math.floor(n * share + 1e-9))
        return ["p"] * n_p + ["l"] * (n - n_p)

    # one example of this stage's mixture
    def draw(self, utts: Sequence[Utterance], convs: Sequence[dict], rng: np.random.Generator,
             side: str | None = None) -> Example:
        """``side`` (stage 2): the adapter the example trains, "p" or "l" (drawn with ``err_p_share`` when None)."""
        cfg = self.cfg
        if cfg.stage == 3 and convs and rng.random() < cfg.dual_share:
            row = convs[int(rng.integers(len(convs)))]
            return conversation_example(row, self.feats[row["supervision_id"]])
        u = utts[int(rng.integers(len(utts)))]
        frames = self.feats[u.id]
        if cfg.stage == 2 or cfg.stage3_single == "err":
            side = side or ("l" if rng.random() < 1.0 - cfg.err_p_share else "p")
            p_src, l_src = err_sources(side, rng, cfg.err_other_sources)
            asr_trains = cfg.err_asr_trains
            if side == "l" and asr_trains == "lp":  # the draw only in this mode: older runs' streams unchanged
                asr_trains = "p" if rng.random() < 0.5 else "l"
            if side == "l" and asr_trains == "p":  # P&L ASR that only the paralinguistic adapter learns
                return asr_example(u, frames, rng, "speech", "speech", train_p=True, train_l=False)
            if side == "l":
                return asr_example(u, frames, rng, p_src, l_src, train_p=False, train_l=True)
            task = cfg.tasks[int(rng.integers(len(cfg.tasks)))]
            return attribute_example(u, frames, task, rng, p_src, l_src, train_p=True, train_l=False)
        if rng.random() < cfg.asr_share:
            return asr_example(u, frames, rng)
        return attribute_example(u, frames, cfg.tasks[int(rng.integers(len(cfg.tasks)))], rng)

    def batch_fn(self, step: int, rng: np.random.Generator) -> list[Example]:
        n = self.cfg.batch_size
        # stage 2: a fixed share of the batch trains each adapter, so both learn every step (and DDP sees every
        # gradient)
        sides = self.stage2_sides(n, interleaved=False) if self.cfg.stage == 2 else [None] * n
        return [self.draw(self.train_utts, self.conv["train"], rng, side) for side in sides]

    def loss_fn(self, model: DualInfoSLM, batch: list[Example]):
        return model.loss(batch)

    def eval_fn(self, model: DualInfoSLM) -> dict:
        if not self.dev_set:
            return {"score": 0.0}
        losses, sizes = [], []
        for i in range(0, len(self.dev_set), self.cfg.batch_size):
            batch = self.dev_set[i:i + self.cfg.batch_size]
            _, info = model.loss(batch)
            losses.append(info["loss"])
            sizes.append(info["tokens"])
        loss = float(np.average(losses, weights=sizes))
        return {"valid_loss": loss, "score": -loss}

    def train(self) -> dict:
        write_run_config(self.cfg, self.cfg.out_dir)
        trainer = Trainer(self.model, self.batch_fn, self.loss_fn, self.cfg.out_dir, self.cfg.train, self.eval_fn)
        return trainer.fit()


def conversation_utterance(row: dict[str, Any]) -> Utterance:
    """The spoken turn of a conversation example, as an utterance (its features are cached by id)."""
    return Utterance(row["supervision_id"], row.get("split", ""), row.get("speaker", ""), row["audio"],
                     float(row.get("start", 0.0)), float(row["duration"]), row["text"], dict(row.get("attrs", {})))


def run(cfg: DualInfoRecipeConfig) -> dict:
    recipe = DualInfoRecipe(cfg)
    recipe.setup()
    return recipe.train()


def best_checkpoint(out_dir: str | Path) -> Path:
    """The best (else last) model checkpoint of a run."""
    return _best_checkpoint(out_dir, "dual-information", "train one with `emoslm run dual_info` (all stages), or "
                                                         "`emoslm train dual_info --config dual_info_stage1`")
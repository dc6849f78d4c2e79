"""Recipe: the classifier baselines of paper 000 (Eqs. 1-5), and speech-encoder pre-training.

Variants (``variant``):
- ``scratch``: encoder + attentive pooling + softmax head, all randomly initialised and trained;
- ``pretrained``: a pretrained encoder (``encoder``: a checkpoint directory), frozen; pooling and head trained;
- ``personalized_n``: as pretrained, plus one neutral enrollment utterance of the target's speaker;
- ``personalized_a``: as pretrained, plus one enrollment utterance of each emotion of the speaker;
- ``relative``: speaker-relative encoder pre-training (beyond the paper), everything trained from scratch. A batch
  holds episodes of ``episode_size`` utterances of one speaker in one style; each utterance is classified from
  its embedding and the mean embedding of the episode's other utterances (their emotions unknown). Unlike
  ``scratch``, whose per-utterance style augmentation teaches the encoder to ignore level, pitch and tempo --
  the very cues an emotion shifts relative to the speaker's own baseline -- this keeps them, and makes them
  readable against the speaker's other utterances. Its encoder is what the speech LM's in-context examples need.

Encoder pre-training is the ``scratch`` variant on a pre-training corpus; its encoder (``model/encoder``) is
what the other variants and the speech LM load. Speaker-style augmentation (:mod:`emoslm.data.augment`) is
applied per target, shared with its enrollment utterances. Channel augmentation (``channel_augment``, see
:mod:`emoslm.data.channel`) hears each training utterance through a channel drawn for it alone; dev stays clean.

    emoslm train classifier --config configs/classifier_scratch.yaml [--set train.max_steps=300 ...]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emoslm.data.augment import apply_style, sample_styles
from emoslm.errors import CheckpointError, ConfigError
from emoslm.metrics import ua_spk
from emoslm.models.encoders import (
    FbankTransformerEncoder,
    SERClassifier,
    SERClassifierConfig,
    encoder_config,
)
from emoslm.personalization.data import SERData, pad_batch
from emoslm.training.trainer import (
    TrainArgs,
    Trainer,
    rank_zero_first,
    start_run,
    write_run_config,
)

log = logging.getLogger(__name__)

VARIANTS = ("scratch", "pretrained", "personalized_n", "personalized_a", "relative")


def pick_enrollment(mode: str, target, pool, rng: np.random.Generator, *, n_labels: int, neutral: int | None,
                    n_unlabeled: int) -> list | None:
    """Enrollment utterances of a classifier's ``enroll_mode`` for one target, drawn from its speaker's ``pool``
    (never the target itself); None when the speaker has too few. ``none``: none; ``unlabeled``: ``n_unlabeled``
    random ones; ``neutral``: one neutral; ``all``: one of each label, in label order."""
    if mode == "none":
        return []
    others = [u for u in pool if u.id != target.id]
    if mode == "unlabeled":
        n = n_unlabeled
        return [others[i] for i in rng.choice(len(others), n, replace=False)] if len(others) >= n else None
    if mode == "neutral":
        neu = [u for u in others if u.label == neutral]
        return [neu[int(rng.integers(len(neu)))]] if neu else None
    chosen = []
    for lab in range(n_labels):
        cand = [u for u in others if u.label == lab]
        if not cand:
            return None
        chosen.append(cand[int(rng.integers(len(cand)))])
    return chosen


@dataclass
class ClassifierConfig:
    corpus: str = "data/synth_demo"
    out_dir: str = "runs/classifier_scratch"
    variant: str = "scratch"
    encoder: str | None = None  # pretrained encoder checkpoint (variants other than scratch)
    encoder_preset: str = "tiny"
    label_set: str = "ekman7"
    batch_size: int = 32
    label_smoothing: float = 0.1
    augment_styles: int = 32  # 0/1: no augmentation
    episode_size: int = 8  # variant "relative": utterances of one speaker per episode
    style_seed: int = 0
    #: extra transmission channels of every training utterance (0: off), drawn per utterance: in a "relative"
    #: episode an utterance is read against its speaker's others, which may come through another channel (a
    #: clean enrollment, a phone-line query), so the embedding must not move with the channel
    channel_augment: int = 0
    channel_seed: int = 0
    threads: int = 1
    train: TrainArgs = field(default_factory=lambda: TrainArgs(max_steps=600, lr=1e-3, warmup_steps=50,
                                                                 eval_every=100, save_every=100))


class ClassifierRecipe:
    def __init__(self, cfg: ClassifierConfig):
        if cfg.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}; got {cfg.variant!r}")
        if cfg.variant not in ("scratch", "relative"):
            if not cfg.encoder:
                raise ConfigError(f"variant {cfg.variant!r} needs a pretrained encoder checkpoint (encoder: DIR)")
            if not (Path(cfg.encoder) / "model.safetensors").is_file():
                raise CheckpointError(
                    f"variant {cfg.variant!r} needs the pretrained encoder {cfg.encoder}, which "
                    f"{'holds no model.safetensors' if Path(cfg.encoder).is_dir() else 'does not exist'}: train it "
                    "first with `emoslm train classifier --config classifier_relative` (it writes "
                    "runs/demo/relative/encoder), or point to one with --set encoder=DIR")
        if cfg.channel_augment < 0:
            raise ConfigError(f"channel_augment must be >= 0 (extra channels per utterance); got {cfg.channel_augment}")
        self.cfg = cfg

    def setup(self) -> None:
        cfg = self.cfg
        self.rank, self.world = start_run(cfg.threads, cfg.train.seed)
        self.data = rank_zero_first(lambda: SERData(cfg.corpus, label_set=cfg.label_set, splits=["train", "dev"],
                                                    progress=self.rank == 0, channel_augment=cfg.channel_augment,
                                                    channel_seed=cfg.channel_seed))
        n = len(self.data.label_set)
        mode = {"scratch": "none", "pretrained": "none", "personalized_n": "neutral", "personalized_a": "all",
                "relative": "unlabeled"}[cfg.variant]
        if cfg.variant in ("scratch", "relative"):
            n_enroll = cfg.episode_size - 1 if mode == "unlabeled" else None
            if mode == "unlabeled" and cfg.episode_size < 2:
                raise ValueError(f"variant 'relative' needs episode_size >= 2, got {cfg.episode_size}")
            self.model = SERClassifier(SERClassifierConfig(encoder_config(cfg.encoder_preset), n, mode, n_enroll))
        else:
            enc = FbankTransformerEncoder.from_pretrained(cfg.encoder)
            self.model = SERClassifier.from_encoder(enc, n, mode, freeze=True)
        self.mode = mode
        self.styles = sample_styles(max(1, cfg.augment_styles), cfg.style_seed)
        self.neutral = self.data.label_set.index("neutral") if "neutral" in self.data.label_set else None
        self.train_spk = self.data.by_speaker["train"]
        self.train_utts = self.data.utts["train"]
        if mode == "unlabeled":  # speakers with enough utterances for one episode
            self.episode_speakers = [s for s, us in self.train_spk.items() if len(us) >= cfg.episode_size]
            if not self.episode_speakers:
                raise ValueError(f"no training speaker has {cfg.episode_size} utterances (episode_size)")
        # fixed dev targets with fixed enrollment (seeded)
        rng = np.random.default_rng(1234)
        self.dev = [(u, self._enroll(u, self.data.by_speaker["dev"][u.speaker], rng)) for u in self.data.utts["dev"]]
        self.dev = [(u, e) for u, e in self.dev if e is not None]

    def _enroll(self, target, pool, rng) -> list | None:
        return pick_enrollment(self.mode, target, pool, rng, n_labels=len(self.data.label_set),
                               neutral=self.neutral, n_unlabeled=self.cfg.episode_size - 1)

    def _fbank(self, uid: str, rng: np.random.Generator | None) -> np.ndarray:
        """An utterance's fbank; in training (``rng`` given) through a random one of its channels."""
        if rng is None or self.data.n_channels == 1:  # no draw: without channels the batches stay as they were
            return self.data.fbank[uid]
        return self.data.fbank_of(uid, int(rng.integers(self.data.n_channels)))

    def _tensors(self, items, styles, rng: np.random.Generator | None = None):
        feats, lengths = pad_batch([apply_style(self._fbank(u.id, rng), self.styles[s])
                                    for (u, _), s in zip(items, styles)])
        labels = torch.tensor([u.label for u, _ in items])
        if self.mode == "none":
            return feats, lengths, None, None, labels
        n = len(items[0][1])
        flat = [apply_style(self._fbank(e.id, rng), self.styles[s]) for (_, es), s in zip(items, styles) for e in es]
        ef, el = pad_batch(flat)
        return feats, lengths, ef.view(len(items), n, *ef.shape[1:]), el.view(len(items), n), labels

    def batch_fn(self, step: int, rng: np.random.Generator):
        if self.mode == "unlabeled":
            return self._episode_batch(rng)
        items = []
        while len(items) < self.cfg.batch_size:
            u = self.train_utts[int(rng.integers(len(self.train_utts)))]
            e = self._enroll(u, self.train_spk[u.speaker], rng)
            if e is not None:
                items.append((u, e))
        styles = rng.integers(len(self.styles), size=len(items)).tolist()
        return self._tensors(items, styles, rng)

    def _episode_batch(self, rng: np.random.Generator):
        """Episodes of ``episode_size`` utterances of one speaker, one style per episode (variant relative)."""
        n, speakers = self.cfg.episode_size, self.episode_speakers
        utts, styles = [], []
        for _ in range(max(1, self.cfg.batch_size // n)):
            us = self.train_spk[speakers[int(rng.integers(len(speakers)))]]
            style = int(rng.integers(len(self.styles)))
            utts += [us[i] for i in rng.choice(len(us), n, replace=False)]
            styles += [style] * n
        feats, lengths = pad_batch([apply_style(self._fbank(u.id, rng), self.styles[s]) for u, s in zip(utts, styles)])
        return feats, lengths, n, None, torch.tensor([u.label for u in utts])

    def loss_fn(self, model, batch):
        feats, lengths, ef, el, labels = batch
        if isinstance(ef, int):  # episodes of n utterances: each against the mean of the n - 1 others
            n = ef
            h = model.encode(feats, lengths).view(-1, n, model.config.encoder.d_model)
            ref = (h.sum(1, keepdim=True) - h) / (n - 1)
            logits = model.relative_logits(h.flatten(0, 1), ref.flatten(0, 1))
        else:
            logits = model(feats, lengths, ef, el)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        return loss, {"acc": float((logits.argmax(-1) == labels).float().mean())}

    def predict(self, model, items, batch_size: int = 64) -> list[int]:
        preds = []
        for b in range(0, len(items), batch_size):
            chunk = items[b: b + batch_size]
            feats, lengths, ef, el, _ = self._tensors(chunk, [0] * len(chunk))
            preds += model(feats, lengths, ef, el).argmax(-1).tolist()
        return preds

    def eval_fn(self, model):
        preds = self.predict(model, self.dev)
        refs = [u.label for u, _ in self.dev]
        st = ua_spk(refs, preds, [u.speaker for u, _ in self.dev])
        return {"score": st.mean, "ua_spk": st.mean}

    def train(self) -> dict:
        write_run_config(self.cfg, self.cfg.out_dir)
        trainer = Trainer(self.model, self.batch_fn, self.loss_fn, self.cfg.out_dir, self.cfg.train, self.eval_fn)
        summary = trainer.fit()
        if self.rank == 0 and self.cfg.variant in ("scratch", "relative"):
            best = Path(self.cfg.out_dir) / "checkpoints" / "best" / "model"
            if best.is_dir():  # export the encoder of the best model on its own, for the other recipes

                SERClassifier.from_pretrained(best).encoder.save_pretrained(Path(self.cfg.out_dir) / "encoder")
        return summary


def run(cfg: ClassifierConfig) -> dict:
    recipe = ClassifierRecipe(cfg)
    recipe.setup()
    return recipe.train()

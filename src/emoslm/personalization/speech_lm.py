"""Recipe: the speech LM of paper 000 and its MetaICL training (Eqs. 16, 18-19).

Stages (``stage``):
- ``zero_shot``: stage 1, fine-tuning without enrollment pairs (Eq. 16): ``W U_t -> Z_t``;
- ``metaicl``: stage 2, meta-training with k enrollment pairs of the target's speaker, with ``setting``
  - ``TU+LU_0:7`` (the paper's): k = 0..7 random pairs of the same speaker, target excluded. With a decoder-only
    LLM one sequence of 8 same-speaker utterances with a loss on every label trains all k at once;
  - ``TO+LD_7``: exactly 7 pairs, one of each emotion (the target's included, Table IV);
  - ``Neutral_0:7``: k = 0..7 neutral pairs only (Table IV).

The speech encoder is frozen (paper: "the speech encoder parameters are fixed"); its outputs are computed once
for every utterance and every speaker style (augmentation), so a training step runs only the Q-Former and the
LLM. Each episode gets one random style for all its utterances: a new pseudo-speaker whose baseline only the
context reveals. With ``channel_augment`` the training utterances are also heard through random transmission
channels (:mod:`emoslm.data.channel`: phone line, codecs, noise, level), drawn per utterance (see
:meth:`~emoslm.personalization.data.SERData.channel_mix`); dev episodes stay clean.

    emoslm train speech_lm --config configs/speech_lm_stage2.yaml [--set train.max_steps=...]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from emoslm.data.augment import sample_styles
from emoslm.errors import ConfigError, EmoslmError
from emoslm.data.episodes import EpisodeSampler, sample_enrollment
from emoslm.models.encoders import FbankTransformerEncoder
from emoslm.personalization.data import EncodedStore, SERData
from emoslm.personalization.model import Example, SpeechICLConfig, SpeechICLModel
from emoslm.personalization.scoring import evaluate_episodes
from emoslm.training.trainer import (
    TrainArgs,
    Trainer,
    rank_zero_first,
    start_run,
    write_run_config,
)

log = logging.getLogger(__name__)

STAGES = ("zero_shot", "metaicl")
SETTINGS = ("TU+LU_0:7", "TO+LD_7", "Neutral_0:7")


@dataclass
class SpeechLMConfig:
    corpus: str = "data/synth_demo"
    out_dir: str = "runs/speech_lm"
    encoder: str = ""  # frozen pretrained encoder checkpoint directory
    label_set: str = "ekman7"
    stage: str = "metaicl"
    setting: str = "TU+LU_0:7"
    k_max: int = 7
    init_from: str | None = None  # a SpeechICLModel checkpoint (stage 2 starts from stage 1)
    qformer: dict = field(default_factory=lambda: {"n_queries": 4, "d_model": 128, "n_layers": 2, "n_heads": 4,
                                                   "d_ff": 256, "dropout": 0.1})
    llm: dict = field(default_factory=lambda: {"name": "tiny-llama", "mode": "full", "dropout": 0.1})
    relative_context: bool = False  # see SpeechICLConfig.relative_context
    bind_labels: bool = False  # see SpeechICLConfig.bind_labels
    #: per-episode pseudo-speaker augmentation of the speech tokens: one random per-dimension scale
    #: (log-normal, this std) and offset (normal, this std, in units of the token scale) shared by all
    #: utterances of an episode; 0 = off
    token_aug_scale: float = 0.0
    token_aug_offset: float = 0.0
    #: probability that a training episode's labels are renamed by one random permutation of the label set
    #: (context and target alike): the only way to get such an episode right is to read the enrollment labels
    label_permute_prob: float = 0.0
    batch_size: int = 32
    label_smoothing: float = 0.1
    augment_styles: int = 16
    style_seed: int = 0
    #: extra transmission channels of every training utterance (0: off). Each is drawn per utterance, not per
    #: episode: a speaker's enrollment and queries often come through different channels (enrolled in an app,
    #: queried over a phone line), so an utterance's reading must not depend on its channel, even when the
    #: episode's other utterances came through another one. Needs augment_styles >= 2 (style 0 stays clean).
    channel_augment: int = 0
    channel_seed: int = 0
    dev_k: tuple[int, ...] = (0, 4)
    dev_max_episodes: int | None = None  # a seeded subset of the dev episodes (large LLMs evaluate slowly)
    threads: int = 1
    cache_dir: str | None = None  # encoder outputs (default: <corpus>/encoded)
    train: TrainArgs = field(default_factory=lambda: TrainArgs(max_steps=1000, lr=1e-3, warmup_steps=50,
                                                                 eval_every=100, save_every=100))


def encode_corpus(data: SERData, encoder_dir: str, n_styles: int, style_seed: int, cache_dir: str | Path,
                  progress: bool = True) -> EncodedStore:
    encoder = FbankTransformerEncoder.from_pretrained(encoder_dir)
    styles = sample_styles(max(1, n_styles), style_seed)
    enc_id = str(Path(encoder_dir).resolve()) + str((Path(encoder_dir) / "model.safetensors").stat().st_mtime_ns)
    per_style = None
    if data.channel_fbank:  # the channels ride on the styles: one drawn per training utterance in each style but 0
        per_style = data.channel_mix(len(styles), data.channel_seed)
        enc_id += f"|channels:{','.join(c.key for c in data.channels)}:{data.channel_seed}"
    return EncodedStore.build(encoder, data.fbank, styles, cache=cache_dir, encoder_id=enc_id, progress=progress,
                              per_style=per_style)


class SpeechLMRecipe:
    def __init__(self, cfg: SpeechLMConfig):
        if cfg.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {cfg.stage!r}")
        if cfg.stage == "metaicl" and cfg.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {cfg.setting!r}")
        if not cfg.encoder:
            raise ValueError("encoder: a pretrained speech encoder checkpoint directory is required")
        # Checked before any data is read: a missing earlier stage is the usual mistake of a new corpus's run.
        if not Path(cfg.encoder).is_dir():
            raise EmoslmError(f"encoder: {cfg.encoder} does not exist (train it first: emoslm train classifier "
                              "--config classifier_relative --set corpus=... --set out_dir=...; it writes OUT/encoder)")
        if cfg.channel_augment < 0 or (cfg.channel_augment and cfg.augment_styles < 2):
            raise ConfigError(f"channel_augment must be >= 0, and needs augment_styles >= 2 (channels are drawn "
                              f"within the style variants; style 0 stays clean); got channel_augment="
                              f"{cfg.channel_augment}, augment_styles={cfg.augment_styles}")
        if cfg.init_from and not Path(cfg.init_from).is_dir():
            raise EmoslmError(f"init_from: {cfg.init_from} does not exist (train stage 1 first: emoslm train "
                              "speech_lm --config speech_lm_stage1 --set out_dir=..., or --set init_from=null)")
        self.cfg = cfg

    def setup(self) -> None:
        cfg = self.cfg
        self.rank, self.world = start_run(cfg.threads, cfg.train.seed)

        def load():
            data = SERData(cfg.corpus, label_set=cfg.label_set, splits=["train", "dev"], progress=self.rank == 0,
                           channel_augment=cfg.channel_augment, channel_seed=cfg.channel_seed)
            store = encode_corpus(data, cfg.encoder, cfg.augment_styles, cfg.style_seed,
                                  cfg.cache_dir or Path(cfg.corpus) / "encoded", progress=self.rank == 0)
            return data, store

        self.data, self.store = rank_zero_first(load)
        d_enc = next(iter(self.store.hidden[0].values())).shape[1]
        self.model = SpeechICLModel(SpeechICLConfig(d_encoder=d_enc, qformer=dict(cfg.qformer), llm=dict(cfg.llm),
                                                    label_set=cfg.label_set, relative_context=cfg.relative_context,
                                                    bind_labels=cfg.bind_labels))
        if cfg.init_from:  # architecture and dropout from this config, weights from the checkpoint
            self.model.load_weights(cfg.init_from)
        self.spk = self.data.by_speaker["train"]
        self.speakers = sorted(self.spk)
        self.neutral = self.data.label_set.index("neutral")
        sampler = EpisodeSampler(self.data.items("dev"), label_set=self.data.label_set)
        self.dev_episodes = {k: sampler.episodes(k=k, target="TU", label="LU", seed=99, on_error="skip")
                             for k in cfg.dev_k}
        if cfg.dev_max_episodes:
            pick = np.random.default_rng(99)
            self.dev_episodes = {k: [eps[i] for i in sorted(pick.choice(len(eps), min(len(eps), cfg.dev_max_episodes),
                                                                       replace=False))]
                                 for k, eps in self.dev_episodes.items()}

    # ------------------------------------------------------------------------------------ data

    def _episode(self, rng: np.random.Generator) -> tuple[list, bool]:
        """(list of (utterance, style) with the target last, whether every position is a target)."""
        cfg = self.cfg
        utts = self.spk[self.speakers[int(rng.integers(len(self.speakers)))]]
        if cfg.stage == "zero_shot":
            return [utts[int(rng.integers(len(utts)))]], False
        if cfg.setting == "TU+LU_0:7":
            n = min(cfg.k_max + 1, len(utts))
            idx = rng.choice(len(utts), size=n, replace=False)
            if self.model.is_encoder_decoder:  # one target per sequence: draw k, keep k pairs + target
                k = int(rng.integers(0, n))
                idx = idx[: k + 1]
                return [utts[i] for i in idx], False
            return [utts[i] for i in idx], True
        target = utts[int(rng.integers(len(utts)))]
        pool = [(u.id, u.label) for u in utts]
        by_id = {u.id: u for u in utts}
        if cfg.setting == "TO+LD_7":
            ctx = sample_enrollment(target.id, target.label, pool, cfg.k_max, "TO", "LD", int(rng.integers(2**31)))
        else:  # Neutral_0:7
            neutral = [(i, l) for i, l in pool if l == self.neutral and i != target.id]
            k = min(int(rng.integers(0, cfg.k_max + 1)), len(neutral))
            ctx = [neutral[j] for j in rng.choice(len(neutral), size=k, replace=False)] if k else []
        return [by_id[i] for i, _ in ctx] + [target], False

    def _batch(self, step: int, rng: np.random.Generator):
        """Episodes as lists of (utterance, style, label index to predict)."""
        episodes, all_pos = [], []
        n_labels = len(self.data.label_set)
        for _ in range(self.cfg.batch_size):
            ep, ap = self._episode(rng)
            style = int(rng.integers(len(self.store.styles)))
            names = np.arange(n_labels)
            if self.cfg.label_permute_prob and rng.random() < self.cfg.label_permute_prob:
                names = rng.permutation(n_labels)
            episodes.append([(u, style, int(names[u.label])) for u in ep])
            all_pos.append(ap)
        return episodes, all(all_pos)

    def batch_fn(self, step: int, rng: np.random.Generator):
        episodes, all_positions = self._batch(step, rng)
        aug = None
        cfg = self.cfg
        if cfg.token_aug_scale or cfg.token_aug_offset:
            hidden = self.model.backbone.hidden_size
            aug = (torch.from_numpy(np.exp(rng.normal(0, cfg.token_aug_scale, (len(episodes), hidden)))).float(),
                   torch.from_numpy(rng.normal(0, cfg.token_aug_offset, (len(episodes), hidden))).float())
        return episodes, all_positions, aug

    def loss_fn(self, model, batch):
        episodes, all_positions, aug = batch
        flat = [x for ep in episodes for x in ep]
        hidden, mask = self.store.batch([u.id for u, _, _ in flat], [s for _, s, _ in flat])
        tokens = model.speech_tokens(hidden, mask)
        if aug is not None:  # the same transform for every utterance of an episode: a new pseudo-speaker
            per_utt = torch.tensor([i for i, ep in enumerate(episodes) for _ in ep])
            scale, offset = aug[0][per_utt][:, None, :], aug[1][per_utt][:, None, :]
            tokens = tokens * scale + offset * model.speech_scale
        lengths = {len(ep) for ep in episodes}
        if model.label_len is not None and not model.is_encoder_decoder and len(lengths) == 1:
            n = lengths.pop()  # every episode has n examples: lay them out as tensors (fast path)
            labels = torch.tensor([[lab for _, _, lab in ep] for ep in episodes])
            return model.uniform_loss(tokens.view(len(episodes), n, *tokens.shape[1:]), labels,
                                      label_smoothing=self.cfg.label_smoothing, all_positions=all_positions)
        out, i = [], 0
        for ep in episodes:
            out.append([Example(tokens[i + j], lab) for j, (_, _, lab) in enumerate(ep)])
            i += len(ep)
        return model.loss(out, label_smoothing=self.cfg.label_smoothing, all_positions=all_positions)

    def eval_fn(self, model):
        res = {}
        for k, eps in self.dev_episodes.items():
            r = evaluate_episodes(model, self.store, self.data.label_set, eps)
            res[f"ua_spk_k{k}"] = r.ua_spk
        key = f"ua_spk_k{max(self.cfg.dev_k)}" if self.cfg.stage == "metaicl" else f"ua_spk_k{min(self.cfg.dev_k)}"
        res["score"] = res[key]
        return res

    def train(self) -> dict:
        write_run_config(self.cfg, self.cfg.out_dir)
        trainer = Trainer(self.model, self.batch_fn, self.loss_fn, self.cfg.out_dir, self.cfg.train, self.eval_fn)
        summary = trainer.fit()
        return summary


def run(cfg: SpeechLMConfig) -> dict:
    recipe = SpeechLMRecipe(cfg)
    recipe.setup()
    return recipe.train()

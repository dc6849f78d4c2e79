"""Recipe: E-chat's two-stage training (paper 003, Sec. 3.2).

- ``stage: 1`` (ASR): encoder + speech layer weighting + connection module trainable (the encoder frozen with
  ``model.freeze_encoder: true``), LLM frozen, alpha = 0, prompt "Transcribe the speech."; data: the dialogue
  dataset's training questions, plus an optional prepared corpus with transcripts (``asr_corpus``, e.g. the
  synthetic corpus ``data/synth_demo``); a transcript equal to a test question is refused
  (:func:`check_no_test_questions`);
- ``stage: 2`` (emotional-response SFT on the dialogue dataset): connection module + emotion weighting, pooling,
  projection and head trainable; encoder and LLM frozen; loss ``(1 - alpha) L_decoder + alpha L_emotion`` with
  alpha = 0.1; ``init_from`` the stage-1 checkpoint. With ``emotion_corpus`` (a prepared SER corpus, e.g. the
  synthetic corpus ``data/synth_demo``) each batch also holds ``emotion_batch_size`` of its training utterances
  (emotions mapped into the label set; those outside it left out), which train the emotion branch (layer
  weighting, pooling, head) by the emotion loss alone: the paper's E-chat200 has 200 hours of emotion-labelled
  speech, the embedded dialogue data about 100 training entries, too few for the auxiliary head to learn from.
  With ``emotion_warmup_steps`` the emotion branch first trains on that corpus alone
  (:func:`warm_up_emotion_branch`: the emotion loss, no LLM, the frozen encoder's states cached, so a step costs
  milliseconds), its best step chosen on the corpus's dev speakers: stage 2 then starts from an emotion
  embedding that already carries the emotion, instead of learning it at a tenth of the loss (alpha) in the few
  steps a CPU budget allows.

The dialogue data's splits must be disjoint by question and by speaker (:func:`~emoslm.echat.dialogue.load_manifest`
refuses data made with entry-random splits). Every utterance's encoder input is computed once, and while the
encoder is frozen (stage 2; stage 1 with ``model.freeze_encoder``) so are its hidden states
(:class:`~emoslm.echat.model.FrozenStatesCache`). The dev score is
minus the teacher-forced decoder loss on the valid split (cheap; the generated responses are scored by
:func:`emoslm.echat.evaluation.evaluate_echat`).

    emoslm train echat --config echat_stage1 [--set train.max_steps=...]
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emoslm.audio import load_audio
from emoslm.data.manifests import emotion_of, load_prepared
from emoslm.echat.dialogue import load_manifest, manifest_digest
from emoslm.echat.model import (
    ASR_PROMPT,
    RESPONSE_PROMPT,
    EChatConfig,
    EChatModel,
    FrozenStatesCache,
    Sample,
)
from emoslm.errors import EmoslmError
from emoslm.metrics.text import normalize_text
from emoslm.training.trainer import (
    TrainArgs,
    Trainer,
    rank_zero_first,
    resumable_checkpoint,
    start_run,
    write_run_config,
)
from emoslm.training.trainer import best_checkpoint as _best_checkpoint

log = logging.getLogger(__name__)

ALPHA = {1: 0.0, 2: 0.1}  # paper 003, Eq. 1


@dataclass
class EChatRecipeConfig:
    data: str = "data/echat_demo"
    # manifest_digest(data) when set (the pipeline sets it): part of the run's recorded settings, so a stage
    # trained on other data is not reused; the recipe refuses data that no longer matches it
    data_digest: str | None = None
    out_dir: str = "runs/echat/stage1"
    stage: int = 1
    init_from: str | None = None  # stage 2 starts from the stage-1 checkpoint
    model: dict = field(default_factory=lambda: {
        "encoder": {"kind": "fbank", "preset": "tiny"}, "llm": {"name": "smollm2"}, "stack": 2,
        "d_connector": 256, "connector_layers": 4, "connector_heads": 4, "connector_ff": 1024, "dropout": 0.1})
    alpha: float | None = None  # default: 0 in stage 1, 0.1 in stage 2
    asr_corpus: str | None = None  # a prepared corpus with transcripts, added to stage 1's data
    asr_max_utterances: int | None = None  # a seeded subset of its training split
    emotion_corpus: str | None = None  # stage 2: a prepared SER corpus whose utterances train the emotion loss
    emotion_max_utterances: int | None = 1000  # a seeded subset of its training split
    emotion_batch_size: int = 8  # its utterances per step, beside batch_size dialogue entries
    emotion_dev_utterances: int = 300  # a seeded subset of its dev split, scored at every evaluation
    # stage 2 with emotion_corpus: steps that train the emotion branch alone on it before stage 2 (0: none)
    emotion_warmup_steps: int = 0
    emotion_warmup_lr: float = 2e-3
    emotion_warmup_batch_size: int = 64
    emotion_warmup_eval_every: int = 100
    batch_size: int = 8
    threads: int = 1
    train: TrainArgs = field(default_factory=lambda: TrainArgs(max_steps=300, lr=5e-4, warmup_steps=30,
                                                                 eval_every=100, save_every=100, optimizer="adamw"))


def asr_samples(corpus: str, featurize, limit: int | None, seed: int) -> list[Sample]:
    """(speech, transcript) samples of a prepared corpus's training split."""
    prepared = load_prepared(corpus)
    if "train" not in prepared:
        raise ValueError(f"{corpus} has no train split")
    recs = prepared["train"]["recordings"]
    sups = [s for s in prepared["train"]["supervisions"] if s.text]
    if limit is not None and limit < len(sups):
        sups = [sups[i] for i in sorted(np.random.default_rng(seed).choice(len(sups), limit, replace=False))]
    return [Sample(featurize(load_audio(recs[s.recording_id].sources[0].source, offset=s.start,
                                        duration=s.duration)), ASR_PROMPT, s.text) for s in sups]


def emotion_samples(corpus: str, featurize, label_set, limit: int | None, seed: int,
                    split: str = "train") -> list[Sample]:
    """(speech, emotion) samples of a prepared corpus's ``split``, their emotions mapped into ``label_set``
    (utterances of other emotions left out); no response: they train (or, from the dev split, score) the emotion
    branch only."""
    prepared = load_prepared(corpus)
    if split not in prepared:
        raise EmoslmError(f"emotion_corpus {corpus} has no {split} split")
    recs = prepared[split]["recordings"]
    sups = [(s, lab) for s in prepared[split]["supervisions"]
            if emotion_of(s) and (lab := label_set.map(emotion_of(s))) is not None]
    if not sups:
        raise EmoslmError(f"emotion_corpus {corpus}: no {split} utterance has an emotion of {label_set.name} "
                          f"({', '.join(label_set.labels)})")
    if limit is not None and limit < len(sups):
        sups = [sups[i] for i in sorted(np.random.default_rng(seed).choice(len(sups), limit, replace=False))]
    return [Sample(featurize(load_audio(recs[s.recording_id].sources[0].source, offset=s.start,
                                        duration=s.duration)), "", None, label_set.index(lab)) for s, lab in sups]


def emotion_accuracy(model: EChatModel, samples: list[Sample], batch_size: int = 32) -> float:
    """The emotion head's accuracy on ``samples`` (their ``emotion`` indices)."""
    right = 0
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            batch = samples[i:i + batch_size]
            pred = model.emotion_logits(model.encode_emotion([s.inputs for s in batch])).argmax(-1).tolist()
            right += sum(int(p == s.emotion) for p, s in zip(pred, batch))
    return right / len(samples)


def warm_up_emotion_branch(model: EChatModel, train: list[Sample], dev: list[Sample], steps: int, lr: float,
                           batch_size: int, eval_every: int, seed: int, progress: bool = False) -> dict:
    """Train the emotion branch (emotion layer weighting, attentive pooling, head) on ``train`` by the emotion
    loss alone: AdamW, ``lr`` after a linear warm-up over a tenth of the steps, ``batch_size`` utterances per
    step, drawn with ``seed``. Every ``eval_every`` steps (and at the end) the head is scored on ``dev``; the
    best-scoring step's weights are kept (the last without ``dev``). Returns what happened: the dev accuracy per
    evaluation, the step kept and its score."""
    from tqdm import tqdm

    parts = [model.emotion_weights, model.emotion_pool, model.emotion_head]
    params = [p for m in parts for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm))
    rng = np.random.default_rng([seed, 1])
    n = min(batch_size, len(train))
    was_training = model.training
    history: list[dict] = []
    best: dict = {"step": 0, "dev_ser_emotion_acc": -1.0, "state": None}

    def evaluate(step: int) -> None:
        model.eval()
        acc = emotion_accuracy(model, dev)
        model.train()
        history.append({"step": step, "dev_ser_emotion_acc": acc})
        if acc > best["dev_ser_emotion_acc"]:
            best.update(step=step, dev_ser_emotion_acc=acc, state=[copy.deepcopy(m.state_dict()) for m in parts])

    model.train()
    if dev:
        evaluate(0)
    for step in tqdm(range(1, steps + 1), desc="emotion warm-up", unit="step", disable=not progress):
        batch = [train[int(i)] for i in rng.choice(len(train), size=n, replace=False)]
        logits = model.emotion_logits(model.encode_emotion([s.inputs for s in batch]))
        loss = F.cross_entropy(logits, torch.tensor([s.emotion for s in batch], device=logits.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if dev and (step % eval_every == 0 or step == steps):
            evaluate(step)
    if best["state"] is not None:
        for m, state in zip(parts, best["state"]):
            m.load_state_dict(state)
    model.train(was_training)
    kept = best["step"] if dev else steps
    log.info("emotion warm-up: %d steps, kept step %d (dev emotion acc %s)", steps, kept,
             f"{best['dev_ser_emotion_acc']:.3f}" if dev else "not scored")
    return {"steps": steps, "kept_step": kept, "history": history,
            "dev_ser_emotion_acc": best["dev_ser_emotion_acc"] if dev else None,
            "train_utterances": len(train), "dev_utterances": len(dev)}


def check_no_test_questions(texts: list[str], test_rows: list[dict], data: str) -> None:
    """Refuse stage-1 (ASR) training transcripts that are test questions of the dialogue data (compared lower
    case, without punctuation): stage 1's CER/WER and E-chat's replies on the test split would be scored on
    questions the model learned to transcribe."""
    test_questions = {normalize_text(r["question"]) for r in test_rows}
    leaked = sorted({t for t in texts if normalize_text(t) in test_questions})
    if leaked:
        raise EmoslmError(f"stage 1 would train on {len(leaked)} test question(s) of {data}, e.g. {leaked[0]!r}: "
                          "remove them from the ASR data (asr_corpus) or rebuild the dialogue data with "
                          "`emoslm synth dialogue`")


class EChatRecipe:
    def __init__(self, cfg: EChatRecipeConfig):
        if cfg.stage not in ALPHA:
            raise ValueError(f"stage must be 1 or 2, got {cfg.stage!r}")
        if cfg.stage == 2 and not cfg.init_from:
            log.warning("stage 2 without init_from: the connection module was not trained on ASR (stage 1)")
        if cfg.data_digest is not None and cfg.data_digest != manifest_digest(cfg.data):
            raise EmoslmError(f"{cfg.data} is not the data this run was set up with (data_digest "
                              f"{cfg.data_digest}, found {manifest_digest(cfg.data)}): set data_digest=null or "
                              "start the run again")
        self.cfg = cfg
        self.alpha = ALPHA[cfg.stage] if cfg.alpha is None else cfg.alpha

    def samples(self, split: str) -> list[Sample]:
        featurize = self.model.featurize
        rows = load_manifest(self.cfg.data, split)
        if self.cfg.stage == 1:
            return [Sample(featurize(load_audio(r["audio"])), ASR_PROMPT, r["question"]) for r in rows]
        ls = self.model.label_set
        return [Sample(featurize(load_audio(r["audio"])), RESPONSE_PROMPT, r["response"], ls.index(r["emotion"]))
                for r in rows]

    def setup(self) -> None:
        cfg = self.cfg
        self.rank, self.world = start_run(cfg.threads, cfg.train.seed)
        self.model = EChatModel(EChatConfig(**cfg.model))
        if cfg.init_from:
            self.model.load_weights(cfg.init_from)
        self.model.set_stage(cfg.stage)
        self.model.states_cache = FrozenStatesCache()  # used while the encoder is frozen

        def load():
            train = self.samples("train")
            if cfg.stage == 1 and cfg.asr_corpus:
                train += asr_samples(cfg.asr_corpus, self.model.featurize, cfg.asr_max_utterances,
                                     cfg.train.seed)
            if cfg.stage == 1:
                check_no_test_questions([s.target for s in train], load_manifest(cfg.data, "test"), cfg.data)
            emotion, emotion_dev = [], []
            if cfg.stage == 2 and cfg.emotion_corpus:
                featurize, labels = self.model.featurize, self.model.label_set
                emotion = emotion_samples(cfg.emotion_corpus, featurize, labels, cfg.emotion_max_utterances,
                                          cfg.train.seed)
                if "dev" in load_prepared(cfg.emotion_corpus):  # the emotion head's own dev score
                    emotion_dev = emotion_samples(cfg.emotion_corpus, featurize, labels, cfg.emotion_dev_utterances,
                                                  0, split="dev")
            return train, self.samples("valid"), emotion, emotion_dev

        self.train_set, self.valid_set, self.emotion_set, self.emotion_dev = rank_zero_first(load)
        if not self.train_set:
            raise ValueError(f"{cfg.data} has no training entries")

    def batch_fn(self, step: int, rng: np.random.Generator) -> list[Sample]:
        idx = rng.choice(len(self.train_set), size=min(self.cfg.batch_size, len(self.train_set)), replace=False)
        batch = [self.train_set[int(i)] for i in idx]
        if self.emotion_set:
            n = min(self.cfg.emotion_batch_size, len(self.emotion_set))
            batch += [self.emotion_set[int(i)] for i in rng.choice(len(self.emotion_set), size=n, replace=False)]
        return batch

    def loss_fn(self, model: EChatModel, batch: list[Sample]):
        return model.loss(batch, self.alpha)

    def eval_fn(self, model: EChatModel) -> dict:
        if not self.valid_set:
            return {"score": 0.0}
        losses, accs, sizes = [], [], []
        for i in range(0, len(self.valid_set), self.cfg.batch_size):
            batch = self.valid_set[i:i + self.cfg.batch_size]
            _, info = model.loss(batch, self.alpha)
            losses.append(info["decoder_loss"])
            accs.append(info.get("emotion_acc", np.nan))
            sizes.append(len(batch))
        loss = float(np.average(losses, weights=sizes))
        res = {"valid_decoder_loss": loss, "score": -loss}
        if self.alpha > 0:
            res["valid_emotion_acc"] = float(np.average(accs, weights=sizes))
        if self.emotion_dev:  # the emotion head on the SER corpus's dev speakers (the dialogue valid split is tiny)
            res["dev_ser_emotion_acc"] = emotion_accuracy(model, self.emotion_dev)
        return res

    def warm_up(self) -> dict | None:
        """The emotion branch's warm-up (:func:`warm_up_emotion_branch`) when this run asks for one; not when the
        trainer is about to resume a checkpoint (which already holds the warmed-up branch): then the record of
        the first attempt is returned."""
        cfg, record = self.cfg, Path(self.cfg.out_dir) / "emotion_warmup.json"
        if cfg.stage != 2 or not cfg.emotion_warmup_steps or not self.emotion_set:
            return None
        if resumable_checkpoint(cfg.out_dir) is not None:
            return json.loads(record.read_text()) if record.is_file() else None
        result = warm_up_emotion_branch(self.model, self.emotion_set, self.emotion_dev, cfg.emotion_warmup_steps,
                                        cfg.emotion_warmup_lr, cfg.emotion_warmup_batch_size,
                                        cfg.emotion_warmup_eval_every, cfg.train.seed,
                                        progress=cfg.train.progress and self.rank == 0)
        if self.rank == 0:
            record.write_text(json.dumps(result, indent=1))
        return result

    def train(self) -> dict:
        write_run_config(self.cfg, self.cfg.out_dir)
        warmup = self.warm_up()
        trainer = Trainer(self.model, self.batch_fn, self.loss_fn, self.cfg.out_dir, self.cfg.train, self.eval_fn)
        summary = trainer.fit()
        if warmup is not None:  # kept in the run's summary, which a reusing pipeline reads back
            summary["emotion_warmup"] = warmup
            if self.rank == 0:
                path = Path(self.cfg.out_dir) / "train_summary.json"
                path.write_text(json.dumps(summary, indent=2, default=str))
        return summary


def run(cfg: EChatRecipeConfig) -> dict:
    recipe = EChatRecipe(cfg)
    recipe.setup()
    return recipe.train()


def best_checkpoint(out_dir: str | Path) -> Path:
    """The best (else last) model checkpoint of a run."""
    return _best_checkpoint(out_dir, "E-chat", "train one with `emoslm run echat` (both stages), or `emoslm train "
                                               "echat --config echat_stage1` then `--config echat_stage2`")
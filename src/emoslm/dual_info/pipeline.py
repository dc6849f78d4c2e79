"""Paper 002 end to end: data, the three training stages, Tables I, III and IV, the HTML report.

    emoslm run dual_info [--profile tiny|demo|long] [--set steps=[150,100,100] --set judge=smollm2 ...]

1. the embedded corpus (``emoslm synth corpus --preset demo``) and the dual-information conversations written
   by the frozen LLM (``emoslm synth conversations --preset demo``), both cached;
2. stages 1 (joint), 2 (ERR) and 3 (holistic), each from the previous stage's best checkpoint, capped in steps
   and minutes; a finished stage is not trained again when its recorded settings are the ones about to run
   (:func:`emoslm.training.reuse.check_run`; otherwise it is trained again and the log says which keys differ);
3. the evaluation (:mod:`emoslm.dual_info.evaluation`) of the stage-1 and final models: Table I (attributes, WA,
   with P&L-, P- and L-Embs), Table III (ASR, WER, with P&L-, L- and P-Embs) and Table IV (conversations: the
   judge's CS and EGS scores and SIM, for the final SLM, the stage-1 SLM, the frozen LLM reading the plain
   transcript, and the reference replies), the judge's scores only when it first ranked a relevant reply above
   an irrelevant one on at least 80 % of ``judge_check_pairs`` pairs (:mod:`emoslm.dual_info.judge_sanity`;
   the check is in the results as ``judge_check``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emoslm.config import load_config
from emoslm.data.utterances import load_utterances
from emoslm.dual_info import evaluation as ev
from emoslm.dual_info import recipe
from emoslm.dual_info.conversations import build_conversations, load_conversations
from emoslm.dual_info.judge import Judge
from emoslm.dual_info.judge_sanity import SANITY_PAIRS, pick_pairs, verdict
from emoslm.dual_info.model import DualInfoSLM
from emoslm.dual_info.recipe import (
    best_checkpoint,
    conversation_utterance,
    utterance_features,
)
from emoslm.errors import CheckpointError, EmoslmError
from emoslm.metrics.text import SentenceSimilarity
from emoslm.models.frozen_speech import FeatureCache, build_frozen_encoder
from emoslm.models.text_llm import load_backend
from emoslm.synth.corpus import synthesize_corpus
from emoslm.training.reuse import check_run

log = logging.getLogger(__name__)


@dataclass
class DualInfoRun:
    data: str = "data/synth_demo"
    conversations: str = "data/conversations_demo"
    corpus_preset: str = "demo"  # what to synthesise when ``data`` does not exist yet
    conversation_preset: str = "demo"  # likewise for ``conversations``
    features: str = "data/features"
    runs: str = "runs/dual_info"
    encoder: dict = field(default_factory=lambda: {"kind": "whisper", "model": "tiny.en"})
    llm: str = "smollm2"
    steps: tuple[int, int, int] = (150, 100, 100)
    init_stage1: str | None = None  # continue stage 1 from a checkpoint (e.g. a shorter run's best)
    minutes: float | None = 12.0  # per stage
    batch_size: int = 8
    threads: int = 2
    max_train_utterances: int | None = None
    test_utterances: int = 40
    test_conversations: int = 20
    judge: str = "smollm2"  # or "openai" with judge_base_url / judge_model
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_check_pairs: int = SANITY_PAIRS  # relevant/irrelevant pairs the judge must rank before Table IV
    seed: int = 0
    progress: bool = True
    extra: list[str] = field(default_factory=list)  # --set overrides for every stage

    def __post_init__(self):
        if self.judge_check_pairs < 1:  # zero pairs would read as a way to skip the check: there is none
            raise EmoslmError(f"judge_check_pairs must be at least 1 (the judge is always checked before Table IV), "
                              f"got {self.judge_check_pairs}")


def ensure_data(run: DualInfoRun) -> None:
    if not (Path(run.data) / "summary.json").is_file():
        log.info("synthesising the demo corpus into %s", run.data)
        synthesize_corpus(run.data, run.corpus_preset, progress=run.progress)
    if not (Path(run.conversations) / "summary.json").is_file():
        build_conversations(run.data, run.conversations, load_backend(run.llm), preset=run.conversation_preset,
                            progress=run.progress)


def train_stages(run: DualInfoRun) -> dict[int, dict[str, Any]]:
    runs = Path(run.runs)
    summaries = {}
    for stage, steps in zip((1, 2, 3), run.steps):
        out = runs / f"stage{stage}"
        overrides = [f"data={run.data}", f"conversations={run.conversations}", f"features={run.features}",
                     f"encoder={json.dumps(run.encoder)}", f"out_dir={out}", f"model.llm.name={run.llm}",
                     f"train.max_steps={steps}", f"batch_size={run.batch_size}", f"threads={run.threads}",
                     f"train.seed={run.seed}", f"progress={str(run.progress).lower()}",
                     f"train.progress={str(run.progress).lower()}",
                     f"train.eval_every={max(1, steps // 3)}", f"train.save_every={max(1, steps // 3)}",
                     f"train.warmup_steps={max(1, steps // 10)}"]
        if run.minutes:
            overrides.append(f"train.max_minutes={run.minutes}")
        if run.max_train_utterances:
            overrides.append(f"max_train_utterances={run.max_train_utterances}")
        if stage > 1:
            overrides.append(f"init_from={recipe.best_checkpoint(runs / f'stage{stage - 1}')}")
        elif run.init_stage1:
            overrides.append(f"init_from={run.init_stage1}")
        cfg = load_config(recipe.DualInfoRecipeConfig, f"dual_info_stage{stage}", [*overrides, *run.extra])
        check = check_run(out, cfg, f"stage {stage}")  # a finished stage is reused only with the same settings
        if check.reuse:
            summaries[stage] = check.summary(out)
            continue
        # the trainer writes train_summary.json when the stage ends
        summaries[stage] = {**recipe.run(cfg), "reused": False}
    return summaries


def _test_subset(utts: Sequence[Any], n: int, seed: int) -> list[Any]:
    """``n`` test utterances spread over the speakers (round robin over speakers in a seeded order)."""
    rng = np.random.default_rng(seed)
    by_spk: dict[str, list[Any]] = {}
    for u in utts:
        by_spk.setdefault(u.speaker, []).append(u)
    for v in by_spk.values():
        rng.shuffle(v)
    speakers = sorted(by_spk)
    rng.shuffle(speakers)
    out: list[Any] = []
    while len(out) < min(n, len(utts)):
        for s in speakers:
            if by_spk[s] and len(out) < n:
                out.append(by_spk[s].pop())
    return out


def _has_checkpoint(out_dir: str | Path) -> bool:
    return any((Path(out_dir) / "checkpoints" / n / "model" / "model.safetensors").is_file() for n in ("best", "last"))


def evaluate(run: DualInfoRun, models: dict[str, str | Path], judge_backend=None) -> dict[str, Any]:
    """Tables I, III and IV for ``models`` (name -> checkpoint); the last one is the main system."""
    import torch

    models = dict(models)
    for name, path in models.items():  # before the features are computed: a typo fails in a second
        if (Path(path) / "model.safetensors").is_file():
            continue
        if Path(path).is_dir() and _has_checkpoint(path):  # a stage's run folder: its best checkpoint
            models[name] = best_checkpoint(path)
            continue
        what = "holds no model.safetensors" if Path(path).is_dir() else "does not exist"
        raise CheckpointError(f"model {name!r}: {path} {what}; pass a dual-information checkpoint (a stage's run "
                              "folder such as runs/dual_info/stage3, or its checkpoints/best/model); train one with "
                              "`emoslm run dual_info`")
    torch.set_num_threads(run.threads)
    t0 = time.perf_counter()
    cache = FeatureCache(run.features, build_frozen_encoder(run.encoder))
    test = _test_subset(load_utterances(run.data, "test"), run.test_utterances, run.seed)
    convs = load_conversations(run.conversations, "test")[: run.test_conversations]
    feats = utterance_features(cache, test + [conversation_utterance(r) for r in convs], run.progress)
    train_utts = load_utterances(run.data, "train")
    res: dict[str, Any] = {"table1": {}, "table3": {}, "majority": ev.majority_baseline(train_utts, test)}
    replies: dict[str, list[str]] = {}
    for name, path in models.items():
        # a model's answers are kept (runs/eval/<key>.json): a rerun, e.g. with another judge, reuses them
        weights = Path(path) / "model.safetensors"
        key = hashlib.sha256(json.dumps([str(Path(path).resolve()), weights.stat().st_mtime_ns, run.test_utterances,
                                         len(convs), run.seed, run.data, run.conversations]).encode()).hexdigest()[:16]
        saved = Path(run.runs) / "eval" / f"{key}.json"
        if saved.is_file():
            part = json.loads(saved.read_text())
        else:
            model = DualInfoSLM.from_pretrained(path)
            part = {"table1": ev.attribute_accuracy(model, test, feats, seed=run.seed, progress=run.progress),
                    "table3": ev.asr_error_rates(model, test, feats, seed=run.seed, progress=run.progress),
                    "replies": ev.slm_replies(model, convs, feats, progress=run.progress) if convs else []}
            del model
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps({"model": str(path), **part}, default=str))
        res["table1"][name], res["table3"][name] = part["table1"], part["table3"]
        if convs:
            replies[f"SLM {name}"] = part["replies"]
    if convs:
        llm = load_backend(run.llm)
        replies["LLM, plain transcript (no speech)"] = ev.text_llm_replies(
            llm, convs, cache=Path(run.runs) / "text_llm_replies.jsonl", progress=run.progress)
        reference = "reference (LLM, true text + caption)"
        replies[reference] = [r["response"] for r in convs]
        if judge_backend is None:
            judge_backend = llm if run.judge == run.llm else load_backend(run.judge, run.judge_base_url,
                                                                            run.judge_model)
        judge = Judge(judge_backend, cache=Path(run.runs) / "judge_cache.jsonl")
        # the judge must first tell a relevant reply from an irrelevant one (pairs from the whole test split,
        # judged through the same cache) or Table IV reports no judge scores
        pairs = pick_pairs(load_conversations(run.conversations, "test"), run.judge_check_pairs, run.seed)
        res.update(ev.table_iv_results(convs, replies, judge, pairs, reference, SentenceSimilarity(),
                                       progress=run.progress))
        log.info("%s", verdict(res["judge_check"]))
        res["examples"] = [{"context": " / ".join(m["content"] for m in r["context"][-2:]),
                            "user (styled)": r["user_turn"], **{k: v[i] for k, v in replies.items()}}
                           for i, r in enumerate(convs[:10])]
    res["meta"] = {"models": {k: str(v) for k, v in models.items()}, "encoder": run.encoder, "llm": run.llm,
                   "test utterances": len(test), "test conversations": len(convs),
                   "evaluation seconds": round(time.perf_counter() - t0, 1)}
    return res


def run_all(run: DualInfoRun) -> dict[str, Any]:
    """Data, the three stages, the evaluation; writes ``runs/results.json`` and ``runs/report.html``."""
    t0 = time.perf_counter()
    ensure_data(run)
    t_data = time.perf_counter() - t0
    summaries = train_stages(run)
    t_train = time.perf_counter() - t0 - t_data
    runs = Path(run.runs)
    res = evaluate(run, {"stage 1 (joint)": best_checkpoint(runs / "stage1"),
                         "stage 3 (ERR + holistic)": best_checkpoint(runs / "stage3")})
    res["meta"].update({"steps": {s: v.get("steps") for s, v in summaries.items()},
                        "training seconds": {s: v.get("seconds") for s, v in summaries.items()},
                        "stages": {s: {"reused": bool(v.get("reused")), "trained_by": v.get("trained_by"),
                                       "trained_at": v.get("trained_at")} for s, v in summaries.items()},
                        "data seconds": round(t_data, 1), "train seconds (this call)": round(t_train, 1)})
    (runs / "results.json").write_text(json.dumps(res, indent=1, default=str))
    ev.write_report(res, runs / "report.html")
    return res

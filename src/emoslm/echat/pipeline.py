"""Paper 003 end to end: the dialogue data, E-chat's two stages, Tables 2 and 3 against the cascade, the report.

    emoslm run echat [--profile tiny|demo|long] [--set steps=300 ...]

1. the dialogue dataset (:func:`emoslm.echat.dialogue.build_dialogue_dataset`; responses by the packaged SmolLM2,
   cached; splits disjoint by question and by speaker);
2. stage 1 (ASR on the dataset's training questions + a prepared corpus's transcripts) and stage 2 (emotional-
   response SFT), each capped at ``steps`` steps and ``minutes`` minutes; the fbank encoder may start from a
   trained SER encoder (``encoder_init``, e.g. the demo's ``runs/demo/bundle/encoder``);
3. Tables 2 and 3 on the test split: E-chat and, when an SER model is given, the ParalinGPT-style cascade
   (packaged Whisper tiny.en + that SER model + the same LLM prompt), BLEU-1/4 and SIM against the topline.

The cascade's SER model comes from outside this package (``recognizer``: anything with
``predict(wave).probs``), so that paper 003 does not depend on paper 000; ``emoslm run echat`` passes the demo's
bundle when it exists.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoslm.config import load_config
from emoslm.echat import recipe
from emoslm.echat.api import EChat
from emoslm.echat.cascade import Cascade, WhisperASR
from emoslm.echat.dialogue import build_dialogue_dataset, manifest_digest
from emoslm.echat.evaluation import evaluate_echat, to_markdown, write_report
from emoslm.echat.recipe import best_checkpoint
from emoslm.models.text_llm import load_backend
from emoslm.threads import set_torch_threads
from emoslm.training.reuse import check_run


@dataclass
class EChatRun:
    data: str = "data/echat_demo"
    dialogue_preset: str = "demo"  # what to build when ``data`` does not exist yet
    runs: str = "runs/echat"
    asr_corpus: str | None = "data/synth_demo"  # transcripts added to stage 1 (None: the dialogue questions only)
    encoder_init: str | None = "runs/demo/bundle/encoder"  # a trained fbank encoder; None: random init
    ser_bundle: str | None = "runs/demo/bundle"  # the cascade's SER model (read by the caller); None: no cascade
    backend: str = "smollm2"  # the LLM that writes the responses and the cascade's replies
    llm: str = "smollm2"  # E-chat's frozen LLM
    steps: int = 150  # per stage
    minutes: float | None = 6.0  # per stage
    threads: int = 1
    limit: int | None = None  # evaluate the first N test entries only
    progress: bool = True
    extra: tuple[str, ...] = ()  # recipe overrides for both stages


def train_stages(run: EChatRun) -> dict[int, dict[str, Any]]:
    """Stages 1 and 2. A finished stage is reused only when its recorded settings are the ones about to run
    (:func:`emoslm.training.reuse.check_run`), the data's manifest digest included (a stage trained on data
    rebuilt since, e.g. with other splits, is not reused); a stage of other settings is trained again (the log
    says which keys differ), an unfinished one of the same settings is resumed by the trainer."""
    runs = Path(run.runs)
    encoder: dict[str, Any] = {"kind": "fbank", "preset": "tiny"}
    if run.encoder_init and Path(run.encoder_init).is_dir():
        encoder = {"kind": "fbank", "init": str(run.encoder_init)}
    minutes = "null" if run.minutes is None else run.minutes
    digest = manifest_digest(run.data)
    common = [f"data={run.data}", f"data_digest={digest or 'null'}", f"train.max_steps={run.steps}",
              f"train.max_minutes={minutes}", f"train.eval_every={min(50, run.steps)}",
              f"train.save_every={min(50, run.steps)}",
              f"train.progress={run.progress}", f"threads={run.threads}", "model.stack=4",
              f"model.encoder={json.dumps(encoder)}", f"model.llm.name={run.llm}", *run.extra]
    summaries = {}
    for stage in (1, 2):
        asr = run.asr_corpus if run.asr_corpus and Path(run.asr_corpus).is_dir() else None
        extra = ([f"asr_corpus={asr}" if asr else "asr_corpus=null"] if stage == 1
                 else [f"init_from={best_checkpoint(runs / 'stage1')}"])
        out = runs / f"stage{stage}"
        cfg = load_config(recipe.EChatRecipeConfig, f"echat_stage{stage}", [*common, f"out_dir={out}", *extra])
        check = check_run(out, cfg, f"E-chat stage {stage}")
        summaries[stage] = check.summary(out) if check.reuse else {**recipe.run(cfg), "reused": False}
    return summaries


def run(cfg: EChatRun, recognizer=None) -> dict[str, Any]:
    """Data, both stages, the evaluation; writes ``runs/results.json`` and ``runs/report.html``.

    ``recognizer``: the cascade's SER model (``predict(wave).probs``); without one the cascade is not run."""
    set_torch_threads(cfg.threads, cfg.backend)
    t0 = time.perf_counter()
    backend = load_backend(cfg.backend)
    stats = build_dialogue_dataset(cfg.data, cfg.dialogue_preset, backend=backend, workers=1, progress=cfg.progress)
    t_data = time.perf_counter() - t0
    summaries = train_stages(cfg)
    t_train = time.perf_counter() - t0 - t_data
    runs = Path(cfg.runs)
    cascade = None
    if recognizer is not None:
        cascade = Cascade(WhisperASR(threads=cfg.threads), recognizer, backend, stats["config"]["max_tokens"])
    res = evaluate_echat(cfg.data, EChat.load(runs / "stage2", threads=cfg.threads), cascade,
                         stage1=EChat.load(runs / "stage1", threads=cfg.threads), limit=cfg.limit,
                         progress=cfg.progress)
    t_eval = time.perf_counter() - t0 - t_data - t_train
    table1 = (Path(cfg.data) / "table1.md").read_text()
    write_report(res, runs / "report.html", table1)
    out = {"results": res, "dataset": stats, "table1": table1,
           "train": {s: {k: v for k, v in summ.items() if k != "history"} for s, summ in summaries.items()},
           "history": {s: summ["history"] for s, summ in summaries.items()},
           "timing": {"data": t_data, "train": t_train, "eval": t_eval}}
    (runs / "results.json").write_text(json.dumps({k: v for k, v in out.items() if k != "history"}, indent=2,
                                                  default=str))
    return out


def summary_markdown(out: dict[str, Any], cfg: EChatRun) -> str:
    """The results file's text: the dataset, the budget, each stage's last validation, Tables 2 and 3, an example."""
    stats, res, t = out["dataset"], out["results"], out["timing"]

    def stage_line(s: int) -> str:
        summ, hist = out["train"][s], out["history"][s]
        last = hist[-1] if hist else {}
        extra = f", valid emotion acc {100 * last['valid_emotion_acc']:.1f} %" if "valid_emotion_acc" in last else ""
        if summ.get("reused"):  # where a stage trained by an earlier command comes from
            extra += (f"; reused from `{cfg.runs}/stage{s}` (same settings), trained by `{summ['trained_by']}` at "
                      f"{summ.get('trained_at')}" if summ.get("trained_by") else
                      f"; reused from `{cfg.runs}/stage{s}` (same settings; made before runs recorded their command)")
        return (f"stage {s}: {summ['steps']} steps in {summ['seconds']:.0f} s, valid decoder loss "
                f"{last.get('valid_decoder_loss', float('nan')):.3f}{extra}")

    ex = res["examples"][0]
    return "\n".join([
        "# E-chat (paper 003) vs the ParalinGPT-style cascade, embedded dialogue data", "",
        f"Dataset (`emoslm synth dialogue --preset {cfg.dialogue_preset}`, responses by {cfg.backend} told the true "
        f"emotion; {stats['entries']} entries, {stats['questions']} questions, {stats['speakers']} espeak-ng "
        f"speakers, splits {stats['splits']}, {stats['split_protocol']}):", "", out["table1"].rstrip(), "",
        f"E-chat: fbank encoder (init {cfg.encoder_init}) -> 2 softmax layer weightings -> 4-layer transformer "
        f"connector -> frozen {cfg.llm}. CPU budget: {cfg.threads} torch thread(s), each stage capped at "
        f"{cfg.steps} steps (batch 8)" + (f" and {cfg.minutes:g} min." if cfg.minutes else "."), "",
        "- " + stage_line(1), "- " + stage_line(2),
        f"- time: dataset {t['data']:.0f} s (cached after the first run), training {t['train']:.0f} s, "
        f"evaluation {t['eval']:.0f} s", "",
        to_markdown(res), "",
        f"Example: question \"{ex['question']}\" said <{ex['emotion']}>; topline: \"{ex['topline']}\"; "
        f"E-chat: \"{ex['echat']}\"; cascade: \"{ex.get('cascade', '-')}\"", "",
        f"Report with more examples: `{cfg.runs}/report.html`."])

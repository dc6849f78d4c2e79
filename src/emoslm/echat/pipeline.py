"""Paper 003 end to end: the dialogue data, E-chat's two stages, Tables 2 and 3 against the cascade, the report.

    emoslm run echat [--profile tiny|demo|long] [--set steps=300 ...]
    emoslm run echat --set encoder=whisper-tiny.en --set runs=runs/echat_whisper-tiny.en \
        --set "stages=[1]" --set split=valid                 # stage 1 and Table 3 alone, on the valid split

1. the dialogue dataset (:func:`emoslm.echat.dialogue.build_dialogue_dataset`; responses by the packaged SmolLM2,
   cached; splits disjoint by question and by speaker);
2. stage 1 (ASR on the dataset's training questions + a prepared corpus's transcripts) and stage 2 (emotional-
   response SFT), each capped at ``steps`` steps and ``minutes`` minutes. The speech encoder (``encoder``) is
   this project's fbank transformer, which may start from a trained SER encoder (``encoder_init``, e.g. the
   demo's ``runs/demo/bundle/encoder``), or the packaged Whisper (``whisper-tiny.en``, ``whisper-base``), all of
   whose layers feed the two layer weightings;
3. Tables 2 and 3 on ``split`` (the test split): E-chat and, when an SER model is given, the ParalinGPT-style
   cascade (packaged Whisper tiny.en + that SER model + the same LLM prompt), BLEU-1/4 and SIM against the
   topline; Table 3 has Whisper tiny.en's CER/WER on the same utterances as E-chat stage 1's, and their ratio.

``stages=(1,)`` stops after stage 1 and scores Table 3 alone (:func:`emoslm.echat.evaluation.evaluate_asr`):
with ``split=valid``, the quick path for choosing stage 1's settings without looking at the test split.

The cascade's SER model comes from outside this package (``recognizer``: anything with
``predict(wave).probs``), so that paper 003 does not depend on paper 000; ``emoslm run echat`` passes the demo's
bundle when it exists.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emoslm.config import load_config
from emoslm.echat import recipe
from emoslm.echat.api import EChat
from emoslm.echat.cascade import Cascade, WhisperASR
from emoslm.echat.dialogue import build_dialogue_dataset, manifest_digest
from emoslm.echat.evaluation import (
    evaluate_asr,
    evaluate_echat,
    to_markdown,
    write_report,
)
from emoslm.echat.recipe import best_checkpoint
from emoslm.errors import EmoslmError
from emoslm.models.text_llm import load_backend
from emoslm.threads import set_torch_threads
from emoslm.training.reuse import check_run

log = logging.getLogger(__name__)

#: ``EChatRun.encoder`` -> the speech encoder spec (:func:`emoslm.echat.model.build_speech_encoder`); fbank's is
#: made in :func:`train_stages` (from ``encoder_init`` when there is one)
ENCODERS: dict[str, dict[str, Any]] = {
    "whisper-tiny.en": {"kind": "whisper", "model": "tiny.en", "pad_30s": False},
    "whisper-base": {"kind": "whisper", "model": "base", "pad_30s": False},
}


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
    limit: int | None = None  # evaluate the first N entries of ``split`` only
    progress: bool = True
    extra: tuple[str, ...] = ()  # recipe overrides for both stages
    # the speech encoder: "fbank" (this project's, from encoder_init), "whisper-tiny.en" or "whisper-base"
    # (the packaged Whisper, all its layers). Another encoder is another model: give it its own ``runs``
    # folder, or the stages trained with the other one there are replaced.
    encoder: str = "fbank"
    # whether stage 1 trains the encoder; None: the fbank encoder trains (as in the paper), Whisper stays frozen.
    # Why frozen: Whisper was trained on 680k hours; a few hundred CPU steps of batch 8 at the connector's
    # learning rate (5e-4) over ~2k synthetic utterances would more likely wear its representations down than
    # improve them, and stage 2 freezes the encoder anyway. Frozen, it needs no backward pass, and its hidden
    # states are computed once per utterance (FrozenStatesCache), so a step costs the connector and the LLM.
    # The layer weightings still train. Setting it True is the paper's recipe, to try on the valid split.
    train_encoder: bool | None = None
    stages: tuple[int, ...] = (1, 2)  # (1,): stage 1 and Table 3 only
    #: stage 2: a prepared SER corpus whose training utterances also train the emotion branch (the emotion loss
    #: alone; :mod:`emoslm.echat.recipe`); None: the dialogue entries only, as the paper's data allows
    emotion_corpus: str | None = None
    emotion_batch_size: int | None = None  # its utterances per stage-2 step (None: the recipe's, 8)
    #: with emotion_corpus: steps that train the emotion branch alone on it before stage 2 (None: the recipe's, 0)
    emotion_warmup_steps: int | None = None
    #: recipe overrides for stage 2 alone (after ``extra``), e.g. ``train.max_minutes=null`` with
    #: ``train.max_steps=150``: a stage capped by steps, not by a time that depends on how busy the machine is
    stage2_extra: tuple[str, ...] = ()
    #: a trained fbank encoder (e.g. the cascade's SER bundle's, ``runs/shipped_bundle/encoder``) whose layers
    #: feed E-chat's emotion branch instead of the speech encoder's, frozen (``model.emotion_encoder``); None: the
    #: paper's one encoder
    emotion_encoder: str | None = None
    split: str = "test"  # the split Tables 2 and 3 are scored on ("valid" while choosing settings)


def encoder_spec(run: EChatRun) -> dict[str, Any]:
    """The ``model.encoder`` spec of ``run.encoder``."""
    if run.encoder == "fbank":
        if run.encoder_init and Path(run.encoder_init).is_dir():
            return {"kind": "fbank", "init": str(run.encoder_init)}
        return {"kind": "fbank", "preset": "tiny"}
    if run.encoder not in ENCODERS:
        raise EmoslmError(f"unknown E-chat encoder {run.encoder!r} (fbank, {', '.join(ENCODERS)})")
    return dict(ENCODERS[run.encoder])


def stage_overrides(run: EChatRun) -> list[str]:
    """The recipe overrides both stages share."""
    encoder = encoder_spec(run)
    whisper = encoder["kind"] == "whisper"
    minutes = "null" if run.minutes is None else run.minutes
    digest = manifest_digest(run.data)
    # stack: the LLM sees the same 6.25 speech positions per second with either encoder (fbank: 25 frames/s,
    # Whisper: 50), so a step costs the LLM the same; overridable with extra=[model.stack=...]
    common = [f"data={run.data}", f"data_digest={digest or 'null'}", f"train.max_steps={run.steps}",
              f"train.max_minutes={minutes}", f"train.eval_every={min(50, run.steps)}",
              f"train.save_every={min(50, run.steps)}",
              f"train.progress={run.progress}", f"threads={run.threads}", f"model.stack={8 if whisper else 4}",
              f"model.encoder={json.dumps(encoder)}", f"model.llm.name={run.llm}"]
    # set only where it is not the model's default, so that the settings of runs made before the flag existed
    # (fbank, trained encoder) stay the same and those runs are reused
    freeze = (not run.train_encoder) if run.train_encoder is not None else whisper
    if freeze:
        common.append("model.freeze_encoder=true")
    if run.emotion_encoder:  # set only when given, like freeze_encoder
        if not (Path(run.emotion_encoder) / "config.json").is_file():
            raise EmoslmError(f"emotion_encoder {run.emotion_encoder}: not a trained encoder folder (config.json and "
                              "model.safetensors), e.g. the encoder of an SER bundle (`emoslm bundle shipped DIR` "
                              "writes DIR/encoder)")
        common.append(f"model.emotion_encoder={json.dumps({'kind': 'fbank', 'init': str(run.emotion_encoder)})}")
    return [*common, *run.extra]


def train_stages(run: EChatRun) -> dict[int, dict[str, Any]]:
    """The stages of ``run.stages`` (1, then 2). A finished stage is reused only when its recorded settings are
    the ones about to run (:func:`emoslm.training.reuse.check_run`), the data's manifest digest included (a stage
    trained on data rebuilt since, e.g. with other splits, is not reused); a stage of other settings is trained
    again (the log says which keys differ), an unfinished one of the same settings is resumed by the trainer."""
    if not run.stages or set(run.stages) - {1, 2} or 1 not in run.stages:
        raise EmoslmError(f"stages must be [1] or [1, 2], got {list(run.stages)}")
    if run.emotion_corpus and 2 in run.stages and not Path(run.emotion_corpus).is_dir():  # before stage 1 trains
        raise EmoslmError(f"emotion_corpus {run.emotion_corpus}: no such prepared corpus (make one with "
                          "`emoslm synth corpus --preset demo`)")
    runs = Path(run.runs)
    common = stage_overrides(run)
    summaries = {}
    for stage in sorted(set(run.stages)):
        asr = run.asr_corpus if run.asr_corpus and Path(run.asr_corpus).is_dir() else None
        extra = ([f"asr_corpus={asr}" if asr else "asr_corpus=null"] if stage == 1
                 else [f"init_from={best_checkpoint(runs / 'stage1')}"])
        if stage == 2 and run.emotion_corpus:  # set only when given: runs made before keep their settings
            extra.append(f"emotion_corpus={run.emotion_corpus}")
            if run.emotion_batch_size is not None:
                extra.append(f"emotion_batch_size={run.emotion_batch_size}")
            if run.emotion_warmup_steps is not None:
                extra.append(f"emotion_warmup_steps={run.emotion_warmup_steps}")
        if stage == 2:
            extra += list(run.stage2_extra)
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
    try:  # Table 3's reference, on the same utterances as E-chat stage 1; the cascade's ASR
        asr: WhisperASR | None = WhisperASR(threads=cfg.threads)
    except EmoslmError as e:
        if recognizer is not None:
            raise
        log.warning("%s: Table 3 has no Whisper tiny.en row", e)
        asr = None
    stage1 = EChat.load(runs / "stage1", threads=cfg.threads)
    table1 = (Path(cfg.data) / "table1.md").read_text()
    if 2 in cfg.stages:
        cascade = None
        if recognizer is not None and asr is not None:
            cascade = Cascade(asr, recognizer, backend, stats["config"]["max_tokens"])
        res = evaluate_echat(cfg.data, EChat.load(runs / "stage2", threads=cfg.threads), cascade, stage1=stage1,
                             split=cfg.split, limit=cfg.limit, progress=cfg.progress, asr=asr)
        write_report(res, runs / "report.html", table1)
        results_file = runs / "results.json"
    else:
        res = evaluate_asr(cfg.data, stage1, asr, split=cfg.split, limit=cfg.limit, progress=cfg.progress)
        results_file = runs / f"stage1_{cfg.split}_results.json"
    t_eval = time.perf_counter() - t0 - t_data - t_train
    out = {"results": res, "dataset": stats, "table1": table1,
           "train": {s: {k: v for k, v in summ.items() if k != "history"} for s, summ in summaries.items()},
           "history": {s: summ["history"] for s, summ in summaries.items()},
           "timing": {"data": t_data, "train": t_train, "eval": t_eval}}
    results_file.write_text(json.dumps({k: v for k, v in out.items() if k != "history"}, indent=2, default=str))
    return out


def warmup_line(w: dict[str, Any]) -> str:
    """One sentence on stage 2's emotion warm-up (:func:`emoslm.echat.recipe.warm_up_emotion_branch`)."""
    line = (f"Before stage 2 the emotion branch trained alone for {w['steps']} steps on {w['train_utterances']} "
            "utterances of that corpus")
    if w.get("dev_ser_emotion_acc") is None:
        return line + " (no dev split: the last step kept)."
    curve = ", ".join(f"{h['step']}: {100 * h['dev_ser_emotion_acc']:.1f}" for h in w["history"])
    return (line + f"; kept step {w['kept_step']}, emotion acc on {w['dev_utterances']} dev utterances "
            f"{100 * w['dev_ser_emotion_acc']:.1f} % (per evaluation, step: %: {curve}).")


def summary_markdown(out: dict[str, Any], cfg: EChatRun) -> str:
    """The results file's text: the dataset, the budget, each stage's last validation, Tables 2 and 3, an example."""
    stats, res, t = out["dataset"], out["results"], out["timing"]

    def stage_line(s: int) -> str:
        summ, hist = out["train"][s], out["history"][s]
        last = hist[-1] if hist else {}
        extra = f", valid emotion acc {100 * last['valid_emotion_acc']:.1f} %" if "valid_emotion_acc" in last else ""
        if "dev_ser_emotion_acc" in last:
            extra += (f", emotion acc on the SER corpus's dev speakers {100 * last['dev_ser_emotion_acc']:.1f} % "
                      "(per evaluation: " + ", ".join(f"{100 * h['dev_ser_emotion_acc']:.1f}" for h in hist
                                                      if "dev_ser_emotion_acc" in h) + ")")
        if summ.get("reused"):  # where a stage trained by an earlier command comes from
            extra += (f"; reused from `{cfg.runs}/stage{s}` (same settings), trained by `{summ['trained_by']}` at "
                      f"{summ.get('trained_at')}" if summ.get("trained_by") else
                      f"; reused from `{cfg.runs}/stage{s}` (same settings; made before runs recorded their command)")
        return (f"stage {s}: {summ['steps']} steps in {summ['seconds']:.0f} s, valid decoder loss "
                f"{last.get('valid_decoder_loss', float('nan')):.3f}{extra}")

    full = "systems" in res
    encoder = res.get("stage1_encoder") or cfg.encoder
    if cfg.encoder == "fbank":
        encoder += f" (init {cfg.encoder_init})"
    lines = [
        "# E-chat (paper 003) vs the ParalinGPT-style cascade, embedded dialogue data" if full else
        f"# E-chat (paper 003) stage 1 alone vs Whisper tiny.en, {res['split']} split of the embedded dialogue data",
        "",
        f"Dataset (`emoslm synth dialogue --preset {cfg.dialogue_preset}`, responses by {cfg.backend} told the true "
        f"emotion; {stats['entries']} entries, {stats['questions']} questions, {stats['speakers']} espeak-ng "
        f"speakers, splits {stats['splits']}, {stats['split_protocol']}):", "", out["table1"].rstrip(), "",
        f"E-chat: {encoder} -> 2 softmax layer weightings -> 4-layer transformer "
        f"connector -> frozen {cfg.llm}. CPU budget: {cfg.threads} torch thread(s), each stage capped at "
        f"{cfg.steps} steps (batch 8)" + (f" and {cfg.minutes:g} min." if cfg.minutes else "."), "",
        *([f"Stage 2's emotion branch also trained on `{cfg.emotion_corpus}` (training utterances, emotion loss "
           f"alone, {cfg.emotion_batch_size or 8} per step)."] if cfg.emotion_corpus and 2 in out["train"] else []),
        *([f"Emotion branch: its own frozen encoder `{cfg.emotion_encoder}` (fbank), not the speech encoder's "
           "layers."] if cfg.emotion_encoder else []),
        *([warmup_line(out["train"][2]["emotion_warmup"])] if out["train"].get(2, {}).get("emotion_warmup") else []),
        *([f"Stage 2 alone: {', '.join(cfg.stage2_extra)}."] if cfg.stage2_extra and 2 in out["train"] else []),
        *("- " + stage_line(s) for s in sorted(out["train"])),
        f"- time: dataset {t['data']:.0f} s (cached after the first run), training {t['train']:.0f} s, "
        f"evaluation {t['eval']:.0f} s", "",
        to_markdown(res), ""]
    if full:
        ex = res["examples"][0]
        lines += [f"Example: question \"{ex['question']}\" said <{ex['emotion']}>; topline: \"{ex['topline']}\"; "
                  f"E-chat: \"{ex['echat']}\"; cascade: \"{ex.get('cascade', '-')}\"", "",
                  f"Report with more examples: `{cfg.runs}/report.html`."]
    return "\n".join(lines).rstrip()

"""Paper 002: can each adapter alone carry its own information to the frozen LLM (Table I's P-Embs, Table III's
L-Embs)?

Stage 2 of the recipe (ERR) with the adapters untrained at the start. By default ``err_p_share=1`` and
``err_other_sources={none: 1}``: every example is an attribute question whose only speech input is the P-Embs
(the linguistic slot left empty), so the paralinguistic adapter learns exactly what Table I's P-Embs column asks
of it. In the joint stage 1 the attribute questions always have the L-Embs too, and the frozen LLM answers from
those; ERR's default mixture asks for P-Embs alone in one example of six. ``--p-share 0.5 --other none=2,speech=1``
trains both adapters, each on its own task, the other slot empty in two examples of three and from speech in
the third (so both slots from speech, P&L, is trained too). ``--init-from`` starts both adapters from a trained
stage 1 instead (the recipe's order), e.g. to teach L-Embs-only ASR to a linguistic adapter that learned ASR
jointly with the P-Embs; ``{seed}`` in its path chains stages seed by seed (each seed starts from its own
checkpoint of an earlier run). ``--asr-trains p`` makes the ASR examples P&L ASR that train the paralinguistic
adapter, the linguistic one frozen: a stage after ERR that teaches the P-Embs alone the attributes while keeping
them from disrupting P&L ASR. ``--set train.lr_scales.ling=0.2`` trains the linguistic adapter at a fifth of
``--lr``. ``--stage 3`` runs holistic fine-tuning instead (from ``--init-from``, on the conversations), its mixture
set by ``--dual-share`` and ``--asr-share``, or with ``--stage3-single err`` its single-information examples drawn
as in ERR (``--p-share``, ``--other``). Frozen Whisper tiny.en and SmolLM2-135M as in the recipe.

For each training seed: the stage (reused when its recorded settings are the ones about to run), then the WA of
the greedy answers with the P-Embs alone (and with P&L when the linguistic adapter is trained, here or before
the start) on
``--utterances`` utterances of ``--split`` (spread over its speakers, the same for every seed), against the
majority class of the training split; when the linguistic adapter is trained, also the WER with the L-Embs alone
and with P&L (Table III). With ``--init-from`` the starting checkpoint is scored the same way, a row of each table.
Appends to ``benchmarks/results/dual_info_p_only.md``.

    .venv/bin/python benchmarks/dual_info_p_only.py --seeds 0,1 --steps 400 --split dev
    .venv/bin/python benchmarks/dual_info_p_only.py --seeds 0,1 --steps 400 --split test   # the stages reused
    .venv/bin/python benchmarks/dual_info_p_only.py --runs runs/dual_info_err --p-share 0.5 \\
        --other none=2,speech=1 --steps 800 --split dev
    .venv/bin/python benchmarks/dual_info_p_only.py --runs runs/dual_info_err_s1_asr --p-share 0.25 \\
        --other none=1,speech=1 --init-from runs/dual_info/stage1/checkpoints/best/model --lr 2e-4 --steps 200 \\
        --split dev   # then --split test
    .venv/bin/python benchmarks/dual_info_p_only.py --runs runs/dual_info_chain_p --steps 200 \\
        --init-from 'runs/dual_info_err_s1_asr/seed{seed}/checkpoints/best/model' --split dev
    .venv/bin/python benchmarks/dual_info_p_only.py --runs runs/dual_info_chain_pasr --p-share 0.5 --asr-trains p \\
        --steps 300 --init-from 'runs/dual_info_err_s1_asr/seed{seed}/checkpoints/best/model' --split dev
    .venv/bin/python benchmarks/dual_info_p_only.py --runs runs/dual_info_chain_pl2 --p-share 0.5 \\
        --other none=1,speech=1 --steps 300 --set train.lr_scales.ling=0.2 \\
        --init-from 'runs/dual_info_err_s1_asr/seed{seed}/checkpoints/best/model' --split dev
    .venv/bin/python benchmarks/dual_info_p_only.py --runs runs/dual_info_chain_lp --p-share 0.5 --asr-trains lp \\
        --steps 300 --set train.lr_scales.ling=0.2 \\
        --init-from 'runs/dual_info_err_s1_asr/seed{seed}/checkpoints/best/model' --split dev
    .venv/bin/python benchmarks/dual_info_p_only.py --stage 3 --dual-share 0.3 --runs runs/dual_info_s3_mix03 \\
        --lr 3e-4 --steps 100 --init-from 'runs/dual_info_err_s1_asr/seed{seed}/checkpoints/best/model' \\
        --split dev   # then --split test: the paper-002 pipeline, stage 1 -> the chosen ERR -> stage 3
    .venv/bin/python benchmarks/dual_info_p_only.py --stage 3 --stage3-single err --p-share 0.25 \\
        --other none=1,speech=1 --runs runs/dual_info_s3_err --lr 3e-4 --steps 100 \\
        --init-from 'runs/dual_info_err_s1_asr/seed{seed}/checkpoints/best/model' --split dev
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_title_option, command_line, heading, init_origin, write_result

TITLE = "Dual-information speech LM (paper 002): the paralinguistic adapter trained on P-Embs-only questions"


def parse_odds(text: str) -> dict[str, float]:
    """``none=2,speech=1`` -> ``{"speech": 1.0, "text": 0.0, "none": 2.0}`` (every source named, for the override)."""
    from emoslm.dual_info.model import SOURCES

    odds = {src: 0.0 for src in SOURCES}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key.strip() not in odds:
            raise SystemExit(f"--other: unknown source {key.strip()!r} (known: {', '.join(SOURCES)})")
        try:
            odds[key.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"--other: {part!r} is not SOURCE=ODDS") from None
    if sum(odds.values()) <= 0 or min(odds.values()) < 0:
        raise SystemExit(f"--other: non-negative odds, not all zero; got {text!r}")
    return odds


def init_path(a: argparse.Namespace, seed: int) -> str | None:
    """The checkpoint the seed starts from: ``--init-from`` with ``{seed}`` replaced (one start per seed)."""
    return a.init_from.replace("{seed}", str(seed)) if a.init_from else None


def train_seed(a: argparse.Namespace, seed: int) -> tuple[Path, dict, object]:
    """The seed's best checkpoint, its training summary and its recipe config (the data the scoring reads)."""
    from emoslm.config import load_config
    from emoslm.dual_info import recipe
    from emoslm.training.reuse import check_run

    out = Path(a.runs) / f"seed{seed}"
    init = f"init_from={init_path(a, seed) or 'null'}"
    odds = [f"err_other_sources.{src}={v:g}" for src, v in parse_odds(a.other).items()]
    err = [f"err_p_share={a.p_share!r}", *odds, f"err_asr_trains={a.asr_trains}"]
    if a.stage == 2:
        mixture = err
    else:  # stage 3: the recipe's mixture unless a share is given; its single-information examples as in ERR
        mixture = [f"{key}={value!r}" for key, value in (("dual_share", a.dual_share), ("asr_share", a.asr_share))
                   if value is not None]
        if a.stage3_single == "err":
            mixture += ["stage3_single=err", *err]
    overrides = [f"out_dir={out}", init, *mixture,
                 f"tasks=[{a.tasks}]", f"train.max_steps={a.steps}", f"train.max_minutes={a.minutes}",
                 f"train.seed={seed}", f"threads={a.threads}", f"train.eval_every={max(1, a.steps // 4)}",
                 f"train.save_every={max(1, a.steps // 4)}", f"train.warmup_steps={max(1, a.steps // 10)}",
                 f"train.lr={a.lr:g}", *a.extra]
    cfg = load_config(recipe.DualInfoRecipeConfig, f"dual_info_stage{a.stage}", overrides)
    if cfg.stage == 3 and not (Path(cfg.conversations) / "summary.json").is_file():
        raise SystemExit(f"--stage 3: no conversations at {cfg.conversations} (build them: emoslm synth conversations "
                         f"--corpus {cfg.data} --preset demo)")
    check = check_run(out, cfg, f"seed {seed}")
    summary = check.summary(out) if check.reuse else {**recipe.run(cfg), "reused": False}
    return recipe.best_checkpoint(out), summary, cfg


def stage_setting(a: argparse.Namespace, cfg, odds: dict[str, float], tasks: list[str]) -> str:
    """The trained stage's mixture, in words, for the results file."""
    named = ", ".join(f"{src}: {v:g}" for src, v in odds.items() if v)
    if a.stage == 3 and cfg.stage3_single == "err":
        return (f"Stage 3 with `dual_share={cfg.dual_share:g}`, `stage3_single=err`, `err_p_share={a.p_share:g}`, "
                f"`err_other_sources={{{named}}}`, tasks {', '.join(tasks)}: stage 3 (holistic): a share "
                f"{cfg.dual_share:g} of the examples are dual-information conversation turns (both slots from "
                f"speech, both adapters trained), the rest single-information examples drawn as in ERR (a share "
                f"{a.p_share:g} of those train the paralinguistic adapter on attribute questions, the rest the "
                f"linguistic one on ASR, the other slot's source drawn with those odds)")
    if a.stage == 3:
        return (f"Stage 3 with `dual_share={cfg.dual_share:g}`, `asr_share={cfg.asr_share:g}`, tasks "
                f"{', '.join(tasks)}: stage 3 (holistic): a share {cfg.dual_share:g} of the examples are "
                f"dual-information conversation turns, the rest single-information questions (ASR in a share "
                f"{cfg.asr_share:g} of those), both slots from speech, both adapters trained")
    if a.p_share == 1.0:
        mixture = f"every step {cfg.batch_size} attribute questions (the linguistic adapter not trained)"
    elif a.asr_trains == "p":
        mixture = (f"`err_asr_trains=p`: a share {a.p_share:g} of each batch is attribute questions, the rest ASR "
                   f"with both slots from speech (P&L), all of them training the paralinguistic adapter (the "
                   f"linguistic one frozen)")
    elif a.asr_trains == "lp":
        mixture = (f"`err_asr_trains=lp`: a share {a.p_share:g} of each batch is attribute questions training the "
                   f"paralinguistic adapter, the rest ASR, each ASR example with even odds either ERR's (training the "
                   f"linguistic adapter) or with both slots from speech (P&L) training the paralinguistic one")
    else:
        mixture = (f"a share {a.p_share:g} of each batch trains the paralinguistic adapter on attribute questions, "
                   f"the rest the linguistic one on ASR")
    return (f"Stage 2 with `err_p_share={a.p_share:g}`, `err_other_sources={{{named}}}`, tasks {', '.join(tasks)}: "
            f"{mixture}, the other slot's source of the attribute questions"
            f"{'' if a.asr_trains == 'p' else ' (and ASR examples)'} drawn with those odds")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/dual_info_p_only")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--minutes", type=float, default=60.0, help="time cap of each seed's training")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--tasks", default="gender,tempo,emotion")
    p.add_argument("--p-share", type=float, default=1.0,
                   help="err_p_share: the share of examples that train the paralinguistic adapter (the rest: ASR)")
    p.add_argument("--other", default="none=1",
                   help="err_other_sources: odds of the other slot's source, e.g. none=2,speech=1")
    p.add_argument("--asr-trains", default="l", choices=["l", "p", "lp"],
                   help="err_asr_trains: the adapter the ASR examples train: l (ERR), p (P&L ASR, the linguistic "
                        "adapter frozen: a P-only stage that keeps the P-Embs from disrupting P&L ASR), or lp (each "
                        "ASR example one of the two, even odds)")
    p.add_argument("--stage", type=int, default=2, choices=[2, 3],
                   help="2: ERR and its variants (the options above); 3: holistic fine-tuning on the conversations "
                        "(needs --init-from), its mixture set by --dual-share and --asr-share")
    p.add_argument("--dual-share", type=float, default=None,
                   help="stage 3: the share of conversation examples (default: the recipe's, 0.3)")
    p.add_argument("--asr-share", type=float, default=None,
                   help="stage 3: the share of ASR among the single-information examples (default: the recipe's, 0.4)")
    p.add_argument("--stage3-single", default="both", choices=["both", "err"],
                   help="stage 3: its single-information examples with both slots from speech, both adapters "
                        "trained (both, the recipe's), or drawn as in ERR with --p-share, --other and --asr-trains "
                        "(err)")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start both adapters from this checkpoint (a stage-1 model) instead of untrained; {seed} in "
                        "the path is replaced by each training seed (a chain of stages, one per seed)")
    p.add_argument("--split", default="dev", choices=["dev", "test"])
    p.add_argument("--utterances", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override (DualInfoRecipeConfig)")
    add_title_option(p)
    a = p.parse_args()
    seeds = [int(x) for x in a.seeds.split(",")]
    for missing in sorted({init_path(a, x) for x in seeds} - {None}):
        if not Path(missing).is_dir():
            raise SystemExit(f"--init-from: no checkpoint folder at {missing} (train stage 1 first: emoslm train "
                             "dual_info --config dual_info_stage1)")
    if not 0.0 < a.p_share <= 1.0:
        raise SystemExit(f"--p-share must be in (0, 1]: the paralinguistic adapter is what is scored; got {a.p_share}")
    odds = parse_odds(a.other)
    if a.stage == 3 and not a.init_from:
        raise SystemExit("--stage 3 needs --init-from: holistic fine-tuning continues a trained stage 2")

    import numpy as np
    import torch

    from emoslm.data.utterances import load_utterances
    from emoslm.dual_info import evaluation as ev
    from emoslm.dual_info.model import DualInfoSLM
    from emoslm.dual_info.pipeline import _test_subset
    from emoslm.dual_info.recipe import utterance_features
    from emoslm.models.frozen_speech import FeatureCache, build_frozen_encoder
    from emoslm.reporting import TableData, md_table

    tasks = a.tasks.split(",")
    # the linguistic adapter is trained here or was before the start: Table III too, and P&L in Table I
    with_asr = a.p_share < 1.0 or bool(a.init_from)  # stage 3 always has --init-from
    t0 = time.perf_counter()
    trained = {s: train_seed(a, s) for s in seeds}
    torch.set_num_threads(a.threads)
    cfg = trained[seeds[0]][2]  # every seed's config differs only in its seed and out_dir
    utts = _test_subset(load_utterances(cfg.data, a.split), a.utterances, 0)
    feats = utterance_features(FeatureCache(cfg.features, build_frozen_encoder(cfg.encoder)), utts)
    majority = ev.majority_baseline(load_utterances(cfg.data, "train"), utts, tasks)
    conditions = ("P-Embs", "P&L-Embs") if with_asr else ("P-Embs",)
    wa: dict[str, dict[int | str, dict[str, float]]] = {c: {} for c in conditions}
    asr: dict[int | str, dict[str, dict]] = {}
    # the starting checkpoint is scored too (key "start"), so that what stage 2 changed is in the same table
    scored: dict[int | str, Path] = {s: ckpt for s, (ckpt, _, _) in trained.items()}
    starts = {s: init_path(a, s) for s in seeds}
    if a.init_from and "{seed}" not in a.init_from:
        scored["start"] = Path(a.init_from)
        start_rows = {"start": "the start (`--init-from`)"}
    else:
        scored.update({f"start{s}": Path(path) for s, path in starts.items() if path})
        start_rows = {f"start{s}": f"the start of seed {s}" for s, path in starts.items() if path}
    for s, ckpt in scored.items():
        model = DualInfoSLM.from_pretrained(ckpt)
        res = ev.attribute_accuracy(model, utts, feats, tasks, conditions=conditions, seed=0)
        for c in conditions:
            wa[c][s] = {t: 100 * res[c][t]["wa"] for t in tasks}
        if with_asr:
            asr[s] = ev.asr_error_rates(model, utts, feats, conditions=("L-Embs", "P&L-Embs"), seed=0)
        del model

    tables = []
    for c in conditions:
        rows = [[f"seed {s}", *(f"{wa[c][s][t]:.1f}" for t in tasks)] for s in seeds]
        means = {t: float(np.mean([wa[c][s][t] for s in seeds])) for t in tasks}
        rows.append([f"mean of {len(seeds)} seeds", *(f"{means[t]:.1f}" for t in tasks)])
        rows.append(["majority class (train)", *(f"{100 * majority[t]:.1f}" for t in tasks)])
        rows.append(["mean - majority (pt)", *(f"{means[t] - 100 * majority[t]:+.1f}" for t in tasks)])
        rows += [[label, *(f"{wa[c][key][t]:.1f}" for t in tasks)] for key, label in start_rows.items()]
        if c == "P-Embs":
            met_p = all(means[t] - 100 * majority[t] >= 15 for t in tasks)
        only = " only" if c != "P&L-Embs" else ""
        tables.append(md_table(TableData(f"Table I, {c}{only}: WA (%)", ["", *tasks], rows)))
    verdicts = [f"P-Embs only at least 15 pt above the majority class on every one of {', '.join(tasks)}: "
                f"{'met' if met_p else 'not met'}"]
    if with_asr:
        def asr_row(name: str, key: int | str) -> list[str]:
            lw, pw = asr[key]["L-Embs"]["wer"], asr[key]["P&L-Embs"]["wer"]
            return [name, f"{lw:.1f}", f"{pw:.1f}", f"{asr[key]['L-Embs']['cer']:.1f}",
                    f"{asr[key]['P&L-Embs']['cer']:.1f}", f"{lw / pw:.2f}" if pw else "-"]

        rows = [asr_row(f"seed {s}", s) for s in seeds]
        mean_l = float(np.mean([asr[s]["L-Embs"]["wer"] for s in seeds]))
        mean_pl = float(np.mean([asr[s]["P&L-Embs"]["wer"] for s in seeds]))
        rows.append([f"mean of {len(seeds)} seeds", f"{mean_l:.1f}", f"{mean_pl:.1f}",
                     f"{np.mean([asr[s]['L-Embs']['cer'] for s in seeds]):.1f}",
                     f"{np.mean([asr[s]['P&L-Embs']['cer'] for s in seeds]):.1f}",
                     f"{mean_l / mean_pl:.2f}" if mean_pl else "-"])
        rows += [asr_row(label, key) for key, label in start_rows.items()]
        tables.append(md_table(TableData("Table III: ASR (%)", ["", "WER L-Embs only", "WER P&L-Embs",
                                                                "CER L-Embs only", "CER P&L-Embs",
                                                                "WER ratio L-only / P&L"], rows)))
        met_l = bool(mean_pl) and mean_l <= 1.5 * mean_pl
        verdicts.append(f"the mean L-Embs-only WER at most 1.5x the mean P&L-Embs WER: {'met' if met_l else 'not met'}")
        if start_rows:  # a ratio met because P&L ASR broke says nothing: the P&L WER beside the start's
            start_pl = float(np.mean([asr[key]["P&L-Embs"]["wer"] for key in start_rows]))
            verdicts.append(f"the mean P&L-Embs WER {mean_pl:.1f} against {start_pl:.1f} at the start")

    def best_step(summ: dict) -> str:
        hist = [h for h in summ.get("history") or [] if "score" in h]
        return str(max(hist, key=lambda h: h["score"])["step"]) if hist else "?"

    lines = [f"- seed {s}: {summ.get('steps')} steps in {summ.get('seconds')} s, best step by dev loss "
             f"{best_step(summ)}" + (f"; reused from `{a.runs}/seed{s}` (same settings), trained by "
                                     f"`{summ.get('trained_by')}`" if summ.get("reused") else "")
             for s, (_, summ, _) in trained.items()]
    start = ("; ".join(dict.fromkeys(f"adapters from `{path}`{init_origin(path)}" for path in starts.values()))
             if a.init_from else "adapters untrained at the start")
    text = "\n\n".join([
        heading(TITLE, a.title),
        f"{stage_setting(a, cfg, odds, tasks)}; {start}; {a.steps} "
        f"steps of batch {cfg.batch_size}, lr {a.lr:g}, {a.threads} thread{'s' if a.threads > 1 else ''}"
        + (f", overrides {' '.join(a.extra)}" if a.extra else "")
        + f". Scored on {len(utts)} {a.split} utterances of {len({u.speaker for u in utts})} speakers; whole "
        f"command {time.perf_counter() - t0:.0f} s.",
        "\n".join(lines),
        *tables,
        f"*Greedy answers parsed back to a label; unparsable answers count as wrong. Targets (issue 15): "
        f"{'; '.join(verdicts)}.*"])
    print(text)
    write_result(Path(__file__).resolve().parent / "results" / "dual_info_p_only.md", text, command_line())


if __name__ == "__main__":
    main()

"""Paper 000's main model on honest data: SmolLM2-135M-Instruct (LoRA) MetaICL, against the tiny LM's seeds.

The pretrained-LLM speech LM (the packaged SmolLM2-135M-Instruct, LoRA on q/v, a Q-Former over the frozen
speaker-relative encoder, label-likelihood scoring) is trained by MetaICL on a corpus (default: the heldout
corpus, whose splits share no sentence and no voice) with the frozen encoder of the tiny-LM seed runs
(``benchmarks/personalization_seeds.py``: RUNS/seed0/relative/encoder), its best checkpoint chosen on the dev
speakers. It is then scored once on the test split and on the ``unseen`` split (a voice family and an emotion
rendering no training split has), at the k values asked for, on **the same episodes** as the seed runs (their
episode files are copied; without them the same seeded sampler draws them), with

- the derangement control (every enrollment label made wrong, k = 1 included) and the random-permutation control;
- its temperature fitted on dev episodes and the expected calibration error on the test episodes;
- the issue's claims, each against the seed runs' numbers on those episodes: the eGeMAPS peer and Personalized_A
  averaged over their training seeds, and the tiny LM's 3 seeds beside it. This model is one training seed: its
  intervals are speaker-bootstrap intervals (the same drawn speakers for both sides), with no interval over seeds;
- latency through ``EmotionRecognizer`` (0-shot, 7-shot with the speaker's enrollment prefix cached, uncached) and
  the real-time factor, with 2 torch threads (the repository's setting for SmolLM2 on 2 cores).

The model and its encoder are written as a bundle (``OUT_DIR/bundle``, about 6 MB: LoRA, Q-Former and projections
in float32, the encoder) with its dev temperature: ``emoslm predict --bundle`` and ``emoslm serve --bundle`` use it.

With ``--bundle PATH`` nothing is trained: the bundle's model and encoder (e.g. the shipped
``src/emoslm/assets/paper000/smollm2``, made by this script with ``--ship``) are scored the same way, and with
``--latency-only`` only its latency is measured.

Usage: python benchmarks/personalization_llm.py [--corpus data/synth_heldout] [--runs runs/seeds_heldout]
           [--out-dir runs/smollm2_heldout] [--minutes 95] [--steps 2400] [--ks 0,1,4,7] [--set KEY=VALUE ...]
       python benchmarks/personalization_llm.py --bundle src/emoslm/assets/paper000/smollm2 [--latency-only]
Appends to benchmarks/results/personalization_llm.md.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402
from personalization import latency_table  # noqa: E402
from personalization_seeds import (  # noqa: E402
    CLAIM_SETTING,
    PERSONALIZED_A,
    TARGETS,
    load_seed_results,
    model_of_kind,
    per_speaker,
)

TITLE = "Paper 000 with SmolLM2-135M-Instruct (LoRA MetaICL) on the heldout corpus"
MODEL = "Proposed (SmolLM2 MetaICL TU+LU_0:7)"
#: the run's settings beyond config speech_lm_smollm2 (the tools of the earlier probes: the speaker-relative
#: context, per-episode speaker-style token augmentation, no Q-Former dropout; label-permuted episodes, whose
#: only solution is to read the enrollment labels)
DEFAULT_SETS = ("augment_styles=4", "relative_context=true", "qformer.dropout=0.0", "token_aug_scale=0.4",
                "token_aug_offset=1.0", "label_permute_prob=0.2", "dev_max_episodes=100", "train.eval_every=200",
                "train.save_every=100", "train.warmup_steps=50")
SPLIT_FOLDERS = {"test": "eval", "unseen": "eval_unseen"}


def train_or_reuse(args):
    from emoslm.config import load_config
    from emoslm.personalization import speech_lm
    from emoslm.training.reuse import check_run

    cfg = load_config(speech_lm.SpeechLMConfig, "speech_lm_smollm2", [
        f"corpus={args.corpus}", f"out_dir={args.out_dir}", f"encoder={args.encoder}",
        f"train.max_steps={args.steps}", f"train.max_minutes={args.minutes}", "train.progress=false",
        *DEFAULT_SETS, *args.set])
    check = check_run(args.out_dir, cfg, "SmolLM2 MetaICL")  # a finished run is reused only with these settings
    if check.reuse:
        summary = check.summary(args.out_dir)
        origin = f"reused from `{args.out_dir}` (same settings)"
        if summary.get("trained_by"):
            origin += f", trained by `{summary['trained_by']}` at {summary['trained_at']}"
    else:
        summary = speech_lm.run(cfg)
        origin = "trained by this command"
    return cfg, summary, origin


def from_bundle(args):
    """The config, training summary and origin of an existing bundle (its config.yaml and train_summary.json,
    written beside the weights when it was shipped)."""
    import json

    from emoslm.config import load_config
    from emoslm.personalization import speech_lm
    from emoslm.personalization.inference import bundle_meta

    bundle = Path(args.bundle)
    for need in ("speech_lm", "encoder", "config.yaml"):
        if not (bundle / need).exists():
            raise SystemExit(f"{bundle} is not a shipped SmolLM2 bundle: {bundle / need} is missing")
    cfg = load_config(speech_lm.SpeechLMConfig, bundle / "config.yaml")
    summary_path = bundle / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    made = bundle_meta(bundle).get("made_by")
    origin = f"the bundle `{bundle}`, not trained here" + (f" (made by `{made}`)" if made else "")
    return cfg, summary, origin


def same_episodes(src: Path, dst: Path) -> list[str]:
    """Copy the seed runs' episode files into ``dst`` (so this model is scored on exactly them); return the
    names of those copied."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for f in sorted(src.glob("*.jsonl")):
        if not (dst / f.name).is_file():
            shutil.copyfile(f, dst / f.name)
        copied.append(f.name)
    return copied


def bootstrap_diff(a: dict, b: list[dict], n_boot: int = 2000, seed: int = 0) -> tuple[float, tuple | None]:
    """``a`` (one run's per-speaker accuracies) minus ``b`` (per-speaker accuracies of each of its seeds, averaged
    over them): the difference and its speaker-bootstrap 95 % interval (paired: the same drawn speakers)."""
    from emoslm.metrics.seeds import speaker_bootstrap

    quantities = [[a], b]
    ci = speaker_bootstrap(lambda x, y: x - y, quantities, n_boot=n_boot, seed=seed)
    speakers = sorted(set(a).intersection(*[set(x) for x in b]))
    diff = float(np.mean([a[s] - np.mean([x[s] for x in b]) for s in speakers]))
    return diff, ci


def bootstrap_share(real: dict, control: dict, base: dict, n_boot: int = 2000, seed: int = 0):
    """The share of ``real``'s gain over ``base`` that ``control`` removes, and its speaker-bootstrap interval."""
    from emoslm.metrics.seeds import fraction_removed

    est = fraction_removed([real], [control], [base], n_boot=n_boot, seed=seed)
    return est.mean, est.speaker_ci


def _ci(ci) -> str:
    return "–" if ci is None else f"[{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]"


def evaluate_split(args, split: str, model_dir: Path, seeds: list[int]) -> dict:
    from emoslm.personalization.evaluation import EvalPlan, ICLModelSpec, run_eval, write_report

    out = Path(args.out_dir) / SPLIT_FOLDERS[split]
    src = Path(args.runs) / f"seed{seeds[0]}" / SPLIT_FOLDERS[split] / "episodes"
    copied = same_episodes(src, out / "episodes") if src.is_dir() else []
    ks = tuple(int(x) for x in args.ks.split(","))
    plan = EvalPlan(corpus=args.corpus, out_dir=str(out), split=split, seed=0, k_max=max(ks), lo_k_max=0, ks=ks,
                    settings=(CLAIM_SETTING,), peer=False, calibration_episodes_per_k=args.dev_per_k,
                    icl=[ICLModelSpec(MODEL, str(model_dir), args.encoder, "TU+LU_{0:7}", "main")])
    t = time.perf_counter()
    results = run_eval(plan, progress=True)
    seconds = time.perf_counter() - t
    write_report(results, out)
    return {"results": results, "seconds": seconds, "copied": len(copied), "ks": ks}


def split_tables(split: str, ev: dict, seed_results: list | None) -> tuple[list[str], list[tuple]]:
    res, ks = ev["results"], ev["ks"]
    shuffled = f"{MODEL}, shuffled enrollment labels"
    deranged = f"{MODEL}, deranged enrollment labels"

    def mine(model, k):
        e = res.get(model, None if k == 0 else CLAIM_SETTING, k)
        return None if e is None else dict(e.ua_spk["per_speaker"])

    def theirs(model_name, k):
        if not seed_results or model_name is None:
            return None
        got = [per_speaker(r, (model_name, k, None if k == 0 else CLAIM_SETTING)) for r in seed_results]
        return got if all(got) else None

    first = seed_results[0] if seed_results else None
    tiny = first.main_model if first else None
    peer = model_of_kind(first, "peer") if first else None
    tiny_der = model_of_kind(first, "control", "deranged") if first else None
    mean = lambda ps: float(np.mean(list(ps.values()))) if ps else math.nan  # noqa: E731
    mean_seeds = lambda lst: float(np.mean([mean(p) for p in lst])) if lst else math.nan  # noqa: E731
    fmt = lambda x: "–" if x is None or not np.isfinite(x) else f"{x:.3f}"  # noqa: E731
    lines = [f"**{split}** ({len(mine(MODEL, 0) or {})} speakers, {ev['seconds'] / 60:.1f} min of scoring), UA_spk:",
             "", "| k | SmolLM2 MetaICL | shuffled labels | deranged labels | tiny LM (3 seeds) | tiny LM deranged "
             "| eGeMAPS peer (3 seeds) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k in ks:
        lines.append(f"| {k} | {fmt(mean(mine(MODEL, k)))} | {fmt(mean(mine(shuffled, k)))} | "
                     f"{fmt(mean(mine(deranged, k)))} | {fmt(mean_seeds(theirs(tiny, k)))} | "
                     f"{fmt(mean_seeds(theirs(tiny_der, k)))} | {fmt(mean_seeds(theirs(peer, k)))} |")
    claims: list[tuple] = []
    kmax = max(ks)
    real, zero, der = mine(MODEL, kmax), mine(MODEL, 0), mine(deranged, kmax)
    target = TARGETS.get(split, TARGETS["test"])
    if real and zero:
        claims.append((f"{kmax}-shot − 0-shot", *bootstrap_diff(real, [zero]), target["gain"], True))
    if real and theirs(peer, kmax):
        claims.append((f"{kmax}-shot − eGeMAPS peer at {kmax}", *bootstrap_diff(real, theirs(peer, kmax)),
                       target["peer"], True))
    if real and target["personalized_a"] is not None and first is not None:
        pa = [per_speaker(r, (PERSONALIZED_A, None, None)) for r in seed_results]
        if all(pa):
            claims.append((f"{kmax}-shot − {PERSONALIZED_A}", *bootstrap_diff(real, pa), target["personalized_a"],
                           True))
    if real and theirs(tiny, kmax):
        claims.append((f"{kmax}-shot − tiny LM at {kmax}", *bootstrap_diff(real, theirs(tiny, kmax)), None, True))
    if real and der and zero:
        claims.append((f"share of the {kmax}-shot gain removed by deranged labels", *bootstrap_share(real, der, zero),
                       target["deranged"], False))
    return lines, [(split, *c) for c in claims]


def calibration_lines(ev_by_split: dict) -> list[str]:
    lines = ["Calibration (temperature fitted on dev episodes; expected calibration error, 15 bins, on the "
             "evaluated episodes, all k pooled):", "", "| split | temperature | dev episodes | ECE before | ECE after |",
             "|---|---:|---:|---:|---:|"]
    for split, ev in ev_by_split.items():
        fit = ev["results"].calibration.get("models", {}).get(MODEL)
        if fit:
            lines.append(f"| {split} | {fit['temperature']:.3f} | {fit['n_dev']} | {fit['test']['ece_before']:.3f} | "
                         f"{fit['test']['ece_after']:.3f} |")
    return lines


def write_bundle(args, model_dir: Path, ev: dict, meta: dict) -> Path:
    from emoslm.personalization.inference import save_bundle, write_calibration
    from emoslm.personalization.model import SpeechICLModel

    bundle = save_bundle(Path(args.out_dir) / "bundle", args.encoder, SpeechICLModel.from_pretrained(model_dir), meta)
    cal = ev["results"].calibration
    fit = cal.get("models", {}).get(MODEL)
    if fit:
        write_calibration(bundle, {
            "temperature": fit["temperature"], "fitted_on": f"the {cal['split']} split of {args.corpus} "
            f"({cal['settings']}, at most {cal['episodes_per_k']} episodes per k)", "corpus": str(args.corpus),
            "split": cal["split"], "n": fit["n_dev"], "n_bins": cal["n_bins"], "ece_before": fit["dev_ece_before"],
            "ece_after": fit["dev_ece_after"], "test_ece_before": fit["test"]["ece_before"],
            "test_ece_after": fit["test"]["ece_after"]})
    return bundle


def ship(bundle: Path, dest: Path, corpus: Path, run_dir: Path, n: int = 20) -> str:
    """Copy ``bundle`` to ``dest`` (the package's shipped assets) with its weights stored as float16 (loaded into
    float32), beside the run's config.yaml and train_summary.json; return a line on how far the float16 copy's
    probabilities are from the original's on ``n`` test utterances (0-shot and 7-shot)."""
    import torch
    from safetensors.torch import load_file, save_file

    from emoslm.audio import load_audio
    from emoslm.data.manifests import emotion_of, load_prepared
    from emoslm.personalization.inference import EmotionRecognizer

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(bundle, dest)
    for f in dest.rglob("model.safetensors"):
        save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(f).items()}, f)
    for name in ("config.yaml", "train_summary.json"):
        shutil.copyfile(run_dir / name, dest / name)
    test = load_prepared(corpus)["test"]
    sups = sorted(test["supervisions"], key=lambda s: s.id)
    path = lambda s: test["recordings"][s.recording_id].sources[0].source  # noqa: E731
    speaker = sups[0].speaker
    own = [s for s in sups if s.speaker == speaker]
    enroll, seen = [], set()
    for s in own:
        if emotion_of(s) not in seen:
            seen.add(emotion_of(s))
            enroll.append((load_audio(path(s)), emotion_of(s)))
    queries = [load_audio(path(s)) for s in own[len(own) - n:]]
    diffs = []
    recs = [EmotionRecognizer.load(b, threads=2) for b in (bundle, dest)]
    for rec in recs:
        rec.enroll(speaker, enroll)
    for q in queries:
        for spk in (None, speaker):
            a, b = (np.array([r.predict(q, speaker=spk).probs[lab] for lab in r.label_set.labels]) for r in recs)
            diffs.append(float(np.abs(a - b).max()))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    return (f"Shipped as `{dest.relative_to(Path(__file__).resolve().parents[1])}` ({size:.1f} MB, weights in "
            f"float16): its probabilities differ from the float32 bundle's by at most {max(diffs):.4f} "
            f"({len(diffs)} predictions, 0- and 7-shot, speaker {speaker}).")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/synth_heldout")
    ap.add_argument("--runs", default="runs/seeds_heldout", help="the tiny-LM seed runs (personalization_seeds.py)")
    ap.add_argument("--seeds", default="0,1,2", help="the seed runs compared against")
    ap.add_argument("--encoder", default=None, help="frozen encoder (default: RUNS/seed<first>/relative/encoder)")
    ap.add_argument("--out-dir", default="runs/smollm2_heldout")
    ap.add_argument("--minutes", type=float, default=95.0)
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--ks", default="0,1,4,7")
    ap.add_argument("--splits", default="test,unseen")
    ap.add_argument("--dev-per-k", type=int, default=100, help="dev episodes per k of the temperature fit")
    ap.add_argument("--latency-queries", type=int, default=40)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides (after the defaults)")
    ap.add_argument("--bundle", default=None,
                    help="score this existing bundle (its speech_lm and encoder) instead of training one")
    ap.add_argument("--latency-only", action="store_true", help="with --bundle: only the latency table")
    ap.add_argument("--ship", action="store_true",
                    help="also write the bundle (float16) as the package's shipped SmolLM2 model, which "
                         "`emoslm predict` and `emoslm serve` then use by default")
    ap.add_argument("--out", default="benchmarks/results/personalization_llm.md")
    add_title_option(ap)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.latency_only and not args.bundle:
        ap.error("--latency-only measures an existing bundle: give --bundle")
    if args.bundle and args.ship:
        ap.error("--ship writes a bundle this command trained; --bundle scores one that exists")
    if args.bundle:
        args.encoder = str(Path(args.bundle) / "encoder")
    args.encoder = args.encoder or str(Path(args.runs) / f"seed{seeds[0]}" / "relative" / "encoder")

    import torch

    t0 = time.perf_counter()
    cfg, summary, origin = from_bundle(args) if args.bundle else train_or_reuse(args)
    torch.set_num_threads(cfg.threads)
    if args.bundle:
        model_dir = Path(args.bundle) / "speech_lm"
    else:
        ckpt = Path(args.out_dir) / "checkpoints"
        model_dir = ckpt / ("best" if (ckpt / "best" / "model").is_dir() else "last") / "model"
    evs, claims, tables, have_seeds = {}, [], [], True
    for split in [] if args.latency_only else args.splits.split(","):
        seed_results = load_seed_results(Path(args.runs), seeds, SPLIT_FOLDERS[split])
        have_seeds = have_seeds and seed_results is not None
        evs[split] = evaluate_split(args, split, model_dir, seeds)
        lines, cl = split_tables(split, evs[split], seed_results)
        tables += lines + [""]
        claims += cl
    if args.bundle:
        bundle = Path(args.bundle)
    else:
        bundle = write_bundle(args, model_dir, evs[args.splits.split(",")[0]],
                              {"corpus": args.corpus, "model": MODEL, "made_by": command_line()})
    lat, _ = latency_table(bundle, Path(args.corpus), args.latency_queries, threads=cfg.threads)
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20
    if args.latency_only:
        text = "\n".join([heading(TITLE, args.title), "", f"Model: {origin}.", "", "### Latency and real-time factor",
                          "", lat, "", f"Bundle `{bundle}` ({size:.1f} MB). Wall time of this command: "
                          f"{(time.perf_counter() - t0) / 60:.1f} min."]) + "\n"
        print(text)
        write_result(args.out, text, command_line())
        return text
    shipped = ""
    if args.ship:
        from emoslm.personalization.inference import SHIPPED_LLM_BUNDLE

        shipped = " " + ship(bundle, SHIPPED_LLM_BUNDLE, Path(args.corpus), Path(args.out_dir))

    hist = summary.get("history", [])
    best = max(hist, key=lambda h: h["score"]) if hist else None
    lines = [heading(TITLE, args.title), "",
             f"SmolLM2-135M-Instruct (packaged, offline), LoRA r={cfg.llm.get('lora_r', 8)} on q/v, Q-Former "
             f"{cfg.qformer['n_queries']} queries; MetaICL {cfg.setting} on `{args.corpus}` for {summary['steps']} steps "
             f"of {cfg.batch_size} episodes ({summary.get('seconds', float('nan')) / 60:.0f} min, {cfg.threads} torch "
             f"threads); frozen encoder `{args.encoder}`; settings "
             f"{'of its config.yaml' if args.bundle else ', '.join(DEFAULT_SETS + tuple(args.set))}. "
             f"Model: {origin}. Best checkpoint on the dev speakers: step {best['step'] if best else '?'}. "
             "One training seed; the tiny LM, the peer and Personalized_A are the seed runs' "
             f"({args.runs}, seeds {args.seeds}) on the same episodes"
             + ("." if have_seeds else ": not found here, so their columns and claims are left out (the episodes "
                "are the same: drawn by the same seeded sampler)."), ""]
    if hist:
        lines += ["Dev UA_spk during training (a seeded subset of the dev episodes): " + ", ".join(
            f"step {h['step']}: k=0 {h.get('ua_spk_k0', math.nan):.3f} / k=4 {h.get('ua_spk_k4', math.nan):.3f}"
            for h in hist), ""]
    lines += tables
    lines += ["Claims (this model's one seed; the other side averaged over its seeds; 95 % speaker-bootstrap "
              "interval, paired):", "", "| split | claim | value | 95 % CI | target | verdict |",
              "|---|---|---:|---:|---:|---|"]
    for split, name, value, ci, target, points in claims:
        scale = 100.0 if points else 1.0
        shown = f"{value * scale:+.1f} pt" if points else f"{value:.3f}"
        if target is None:
            tgt, verdict = "–", "–"
        elif not np.isfinite(value):
            tgt, verdict = (f"{target * scale:+.1f} pt" if points else f"{target:.3f}"), "undefined (no gain)"
            shown = "–"
        else:
            tgt = f"{target * scale:+.1f} pt" if points else f"{target:.3f}"
            verdict = "met" if value >= target else f"missed by {(target - value) * scale:.1f}" + (" pt" if points else "")
        shown_ci = _ci(ci) if points else ("–" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]")
        lines.append(f"| {split} | {name} | {shown} | {shown_ci} | {tgt} | {verdict} |")
    lines += ["", *calibration_lines(evs), "", "### Latency and real-time factor", "", lat, "",
              f"Bundle `{bundle}` ({size:.1f} MB).{shipped} Wall time of this command: "
              f"{(time.perf_counter() - t0) / 60:.0f} min."]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result(args.out, text, command_line())
    return text


if __name__ == "__main__":
    main()

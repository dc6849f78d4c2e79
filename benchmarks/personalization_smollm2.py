"""A bounded MetaICL run with the packaged SmolLM2-135M-Instruct backbone (LoRA), then k-shot inference.

Same corpus, frozen encoder and episode design as the tiny speech LM; the LLM is SmolLM2 (frozen weights, LoRA
r=8 on q/v), loaded offline from its GGUF package. Training stops at ``--minutes``; evaluation scores every
label's full token sequence on TU+LD episodes of ``--speakers`` held-out speakers.

Usage: python benchmarks/personalization_smollm2.py [--runs runs/demo] [--minutes 12] [--speakers 8]
Writes benchmarks/results/personalization_smollm2.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

TITLE = "Personalised SER with the SmolLM2-135M backbone (bounded run)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/demo", help="a demo runs folder (its relative/encoder is used)")
    ap.add_argument("--corpus", default="data/synth_demo")
    ap.add_argument("--out-dir", default="runs/smollm2")
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--speakers", type=int, default=8)
    ap.add_argument("--ks", default="0,1,2,4,7")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides")
    ap.add_argument("--out", default="benchmarks/results/personalization_smollm2.md")
    add_title_option(ap)
    args = ap.parse_args()

    import torch

    from emoslm.config import load_config
    from emoslm.data.episodes import EpisodeList, EpisodeSampler
    from emoslm.data.augment import SpeakerStyle
    from emoslm.personalization.scoring import evaluate_episodes
    from emoslm.personalization.model import SpeechICLModel
    from emoslm.personalization import speech_lm
    from emoslm.personalization.data import EncodedStore, SERData

    enc = str(Path(args.runs) / "relative" / "encoder")
    cfg = load_config(speech_lm.SpeechLMConfig, "speech_lm_smollm2", [
        f"corpus={args.corpus}", f"out_dir={args.out_dir}", f"encoder={enc}", f"train.max_steps={args.steps}",
        f"train.max_minutes={args.minutes}", "train.progress=false", *args.set])
    from emoslm.training.reuse import check_run

    check = check_run(args.out_dir, cfg, "SmolLM2 MetaICL")  # a finished run is reused only with these settings
    if check.reuse:
        summary = check.summary(args.out_dir)
        train_s = summary["seconds"]
        origin = (f"reused from `{args.out_dir}` (same settings), trained by `{summary['trained_by']}` at "
                  f"{summary['trained_at']}") if summary.get("trained_by") else f"reused from `{args.out_dir}`"
    else:
        t0 = time.perf_counter()
        summary = speech_lm.run(cfg)
        train_s = time.perf_counter() - t0
        origin = "trained by this command"

    torch.set_num_threads(cfg.threads)
    ckpt = Path(args.out_dir) / "checkpoints"
    model = SpeechICLModel.from_pretrained(ckpt / ("best" if (ckpt / "best" / "model").is_dir() else "last") / "model").eval()
    data = SERData(args.corpus, label_set=cfg.label_set, splits=["test"], progress=False)
    speakers = sorted(data.by_speaker["test"])[: args.speakers]
    items = [it for it in data.items("test") if it[1] in speakers]
    from emoslm.models.encoders import FbankTransformerEncoder

    store = EncodedStore.build(FbankTransformerEncoder.from_pretrained(enc),
                               {i: data.fbank[i] for i, _, _ in items}, [SpeakerStyle()], progress=False)
    sampler = EpisodeSampler(items, label_set=data.label_set)
    rows = []
    t1 = time.perf_counter()
    for k in [int(x) for x in args.ks.split(",")]:
        eps: EpisodeList = sampler.episodes(k=k, target="TU", label="LD" if k else "LU", seed=0, on_error="skip")
        res = evaluate_episodes(model, store, data.label_set, eps)
        rows.append((k, len(eps), res, ""))
    # the shuffled-label control at the largest k: a model that reads the labels loses its gain
    rows.append((k, len(eps), evaluate_episodes(model, store, data.label_set, eps, shuffle_labels_seed=1),
                 ", shuffled labels"))
    eval_s = time.perf_counter() - t1
    lines = [
        heading(TITLE, args.title), "",
        f"SmolLM2-135M-Instruct (packaged GGUF, offline), LoRA r={cfg.llm.get('lora_r', 8)} on q/v, Q-Former "
        f"{cfg.qformer['n_queries']} queries; MetaICL {cfg.setting} for {summary['steps']} steps of "
        f"{cfg.batch_size} episodes in {train_s / 60:.1f} min ({cfg.threads} torch threads); "
        f"evaluated on {len(speakers)} held-out speakers ({eval_s:.0f} s), label likelihood scoring. "
        f"Model: {origin}.", "",
        "| k | setting | episodes | UA_spk | sigma | WA |", "|---|---|---|---|---|---|"]
    for k, n, r, note in rows:
        lines.append(f"| {k} | {'TU+LD' if k else '0-shot'}{note} | {n} | {r.ua_spk:.3f} | {r.speakers.std:.3f} | {r.wa:.3f} |")
    hist = summary.get("history", [])
    if hist:
        lines += ["", "Dev UA_spk during training: " + ", ".join(
            f"step {h['step']}: k=0 {h.get('ua_spk_k0', float('nan')):.3f} / k=4 {h.get('ua_spk_k4', float('nan')):.3f}"
            for h in hist)]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result(args.out, text, command_line())


if __name__ == "__main__":
    main()

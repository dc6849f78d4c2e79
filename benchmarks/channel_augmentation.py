"""Does channel augmentation in training make the recogniser hold over phone lines and codecs?

Trains paper 000's recogniser twice with the same schedule and seed -- the speaker-relative encoder
(``classifier_relative``), stage 1 and stage 2 MetaICL (``speech_lm_stage1/2``) -- once on clean audio and once
with ``channel_augment=N`` in all three (every training utterance also heard through N random transmission
channels, :mod:`emoslm.data.channel`), then scores both bundles on the same test queries through the fixed
channels of ``emoslm.data.channel.EVAL_CHANNELS`` (:mod:`emoslm.personalization.channel_eval`): UA_spk and the
agreement with the clean answer, enrollment on clean audio and through the same channel. A finished training run
is reused only when it was made with the same settings (``emoslm.training.reuse``).

With ``--compare NAME=BUNDLE`` (two or more) nothing is trained: bundles trained elsewhere are scored side by
side the same way. This is how the SmolLM2 model is compared, since its training is an hour on 2 cores
(``benchmarks/personalization_llm.py``): the clean one is the shipped bundle; the augmented one is
``personalization_llm.py --encoder E --set channel_augment=4``, where E is a speaker-relative encoder trained with
the same channels (``emoslm train classifier --config classifier_relative --set channel_augment=4 ...``).

Usage: python benchmarks/channel_augmentation.py [--corpus data/synth_demo] [--runs runs/channel_aug]
       [--channels 4] [--relative-steps 300] [--stage1-steps 200] [--stage2-steps 300]
       python benchmarks/channel_augmentation.py --compare clean=DIR --compare channel_augment=4=DIR
       [--corpus data/synth_heldout] [--split test]
Appends to benchmarks/results/channel_augmentation.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

TITLE = "Channel augmentation in training: the recogniser over phone lines, codecs, noise and level"


def train_variant(root: Path, corpus: str, channels: int, steps: dict[str, int], styles: int) -> list[str]:
    """The three trainings of one variant into ``root`` (reused when already made with these settings); what
    was trained and what reused."""
    from emoslm.config import load_config
    from emoslm.personalization import classifier, speech_lm
    from emoslm.training.reuse import check_run

    done = []
    aug = [f"channel_augment={channels}"] if channels else []
    plan = [
        ("relative", classifier, "ClassifierConfig", "classifier_relative", [f"train.max_steps={steps['relative']}"]),
        ("stage1", speech_lm, "SpeechLMConfig", "speech_lm_stage1",
         [f"encoder={root}/relative/encoder", f"train.max_steps={steps['stage1']}", f"augment_styles={styles}"]),
        ("stage2", speech_lm, "SpeechLMConfig", "speech_lm_stage2",
         [f"encoder={root}/relative/encoder", f"init_from={root}/stage1/checkpoints/best/model",
          f"train.max_steps={steps['stage2']}", f"augment_styles={styles}"]),
    ]
    for name, module, cfg_class, config, extra in plan:
        out = root / name
        cfg = load_config(getattr(module, cfg_class), config, [f"corpus={corpus}", f"out_dir={out}",
                                                               "train.progress=false", *extra, *aug])
        if check_run(out, cfg, name).reuse:
            done.append(f"{name} reused")
            continue
        t = time.perf_counter()
        module.run(cfg)
        done.append(f"{name} trained ({time.perf_counter() - t:.0f} s)")
    return done


def parse_compare(values: list[str]) -> dict[str, Path]:
    """``--compare NAME=BUNDLE`` values as {name: bundle}; the name may hold "=" (the bundle path is after the
    last one)."""
    bundles: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.rpartition("=")
        if not sep or not name or not path:
            sys.exit(f"--compare takes NAME=BUNDLE (e.g. clean=src/emoslm/assets/paper000/smollm2); got {value!r}")
        if name in bundles:
            sys.exit(f"--compare: the name {name!r} is given twice")
        if not (Path(path) / "speech_lm").is_dir() or not (Path(path) / "encoder").is_dir():
            sys.exit(f"--compare {value}: {path} is not a bundle (it needs speech_lm/ and encoder/)")
        bundles[name] = Path(path)
    if len(bundles) < 2:
        sys.exit("--compare needs two bundles or more (NAME=BUNDLE each)")
    return bundles


def comparison_table(scores: dict) -> list[str]:
    """UA_spk and agreement of every variant, one row per channel and enrollment."""
    names = list(scores)
    lines = ["| channel | enrollment | " + " | ".join(f"UA_spk, {n}" for n in names) + " | "
             + " | ".join(f"agreement, {n}" for n in names) + " |",
             "|---|---|" + "---:|" * (2 * len(names))]
    for i, row in enumerate(scores[names[0]]):
        cells = [scores[n][i] for n in names]
        lines.append(f"| {row.channel} | {row.enrollment} | " + " | ".join(f"{c.ua_spk:.3f}" for c in cells)
                     + " | " + " | ".join(f"{c.agreement:.3f}" for c in cells) + " |")
    return lines + ["", "Agreement: the fraction of queries whose label equals the same model's on the clean "
                        "query with clean enrollment."]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/synth_demo")
    ap.add_argument("--split", default="test", help="the split scored")
    ap.add_argument("--runs", default="runs/channel_aug")
    ap.add_argument("--channels", type=int, default=4, help="channel_augment of the augmented variant")
    ap.add_argument("--relative-steps", type=int, default=300)
    ap.add_argument("--stage1-steps", type=int, default=200)
    ap.add_argument("--stage2-steps", type=int, default=300)
    ap.add_argument("--styles", type=int, default=4, help="augment_styles of the speech LMs (>= 2 with channels)")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=BUNDLE",
                    help="score these bundles instead of training (two or more)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: 2 for a pretrained-LLM bundle, else 1)")
    ap.add_argument("--speakers", type=int, default=20)
    ap.add_argument("--queries-per-speaker", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/channel_augmentation.md")
    add_title_option(ap)
    args = ap.parse_args()
    if not Path(args.corpus).is_dir():
        sys.exit(f"{args.corpus} does not exist: emoslm synth corpus --preset demo --out {args.corpus}")
    bundles = parse_compare(args.compare) if args.compare else {}

    from emoslm.personalization.channel_eval import channel_robustness
    from emoslm.personalization.inference import EmotionRecognizer, bundle_meta, bundle_threads
    from emoslm.personalization.pipeline import bundle_from_runs

    t0 = time.perf_counter()
    provenance = []
    if not bundles:
        steps = {"relative": args.relative_steps, "stage1": args.stage1_steps, "stage2": args.stage2_steps}
        for name, channels in {"clean training": 0, f"channel_augment={args.channels}": args.channels}.items():
            root = Path(args.runs) / f"channels{channels}"
            provenance.append(f"- {name} (`{root}`): " + ", ".join(
                train_variant(root, args.corpus, channels, steps, args.styles)))
            bundles[name] = bundle_from_runs(root, root / "bundle")
        setup = (f"Both variants: relative encoder {steps['relative']} steps, stage 1 {steps['stage1']}, stage 2 "
                 f"{steps['stage2']}, {args.styles} speaker styles, seed 0; the augmented one with "
                 f"`channel_augment={args.channels}` in all three.")
    else:
        made_by = {name: bundle_meta(path).get("made_by") for name, path in bundles.items()}
        provenance = [f"- {name}: `{path}`" + (f", made by `{made_by[name]}`" if made_by[name] else "")
                      for name, path in bundles.items()]
        setup = "Bundles trained elsewhere, scored here:"
    scores = {}
    for name, bundle in bundles.items():
        rec = EmotionRecognizer.load(bundle, threads=bundle_threads(bundle, args.threads))
        scores[name] = channel_robustness(rec, args.corpus, split=args.split, n_speakers=args.speakers,
                                          queries_per_speaker=args.queries_per_speaker, progress=True)
    first = next(iter(scores.values()))[0]
    lines = [heading(TITLE, args.title), "",
             f"Corpus `{args.corpus}`, {args.split} split: {first.speakers} speakers, {first.n} queries, each "
             f"speaker enrolled with one utterance of each emotion. {setup} Wall time "
             f"{time.perf_counter() - t0:.0f} s.", "", *provenance, "", *comparison_table(scores)]
    text = "\n".join(lines) + "\n"
    print(text)
    write_result(args.out, text, command_line())


if __name__ == "__main__":
    main()

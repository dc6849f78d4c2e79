"""Which layers should feed E-chat's emotion branch? Its warm-up, scored on the SER corpus's dev speakers.

E-chat's emotion embedding is an attentive pooling of a softmax-weighted sum of encoder layers, and its auxiliary
head a linear map of that (:mod:`emoslm.echat.model`). Before stage 2 the branch can be warmed up on a prepared
SER corpus by the emotion loss alone (:func:`emoslm.echat.recipe.warm_up_emotion_branch`). This script runs that
warm-up alone, for each source of layers, over several seeds (head initialisation and batch draws), and scores
it every ``--eval-every`` steps on a seeded subset of the corpus's **dev** speakers (the choice is made there; the
dialogue test split is not looked at):

- ``speech``: the speech encoder's own layers (``--encoder``, default the packaged Whisper tiny.en, all 5);
- ``emotion encoder``: a second, frozen encoder (``--emotion-encoder``, default the cascade's SER bundle's
  fbank encoder), as ``model.emotion_encoder`` / ``benchmarks/echat.py --emotion-encoder`` configure it.

Labels: the corpus's emotions mapped to E-chat's five (surprise and disgust left out); chance is about 20 %.
The LLM is not used by the warm-up, so the tiny random LLM stands in for it here.

Usage: python benchmarks/echat_emotion_probe.py [--corpus data/synth_demo] [--seeds 0,1,2] [--steps 1000]
Appends to benchmarks/results/echat_emotion_probe.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

from emoslm.echat.model import EChatConfig, EChatModel, FrozenStatesCache  # noqa: E402
from emoslm.echat.pipeline import ENCODERS  # noqa: E402
from emoslm.echat.recipe import emotion_samples, warm_up_emotion_branch  # noqa: E402
from emoslm.metrics.seeds import t_interval  # noqa: E402
from emoslm.threads import set_torch_threads  # noqa: E402

TITLE = "E-chat's emotion branch: which encoder layers feed it (warm-up on the SER corpus, dev speakers)"


def probe(source: str, encoder: dict, emotion_encoder: dict | None, args, seeds: list[int]) -> dict:
    import torch

    cache = FrozenStatesCache()  # the frozen encoders' states, shared by the seeds (the same utterances)
    train = dev = None
    runs = []
    t0 = time.perf_counter()
    for seed in seeds:
        torch.manual_seed(seed)
        model = EChatModel(EChatConfig(encoder=encoder, emotion_encoder=emotion_encoder, llm={"name": "tiny-llama"},
                                       freeze_encoder=True)).set_stage(2)
        model.states_cache = cache
        if train is None:  # featurized once: the cache is keyed by these arrays
            train = emotion_samples(args.corpus, model.featurize, model.label_set, args.train_utterances, 0)
            dev = emotion_samples(args.corpus, model.featurize, model.label_set, args.dev_utterances, 0, split="dev")
        runs.append(warm_up_emotion_branch(model, train, dev, args.steps, args.lr, args.batch, args.eval_every,
                                           seed, progress=True))
    best = [r["dev_ser_emotion_acc"] for r in runs]
    return {"source": source, "runs": runs, "best": best, "mean": float(np.mean(best)), "ci": t_interval(best),
            "seconds": time.perf_counter() - t0, "n_train": len(train), "n_dev": len(dev)}


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/synth_demo")
    ap.add_argument("--encoder", default="whisper-tiny.en", choices=list(ENCODERS))
    ap.add_argument("--emotion-encoder", default="runs/shipped_bundle/encoder")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--train-utterances", type=int, default=1000)
    ap.add_argument("--dev-utterances", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/echat_emotion_probe.md")
    add_title_option(ap)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    for path, what in ((args.corpus, "the SER corpus (make it with `emoslm synth corpus --preset demo`)"),
                       (args.emotion_encoder, "the emotion encoder (`emoslm bundle shipped runs/shipped_bundle`)")):
        if not Path(path).is_dir():
            raise SystemExit(f"{path} does not exist: {what}")
    set_torch_threads(args.threads)
    speech = dict(ENCODERS[args.encoder])
    results = [probe(f"{args.encoder} layers (the speech encoder's)", speech, None, args, seeds),
               probe(f"emotion encoder `{args.emotion_encoder}` (fbank)", speech,
                     {"kind": "fbank", "init": args.emotion_encoder}, args, seeds)]
    fmt_ci = lambda ci: "n/a" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"  # noqa: E731
    lines = [heading(TITLE, args.title), "",
             f"Corpus `{args.corpus}`: {results[0]['n_train']} training utterances, {results[0]['n_dev']} dev "
             f"utterances (seeded subsets; emotions mapped to E-chat's five, chance about 20 %). Warm-up: "
             f"{args.steps} steps of {args.batch}, AdamW lr {args.lr:g}, scored every {args.eval_every} steps, the best "
             f"step kept; seeds {args.seeds} (head initialisation and batch draws); {args.threads} torch thread(s).", "",
             "| layers feeding the emotion branch | dev emotion acc. (%), mean of the best step | 95 % CI over seeds "
             "| per seed | best steps | wall time |", "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['source']} | {100 * r['mean']:.1f} | {fmt_ci(r['ci'])} | "
                     f"{', '.join(f'{100 * b:.1f}' for b in r['best'])} | "
                     f"{', '.join(str(x['kept_step']) for x in r['runs'])} | {r['seconds']:.0f} s |")
    lines += ["", "Dev accuracy (%) per evaluation, first seed:", ""]
    for r in results:
        lines.append(f"- {r['source']}: " + ", ".join(f"step {h['step']}: {100 * h['dev_ser_emotion_acc']:.1f}"
                                                     for h in r["runs"][0]["history"]))
    text = "\n".join(lines) + "\n"
    print(text)
    path = write_result(args.out, text, command_line())
    print(f"appended to {path}")
    return text


if __name__ == "__main__":
    main()

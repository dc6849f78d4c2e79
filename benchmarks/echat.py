"""E-chat (paper 003) against the ParalinGPT-style cascade on the embedded dialogue data, in a bounded CPU budget.

A thin wrapper over :mod:`emoslm.echat.pipeline` (= ``emoslm run echat``): the dialogue dataset, stages 1 and 2
(each capped at ``--steps`` steps and ``--minutes`` minutes), then Tables 2 and 3 on the test split for E-chat and
the cascade (packaged Whisper tiny.en + the demo's SER bundle + SmolLM2 prompted like the dataset builder). The
speech encoder (``--encoder``) is the fbank one, started from the demo's SER encoder
(``runs/demo/bundle/encoder``, made by ``make demo``), or the packaged Whisper with all its layers
(``whisper-tiny.en``, ``whisper-base``; frozen unless ``--train-encoder``). Table 3 gives Whisper tiny.en's CER on
the same audio as E-chat stage 1's, and their ratio.

``--stage1-only`` trains stage 1 alone and scores Table 3 on ``--split`` (default then: valid), to choose stage 1's
settings (``--train-encoder``, ``--set model.stack=8``, ``--set train.lr=...``, ``--steps``) before the test split
is scored once.

Writes ``<runs>/report.html`` and appends to ``benchmarks/results/echat.md`` (``--stage1-only``:
``benchmarks/results/echat_stage1.md``).

    .venv/bin/python benchmarks/echat.py [--steps 150] [--minutes 6] [--threads 1] [--encoder whisper-tiny.en]
    .venv/bin/python benchmarks/echat.py --encoder whisper-tiny.en --stage1-only [--set train.lr=1e-3]
    .venv/bin/python benchmarks/echat.py --encoder whisper-tiny.en --emotion-corpus data/synth_demo
    .venv/bin/python benchmarks/echat.py --encoder whisper-tiny.en --emotion-corpus data/synth_demo \
        --emotion-batch 32 --emotion-warmup 1000 --set2 train.max_minutes=null \
        [--emotion-encoder runs/shipped_bundle/encoder]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import add_title_option, command_line, retitle, write_result

from emoslm.echat.pipeline import ENCODERS, EChatRun, run, summary_markdown

ROOT = Path(__file__).resolve().parents[1]
TITLE = "E-chat (paper 003) vs the ParalinGPT-style cascade, embedded dialogue data"
STAGE1_TITLE = "E-chat (paper 003) stage 1 vs Whisper tiny.en, embedded dialogue data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/echat_demo")
    p.add_argument("--runs", default=None, help="run folder (default: runs/echat for fbank, runs/echat_<encoder> "
                                                "otherwise, so that one encoder's stages do not replace another's)")
    p.add_argument("--asr-corpus", default="data/synth_demo")
    p.add_argument("--bundle", default="runs/demo/bundle", help="SER bundle: the cascade's emotion recogniser, "
                                                                "and its encoder initialises E-chat's fbank one")
    p.add_argument("--encoder", default="fbank", choices=["fbank", *ENCODERS])
    p.add_argument("--train-encoder", action="store_true", default=None,
                   help="train the encoder in stage 1 (the paper; default for fbank, Whisper stays frozen)")
    p.add_argument("--emotion-corpus", default=None,
                   help="stage 2: a prepared SER corpus whose training utterances also train E-chat's emotion branch "
                        "(e.g. data/synth_demo, the corpus the cascade's SER model was trained on)")
    p.add_argument("--emotion-batch", type=int, default=None,
                   help="with --emotion-corpus: its utterances per stage-2 step (default 8)")
    p.add_argument("--emotion-warmup", type=int, default=None, metavar="STEPS",
                   help="with --emotion-corpus: train E-chat's emotion branch alone on it for STEPS steps before "
                        "stage 2 (the best step on its dev speakers kept)")
    p.add_argument("--emotion-encoder", default=None, metavar="DIR",
                   help="a trained fbank encoder (e.g. runs/shipped_bundle/encoder, the cascade's SER encoder) whose "
                        "layers feed E-chat's emotion branch, frozen, instead of the speech encoder's")
    p.add_argument("--set2", dest="extra2", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe override for stage 2 alone, e.g. train.max_minutes=null (repeatable)")
    p.add_argument("--stage1-only", action="store_true", help="stage 1 and Table 3 alone (for tuning on valid)")
    p.add_argument("--split", default=None, help="the split scored (default: test; valid with --stage1-only)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="a recipe override for both stages, e.g. model.stack=4 or train.lr=1e-3 (repeatable)")
    p.add_argument("--steps", type=int, default=150, help="training steps per stage")
    p.add_argument("--minutes", type=float, default=6.0, help="time cap per stage")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N entries of the split only")
    add_title_option(p)
    a = p.parse_args()

    runs = a.runs or ("runs/echat" if a.encoder == "fbank" else f"runs/echat_{a.encoder}")
    split = a.split or ("valid" if a.stage1_only else "test")
    cfg = EChatRun(data=a.data, runs=runs, asr_corpus=a.asr_corpus, encoder_init=str(Path(a.bundle) / "encoder"),
                   ser_bundle=a.bundle, steps=a.steps, minutes=a.minutes, threads=a.threads, limit=a.limit,
                   encoder=a.encoder, train_encoder=a.train_encoder, stages=(1,) if a.stage1_only else (1, 2),
                   split=split, extra=tuple(a.extra), emotion_corpus=a.emotion_corpus,
                   emotion_batch_size=a.emotion_batch, emotion_warmup_steps=a.emotion_warmup,
                   stage2_extra=tuple(a.extra2), emotion_encoder=a.emotion_encoder)
    recognizer = None
    if not a.stage1_only:  # the cascade's SER: paper 000's, imported only here (paper 003 does not depend on it)
        from emoslm.personalization.inference import EmotionRecognizer

        recognizer = EmotionRecognizer.load(a.bundle, threads=a.threads)
    out = run(cfg, recognizer)
    text = retitle(summary_markdown(out, cfg), STAGE1_TITLE if a.stage1_only else TITLE, a.title)
    name = "echat_stage1.md" if a.stage1_only else "echat.md"
    path = write_result(ROOT / "benchmarks" / "results" / name, text, command_line())
    print(text)
    print(f"appended to {path}")


if __name__ == "__main__":
    main()

"""E-chat (paper 003) against the ParalinGPT-style cascade on the embedded dialogue data, in a bounded CPU budget.

A thin wrapper over :mod:`emoslm.echat.pipeline` (= ``emoslm run echat``): the dialogue dataset, stages 1 and 2
(each capped at ``--steps`` steps and ``--minutes`` minutes; the fbank encoder starts from the demo's SER encoder,
``runs/demo/bundle/encoder``, made by ``make demo``), then Tables 2 and 3 on the test split for E-chat and the
cascade (packaged Whisper tiny.en + the demo's SER bundle + SmolLM2 prompted like the dataset builder).

Writes ``runs/echat/report.html`` and appends to ``benchmarks/results/echat.md``.

    .venv/bin/python benchmarks/echat.py [--steps 150] [--minutes 6] [--threads 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import add_title_option, command_line, retitle, write_result

from emoslm.echat.pipeline import EChatRun, run, summary_markdown
from emoslm.personalization.inference import EmotionRecognizer

ROOT = Path(__file__).resolve().parents[1]
TITLE = "E-chat (paper 003) vs the ParalinGPT-style cascade, embedded dialogue data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/echat_demo")
    p.add_argument("--runs", default="runs/echat")
    p.add_argument("--asr-corpus", default="data/synth_demo")
    p.add_argument("--bundle", default="runs/demo/bundle", help="SER bundle: the cascade's emotion recogniser, "
                                                                "and its encoder initialises E-chat's")
    p.add_argument("--steps", type=int, default=150, help="training steps per stage")
    p.add_argument("--minutes", type=float, default=6.0, help="time cap per stage")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test entries only")
    add_title_option(p)
    a = p.parse_args()

    cfg = EChatRun(data=a.data, runs=a.runs, asr_corpus=a.asr_corpus, encoder_init=str(Path(a.bundle) / "encoder"),
                   ser_bundle=a.bundle, steps=a.steps, minutes=a.minutes, threads=a.threads, limit=a.limit)
    out = run(cfg, EmotionRecognizer.load(a.bundle, threads=a.threads))
    text = retitle(summary_markdown(out, cfg), TITLE, a.title)
    path = write_result(ROOT / "benchmarks" / "results" / "echat.md", text, command_line())
    print(text)
    print(f"appended to {path}")


if __name__ == "__main__":
    main()

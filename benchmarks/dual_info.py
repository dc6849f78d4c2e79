"""The dual-information speech LM (paper 002) on the embedded data, in a bounded CPU budget.

Runs :func:`emoslm.dual_info.pipeline.run_all`: the demo corpus and conversations (cached), stages 1-3 on the frozen
packaged Whisper tiny.en encoder and the frozen packaged SmolLM2-135M-Instruct (each stage capped at its step
count and ``--minutes``), then Tables I, III and IV for the stage-1 and final models, with the packaged SmolLM2
as the judge. Writes ``runs/dual_info/report.html``, ``runs/dual_info/results.json`` and
``benchmarks/results/dual_info.md``.

    .venv/bin/python benchmarks/dual_info.py [--steps 150,100,100] [--minutes 12] [--test-utterances 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/dual_info")
    p.add_argument("--steps", default="150,100,100", help="training steps of stages 1, 2 and 3")
    p.add_argument("--minutes", type=float, default=12.0, help="time cap per stage")
    p.add_argument("--test-utterances", type=int, default=40)
    p.add_argument("--test-conversations", type=int, default=20)
    p.add_argument("--max-train-utterances", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init-stage1", default=None, help="continue stage 1 from this checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, every stage")
    a = p.parse_args()

    from emoslm.dual_info.pipeline import DualInfoRun, run_all
    from emoslm.dual_info.evaluation import to_markdown

    steps = tuple(int(x) for x in a.steps.split(","))
    run = DualInfoRun(runs=a.runs, steps=steps, minutes=a.minutes, test_utterances=a.test_utterances,
                      test_conversations=a.test_conversations, max_train_utterances=a.max_train_utterances,
                      threads=a.threads, extra=a.set, init_stage1=a.init_stage1)
    t0 = time.perf_counter()
    res = run_all(run)
    meta = res["meta"]
    budget = (f"Budget: stages of {', '.join(map(str, steps))} steps of batch {run.batch_size}, each capped at "
              f"{a.minutes:g} min, {a.threads} threads; frozen Whisper tiny.en (CTranslate2 int8) and SmolLM2-135M; "
              f"trained steps {meta['steps']}, training seconds {meta['training seconds']}; evaluation "
              f"{meta['evaluation seconds']} s on {meta['test utterances']} test utterances (Tables I, III) and "
              f"{meta['test conversations']} test conversation turns (Table IV); whole command "
              f"{time.perf_counter() - t0:.0f} s (cached stages and data are reused).")
    text = "# Dual-information speech LM (paper 002)\n\n" + budget + "\n\n" + to_markdown(res)
    print(text)
    cmd = "python benchmarks/dual_info.py " + " ".join(sys.argv[1:])
    p_out = Path(__file__).resolve().parent / "results" / "dual_info.md"
    write_result(p_out, text, cmd.strip())


if __name__ == "__main__":
    main()

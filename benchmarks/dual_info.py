"""The dual-information speech LM (paper 002) on the embedded data, in a bounded CPU budget.

Runs :func:`emoslm.dual_info.pipeline.run_all`: the demo corpus and conversations (cached), stages 1-3 on the frozen
packaged Whisper tiny.en encoder and the frozen packaged SmolLM2-135M-Instruct (each stage capped at its step
count and ``--minutes``), then Tables I, III and IV for the stage-1 and final models, with the packaged SmolLM2
as the judge. Writes ``runs/dual_info/report.html``, ``runs/dual_info/results.json`` and appends a section to
``benchmarks/results/dual_info.md``: the budget, where each stage comes from (trained by this command, or reused
from the run folder with the command and date that trained it: a stage is reused only when its recorded settings
are the ones about to run), Tables I, III and IV.

    .venv/bin/python benchmarks/dual_info.py [--steps 150,100,100] [--minutes 12] [--test-utterances 40]
    .venv/bin/python benchmarks/dual_info.py --runs runs/dual_info_long --init-stage1 \
        runs/dual_info/stage1/checkpoints/best/model --steps 600,300,300 --minutes 16 --title "Longer run"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_title_option, command_line, heading, init_origin, write_result

TITLE = "Dual-information speech LM (paper 002)"


def stage_lines(stages: dict, runs: str) -> str:
    """Where each stage's model comes from, from the stage folders' own records."""
    parts = []
    for s, info in sorted(stages.items()):
        if not info.get("reused"):
            parts.append(f"stage {s} trained by this command")
        elif info.get("trained_by"):
            parts.append(f"stage {s} reused from `{runs}/stage{s}` (same settings), trained by "
                         f"`{info['trained_by']}` at {info.get('trained_at')}")
        else:
            parts.append(f"stage {s} reused from `{runs}/stage{s}` (same settings; made before runs recorded "
                         "their command)")
    return "Stages: " + "; ".join(parts) + "."


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
    add_title_option(p)
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
              f"{time.perf_counter() - t0:.0f} s (cached data and stages of the same settings are reused).")
    if a.init_stage1:
        budget += f" Stage 1 continued from `{a.init_stage1}`{init_origin(a.init_stage1)}."
    text = "\n\n".join([heading(TITLE, a.title), budget, stage_lines(meta["stages"], a.runs), to_markdown(res)])
    print(text)
    p_out = Path(__file__).resolve().parent / "results" / "dual_info.md"
    write_result(p_out, text, command_line())


if __name__ == "__main__":
    main()

"""Zero-shot SER from an LLM-written, TTS-rendered corpus (paper 001) on the embedded default, in a bounded budget.

Runs ``emoslm run zeroshot`` (config ``synth``): the packaged SmolLM2-135M writes labelled lines from the
description of the synthetic target (``descriptions/synth_target.yaml``) within ``--max-minutes``; espeak-ng
speaks them (neutral, and with the synthetic corpus's emotional prosody); MiniLM (text), Whisper tiny.en and
eGeMAPS (speech) heads are trained on that alone, and on a second synthetic corpus standing in for a real source;
all are evaluated on the synthetic corpus's 20 test speakers (4 classes). Writes ``benchmarks/results/zero_shot.md``
(the WA/UA table, generation statistics, timings) and ``runs/zeroshot_bench/report.html``.

    .venv/bin/python benchmarks/zero_shot.py                         # bounded: ~12 min of LLM time
    .venv/bin/python benchmarks/zero_shot.py --n 800 --max-minutes 90 --llm-threads 2   # longer, idle machine
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_title_option, command_line, retitle, write_result

TITLE = "Zero-shot SER from an LLM-written, TTS-rendered corpus (paper 001)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="synth")
    p.add_argument("--n", type=int, default=None, help="utterances of the LLM corpus (default: the config's)")
    p.add_argument("--max-minutes", type=float, default=None, help="LLM time budget (default: the config's)")
    p.add_argument("--llm-threads", type=int, default=None)
    p.add_argument("--out", default="runs/zeroshot_bench")
    p.add_argument("--data", default="data/zeroshot")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    add_title_option(p)
    a = p.parse_args()

    from emoslm.zeroshot.pipeline import load_zeroshot_config, run_zeroshot, to_markdown

    overrides = [f"out_dir={a.out}", f"data_dir={a.data}", f"source.path={a.data}/source", *a.set]
    if a.n is not None:
        overrides.append(f"generation.n_utterances={a.n}")
    if a.max_minutes is not None:
        overrides.append(f"generation.max_minutes={a.max_minutes}")
    if a.llm_threads is not None:
        overrides.append(f"llm.threads={a.llm_threads}")
    cfg = load_zeroshot_config(a.config, overrides)
    summary = run_zeroshot(cfg)
    g = summary["llm"]["generation"]
    dev = "\n".join(f"| {r['upstream']} | {r['source']} | {r['n_train']} | {r['dev_ua']:.3f} |" for r in summary["rows"])
    text = "\n".join([
        retitle(to_markdown(summary), TITLE, a.title), "",
        "## LLM generation", "",
        (f"- {g['calls']} calls ({g['new_calls']} made in this run, {g['cached_calls']} from the cache), "
         f"{g['new_call_seconds']:.0f} s of generation, {g['tokens_per_second']} tokens/s with "
         f"{cfg.llm.threads} torch thread(s); stopped by the time budget: {g['stopped_by_time_budget']}"),
        f"- accepted per class before balancing: {g['accepted_per_class']}; balanced corpus: {g['balanced_size']}",
        f"- rejected lines: {g['rejected']} ({json.dumps(g['rejection_reasons'])})", "",
        "## Model selection on each training corpus's own dev split (UA; no target data)", "",
        "| upstream | trained on | n train | dev UA |", "|---|---|---:|---:|", dev, "",
        f"Report with confusion matrices: `{a.out}/report.html`; every number: `{a.out}/results.json`."])
    out = write_result(ROOT / "benchmarks" / "results" / "zero_shot.md", text, command_line())
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Sanity check of the LLM judge (paper 002, Table IV): does it score a relevant reply above an irrelevant one?

A wrapper over :func:`emoslm.dual_info.judge_sanity.judge_sanity`, the check Table IV runs before it reports a
judge's scores: for ``--pairs`` examples of the conversation data (``emoslm synth conversations``; one per
conversation, drawn with a fixed seed), the relevant reply is the example's own target and the irrelevant one the
target of an example from another conversation whose sentence differs. Both are judged in the same context; a
pair is a win when the relevant reply scores higher, a tie when equal, a loss when lower, and unparsed when either
score could not be read. Reported for the CS content score (the one the check is decided on: the judge passes
with wins on at least 80 % of the pairs), EGS C1 (content relevance) and the mean of all six metrics, with the
judge's parse rates.

Writes ``benchmarks/results/judge_sanity.md`` (judge outputs cached in ``--cache``).

    .venv/bin/python benchmarks/judge_sanity.py [--pairs 20] [--backend smollm2] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_title_option, command_line, heading, write_result

TITLE = "Judge sanity check"


def main() -> None:
    from emoslm.dual_info.judge import METRICS, Judge
    from emoslm.dual_info.judge_sanity import COMPARED_SCORES, judge_sanity, pick_pairs
    from emoslm.threads import set_torch_threads
    from emoslm.dual_info.conversations import load_conversations
    from emoslm.models.text_llm import load_backend

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conversations", default="data/conversations_demo")
    p.add_argument("--split", default="test")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--backend", default="smollm2")
    p.add_argument("--base-url", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--prompts", default="v1")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", default="runs/judge_sanity/judge.jsonl")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/judge_sanity.md"))
    add_title_option(p)
    a = p.parse_args()

    set_torch_threads(a.threads, a.backend)
    examples = load_conversations(a.conversations, a.split)
    pairs = pick_pairs(examples, a.pairs)
    judge = Judge(load_backend(a.backend, a.base_url, a.model), a.prompts, cache=a.cache)
    t0 = time.perf_counter()
    check = judge_sanity(judge, pairs)
    seconds = time.perf_counter() - t0
    parsed = check.parsed

    n = len(pairs)
    recs = [r for r in judge.cache.records.values() if r.get("method", "generate") == judge.method]
    per_output = float(np.mean([r["seconds"] for r in recs if "seconds" in r])) if recs else math.nan
    head = (f"Judge: `{judge.name}`, prompts `{a.prompts}`; {n} pairs from `{a.conversations}` ({a.split}); "
            f"{len(recs)} judge outputs, {per_output:.2f} s each when generated ({judge.cache.n_generated} generated "
            f"by this run in {seconds:.0f} s, the rest read from the cache).")
    # the method is the judge's default for its backend (this script has no option to choose another)
    where = "a local model" if judge.method == "probability" else "a backend that only returns text"
    lines = [heading(f"{TITLE}: {judge.method} method (the default for {where})", a.title), "", head, "",
             "| score compared | relevant higher | tie | relevant lower | unparsed |", "|---|---:|---:|---:|---:|"]
    for m in COMPARED_SCORES:
        c = check.outcomes[m]
        lines.append(f"| {m} | {c['win']} | {c['tie']} | {c['loss']} | {c['unparsed']} |")
    lines += ["", "Parse rate over the " + str(2 * n) + " judged replies: "
              + ", ".join(f"{m} {parsed[m]}/{2 * n}" for m in METRICS) + "."]
    lines += ["", f"For Table IV: {check.verdict}."]
    if min(parsed.values()) < n:  # fewer than half of the outputs readable for some metric
        lines += ["", ("Fewer than half of this judge's outputs could be read for some metric: it cannot rank "
                       "these replies. Use a stronger judge (`--backend openai --base-url URL --model NAME`); raw "
                       f"outputs are in `{a.cache}`.")]
    lines += ["",
              "| example | relevant reply | irrelevant reply | content (rel / irr) | C1 (rel / irr) |",
              "|---|---|---|---:|---:|"]

    def cell(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.3g}"

    def esc(t: str) -> str:
        return t.replace("|", "/").replace("\n", " ")[:70]

    for row in check.pairs:
        sg, sb = row["relevant_scores"], row["irrelevant_scores"]
        lines.append(f"| {row['id']} | {esc(row['relevant'])} | {esc(row['irrelevant'])} | "
                     f"{cell(sg['content'])} / {cell(sb['content'])} | {cell(sg['C1'])} / {cell(sb['C1'])} |")
    table = "\n".join(lines)
    print(table)
    write_result(a.out, table, command_line())
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

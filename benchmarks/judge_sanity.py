"""Sanity check of the LLM judge (paper 002, Table IV): does it score a relevant reply above an irrelevant one?

For ``--pairs`` examples of the conversation data (``emoslm synth conversations``; one per conversation,
drawn with a fixed seed), the relevant reply is the example's own target (the backend's reply to that turn)
and the irrelevant one the target of an example from another conversation whose sentence differs. Both are
judged in the same context; a pair is a win when the relevant reply scores higher, a tie when equal, a loss
when lower, and unparsed when either score could not be read. Reported for the CS content score, EGS C1
(content relevance) and the mean of all six metrics, with the judge's parse rates.

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


def pick_pairs(examples: list[dict], n: int, seed: int = 0) -> list[tuple[dict, str, str]]:
    """(example, relevant reply, irrelevant reply) for ``n`` examples of distinct conversations."""
    rng = np.random.default_rng(seed)
    by_conv: dict[str, list[dict]] = {}
    for ex in examples:
        by_conv.setdefault(ex["conversation_id"], []).append(ex)
    convs = sorted(by_conv)
    chosen = [by_conv[c][int(rng.integers(len(by_conv[c])))] for c in rng.permutation(convs)[:n]]
    pairs = []
    for i, ex in enumerate(chosen):
        others = [o for o in examples if o["conversation_id"] != ex["conversation_id"] and o["text"] != ex["text"]
                  and o["response"] != ex["response"]]
        other = others[int(rng.integers(len(others)))]
        pairs.append((ex, ex["response"], other["response"]))
    return pairs


def overall(s: dict) -> float:
    """The six metrics on a common 0-1 scale (CS 1-5, EGS 0-10), averaged; NaN unless all six parsed."""
    return float(np.mean([(s["content"] - 1) / 4, (s["style"] - 1) / 4, *(s[c] / 10 for c in ("C1", "C2", "C3", "C4"))]))


def compare(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b):
        return "unparsed"
    return "win" if a > b else "tie" if a == b else "loss"


def main() -> None:
    from emoslm.dual_info.judge import METRICS, Judge
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
    outcomes: dict[str, list[str]] = {"content": [], "C1": [], "mean of six": []}
    parsed = {m: 0 for m in METRICS}
    rows = []
    for ex, good, bad in pairs:
        sg = judge.score(ex["context"], ex["user_turn"], good)
        sb = judge.score(ex["context"], ex["user_turn"], bad)
        for s in (sg, sb):
            for m in METRICS:
                parsed[m] += not math.isnan(s[m])
        for m in ("content", "C1"):
            outcomes[m].append(compare(sg[m], sb[m]))
        outcomes["mean of six"].append(compare(overall(sg), overall(sb)))
        rows.append((ex["id"], good, bad, sg, sb))
    seconds = time.perf_counter() - t0

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
    for m, outs in outcomes.items():
        lines.append(f"| {m} | {outs.count('win')} | {outs.count('tie')} | {outs.count('loss')} | "
                     f"{outs.count('unparsed')} |")
    lines += ["", "Parse rate over the " + str(2 * n) + " judged replies: "
              + ", ".join(f"{m} {parsed[m]}/{2 * n}" for m in METRICS) + "."]
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

    for uid, good, bad, sg, sb in rows:
        lines.append(f"| {uid} | {esc(good)} | {esc(bad)} | {cell(sg['content'])} / {cell(sb['content'])} | "
                     f"{cell(sg['C1'])} / {cell(sb['C1'])} |")
    table = "\n".join(lines)
    print(table)
    write_result(a.out, table, command_line())
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""Evaluation of the dual-information speech LM (paper 002, IV-B): Tables I, III and IV, and their ablations.

- Table I: weighted accuracy (the share of correct answers) of each attribute question, with both kinds of
  embeddings (P&L-Embs), with the paralinguistic ones only (P-Embs) and, as the ablation that shows where
  the information is, with the linguistic ones only (L-Embs). Answers are generated greedily and parsed back
  to a label (:meth:`emoslm.dual_info.tasks.AttributeTask.parse`); an unparsable answer counts as wrong.
- Table III: WER (and CER) of ASR with P&L-Embs, with L-Embs only and with P-Embs only.
- Table IV: the conversation test examples answered by each system, scored by an LLM judge on content and
  style (CS, 1-5) and the EGS rubric C1-C4 (0-10) (:mod:`emoslm.dual_info.judge`), plus SIM, the sentence
  similarity to the reference reply (the frozen LLM's reply to the true text and caption). The judge's scores
  are reported only when it passed its sanity check (:mod:`emoslm.dual_info.judge_sanity`).

Every prompt of the test sets is drawn with a fixed seed, so two models see the same questions.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from emoslm.dual_info.conversations import clean_reply
from emoslm.dual_info.judge import METRICS, ReplyJudge
from emoslm.dual_info.judge_sanity import SanityPair, checked_judge_table, judge_sanity, verdict
from emoslm.dual_info.model import DualInfoSLM, Example
from emoslm.dual_info.recipe import asr_example, attribute_example, conversation_example
from emoslm.dual_info.tasks import ATTRIBUTE_TASKS
from emoslm.metrics.text import SentenceSimilarity, error_rates
from emoslm.models.reply_cache import ReplyCache
from emoslm.reporting import CSS, TableData, html_table, md_table

#: name -> (p_source, l_source)
CONDITIONS: dict[str, tuple[str, str]] = {
    "P&L-Embs": ("speech", "speech"),
    "P-Embs": ("speech", "none"),
    "L-Embs": ("none", "speech"),
}


def _generate(model: DualInfoSLM, examples: Sequence[Example], batch_size: int, max_new_tokens: int,
              desc: str, progress: bool) -> list[str]:
    from tqdm import tqdm

    order = sorted(range(len(examples)), key=lambda i: examples[i].frames.shape[0])  # similar lengths together
    out: list[str] = [""] * len(examples)
    model.eval()
    with tqdm(total=len(examples), desc=desc, unit="ex", disable=not progress) as bar:
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            for j, text in zip(idx, model.generate([examples[j] for j in idx], max_new_tokens)):
                out[j] = text
            bar.update(len(idx))
    return out


def attribute_accuracy(model: DualInfoSLM, utts: Sequence[Any], feats: Mapping[str, np.ndarray],
                       tasks: Sequence[str] = tuple(ATTRIBUTE_TASKS), conditions: Sequence[str] = tuple(CONDITIONS),
                       batch_size: int = 16, seed: int = 0, progress: bool = True) -> dict[str, dict[str, Any]]:
    """``{condition: {task: {"wa", "parsed", "n", "examples"}}}`` over ``utts`` (those with the attribute)."""
    results: dict[str, dict[str, Any]] = {}
    for cond in conditions:
        p_src, l_src = CONDITIONS[cond]
        results[cond] = {}
        for task in tasks:
            t = ATTRIBUTE_TASKS[task]
            rng = np.random.default_rng(seed)
            us = [u for u in utts if u.attrs.get(t.field) in t.choices]
            exs = [attribute_example(u, feats[u.id], task, rng, p_src, l_src) for u in us]
            hyps = _generate(model, exs, batch_size, 16, f"{cond} {task}", progress)
            preds = [t.parse(h) for h in hyps]
            refs = [u.attrs[t.field] for u in us]
            correct = [p == r for p, r in zip(preds, refs)]
            results[cond][task] = {"wa": float(np.mean(correct)) if us else math.nan,
                                   "parsed": float(np.mean([p is not None for p in preds])) if us else math.nan,
                                   "n": len(us), "examples": list(zip(refs, hyps))[:5]}
    return results


def asr_error_rates(model: DualInfoSLM, utts: Sequence[Any], feats: Mapping[str, np.ndarray],
                    conditions: Sequence[str] = ("P&L-Embs", "L-Embs", "P-Embs"), batch_size: int = 16,
                    seed: int = 0, max_new_tokens: int = 40, progress: bool = True) -> dict[str, dict[str, Any]]:
    """``{condition: {"wer", "cer", "n", "examples"}}`` (percent)."""
    out = {}
    for cond in conditions:
        p_src, l_src = CONDITIONS[cond]
        rng = np.random.default_rng(seed)
        exs = [asr_example(u, feats[u.id], rng, p_src, l_src) for u in utts]
        hyps = _generate(model, exs, batch_size, max_new_tokens, f"{cond} asr", progress)
        refs = [u.text for u in utts]
        out[cond] = {**error_rates(hyps, refs), "n": len(utts), "examples": list(zip(refs, hyps))[:5]}
    return out


def slm_replies(model: DualInfoSLM, rows: Sequence[Mapping[str, Any]], feats: Mapping[str, np.ndarray],
                condition: str = "P&L-Embs", batch_size: int = 8, max_new_tokens: int = 64,
                progress: bool = True) -> list[str]:
    """The model's replies to conversation test examples (context as text, the user turn as speech)."""
    p_src, l_src = CONDITIONS[condition]
    exs = [conversation_example(dict(r), feats[r["supervision_id"]], p_src, l_src) for r in rows]
    return _generate(model, exs, batch_size, max_new_tokens, f"replies ({condition})", progress)


def text_llm_replies(backend, rows: Sequence[Mapping[str, Any]], max_tokens: int = 64, cache: str | Path | None = None,
                     progress: bool = True) -> list[str]:
    """The frozen LLM's replies when it reads the plain transcript (no speaking style): the text cascade with
    perfect ASR and no paralinguistic information."""
    from tqdm import tqdm

    rc = ReplyCache(cache)
    out = []
    for r in tqdm(rows, desc="replies (text LLM, plain transcript)", unit="ex", disable=not progress):
        messages = [{"role": "system", "content": r["system"]}, *r["context"], {"role": "user", "content": r["text"]}]
        out.append(clean_reply(rc.reply(backend, messages, max_tokens, 0.0)["text"]))
    return out


def table_iv_results(examples: Sequence[Mapping[str, Any]], replies: Mapping[str, Sequence[str]],
                     judge: ReplyJudge, sanity_pairs: Sequence[SanityPair], reference: str,
                     sim: SentenceSimilarity | None = None, progress: bool = True) -> dict[str, Any]:
    """Table IV's part of the results: ``judge_check``, the judge's sanity check on ``sanity_pairs``
    (:func:`~emoslm.dual_info.judge_sanity.judge_sanity`), run first; ``table4``, each system's judge scores
    (only when the judge passed) and, with ``sim``, its SIM to the replies of system ``reference``."""
    check = judge_sanity(judge, sanity_pairs)
    table = checked_judge_table(examples, replies, judge, check, progress=progress)
    if sim is not None:
        for name, rs in replies.items():
            table[name]["sim"] = sim(rs, replies[reference])
    return {"judge_check": check.to_dict(), "table4": table}


# ------------------------------------------------------------------------------------------------ tables


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def table_i(results: Mapping[str, Any]):
    """Table I: WA (%) per attribute, one row per (model, condition), with the majority-class baseline."""

    tasks = list(next(iter(next(iter(results["table1"].values())).values())).keys())
    rows, sections = [], []
    for model, conds in results["table1"].items():
        sections.append(len(rows))
        for cond, per in conds.items():
            rows.append([model, cond, *[_pct(per[t]["wa"]) for t in tasks]])
    if results.get("majority"):
        sections.append(len(rows))
        rows.append(["majority class (train)", "-", *[_pct(results["majority"].get(t, math.nan)) for t in tasks]])
    return TableData("Table I: attribute classification, WA (%)", ["Model", "Embeddings", *tasks], rows,
                     caption="Greedy answers parsed back to a label; unparsable answers count as wrong. "
                             "L-Embs only is the ablation: how much attribute information the linguistic "
                             "adapter carries.", sections=sections[1:], text_columns=2, group_columns=1)


def table_iii(results: Mapping[str, Any]):

    rows, sections = [], []
    for model, conds in results["table3"].items():
        sections.append(len(rows))
        for cond, r in conds.items():
            rows.append([model, cond, f"{r['wer']:.1f}", f"{r['cer']:.1f}"])
    return TableData("Table III: ASR (%)", ["Model", "Embeddings", "WER", "CER"], rows,
                     caption="P-Embs only is the ablation: how much linguistic content the paralinguistic adapter "
                             "carries.", sections=sections[1:], text_columns=2, group_columns=1)


def table_iv(results: Mapping[str, Any]):
    """Table IV: the judge's scores only when the judge passed its sanity check (``results["judge_check"]``,
    :mod:`emoslm.dual_info.judge_sanity`); otherwise SIM alone, and the check's verdict in place of the scores."""
    t4, check = results["table4"], results.get("judge_check")
    first = next(iter(t4.values()), {})
    sim_note = ("SIM: sentence similarity (MiniLM) to the reference reply, the frozen LLM's reply to the true text "
                "and speaking-style caption.")
    say = verdict(check)
    if not (check and check["passed"]):
        rows = [[name, f"{r['sim']:.1f}" if "sim" in r else "-", str(r["n"])] for name, r in t4.items()]
        return TableData("Table IV: conversations (no judge scores)", ["System", "SIM", "n"], rows,
                         caption=f"No judge scores: {say}. {sim_note}")
    rows = []
    for name, r in t4.items():
        rows.append([name, *["-" if math.isnan(r[m]) else f"{r[m]:.2f}" for m in METRICS],
                     f"{r['sim']:.1f}" if "sim" in r else "-", f"{r['n_parsed']}/{r['n']}"])
    return TableData(f"Table IV: conversations, judge {first.get('judge', '?')} "
                     f"(prompts {first.get('prompts_version', '?')})",
                     ["System", "Content", "Style", "C1", "C2", "C3", "C4", "SIM", "parsed/n"], rows,
                     caption=f"CS scores 1-5, EGS C1-C4 0-10 (means over parsed judgements); {sim_note} The "
                             f"{say}.")


def result_tables(results: Mapping[str, Any]) -> list:
    out = []
    if results.get("table1"):
        out.append(table_i(results))
    if results.get("table3"):
        out.append(table_iii(results))
    if results.get("table4"):
        out.append(table_iv(results))
    return out


def to_markdown(results: Mapping[str, Any]) -> str:

    return "\n".join(md_table(t) for t in result_tables(results))


def write_report(results: Mapping[str, Any], path: str | Path) -> Path:
    """A self-contained HTML page: the tables, the run's settings and example answers."""

    e = html.escape
    parts = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Dual-information SLM</title>"
             f"<style>{CSS}</style></head><body><h1>Dual-information speech LM (paper 002)</h1>"]
    meta = results.get("meta", {})
    if meta:
        parts.append("<table><tbody>" + "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>"
                                                for k, v in meta.items()) + "</tbody></table>")
    parts += [html_table(t) for t in result_tables(results)]
    examples = results.get("examples") or []
    if examples:
        keys = list(examples[0])
        parts.append("<h2>Example replies</h2><table><thead><tr>" + "".join(f"<th>{e(k)}</th>" for k in keys)
                     + "</tr></thead><tbody>")
        for ex in examples[:10]:
            parts.append("<tr>" + "".join(f"<td>{e(str(ex.get(k, '')))}</td>" for k in keys) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def majority_baseline(train_utts: Sequence[Any], test_utts: Sequence[Any],
                      tasks: Sequence[str] = tuple(ATTRIBUTE_TASKS)) -> dict[str, float]:
    """Accuracy on ``test_utts`` of always answering the most frequent training label."""
    from collections import Counter

    out = {}
    for task in tasks:
        f = ATTRIBUTE_TASKS[task].field
        counts = Counter(u.attrs.get(f) for u in train_utts if u.attrs.get(f) is not None)
        refs = [u.attrs.get(f) for u in test_utts if u.attrs.get(f) is not None]
        out[task] = float(np.mean([r == counts.most_common(1)[0][0] for r in refs])) if counts and refs else math.nan
    return out

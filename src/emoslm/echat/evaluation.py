"""E-chat (paper 003) in evaluation: Tables 2 and 3 against the topline, and the report.

Metrics (:func:`evaluate_echat`), against the topline responses (written with the true text and emotion):
BLEU-1 and BLEU-4 (sacrebleu, corpus level), SIM (mean cosine of sentence embeddings from the packaged
all-MiniLM-L6-v2, x100), the emotion accuracy of E-chat's auxiliary head and of the cascade's SER, and the
CER/WER (jiwer) of E-chat's stage-1 model and of the cascade's ASR on the test questions. Every asset is
loaded from installed packages or local paths; a missing one raises an error naming the package.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from emoslm.audio import load_audio
from emoslm.echat.api import EChat
from emoslm.echat.cascade import Cascade
from emoslm.echat.dialogue import load_manifest
from emoslm.errors import EmoslmError
from emoslm.metrics.text import SentenceSimilarity, error_rates, response_metrics
from emoslm.reporting import CSS, TableData, html_table, md_table

# ------------------------------------------------------------------------------------------------ evaluation


def evaluate_echat(data_dir: str | Path, echat: EChat, cascade: Cascade | None, stage1: EChat | None = None,
                   sim: SentenceSimilarity | None = None, split: str = "test", limit: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Tables 2 and 3 of paper 003 on a dialogue dataset's ``split`` (the first ``limit`` entries)."""
    rows = load_manifest(data_dir, split)[:limit]
    if not rows:
        raise EmoslmError(f"{data_dir} has no {split} entries")
    sim = sim or SentenceSimilarity()
    waves = [load_audio(r["audio"]) for r in rows]
    refs = [r["response"] for r in rows]
    t0 = time.perf_counter()
    turns = [echat.chat(w) for w in tqdm(waves, desc="E-chat", disable=not progress)]
    echat_s = time.perf_counter() - t0
    systems: dict[str, dict[str, Any]] = {"E-chat": {
        **response_metrics([t.reply for t in turns], refs, sim),
        "emotion_acc": 100 * float(np.mean([t.emotion == r["emotion_word"] for t, r in zip(turns, rows)])),
        "seconds_per_reply": echat_s / len(rows)}}
    examples = [{"question": r["question"], "emotion": r["emotion_word"], "topline": r["response"],
                 "echat": f"<{t.emotion}> {t.reply}"} for r, t in zip(rows, turns)]
    table3: dict[str, dict[str, float]] = {}
    if cascade is not None:
        t0 = time.perf_counter()
        cturns = [cascade.respond(w) for w in tqdm(waves, desc="cascade", disable=not progress)]
        systems["Cascade (ParalinGPT-style)"] = {
            **response_metrics([t.reply for t in cturns], refs, sim),
            "emotion_acc": 100 * float(np.mean([t.emotion == r["emotion_word"] for t, r in zip(cturns, rows)])),
            "seconds_per_reply": (time.perf_counter() - t0) / len(rows)}
        table3["Whisper tiny.en (cascade ASR)"] = error_rates([t.transcript for t in cturns],
                                                              [r["question"] for r in rows])
        for ex, t in zip(examples, cturns):
            ex["cascade"] = f"<{t.emotion}> [{t.transcript}] {t.reply}"
    if stage1 is not None:
        table3["E-chat stage 1"] = error_rates(stage1.transcribe(waves), [r["question"] for r in rows])
    systems["Topline (true text + emotion)"] = {"bleu1": 100.0, "bleu4": 100.0, "sim": 100.0}
    return {"split": split, "entries": len(rows), "systems": systems, "table3": table3, "examples": examples}


# ------------------------------------------------------------------------------------------------ report


def result_tables(results: dict[str, Any]) -> list:
    """Tables 2 and 3 (and the emotion accuracies) as :class:`emoslm.reporting.TableData`."""

    systems = results["systems"]
    names = list(systems)
    rows = [[label] + [f"{systems[n][key]:.2f}" if key in systems[n] else "-" for n in names]
            for label, key in (("BLEU-1", "bleu1"), ("BLEU-4", "bleu4"), ("SIM", "sim"),
                               ("Emotion accuracy (%)", "emotion_acc"), ("Seconds per reply", "seconds_per_reply"))]
    t2 = TableData(f"Table 2: responses on the {results['split']} split ({results['entries']} entries)",
                   ["Metric", *names], rows,
                   caption="BLEU and SIM against the topline responses, written by the same LLM with the true "
                           "question text and emotion. Emotion accuracy: E-chat's auxiliary head; the cascade's SER.")
    t3 = TableData("Table 3: ASR on the test questions (%)", ["Model", "CER", "WER"],
                   [[m, f"{v['cer']:.2f}", f"{v['wer']:.2f}"] for m, v in results["table3"].items()])
    return [t2, t3]


def to_markdown(results: dict[str, Any]) -> str:

    return "\n\n".join(md_table(t) for t in result_tables(results))


def write_report(results: dict[str, Any], path: str | Path, table1_md: str | None = None) -> Path:
    """One self-contained HTML page: the dataset's Table 1, Tables 2 and 3, and example responses."""

    e = html.escape
    parts = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>E-chat</title>"
             f"<style>{CSS}</style></head><body><h1>E-chat (paper 003) on the embedded dialogue data</h1>"]
    if table1_md:
        parts.append(f"<h2>Table 1: the dataset</h2><pre>{e(table1_md)}</pre>")
    parts += [html_table(t) for t in result_tables(results)]
    parts.append("<h2>Examples</h2><table><thead><tr><th>Question</th><th>Emotion</th><th>Topline</th>"
                 "<th>E-chat</th><th>Cascade</th></tr></thead><tbody>")
    for ex in results["examples"][:12]:
        parts.append("<tr>" + "".join(f"<td>{e(str(ex.get(k, '-')))}</td>" for k in
                                      ("question", "emotion", "topline", "echat", "cascade")) + "</tr>")
    parts.append("</tbody></table></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path

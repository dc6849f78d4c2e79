"""E-chat (paper 003) in evaluation: Tables 2 and 3 against the topline, and the report.

Metrics (:func:`evaluate_echat`), against the topline responses (written with the true text and emotion):
BLEU-1 and BLEU-4 (sacrebleu, corpus level), SIM (mean cosine of sentence embeddings from the packaged
all-MiniLM-L6-v2, x100), the emotion accuracy of E-chat's auxiliary head and of the cascade's SER, and the
CER/WER (jiwer) of E-chat's stage-1 model and of the cascade's ASR (Whisper tiny.en) on the same utterances, with
their CER ratio against the issue's target (:data:`CER_RATIO_TARGET`). :func:`evaluate_asr` is Table 3 alone, the
quick path for choosing stage 1's settings on the valid split. Every asset is loaded from installed packages or
local paths; a missing one raises an error naming the package.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
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

#: Table 3's rows (the keys of ``results["table3"]``)
WHISPER_ROW = "Whisper tiny.en (cascade ASR)"
STAGE1_ROW = "E-chat stage 1"
#: the issue "E-chat ahead of its cascade": E-chat stage 1's CER at most this times Whisper tiny.en's, same audio
CER_RATIO_TARGET = 1.5

# ------------------------------------------------------------------------------------------------ evaluation


def describe_encoder(echat: EChat) -> str:
    """E-chat's speech encoder in words, e.g. "Whisper tiny.en encoder, all 5 layers, frozen"."""
    model = echat.model
    spec = model.encoder.spec
    name = {"fbank": "fbank encoder", "whisper": f"Whisper {spec.get('model')} encoder"}.get(
        spec.get("kind"), f"{Path(str(spec.get('path', '?'))).name} encoder")
    trained = "frozen" if model.cfg.freeze_encoder else "trained in stage 1"
    return f"{name}, all {model.encoder.n_hidden_states} layers, {trained}"


def _split_audio(data_dir: str | Path, split: str, limit: int | None) -> tuple[list[dict], list[np.ndarray]]:
    rows = load_manifest(data_dir, split)[:limit]
    if not rows:
        raise EmoslmError(f"{data_dir} has no {split} entries")
    return rows, [load_audio(r["audio"]) for r in rows]


def evaluate_asr(data_dir: str | Path, stage1: EChat, asr: Callable[[np.ndarray], str] | None,
                 split: str = "valid", limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Table 3 alone on ``split`` (the first ``limit`` entries): E-chat stage 1 and ``asr`` (the cascade's,
    :class:`~emoslm.echat.cascade.WhisperASR`) on the same utterances; no LLM replies, no SER. For choosing stage
    1's settings on the valid split before the test split is scored once."""
    rows, waves = _split_audio(data_dir, split, limit)
    questions = [r["question"] for r in rows]
    table3: dict[str, dict[str, float]] = {}
    if asr is not None:
        table3[WHISPER_ROW] = error_rates([asr(w) for w in tqdm(waves, desc="Whisper", disable=not progress)],
                                          questions)
    table3[STAGE1_ROW] = error_rates(stage1.transcribe(waves), questions)
    return {"split": split, "entries": len(rows), "table3": table3, "stage1_encoder": describe_encoder(stage1)}


def evaluate_echat(data_dir: str | Path, echat: EChat, cascade: Cascade | None, stage1: EChat | None = None,
                   sim: SentenceSimilarity | None = None, split: str = "test", limit: int | None = None,
                   progress: bool = True, asr: Callable[[np.ndarray], str] | None = None) -> dict[str, Any]:
    """Tables 2 and 3 of paper 003 on a dialogue dataset's ``split`` (the first ``limit`` entries). Table 3's
    Whisper row is the cascade's transcripts; without a cascade, ``asr``'s on the same utterances."""
    rows, waves = _split_audio(data_dir, split, limit)
    sim = sim or SentenceSimilarity()
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
        table3[WHISPER_ROW] = error_rates([t.transcript for t in cturns], [r["question"] for r in rows])
        for ex, t in zip(examples, cturns):
            ex["cascade"] = f"<{t.emotion}> [{t.transcript}] {t.reply}"
    elif asr is not None:
        table3[WHISPER_ROW] = error_rates([asr(w) for w in tqdm(waves, desc="Whisper", disable=not progress)],
                                          [r["question"] for r in rows])
    out: dict[str, Any] = {}
    if stage1 is not None:
        table3[STAGE1_ROW] = error_rates(stage1.transcribe(waves), [r["question"] for r in rows])
        out["stage1_encoder"] = describe_encoder(stage1)
    systems["Topline (true text + emotion)"] = {"bleu1": 100.0, "bleu4": 100.0, "sim": 100.0}
    return {"split": split, "entries": len(rows), "systems": systems, "table3": table3, "examples": examples,
            **out}


def cer_ratio(results: dict[str, Any]) -> float | None:
    """E-chat stage 1's CER over Whisper tiny.en's on the same utterances (None without both rows)."""
    t3 = results.get("table3", {})
    if STAGE1_ROW not in t3 or WHISPER_ROW not in t3:
        return None
    return t3[STAGE1_ROW]["cer"] / max(t3[WHISPER_ROW]["cer"], 1e-9)


# ------------------------------------------------------------------------------------------------ report


def result_tables(results: dict[str, Any]) -> list:
    """Tables 2 (when E-chat's replies were scored) and 3 as :class:`emoslm.reporting.TableData`."""

    t3 = asr_table(results)
    if "systems" not in results:  # stage 1 alone (evaluate_asr)
        return [t3]
    systems = results["systems"]
    names = list(systems)
    rows = [[label] + [f"{systems[n][key]:.2f}" if key in systems[n] else "-" for n in names]
            for label, key in (("BLEU-1", "bleu1"), ("BLEU-4", "bleu4"), ("SIM", "sim"),
                               ("Emotion accuracy (%)", "emotion_acc"), ("Seconds per reply", "seconds_per_reply"))]
    t2 = TableData(f"Table 2: responses on the {results['split']} split ({results['entries']} entries)",
                   ["Metric", *names], rows,
                   caption="BLEU and SIM against the topline responses, written by the same LLM with the true "
                           "question text and emotion. Emotion accuracy: E-chat's auxiliary head; the cascade's SER.")
    return [t2, t3]


def asr_table(results: dict[str, Any]) -> TableData:
    """Table 3: CER/WER of each ASR on the same utterances; E-chat's row names its encoder, and the caption gives
    the CER ratio against :data:`CER_RATIO_TARGET`."""
    encoder = results.get("stage1_encoder")
    rows = [[f"{m} ({encoder})" if m == STAGE1_ROW and encoder else m, f"{v['cer']:.2f}", f"{v['wer']:.2f}"]
            for m, v in results["table3"].items()]
    ratio = cer_ratio(results)
    n = results["entries"]
    caption = (f"The same {n} utterance{'s' if n != 1 else ''} for every model. CER ratio E-chat stage 1 / Whisper "
               f"tiny.en: {ratio:.2f} (target <= {CER_RATIO_TARGET:g}: "
               f"{'met' if ratio <= CER_RATIO_TARGET else 'not met'})." if ratio is not None else "")
    return TableData(f"Table 3: ASR on the {results['split']} questions (%)", ["Model", "CER", "WER"], rows,
                     caption=caption)


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

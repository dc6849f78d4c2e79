"""Metrics for generated text: WER/CER (jiwer), BLEU (sacrebleu) and SIM (sentence-embedding cosine).

Shared by every paper that writes text: E-chat's replies (BLEU, SIM), the ASR of paper 002 and E-chat's stage 1
(WER/CER), and the text models of paper 001 (which use :class:`SentenceSimilarity`'s encoder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from emoslm.assets import package_model_dir
from emoslm.errors import EmoslmError


class SentenceSimilarity:
    """SIM: cosine similarity of sentence embeddings (the packaged all-MiniLM-L6-v2), x100."""

    def __init__(self, model_dir: str | Path | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmoslmError("SIM needs sentence-transformers: pip install sentence-transformers") from e
        path = Path(model_dir) if model_dir else package_model_dir("minilm")
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

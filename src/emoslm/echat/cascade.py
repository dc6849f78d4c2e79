"""The ParalinGPT-style cascade, paper 003's baseline: ASR -> transcript, SER -> emotion, both into the LLM prompt.

ASR is :class:`WhisperASR` (the packaged Whisper tiny.en through faster-whisper; any ``wave -> text`` function can
replace it); the emotion comes from an SER model (:class:`emoslm.personalization.inference.EmotionRecognizer` or
anything with the same ``predict``). The prompt is the dataset builder's, so with a perfect transcript and emotion
the cascade writes the topline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from emoslm.assets import package_model_dir
from emoslm.audio import AudioInput
from emoslm.echat.api import ECHAT, as_wave
from emoslm.echat.dialogue import respond
from emoslm.errors import EmoslmError


class WhisperASR:
    """faster-whisper over a local CTranslate2 Whisper model (default: the packaged Whisper tiny.en)."""

    def __init__(self, model_dir: str | Path | None = None, threads: int = 1):
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise EmoslmError("the cascade's ASR needs faster-whisper: pip install faster-whisper") from e
        path = Path(model_dir) if model_dir else package_model_dir("whisper-tiny.en")
        self.model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads,
                                  local_files_only=True)

    def __call__(self, wave: np.ndarray) -> str:
        # Greedy at temperature 0 without repeated 3-grams: faster-whisper's default falls back to sampling when a
        # greedy segment loops, so the same audio got another transcript on every run (and a benchmark another
        # CER); greedy alone loops (CER 129 % on the E-chat test questions). Chosen on the dialogue data's train
        # and valid questions (66 utterances): CER 40.0 % default, 56.0 % greedy, 141 % beam 5, 41.0 % this, the
        # fastest, and the same transcript every time.
        segments, _ = self.model.transcribe(wave, beam_size=1, language="en", condition_on_previous_text=False,
                                            temperature=0.0, no_repeat_ngram_size=3)
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
        wave = as_wave(audio)
        transcript, emotion = self.asr(wave), self.emotion(wave)
        return CascadeTurn(transcript, ECHAT.word(emotion), respond(self.backend, transcript, emotion,
                                                                   self.max_tokens))

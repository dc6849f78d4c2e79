"""E-chat (paper 003) in use: a trained model answering spoken questions.

    from emoslm.echat import EChat
    turn = EChat.load("runs/echat/stage2").chat("question.wav")   # turn.emotion ("sad"), turn.reply
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from emoslm.audio import AudioInput, load_audio
from emoslm.echat.model import ASR_PROMPT, RESPONSE_PROMPT, EChatModel
from emoslm.echat.recipe import best_checkpoint
from emoslm.errors import EmoslmError
from emoslm.labels import get_label_set

ECHAT = get_label_set("echat5")


@dataclass
class ChatTurn:
    emotion: str  # E-chat's word: cheerful, fearful, angry, sad, neutral
    reply: str
    seconds: float = 0.0


def as_wave(audio: AudioInput | np.ndarray) -> np.ndarray:
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
        path = Path(path)
        if not path.exists():
            raise EmoslmError(f"{path} does not exist: train E-chat first (`emoslm train echat --config "
                              "echat_stage1`, then echat_stage2) or run benchmarks/echat.py")
        ckpt = path if (path / "model.safetensors").is_file() else best_checkpoint(path)
        return cls(EChatModel.from_pretrained(ckpt), **kw)

    def chat_batch(self, audios: Sequence[AudioInput | np.ndarray]) -> list[ChatTurn]:
        t0 = time.perf_counter()
        feats = [self.model.featurize(as_wave(a)) for a in audios]
        out = self.model.generate(feats, RESPONSE_PROMPT)
        dt = (time.perf_counter() - t0) / max(1, len(audios))
        return [ChatTurn(ECHAT.word(lab), text, dt) for lab, text in out]

    def chat(self, audio: AudioInput | np.ndarray) -> ChatTurn:
        """The emotion recognised in ``audio`` and E-chat's reply."""
        return self.chat_batch([audio])[0]

    def transcribe(self, audios: Sequence[AudioInput | np.ndarray]) -> list[str]:
        """Stage-1 ASR: the transcript of each utterance."""
        feats = [self.model.featurize(as_wave(a)) for a in audios]
        return [text for _, text in self.model.generate(feats, ASR_PROMPT)]

"""OpenAI-compatible chat completions whose replies take the user's recognised emotion into account.

The request and response follow the OpenAI chat API (``messages`` with string content or content parts of
type ``text`` and ``input_audio`` ``{data: base64, format}``; a ``chat.completion`` object back, or
``chat.completion.chunk`` server-sent events with ``stream=true``), so the ``openai`` client works unchanged.
The emotion of the last user turn's audio is recognised (personalised when ``user`` names an enrolled
speaker) and added to the response as ``emotion``.

The backend is pluggable (:class:`ChatBackend`): today :class:`LLMChatBackend`, which tells a packaged
instruction-tuned LLM (SmolLM2-135M-Instruct, or the random ``tiny-llama`` for tests) the recognised emotion in
its system prompt. The words of an audio-only turn are not transcribed (no ASR model is packaged here): the
prompt says so. With ``emoslm serve --echat DIR`` a turn whose last user message carries audio is answered
end to end by E-chat (paper 003, :class:`EChatBackend`) from that audio; text-only turns keep the LLM. The
response's ``model`` and ``emotion.backend`` name the backend that answered.
"""

from __future__ import annotations

import threading
from typing import Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field

from emoslm.echat import EChat
from emoslm.echat.model import RESPONSE_PROMPT
from emoslm.errors import EmoslmError
from emoslm.models.text_llm import (
    ChatBackend,
    ContextLengthError,
    LLMChatBackend,
    Reply,
    load_chat_backend,
    with_emotion,
)

__all__ = ["ChatBackend", "ContextLengthError", "LLMChatBackend", "Reply", "load_chat_backend", "with_emotion"]

# ------------------------------------------------------------------------------------------ request schema


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class InputAudio(BaseModel):
    data: str = Field(description="base64-encoded audio file")
    format: Literal["wav", "mp3", "flac", "ogg"] = "wav"


class InputAudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Union[TextPart, InputAudioPart]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat completion request this service uses; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = "emoslm"
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=512)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=512)
    temperature: float | None = Field(default=None, ge=0, le=2, description="0 (default) decodes greedily")
    stream: bool = False
    user: str | None = Field(default=None, description="an enrolled speaker id personalises the emotion recognition")


# ------------------------------------------------------------------------------------------ response schema


class EmotionInfo(BaseModel):
    label: str
    probabilities: dict[str, float]
    n_enrollments_used: int
    speaker_id: str | None = None
    backend: str | None = Field(default=None, description="the chat backend that wrote the reply")
    echat_emotion: str | None = Field(default=None, description="E-chat's own (auxiliary head) emotion, when "
                                      "E-chat answered")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    emotion: EmotionInfo | None = Field(default=None, description="the emotion recognised in the last user turn")


# ------------------------------------------------------------------------------------------ backends


class EChatBackend:
    """E-chat (paper 003): the reply to a spoken turn written end to end from its audio (one at a time)."""

    def __init__(self, echat, name: str = "emoslm-echat"):
        self.echat = echat
        self.model = echat.model
        self.name = name
        self._lock = threading.Lock()

    @torch.no_grad()
    def reply_audio(self, wave, max_tokens: int | None = None) -> tuple[Reply, str]:
        """E-chat's reply to ``wave`` (greedy) and the emotion of its auxiliary head (canonical label)."""
        limit = max_tokens or self.model.cfg.max_new_tokens
        with self._lock:
            feats = self.model.encoder.featurize(wave)
            label, text = self.model.generate([feats], RESPONSE_PROMPT, max_new_tokens=limit)[0]
        n = len(self.model.backbone.tokenizer(text, add_special_tokens=False)["input_ids"])
        return Reply(text, 0, n, "length" if n >= limit else "stop"), label


def load_echat_backend(path: str) -> EChatBackend:
    """The E-chat backend from a checkpoint directory (or a training run's folder); EmoslmError if it is not one."""
    try:
        echat = EChat.load(path, threads=None)
    except EmoslmError as e:
        raise EmoslmError(f"--echat {path}: {e}") from None
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError) as e:
        raise EmoslmError(f"--echat {path} is not an E-chat checkpoint: {e}") from None
    return EChatBackend(echat)


def conversation_text(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Messages as plain role/content text for the LLM; an audio part becomes a note that audio was sent."""
    out = []
    for m in messages:
        if m.content is None:
            continue
        if isinstance(m.content, str):
            text = m.content
        else:
            pieces = [p.text if isinstance(p, TextPart) else "" for p in m.content]
            text = " ".join(x for x in pieces if x).strip()
            if any(isinstance(p, InputAudioPart) for p in m.content) and not text:
                text = "(a voice message; its words were not transcribed)"
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return out


def last_user_audio(messages: list[ChatMessage]) -> InputAudio | None:
    """The last audio part of the last user message, if it has one."""
    for m in reversed(messages):
        if m.role == "user":
            if isinstance(m.content, list):
                audio = [p.input_audio for p in m.content if isinstance(p, InputAudioPart)]
                return audio[-1] if audio else None
            return None
    return None

"""OpenAI-compatible chat completions whose replies take the user's words and recognised emotion into account.

The request and response follow the OpenAI chat API (``messages`` with string content or content parts of
type ``text``, ``input_audio`` ``{data: base64, format}`` or vLLM's ``audio_url`` ``{url: "data:audio/wav;base64,
..."}``; a ``chat.completion`` object back, or ``chat.completion.chunk`` server-sent events with ``stream=true``),
so the ``openai`` client works unchanged. The last user turn's audio is transcribed (Whisper, ``--asr``) and its
emotion recognised (personalised when ``user`` names an enrolled speaker); the LLM gets the words in place of
the audio and the emotion in its system prompt, and the response carries both (``transcript``, ``emotion``).

The backend is pluggable (:class:`ChatBackend`): :class:`StreamingLLMChatBackend`, a packaged instruction-tuned
LLM (SmolLM2-135M-Instruct, or the random ``tiny-llama`` for tests) whose tokens are streamed as they are
generated. With ``emoslm serve --echat DIR`` a turn whose last user message carries audio (up to 30 s) is
answered end to end by E-chat (paper 003, :class:`EChatBackend`) from that audio; text-only turns keep the LLM. The response's
``model`` and ``emotion.backend`` name the backend that answered.
"""

from __future__ import annotations

import base64
import binascii
import os
import queue
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Annotated, Any, Iterator, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from emoslm.echat import EChat
from emoslm.echat.model import RESPONSE_PROMPT
from emoslm.errors import EmoslmError
from emoslm.models.llm import LLMSpec, load_backbone
from emoslm.models.text_llm import (
    ChatBackend,
    ContextLengthError,
    EmotionCue,
    LLMChatBackend,
    Reply,
    generation_options,
    load_chat_backend,
    with_emotion,
)
from emoslm.service.http import ApiError

__all__ = ["ChatBackend", "ContextLengthError", "LLMChatBackend", "Reply", "StreamingLLMChatBackend",
           "load_chat_backend", "load_streaming_chat_backend", "with_emotion"]

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


class AudioURL(BaseModel):
    url: str = Field(description="a data: URL, e.g. data:audio/wav;base64,... (the server fetches no other URL)")


class AudioURLPart(BaseModel):
    """vLLM's audio part: ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,..."}}``."""

    type: Literal["audio_url"]
    audio_url: AudioURL


ContentPart = Annotated[Union[TextPart, InputAudioPart, AudioURLPart], Field(discriminator="type")]
AudioPart = Union[InputAudioPart, AudioURLPart]
PART_TYPES = ("text", "input_audio", "audio_url")
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")


def _part_problem(part: Any) -> str | None:
    """What is wrong with one content part, in a few words (None: nothing; pydantic checks the rest)."""
    if not isinstance(part, dict):
        return "must be an object with a type (text, input_audio or audio_url)"
    kind = part.get("type")
    if kind not in PART_TYPES:
        what = "has no type" if kind is None else f"has an unknown type {str(kind)[:40]!r}"
        return f"{what}; expected text, input_audio or audio_url"
    if kind == "text":
        return None if isinstance(part.get("text"), str) else "a text part needs a string 'text'"
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            return "an input_audio part needs 'input_audio': {'data': base64 audio, 'format': 'wav'}"
        if audio.get("format", "wav") not in AUDIO_FORMATS:
            return f"input_audio.format must be one of {', '.join(AUDIO_FORMATS)}"
        return None
    url = part.get("audio_url")
    if not isinstance(url, dict) or not isinstance(url.get("url"), str):
        return "an audio_url part needs 'audio_url': {'url': 'data:audio/wav;base64,...'}"
    return None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None

    @field_validator("content", mode="wrap")
    @classmethod
    def _short_errors(cls, value: Any, handler):
        """One short message for a malformed part instead of pydantic's error per union branch."""
        if isinstance(value, list):
            for i, part in enumerate(value):
                problem = _part_problem(part)
                if problem:
                    raise ValueError(f"content part {i} {problem}")
        elif value is not None and not isinstance(value, str):
            raise ValueError("content must be a string, a list of content parts or null")
        return handler(value)


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat completion request this service uses; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = "emoslm"
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=512)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=512)
    temperature: float | None = Field(default=None, ge=0, le=2, description="0 (default) decodes greedily")
    stream: bool = False
    user: str | None = Field(default=None, description="a speaker id (of this API key): the emotion is recognised "
                             "with its enrollments; an unknown id is a 404, as speaker_id in /v1/emotion")


# ------------------------------------------------------------------------------------------ response schema


class SegmentEmotion(BaseModel):
    start: float = Field(description="seconds from the start of the audio")
    end: float
    label: str | None = Field(description="null when this segment's recognition abstained")
    probabilities: dict[str, float]
    confidence: float | None = None
    abstained: bool = False


class EmotionInfo(BaseModel):
    label: str | None = Field(description="null when the recognition abstained (the server's --min-confidence); "
                              "the reply then does not take an emotion into account")
    probabilities: dict[str, float]
    abstained: bool = False
    n_enrollments_used: int
    speaker_id: str | None = None
    segments: list[SegmentEmotion] | None = Field(default=None, description="per-segment emotions of audio longer "
                                                  "than one window (the label is their duration-weighted mean)")
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
    transcript: str | None = Field(default=None, description="the words recognised in the last user turn's audio "
                                   "(what the LLM was given in place of the audio)")


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
            feats = self.model.featurize(wave)
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


#: what the LLM reads for an audio part whose words are not known
UNTRANSCRIBED = "(a voice message; its words were not transcribed)"
NO_WORDS = "(a voice message without recognisable words)"
EARLIER_AUDIO = "(a voice message)"


def conversation_text(messages: list[ChatMessage], transcript: str | None = None) -> list[dict[str, str]]:
    """Messages as plain role/content text for the LLM. The audio of the last user turn (the one
    :func:`last_user_audio` finds) becomes ``transcript``, its recognised words, in the place of the audio part;
    other audio parts become a note that audio was sent."""
    target = last_user_audio(messages)
    out = []
    for m in messages:
        if m.content is None:
            continue
        if isinstance(m.content, str):
            text = m.content
        else:
            pieces = []
            for p in m.content:
                if isinstance(p, TextPart):
                    pieces.append(p.text)
                elif p is target:
                    pieces.append(UNTRANSCRIBED if transcript is None else (transcript.strip() or NO_WORDS))
            text = " ".join(x.strip() for x in pieces if x.strip()).strip()
            if not text and any(not isinstance(p, TextPart) for p in m.content):
                text = EARLIER_AUDIO
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return out


def prompt_chars(messages: list[ChatMessage]) -> int:
    """The characters of the messages' text (what is tokenised), counted before tokenising."""
    n = 0
    for m in messages:
        if isinstance(m.content, str):
            n += len(m.content)
        elif m.content:
            n += sum(len(p.text) for p in m.content if isinstance(p, TextPart))
    return n


def last_user_audio(messages: list[ChatMessage]) -> AudioPart | None:
    """The last audio part (input_audio or audio_url) of the last user message, if it has one."""
    for m in reversed(messages):
        if m.role == "user":
            if isinstance(m.content, list):
                audio = [p for p in m.content if isinstance(p, (InputAudioPart, AudioURLPart))]
                return audio[-1] if audio else None
            return None
    return None


_MIME_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
                 "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/flac": "flac", "audio/x-flac": "flac",
                 "audio/ogg": "ogg", "application/ogg": "ogg"}


def audio_bytes(part: AudioPart) -> tuple[bytes, str]:
    """The file bytes of an audio part and a name for error messages; ApiError 400 when they cannot be had."""
    if isinstance(part, InputAudioPart):
        try:
            return base64.b64decode("".join(part.input_audio.data.split()), validate=True), \
                f"input_audio.{part.input_audio.format}"
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_audio", "input_audio.data is not valid base64") from None
    url = part.audio_url.url.strip()
    if not url.lower().startswith("data:"):
        scheme = url.split(":", 1)[0][:20] if ":" in url else "a relative"
        raise ApiError(400, "bad_audio", f"audio_url.url must be a data: URL (data:audio/wav;base64,...); "
                       f"{scheme} URLs are not fetched")
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ApiError(400, "bad_audio", "audio_url.url is not a valid data: URL (no comma before the data)")
    params = [x.strip().lower() for x in header.split(";")]
    fmt = _MIME_FORMATS.get(params[0], "audio")
    if "base64" in params[1:]:
        try:
            data = base64.b64decode("".join(urllib.parse.unquote(payload).split()), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_audio", "audio_url.url: the data is not valid base64") from None
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    return data, f"audio_url.{fmt}"


# ------------------------------------------------------------------------------------------ streaming LLM


class _StopWhenSet(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class TokenStreamer(BaseStreamer):
    """A ``generate`` streamer that hands over the new text after every token (transformers'
    ``TextIteratorStreamer`` waits for a space, so a reply without spaces would arrive in one piece). The reply
    so far is decoded again each time; text is released once it extends what was released (an incomplete UTF-8
    sequence, decoded as U+FFFD, waits for its next token). Iterate it for the pieces."""

    _END = object()

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.sent = ""
        self.prompt_seen = False
        self.queue: queue.Queue = queue.Queue()

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        self.tokens.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.startswith(self.sent) and not text.endswith("\ufffd") and len(text) > len(self.sent):
            self.queue.put(text[len(self.sent):])
            self.sent = text

    def end(self) -> None:
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        common = len(os.path.commonprefix([text, self.sent]))
        if len(text) > common:
            self.queue.put(text[common:])
        self.queue.put(self._END)

    def __iter__(self) -> Iterator[str]:
        while (piece := self.queue.get()) is not self._END:
            yield piece


@dataclass
class _Generation:
    ids: torch.Tensor
    limit: int
    sampling: dict


class ReplyStream:
    """The text of a reply piece by piece while the LLM generates it (``for piece in stream``); ``reply`` holds
    the whole :class:`Reply` (token counts, finish reason) once the iteration is over. ``close()`` stops the
    generation early (a client that went away)."""

    def __init__(self, backend: "StreamingLLMChatBackend", gen: _Generation):
        self.backend, self.gen = backend, gen
        self.reply: Reply | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._streamer = TokenStreamer(backend.tokenizer)
        self._thread = threading.Thread(target=self._run, daemon=True, name="emoslm-chat-stream")

    def _run(self) -> None:
        b, g = self.backend, self.gen
        try:
            with torch.no_grad(), b.generation_lock:
                if self._stop.is_set():
                    self._streamer.end()
                    return
                out = b.model.generate(g.ids, attention_mask=torch.ones_like(g.ids), max_new_tokens=g.limit,
                                       pad_token_id=b.tokenizer.pad_token_id, eos_token_id=b.tokenizer.eos_token_id,
                                       streamer=self._streamer,
                                       stopping_criteria=StoppingCriteriaList([_StopWhenSet(self._stop)]),
                                       **g.sampling)
            self.reply = b.finish(g, out[0, g.ids.shape[1]:].tolist())
        except BaseException as e:  # handed to the reading thread
            self._error = e
            self._streamer.end()

    def __iter__(self) -> Iterator[str]:
        self._thread.start()
        started = False
        for piece in self._streamer:
            if not started:
                piece = piece.lstrip()
            if piece:
                started = True
                yield piece
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()


class StreamingLLMChatBackend(LLMChatBackend):
    """:class:`LLMChatBackend` that can also stream: :meth:`stream` yields the reply's text as it is generated
    (a :class:`TokenStreamer`, the generation in a thread). Non-streamed replies are the parent's."""

    @property
    def generation_lock(self) -> threading.Lock:
        return self._lock

    def prepare(self, messages: list[dict[str, str]], emotion: EmotionCue | None, max_tokens: int | None = None,
                temperature: float = 0.0) -> _Generation:
        """Tokenise and check the context length (ContextLengthError), before any response is started."""
        ids, limit = self.prompt(messages, emotion, max_tokens)
        return _Generation(ids, limit, generation_options(temperature, self.repetition_penalty))

    def finish(self, gen: _Generation, new: list[int]) -> Reply:
        """The :class:`Reply` for the generated token ids (as :meth:`LLMChatBackend.reply` counts them)."""
        eos = self.tokenizer.eos_token_id
        finished = eos in new
        if finished:
            new = new[:new.index(eos)]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Reply(text, gen.ids.shape[1], len(new) + int(finished),
                     "stop" if finished or len(new) < gen.limit else "length")

    def stream(self, messages: list[dict[str, str]], emotion: EmotionCue | None, max_tokens: int | None = None,
               temperature: float = 0.0) -> ReplyStream:
        """A :class:`ReplyStream`; the context length is checked now (ContextLengthError), the generation starts
        when the stream is first iterated."""
        return ReplyStream(self, self.prepare(messages, emotion, max_tokens, temperature))


def load_streaming_chat_backend(llm: str, max_new_tokens: int = 64, prompt_style: str = "voice-note",
                                repetition_penalty: float = 1.0) -> StreamingLLMChatBackend:
    """:func:`load_chat_backend`'s model as a :class:`StreamingLLMChatBackend`."""
    backbone = load_backbone(LLMSpec(name=llm, mode="frozen"))
    return StreamingLLMChatBackend(backbone.model, backbone.tokenizer,
                                   f"emoslm-{backbone.spec.name.rstrip('/').split('/')[-1]}", max_new_tokens,
                                   prompt_style, repetition_penalty)

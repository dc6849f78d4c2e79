"""Text-LLM backends: one interface for every feature that has an LLM write text.

Writing dialogue responses (E-chat's data), conversation replies (paper 002), zero-shot corpora (paper 001), judging
(paper 002's Table IV) and the service's chat all take a :class:`ChatBackend`: ``reply(messages, emotion,
max_tokens, temperature) -> Reply``. Two kinds:

- :class:`LLMChatBackend`: a local causal LM (the packaged SmolLM2-135M-Instruct, the random ``tiny-llama`` for
  tests, or a local HF directory), told the recognised emotion in its system prompt (:func:`with_emotion`);
- :class:`OpenAIChatBackend`: any OpenAI-compatible ``/chat/completions`` endpoint.

:func:`load_backend` builds either from the ``--backend/--base-url/--model`` options.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from emoslm.errors import EmoslmError
from emoslm.models.llm import LLMSpec, load_backbone


@dataclass
class EmotionCue:
    """The emotion recognised in the user's last turn: a canonical label and the probability of each label.

    The service's ``EmotionInfo`` response schema has the same two fields, so either can be passed."""

    label: str
    probabilities: dict[str, float] = field(default_factory=dict)


#: For each emotion: the adjective for the user's voice and how the reply should adapt (system-prompt words).
GUIDANCE: dict[str, tuple[str, str]] = {
    "neutral": ("calm", "be friendly and to the point"),
    "anger": ("angry", "stay calm, acknowledge the frustration and offer concrete help"),
    "joy": ("happy", "share their good mood"),
    "sadness": ("sad", "be gentle, warm and supportive"),
    "fear": ("afraid", "be reassuring and explain clearly what can be done"),
    "disgust": ("disgusted", "acknowledge their displeasure respectfully"),
    "surprise": ("surprised", "acknowledge the surprise and help them make sense of it"),
}


#: Temperatures below this decode greedily (sampling at a tiny temperature overflows).
MIN_TEMPERATURE = 0.01


class ContextLengthError(EmoslmError):
    """A conversation longer than the chat model's context."""


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


class ChatBackend(Protocol):
    """Anything that answers a conversation given the emotion recognised in the user's last turn."""

    name: str

    def reply(self, messages: list[dict[str, str]], emotion: EmotionCue | None, max_tokens: int,
              temperature: float) -> Reply: ...


#: How the recognised emotion is written into the reply model's prompt:
#: ``voice-note``: a system sentence (how to adapt) and a note on the last user turn ("(said in a sad voice) ...");
#: ``system``: the system sentence only, which also asks to answer what was asked first (the user's words stay
#: as they were said). benchmarks/chat_replies.py compares them on SmolLM2-135M.
PROMPT_STYLES = ("voice-note", "system")


def with_emotion(messages: list[dict[str, str]], emotion: EmotionCue | None,
                 style: str = "voice-note") -> list[dict[str, str]]:
    """The conversation with the user's emotion written in, as ``style`` (:data:`PROMPT_STYLES`) says."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    messages = [dict(m) for m in messages]
    if emotion is not None:
        adjective, how = GUIDANCE.get(emotion.label, (emotion.label, "take it into account"))
    if style == "system":
        system = "You are a helpful voice assistant. Answer what the user asked, in one or two short sentences."
        if emotion is not None:
            system += f" The user sounds {adjective}; {how}, but first answer what they asked."
    else:
        system = "You are a kind, helpful voice assistant. Reply in one or two short sentences."
        if emotion is not None:
            p = emotion.probabilities.get(emotion.label, 0.0)
            system += f" The user sounds {adjective} (confidence {p:.0%}): {how}."
            last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
            if last_user is not None:
                messages[last_user]["content"] = f"(said in a {adjective} voice) {messages[last_user]['content']}"
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n{system}"}, *messages[1:]]
    return [{"role": "system", "content": system}, *messages]


def generation_options(temperature: float, repetition_penalty: float = 1.0) -> dict:
    """``generate`` keyword arguments: greedy below :data:`MIN_TEMPERATURE`, else nucleus sampling; a
    repetition penalty above 1 discourages the loops small LLMs fall into when decoding greedily."""
    options = ({"do_sample": True, "temperature": temperature, "top_p": 0.9} if temperature >= MIN_TEMPERATURE
               else {"do_sample": False})
    if repetition_penalty != 1.0:
        options["repetition_penalty"] = repetition_penalty
    return options


#: The note the prompt puts before the question ("(said in a sad voice) ..."), which small LLMs sometimes repeat.
_VOICE_NOTE = re.compile(r"^\s*\(said in an? [\w-]+ voice\)\s*")


def clean_response(text: str) -> str:
    """A response without a repeated voice note at its start."""
    return _VOICE_NOTE.sub("", text).strip()


class LLMChatBackend:
    """A causal LM prompted with the recognised emotion in its system message (one generation at a time)."""

    def __init__(self, model, tokenizer, name: str, max_new_tokens: int = 64, prompt_style: str = "voice-note",
                 repetition_penalty: float = 1.0):
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.prompt_style = prompt_style
        self.repetition_penalty = repetition_penalty
        self._lock = threading.Lock()

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        if self.tokenizer.chat_template:
            return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                           return_dict=False))
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, messages: list[dict[str, str]], emotion: EmotionCue | None,
               max_tokens: int | None = None) -> tuple[torch.Tensor, int]:
        """The prompt's token ids [1, T] and the new-token limit; ContextLengthError when they exceed the
        model's context."""
        ids = torch.tensor([self._prompt_ids(with_emotion(messages, emotion, self.prompt_style))])
        limit = max_tokens or self.max_new_tokens
        n_ctx = getattr(self.model.config, "max_position_embeddings", None)
        if n_ctx is not None and ids.shape[1] + limit > n_ctx:
            raise ContextLengthError(f"the conversation takes {ids.shape[1]} tokens; with {limit} new tokens it "
                                     f"exceeds the model's context of {n_ctx} tokens")
        return ids, limit

    @torch.no_grad()
    def reply(self, messages: list[dict[str, str]], emotion: EmotionCue | None, max_tokens: int | None = None,
              temperature: float = 0.0) -> Reply:
        ids, limit = self.prompt(messages, emotion, max_tokens)
        sampling = generation_options(temperature, self.repetition_penalty)
        with self._lock:
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=limit,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      **sampling)
        new = out[0, ids.shape[1]:].tolist()
        eos = self.tokenizer.eos_token_id
        finished = eos in new
        if finished:
            new = new[:new.index(eos)]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Reply(text, ids.shape[1], len(new) + int(finished), "stop" if finished or len(new) < limit else "length")


def load_chat_backend(llm: str, max_new_tokens: int = 64, prompt_style: str = "voice-note",
                      repetition_penalty: float = 1.0) -> ChatBackend:
    """The chat backend for ``llm``: ``smollm2`` (packaged, offline), ``tiny-llama`` (random, for tests) or a
    local HF causal-LM directory."""
    backbone = load_backbone(LLMSpec(name=llm, mode="frozen"))
    return LLMChatBackend(backbone.model, backbone.tokenizer, f"emoslm-{backbone.spec.name.rstrip('/').split('/')[-1]}",
                          max_new_tokens, prompt_style, repetition_penalty)


class OpenAIChatBackend:
    """A :class:`ChatBackend` over an OpenAI-compatible ``/chat/completions`` endpoint.

    ``base_url`` like ``http://localhost:8080/v1``; the API key is read from ``api_key`` or ``$OPENAI_API_KEY``.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"openai:{model}"
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "")
        self.timeout = timeout

    def reply(self, messages: list[dict[str, str]], emotion, max_tokens: int, temperature: float = 0.0):
        body = json.dumps({"model": self.model, "messages": with_emotion(messages, emotion),
                           "max_tokens": max_tokens, "temperature": temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                data = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise EmoslmError(f"chat endpoint {self.url} failed: {e}") from e
        try:
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Reply(choice["message"]["content"].strip(), int(usage.get("prompt_tokens", 0)),
                         int(usage.get("completion_tokens", 0)), choice.get("finish_reason") or "stop")
        except (KeyError, IndexError, TypeError) as e:
            raise EmoslmError(f"chat endpoint {self.url} sent no chat completion: {str(data)[:200]}") from e


def load_backend(backend: str = "smollm2", base_url: str | None = None, model: str | None = None):
    """``smollm2`` / ``tiny-llama`` / a local HF directory (offline), or ``openai`` (needs ``base_url``, ``model``)."""
    if backend == "openai":
        if not base_url or not model:
            raise EmoslmError("the openai backend needs --base-url and --model")
        return OpenAIChatBackend(base_url, model)
    return load_chat_backend(backend)

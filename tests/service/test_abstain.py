"""Abstention in the service (issue 14): a request's ``min_confidence`` on /v1/emotion, the server's default
(``emoslm serve --min-confidence``), per-segment abstention on long audio, and chat turns whose emotion the
recognizer abstained on (the LLM is then given no emotion)."""

from __future__ import annotations

import base64

import pytest
import requests

from emoslm.cli import main
from emoslm.service import Settings
from emoslm.service.chat import (
    ChatMessage,
    conversation_text,
    load_streaming_chat_backend,
)
from emoslm.service.store import Store
from emoslm.service.testing import ServerProcess, tone, wav_bytes
from tests.service.checks import json_error


def _emotion(api, audio: bytes, **data) -> requests.Response:
    return api.post(f"{api.base}/v1/emotion", files={"file": ("q.wav", audio, "audio/wav")}, data=data)



@pytest.fixture(scope="module")
def strict(bundle, tmp_path_factory):
    """A server that abstains on everything by default (--min-confidence 1), without speech recognition."""
    data = tmp_path_factory.mktemp("strict") / "data"
    key = Store(data).create_api_key("tests")
    with ServerProcess(bundle, data, key=key, extra=["--min-confidence", "1", "--asr", "none",
                                                     "--max-seconds", "10"]) as srv:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        s.base = srv.url
        yield s
        s.close()


def test_a_request_min_confidence_abstains_below_it(api, speech):
    plain = _emotion(api, speech[0]).json()
    assert plain["abstained"] is False and plain["label"] == max(plain["probabilities"],
                                                                 key=plain["probabilities"].get)
    assert plain["confidence"] == pytest.approx(max(plain["probabilities"].values()))
    above = _emotion(api, speech[0], min_confidence="1").json()
    assert above["abstained"] is True and above["label"] is None
    assert above["probabilities"] == pytest.approx(plain["probabilities"])  # the probabilities are kept
    below = _emotion(api, speech[0], min_confidence=str(plain["confidence"] - 1e-3)).json()
    assert below["abstained"] is False and below["label"] == plain["label"]


@pytest.mark.parametrize("bad", ["2", "-0.5", "abc", "nan"])
def test_a_bad_min_confidence_is_a_json_422(api, speech, bad):
    assert "min_confidence" in json_error(_emotion(api, speech[0], min_confidence=bad), 422, "invalid_request")


def test_long_audio_abstains_per_segment(api):
    body = _emotion(api, wav_bytes(tone(140, 9.0)), min_confidence="1").json()
    assert body["abstained"] is True and body["label"] is None
    assert len(body["segments"]) >= 2 and all(s["abstained"] and s["label"] is None for s in body["segments"])


def test_the_server_default_and_the_request_override(strict, speech):
    body = _emotion(strict, speech[1]).json()
    assert body["abstained"] is True and body["label"] is None
    body = _emotion(strict, speech[1], min_confidence="0").json()
    assert body["abstained"] is False and body["label"] in body["probabilities"]


def test_a_chat_turn_whose_emotion_abstained_is_answered_without_an_emotion(strict, speech):
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(speech[2]).decode(), "format": "wav"}}
    content = [{"type": "text", "text": "How are you?"}, audio]
    r = strict.post(f"{strict.base}/v1/chat/completions", timeout=120,
                    json={"model": "emoslm", "max_tokens": 6, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["emotion"]["abstained"] is True and body["emotion"]["label"] is None
    # the same LLM given the words and no emotion writes the same reply from a prompt of the same length
    local = load_streaming_chat_backend("tiny-llama", 64, Settings.reply_prompt, Settings.repetition_penalty)
    messages = conversation_text([ChatMessage(role="user", content=content)], None)
    reply = local.reply(messages, None, 6, 0.0)
    assert body["choices"][0]["message"]["content"] == reply.text
    assert body["usage"]["prompt_tokens"] == reply.prompt_tokens


def test_serve_refuses_a_bad_min_confidence_in_one_line(bundle, capsys):
    assert main(["serve", "--bundle", str(bundle), "--port", "1", "--min-confidence", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emoslm: error: min_confidence must be a number between 0 and 1")

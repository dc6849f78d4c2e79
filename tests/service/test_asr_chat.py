"""Hearing the words: audio chat turns are transcribed by the packaged Whisper tiny.en and the LLM answers the
words (with the emotion); vLLM's audio_url parts; clean errors for malformed parts; token streaming; the
OpenAI-compatible transcription endpoint; the prompt length checked before tokenising."""

from __future__ import annotations

import base64
import time

import openai
import pytest
import requests

from emoslm.service import Settings
from emoslm.service.chat import (
    NO_WORDS,
    UNTRANSCRIBED,
    ChatMessage,
    EmotionInfo,
    conversation_text,
    load_streaming_chat_backend,
)
from emoslm.service.testing import speech_wav, tone, wav_bytes
from tests.service.checks import json_error

QUESTION = "What is the capital of France"


@pytest.fixture(scope="module")
def question() -> bytes:
    """espeak-ng saying the question (WAV bytes, 22.05 kHz)."""
    return speech_wav(QUESTION)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local_llm():
    """The server's chat LLM (tiny-llama: seeded random weights, greedy), loaded here too."""
    return load_streaming_chat_backend("tiny-llama", 64, Settings.reply_prompt, Settings.repetition_penalty)


def _audio_part(audio: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}


def _audio_url_part(audio: bytes, mime: str = "audio/wav") -> dict:
    return {"type": "audio_url", "audio_url": {"url": f"data:{mime};base64,{base64.b64encode(audio).decode()}"}}


def _chat(api, messages, **kw) -> requests.Response:
    return api.post(f"{api.base}/v1/chat/completions", json={"model": "emoslm", "messages": messages, **kw},
                    timeout=120)



def test_an_audio_only_turn_is_transcribed_and_the_llm_answers_its_words(client, question, local_llm,
                                                                         record_property):
    r = client.chat.completions.create(model="emoslm", max_tokens=12,
                                       messages=[{"role": "user", "content": [_audio_part(question)]}])
    transcript = r.model_extra["transcript"]
    record_property("transcript", transcript)
    print(f"\ntranscript of the audio-only chat turn: {transcript!r}; reply: {r.choices[0].message.content!r}")
    assert "capital of france" in transcript.lower()
    emotion = r.model_extra["emotion"]
    assert emotion["label"] == max(emotion["probabilities"], key=emotion["probabilities"].get)
    # what the LLM was given: the words in place of the audio, the emotion in the prompt. The same model here,
    # given exactly that, writes the same reply (greedy) from a prompt of the same length.
    messages = conversation_text([ChatMessage(role="user", content=[_audio_part(question)])], transcript)
    assert messages == [{"role": "user", "content": transcript}]
    local = local_llm.reply(messages, EmotionInfo(**emotion), 12, 0.0)
    assert r.choices[0].message.content == local.text
    assert r.usage.prompt_tokens == local.prompt_tokens


def test_audio_url_parts_are_heard_like_input_audio(api, question):
    r = _chat(api, [{"role": "user", "content": [{"type": "text", "text": "Please answer:"},
                                                 _audio_url_part(question)]}], max_tokens=4)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "capital of france" in body["transcript"].lower() and body["emotion"]["label"]
    # a data: URL with another audio type and base64 split over lines is fine too
    flac_ish = _audio_url_part(question, "audio/x-wav")
    flac_ish["audio_url"]["url"] = flac_ish["audio_url"]["url"][:60] + "\n" + flac_ish["audio_url"]["url"][60:]
    assert _chat(api, [{"role": "user", "content": [flac_ish]}], max_tokens=2).status_code == 200


def test_the_prompt_puts_the_words_where_the_audio_was():
    audio = _audio_part(wav_bytes(tone(100)))
    earlier = ChatMessage(role="user", content=[audio])
    msgs = [earlier, ChatMessage(role="assistant", content="Yes?"),
            ChatMessage(role="user", content=[{"type": "text", "text": "Listen:"}, audio])]
    out = conversation_text(msgs, "where is my train")
    assert out[0]["content"] == "(a voice message)"  # only the last user turn's audio is transcribed
    assert out[2]["content"] == "Listen: where is my train"
    assert conversation_text(msgs, "")[2]["content"] == f"Listen: {NO_WORDS}"
    assert conversation_text(msgs)[2]["content"] == f"Listen: {UNTRANSCRIBED}"  # --asr none


@pytest.mark.parametrize("part, status, needle", [
    ({"type": "audio_url"}, 422, "content part 0 an audio_url part needs"),
    ({"type": "audio_url", "audio_url": "data:audio/wav;base64,AAAA"}, 422, "an audio_url part needs"),
    ({"type": "video", "video": {}}, 422, "unknown type 'video'"),
    ({"text": "no type"}, 422, "has no type"),
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "aac"}}, 422, "format must be one of"),
    ({"type": "input_audio", "input_audio": {"format": "wav"}}, 422, "input_audio part needs"),
    ({"type": "text", "text": 5}, 422, "needs a string 'text'"),
    ({"type": "audio_url", "audio_url": {"url": "https://example.com/a.wav"}}, 400, "https URLs are not fetched"),
    ({"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,%%%"}}, 400, "not valid base64"),
    ({"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64"}}, 400, "no comma"),
    ({"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,AAAA"}}, 400, "not a readable audio file"),
])
def test_a_malformed_part_gets_a_short_clearjson_error(api, part, status, needle):
    msg = json_error(_chat(api, [{"role": "user", "content": [part]}]), status,
                 "invalid_request" if status == 422 else "bad_audio")
    assert needle in msg and len(msg) < 200, msg
    for noise in ("union", "tagged", "function-", "input_value", "pydantic", "Traceback"):
        assert noise not in msg, msg


def test_malformed_messages_get_short_errors(api):
    msg = json_error(_chat(api, [{"role": "user", "content": 5}]), 422, "invalid_request")
    assert "content must be a string" in msg and len(msg) < 150, msg
    msg = json_error(_chat(api, [{"role": "robot", "content": "hi"}]), 422, "invalid_request")
    assert "role" in msg and len(msg) < 200, msg


def test_tokens_are_streamed_as_they_are_generated(client, question, record_property):
    """stream=true sends each piece of text as the LLM makes it: several chunks; the time to the first token is
    measured (and printed) against the whole reply's."""
    messages = [{"role": "user", "content": "Tell me a long story about a train."}]
    t0 = time.perf_counter()
    first_token = None
    pieces, chunks = [], []
    for chunk in client.chat.completions.create(model="emoslm", max_tokens=48, stream=True, messages=messages):
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            first_token = first_token or time.perf_counter() - t0
            pieces.append(chunk.choices[0].delta.content)
    total = time.perf_counter() - t0
    record_property("stream_chunks", len(pieces))
    record_property("time_to_first_token_ms", round(first_token * 1000, 1))
    print(f"\nstreaming: {len(pieces)} content chunks, time to first token {first_token * 1000:.0f} ms, "
          f"whole reply {total * 1000:.0f} ms")
    assert len(pieces) >= 5 and first_token < total
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") and chunks[-1].usage.completion_tokens >= 5
    # the streamed text is the reply the same request gets without streaming
    whole = client.chat.completions.create(model="emoslm", max_tokens=48, messages=messages)
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    # with audio, the first chunk carries the transcript and the emotion
    audio_chunks = list(client.chat.completions.create(model="emoslm", max_tokens=8, stream=True, messages=[
        {"role": "user", "content": [_audio_part(question)]}]))
    assert "capital of france" in audio_chunks[0].model_extra["transcript"].lower()
    assert audio_chunks[0].model_extra["emotion"]["label"]


def test_openai_transcriptions_endpoint(client, server, question):
    labels = server.info()["labels"]
    r = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", question, "audio/wav"))
    assert "capital of france" in r.text.lower()
    emotion = r.model_extra["emotion"]
    assert emotion["label"] in labels and emotion["transcript"] == r.text and emotion["mode"] == "0-shot"
    text = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", question), response_format="text")
    assert isinstance(text, str) and "capital of france" in text.lower()
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("q.wav", question),
                                                 response_format="verbose_json")
    assert verbose.language == "en" and 1.0 < verbose.duration < 4.0 and verbose.segments
    assert 0 <= verbose.segments[0].start < verbose.segments[-1].end <= verbose.duration + 0.5
    with pytest.raises(openai.UnprocessableEntityError, match="response_format"):
        client.audio.transcriptions.create(model="whisper-1", file=("q.wav", question), response_format="srt")
    with pytest.raises(openai.BadRequestError, match="not a readable audio file"):
        client.audio.transcriptions.create(model="whisper-1", file=("q.wav", b"not audio"))


def test_emotion_endpoint_transcribes_when_asked(api, question):
    r = api.post(f"{api.base}/v1/emotion", files={"file": ("q.wav", question)}, data={"transcribe": "true"})
    assert r.status_code == 200 and "capital of france" in r.json()["transcript"].lower()
    plain = api.post(f"{api.base}/v1/emotion", files={"file": ("q.wav", question)}).json()
    assert plain["transcript"] is None and plain["label"] == r.json()["label"]


def test_a_huge_prompt_is_refused_before_tokenising(api, server):
    limit = server.info()["limits"]["max_prompt_chars"]
    t0 = time.perf_counter()
    r = _chat(api, [{"role": "system", "content": "x" * (limit // 2)},
                    {"role": "user", "content": [{"type": "text", "text": "y" * (900_000 - limit // 2)}]}])
    elapsed = time.perf_counter() - t0
    msg = json_error(r, 400, "context_length_exceeded")
    assert f"the limit is {limit}" in msg and elapsed < 5, (msg, elapsed)
    assert _chat(api, [{"role": "user", "content": "hi " * 200}], max_tokens=2).status_code == 200

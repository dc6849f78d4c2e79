"""``emoslm serve --echat DIR``: a chat turn with audio is answered by E-chat from that audio (the reported emotion
stays the personalised SER's), a text-only turn by the LLM backend; a wrong DIR fails at start-up."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
import requests
import torch

from emoslm.audio import load_audio
from emoslm.labels import get_label_set
from emoslm.echat.model import EChatConfig, EChatModel
from emoslm.service.store import Store
from emoslm.service.testing import ServerProcess, tone, wav_bytes

TINY_ECHAT = {"encoder": {"kind": "fbank", "preset": "tiny", "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64,
                          "conv_channels": 32},
              "llm": {"name": "tiny-llama"}, "d_connector": 32, "connector_layers": 1, "connector_heads": 4,
              "connector_ff": 64, "dropout": 0.0, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def echat_ckpt(tmp_path_factory):
    """A random-initialised tiny E-chat checkpoint (stage 2): fast, not trained."""
    torch.manual_seed(0)
    return EChatModel(EChatConfig(**TINY_ECHAT)).set_stage(2).save_pretrained(
        tmp_path_factory.mktemp("echat") / "model")


@pytest.fixture(scope="module")
def echat_server(bundle, echat_ckpt, tmp_path_factory):
    data = tmp_path_factory.mktemp("service_echat") / "data"
    key = Store(data).create_api_key("tests")
    with ServerProcess(bundle, data, key=key, extra=["--echat", str(echat_ckpt)]) as srv:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        yield srv, s
        s.close()


def _chat(srv, s, content, **kw) -> dict:
    r = s.post(f"{srv.url}/v1/chat/completions", json={"model": "emoslm", "messages": [
        {"role": "user", "content": content}], **kw}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_audio_turns_go_to_echat_and_text_turns_to_the_llm(echat_server, echat_ckpt):
    srv, s = echat_server
    info = srv.info()
    assert info["echat_model"] == "emoslm-echat" and info["chat_model"] != "emoslm-echat"
    audio = wav_bytes(tone(180, 1.0))
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}

    # personalisation by the speaker's enrollments still applies to the reported emotion
    s.post(f"{srv.url}/v1/speakers", json={"id": "ann"}).raise_for_status()
    s.post(f"{srv.url}/v1/speakers/ann/enrollments", files={"file": ("e.wav", wav_bytes(tone(140)))},
           data={"label": "sadness"}).raise_for_status()
    r = _chat(srv, s, [{"type": "text", "text": "hello"}, part], user="ann")
    assert r["model"] == "emoslm-echat"
    emo = r["emotion"]
    assert emo["backend"] == "emoslm-echat" and emo["speaker_id"] == "ann" and emo["n_enrollments_used"] == 1
    assert emo["label"] in info["labels"] and emo["echat_emotion"] in get_label_set("echat5").labels
    # the reply is E-chat's own for that audio
    from emoslm.echat import EChat

    assert r["choices"][0]["message"]["content"] == EChat.load(echat_ckpt, threads=None).chat(
        load_audio(_as_file(audio))).reply

    text = _chat(srv, s, "How are you?")
    assert text["model"] == info["chat_model"] and text["emotion"] is None
    # an audio turn earlier in the conversation does not count: the last user message is text-only
    r = s.post(f"{srv.url}/v1/chat/completions", json={"messages": [
        {"role": "user", "content": [part]}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and now?"}]}, timeout=60).json()
    assert r["model"] == info["chat_model"]


def _as_file(data: bytes):
    import io

    buf = io.BytesIO(data)
    buf.name = "q.wav"
    return buf


def test_a_wrong_echat_dir_fails_at_start_up(bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "emoslm.cli", "serve", "--bundle", str(bundle), "--data-dir",
                        str(tmp_path / "data"), "--llm", "tiny-llama", "--echat", str(tmp_path / "empty"),
                        "--port", "1"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "--echat" in r.stderr and "E-chat checkpoint" in r.stderr, r.stderr[-2000:]

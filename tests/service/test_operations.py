"""Operations, on a server started on a data folder of the first release (migrated in place) with
``--public-read --rate-limit 20/min --cors-origin ... --asr none --segment-mode energy``: liveness and readiness,
public reads, CORS preflights, per-key rate limits (429 + Retry-After), request ids (headers, error bodies, log
lines), a server without speech recognition, and long audio (up to the default 300 s) cut at its pauses."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
import requests

from emoslm.cli import main
from emoslm.service.testing import ServerProcess, tone, wav_bytes

from .test_key_scopes import make_old_data_folder

ORIGIN = "https://app.example"
LEGACY_KEY = "esk-legacy-0123456789"


@pytest.fixture(scope="module")
def ops(bundle, tmp_path_factory):
    data = tmp_path_factory.mktemp("service_ops") / "data"
    make_old_data_folder(data, LEGACY_KEY)
    extra = ["--public-read", "--rate-limit", "20/min", "--cors-origin", ORIGIN, "--cors-origin",
             "http://localhost:3000", "--asr", "none", "--segment-mode", "energy", "--window-seconds", "3"]
    with ServerProcess(bundle, data, key=LEGACY_KEY, extra=extra) as srv:
        yield srv


@pytest.fixture
def new_key(ops, capsys):
    def make(name: str, *extra: str) -> str:
        assert main(["apikey", "create", name, "--data-dir", str(ops.data_dir), *extra]) == 0
        return capsys.readouterr().out.strip()
    return make


def test_health_and_ready(ops):
    r = requests.get(f"{ops.url}/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"} and r.headers["x-request-id"].startswith("req-")
    ready = requests.get(f"{ops.url}/ready").json()
    assert ready["status"] == "ready" and ready["database"] == "ok"
    assert ready["models"]["chat"] == "emoslm-tiny-llama" and ready["models"]["asr"] is None


def test_an_old_data_folder_keeps_working(ops, new_key):
    """The first release's key still works after the migration; its speakers (no owner) are admin-only."""
    legacy = {"X-API-Key": LEGACY_KEY}
    assert requests.get(f"{ops.url}/v1/info", headers=legacy).json()["key"] == "legacy"
    assert requests.get(f"{ops.url}/v1/speakers", headers=legacy).json()["data"] == []
    assert requests.get(f"{ops.url}/v1/speakers/legacy-spk", headers=legacy).status_code == 404
    r = requests.post(f"{ops.url}/v1/speakers", headers=legacy, json={"id": "legacy-new"})
    assert r.status_code == 201 and r.json()["owner"] == "legacy"
    boss = {"X-API-Key": new_key("boss", "--admin")}
    listed = {s["id"]: s["owner"] for s in requests.get(f"{ops.url}/v1/speakers", headers=boss).json()["data"]}
    assert listed == {"legacy-spk": None, "legacy-new": "legacy"}


def test_public_read_is_an_explicit_opt_in(ops):
    r = requests.get(f"{ops.url}/v1/speakers")  # no key: --public-read lets reads through, all speakers
    assert r.status_code == 200 and "legacy-spk" in {s["id"] for s in r.json()["data"]}
    assert requests.get(f"{ops.url}/v1/info").json()["key"] is None
    assert requests.get(f"{ops.url}/v1/models").status_code == 200
    # a wrong key is still refused, and writes still need a key
    assert requests.get(f"{ops.url}/v1/speakers", headers={"X-API-Key": "esk-wrong"}).status_code == 401
    assert requests.post(f"{ops.url}/v1/speakers", json={"id": "anon"}).status_code == 401
    assert requests.post(f"{ops.url}/v1/emotion", files={"file": ("q.wav", wav_bytes(tone(150)))}).status_code == 401


def test_cors_preflight_and_headers(ops):
    pre = requests.options(f"{ops.url}/v1/emotion", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-request-id"})
    assert pre.status_code == 200, pre.text
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    r = requests.get(f"{ops.url}/v1/info", headers={"Origin": ORIGIN, "X-API-Key": LEGACY_KEY})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    # another origin: refused, in JSON, and no CORS header on a plain request
    bad = requests.options(f"{ops.url}/v1/emotion", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "cors_refused"
    r = requests.get(f"{ops.url}/v1/info", headers={"Origin": "https://evil.example", "X-API-Key": LEGACY_KEY})
    assert "access-control-allow-origin" not in r.headers


def test_rate_limit_per_key(ops, new_key):
    fast, other = new_key("fast"), new_key("other")
    statuses = [requests.get(f"{ops.url}/v1/models", headers={"X-API-Key": fast}) for _ in range(21)]
    assert [r.status_code for r in statuses[:20]] == [200] * 20  # a burst of N passes
    limited = statuses[20]
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 3 and "20 requests a minute" in limited.text
    assert requests.get(f"{ops.url}/v1/models", headers={"X-API-Key": other}).status_code == 200  # per key
    time.sleep(int(limited.headers["Retry-After"]))
    assert requests.get(f"{ops.url}/v1/models", headers={"X-API-Key": fast}).status_code == 200  # refilled
    assert requests.get(f"{ops.url}/v1/info", headers={"X-API-Key": other}).json()["limits"][
        "rate_limit_per_minute"] == 20


def test_request_ids_in_headers_error_bodies_and_log_lines(ops, new_key):
    key = new_key("ids")
    r = requests.get(f"{ops.url}/v1/speakers/nobody", headers={"X-API-Key": key, "X-Request-ID": "trace-42.a"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "trace-42.a"
    assert r.json()["error"]["request_id"] == "trace-42.a"
    made = requests.get(f"{ops.url}/v1/speakers/nobody", headers={"X-API-Key": key})
    rid = made.headers["x-request-id"]
    assert rid.startswith("req-") and made.json()["error"]["request_id"] == rid
    silly = requests.get(f"{ops.url}/health", headers={"X-Request-ID": "has spaces " + "x" * 200})
    assert silly.headers["x-request-id"].startswith("req-")  # not echoed: generated instead
    ok = requests.get(f"{ops.url}/v1/models", headers={"X-API-Key": key, "X-Request-ID": "trace-43"})
    assert ok.headers["x-request-id"] == "trace-43"
    time.sleep(0.3)
    log = ops.log_path.read_text()
    assert "[trace-42.a] GET /v1/speakers/nobody 404" in log and f"[{rid}] GET /v1/speakers/nobody 404" in log
    assert "[trace-43] GET /v1/models 200" in log


def test_without_speech_recognition(ops, new_key):
    """--asr none: audio turns are answered from their emotion alone; transcription endpoints say 501."""
    key = new_key("deaf")
    audio = wav_bytes(tone(170))
    assert requests.get(f"{ops.url}/v1/info", headers={"X-API-Key": key}).json()["asr_model"] is None
    r = requests.post(f"{ops.url}/v1/audio/transcriptions", headers={"X-API-Key": key},
                      files={"file": ("q.wav", audio)}, data={"model": "whisper-1"})
    assert r.status_code == 501 and r.json()["error"]["type"] == "asr_disabled"
    r = requests.post(f"{ops.url}/v1/emotion", headers={"X-API-Key": key}, files={"file": ("q.wav", audio)},
                      data={"transcribe": "true"})
    assert r.status_code == 501
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}
    chat = requests.post(f"{ops.url}/v1/chat/completions", headers={"X-API-Key": key}, json={
        "messages": [{"role": "user", "content": [part]}], "max_tokens": 3}).json()
    assert chat["transcript"] is None and chat["emotion"]["label"]


def test_long_audio_is_cut_at_its_pauses_up_to_300_seconds(ops, new_key):
    """--segment-mode energy: speech regions (at most --window-seconds 3 long) with their own emotions; the
    default --max-seconds is 300."""
    key = {"X-API-Key": new_key("long")}
    silence = np.zeros(16000 * 2, np.float32)
    wave = np.concatenate([tone(140, 1.5), silence, tone(220, 5.0), silence])  # 10.5 s
    r = requests.post(f"{ops.url}/v1/emotion", headers=key, files={"file": ("l.wav", wav_bytes(wave))}, timeout=120)
    assert r.status_code == 200, r.text
    segs = r.json()["segments"]
    spans = [(round(s["start"], 1), round(s["end"], 1)) for s in segs]
    # the first tone, then the second split into two parts of at most 3 s; the silences are left out
    assert len(spans) == 3 and spans[0][0] <= 0.1 and 1.4 <= spans[0][1] <= 1.7, spans
    assert 3.3 <= spans[1][0] <= 3.6 and spans[2][1] <= 8.7 and all(e - s <= 3.0 + 1e-6 for s, e in spans), spans
    assert requests.get(f"{ops.url}/v1/info", headers=key).json()["limits"]["max_seconds"] == 300
    # 290 s (at 8 kHz, 8 bit to stay under the body limit) is taken; 301 s is too long
    long = np.tile(np.concatenate([tone(150, 2.0, 8000), np.zeros(8000, np.float32)]), 97)[: 290 * 8000]
    r = requests.post(f"{ops.url}/v1/emotion", headers=key, timeout=300,
                      files={"file": ("l.wav", wav_bytes(long, 8000, "PCM_U8"))})
    assert r.status_code == 200, r.text
    assert r.json()["duration"] == 290 and len(r.json()["segments"]) >= 90
    too_long = np.resize(long, 301 * 8000)
    r = requests.post(f"{ops.url}/v1/emotion", headers=key, timeout=120,
                      files={"file": ("l.wav", wav_bytes(too_long, 8000, "PCM_U8"))})
    assert r.status_code == 413 and r.json()["error"]["type"] == "audio_too_long"

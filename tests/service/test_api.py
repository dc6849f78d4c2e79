"""The HTTP API against a real server: CRUD, personalised vs 0-shot, clear errors, API keys on every write."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import requests

from emoslm.service.testing import tone, wav_bytes
from tests.service.checks import json_error

LABELS = ["anger", "joy", "neutral", "sadness", "fear", "disgust", "surprise"]


def _enroll(api, speaker: str, audio: bytes, label: str) -> requests.Response:
    return api.post(f"{api.base}/v1/speakers/{speaker}/enrollments", files={"file": ("u.wav", audio, "audio/wav")},
                    data={"label": label})


def _emotion(api, audio: bytes, speaker: str | None = None) -> requests.Response:
    data = {"speaker_id": speaker} if speaker else {}
    return api.post(f"{api.base}/v1/emotion", files={"file": ("q.wav", audio, "audio/wav")}, data=data)



def test_speaker_crud(api):
    r = api.post(f"{api.base}/v1/speakers", json={"id": "crud-1", "name": "Crud One"})
    assert r.status_code == 201 and r.json() == {**r.json(), "id": "crud-1", "name": "Crud One", "n_enrollments": 0}
    generated = api.post(f"{api.base}/v1/speakers", json={}).json()["id"]
    assert re.fullmatch(r"spk-[0-9a-f]{12}", generated)
    assert {"crud-1", generated} <= {s["id"] for s in api.get(f"{api.base}/v1/speakers").json()["data"]}
    assert api.get(f"{api.base}/v1/speakers/crud-1").json()["name"] == "Crud One"
    assert "exists already" in json_error(api.post(f"{api.base}/v1/speakers", json={"id": "crud-1"}), 409, "conflict")
    for sid in ("crud-1", generated):
        assert api.delete(f"{api.base}/v1/speakers/{sid}").json() == {"id": sid, "deleted": True,
                                                                      "n_enrollments_deleted": 0}
    json_error(api.get(f"{api.base}/v1/speakers/crud-1"), 404, "unknown_speaker")
    json_error(api.delete(f"{api.base}/v1/speakers/crud-1"), 404, "unknown_speaker")


def test_enrollments_personalise_predictions(api, speech, server):
    api.post(f"{api.base}/v1/speakers", json={"id": "pers"}).raise_for_status()
    query = wav_bytes(tone(180, 0.7))
    zero = _emotion(api, query, "pers").json()  # a known speaker without enrollments: 0-shot
    assert zero["mode"] == "0-shot" and zero["n_enrollments_used"] == 0
    assert set(zero["probabilities"]) == set(LABELS) and abs(sum(zero["probabilities"].values()) - 1) < 1e-4
    ids = []
    for audio, label in zip(speech, LABELS):
        r = _enroll(api, "pers", audio, label)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["n_enrollments"] == len(ids) + 1 and body["label"] == label
        stored = next((server.data_dir / "audio").glob(f"*/{body['id']}.wav"))
        assert body["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
        ids.append(body["id"])
    listed = api.get(f"{api.base}/v1/speakers/pers/enrollments").json()["data"]
    assert [e["id"] for e in listed] == ids and [e["label"] for e in listed] == LABELS
    seven = _emotion(api, query, "pers").json()
    assert seven["mode"] == "personalised" and seven["n_enrollments_used"] == 7
    assert seven["latency_ms"] >= seven["model_latency_ms"] > 0
    assert not np.allclose(list(seven["probabilities"].values()), list(zero["probabilities"].values()), atol=1e-6)
    # aliases are canonicalised; deleting updates the cache at once
    r = _enroll(api, "pers", speech[7], "Angry")
    assert r.json()["label"] == "anger" and r.json()["n_enrollments"] == 8
    assert api.delete(f"{api.base}/v1/speakers/pers/enrollments/{ids[0]}").status_code == 200
    assert _emotion(api, query, "pers").json()["n_enrollments_used"] == 7
    assert api.get(f"{api.base}/v1/speakers/pers").json()["n_enrollments"] == 7
    json_error(api.delete(f"{api.base}/v1/speakers/pers/enrollments/{ids[0]}"), 404, "not_found")
    assert api.delete(f"{api.base}/v1/speakers/pers").json()["n_enrollments_deleted"] == 7
    assert not list((server.data_dir / "audio").glob(f"*/{ids[1]}.wav"))
    assert _emotion(api, query).json()["mode"] == "0-shot"


def test_clear_errors(api, speech):
    api.post(f"{api.base}/v1/speakers", json={"id": "errs"}).raise_for_status()
    assert "not a readable audio file" in json_error(_emotion(api, b"this is not audio at all"), 400, "bad_audio")
    assert "empty upload" in json_error(_emotion(api, b""), 400, "bad_audio")
    assert "truncated" in json_error(_emotion(api, speech[0][:2000]), 400, "bad_audio")
    assert "too short" in json_error(_emotion(api, wav_bytes(tone(200, 0.05))), 400, "bad_audio")
    assert "too long" in json_error(_emotion(api, wav_bytes(tone(200, 12.0), sr=8000, subtype="PCM_U8")), 413,
                                "audio_too_long")  # 12 s > --max-seconds 10, small enough for the body limit
    assert "over the limit" in json_error(_emotion(api, b"\0" * (1 << 20) + b"x"), 413, "request_too_large")
    assert "'nope'" in json_error(_emotion(api, speech[0], "nope"), 404, "unknown_speaker")
    assert "'nope'" in json_error(_enroll(api, "nope", speech[0], "joy"), 404, "unknown_speaker")
    msg = json_error(_enroll(api, "errs", speech[0], "grumpy"), 422, "unknown_label")
    assert "'grumpy'" in msg and "neutral, anger, joy, sadness, fear, disgust, surprise" in msg
    json_error(_enroll(api, "errs", speech[0], "boredom"), 422, "unknown_label")  # canonical, but not in this model
    json_error(api.post(f"{api.base}/v1/speakers", data="{", headers={"Content-Type": "application/json"}), 422,
           "invalid_request")
    json_error(api.post(f"{api.base}/v1/speakers", json={"id": "no spaces/allowed"}), 422, "invalid_request")
    json_error(api.post(f"{api.base}/v1/speakers/errs/enrollments", files={"file": ("u.wav", speech[0])}), 422,
           "invalid_request")  # no label
    assert api.get(f"{api.base}/v1/speakers/errs").json()["n_enrollments"] == 0  # nothing was stored


def test_enrollment_limit_is_a_conflict(api, server, speech):
    limit = server.info()["limits"]["max_enrollments_per_speaker"]
    api.post(f"{api.base}/v1/speakers", json={"id": "full"}).raise_for_status()
    for i in range(limit):
        assert _enroll(api, "full", speech[i % 8], LABELS[i % 7]).status_code == 201
    assert "at most" in json_error(_enroll(api, "full", speech[0], "joy"), 409, "conflict")
    assert api.delete(f"{api.base}/v1/speakers/full").json()["n_enrollments_deleted"] == limit


def _operations(spec: dict) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


PUBLIC = {"/health", "/ready"}


def test_every_endpoint_rejects_missing_or_wrong_key(api, server, speech):
    """Reads need a key too (no --public-read here); only liveness and readiness are public."""
    spec = requests.get(f"{server.url}/openapi.json").json()
    operations = _operations(spec)
    assert {p for _, p in operations} >= {"/v1/speakers", "/v1/speakers/{speaker_id}", "/v1/emotion",
                                          "/v1/speakers/{speaker_id}/enrollments", "/v1/chat/completions",
                                          "/v1/speakers/{speaker_id}/enrollments/{enrollment_id}", "/v1/info",
                                          "/v1/models", "/v1/audio/transcriptions", "/health", "/ready"}
    api.post(f"{api.base}/v1/speakers", json={"id": "keyed"}).raise_for_status()
    eid = _enroll(api, "keyed", speech[0], "joy").json()["id"]
    bodies = {"/v1/speakers": {"json": {"id": "intruder"}},
              "/v1/emotion": {"files": {"file": ("q.wav", speech[1])}},
              "/v1/audio/transcriptions": {"files": {"file": ("q.wav", speech[1])}},
              "/v1/speakers/{speaker_id}/enrollments": {"files": {"file": ("q.wav", speech[1])},
                                                        "data": {"label": "joy"}},
              "/v1/chat/completions": {"json": {"model": "x", "messages": [{"role": "user", "content": "hi"}]}}}
    for method, path in operations:
        url = server.url + path.format(speaker_id="keyed", enrollment_id=eid)
        if path in PUBLIC:
            assert requests.request(method, url).status_code == 200, path
            continue
        op = spec["paths"][path][method.lower()]
        assert {"HTTPBearer": []} in op["security"] and {"APIKeyHeader": []} in op["security"], path
        for headers in ({}, {"Authorization": "Bearer esk-wrong"}, {"X-API-Key": "esk-wrong"},
                        {"Authorization": "Basic dGVzdHM6eA=="}):
            r = requests.request(method, url, headers=headers, **bodies.get(path, {}))
            json_error(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"] == "Bearer"
    # nothing was written
    assert api.get(f"{server.url}/v1/speakers/keyed/enrollments").json()["data"][0]["id"] == eid
    assert "intruder" not in {s["id"] for s in api.get(f"{server.url}/v1/speakers").json()["data"]}
    assert requests.post(f"{server.url}/v1/emotion", files={"file": ("q.wav", speech[1])},
                         headers={"X-API-Key": server.key}).status_code == 200


def test_web_page_and_spec_are_served(server):
    page = requests.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "enroll-buttons" in page.text
    assert "emoslm apikey create" in page.text  # the page says where a key comes from
    assert "getUserMedia" in requests.get(server.url + "/static/app.js").text
    spec = requests.get(server.url + "/openapi.json").json()
    assert spec["components"]["schemas"]["EmotionResult"]["required"] >= ["label", "probabilities"]
    assert json_error(requests.get(server.url + "/v1/nothing-here"), 404, "http_error")


@pytest.mark.parametrize("fmt", ["FLOAT", "PCM_24"])
def test_other_wav_encodings_and_rates(api, fmt):
    r = _emotion(api, wav_bytes(tone(150, 1.0, sr=44100), sr=44100, subtype=fmt))
    assert r.status_code == 200 and r.json()["label"] in LABELS

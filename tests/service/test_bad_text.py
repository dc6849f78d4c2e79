"""Text that is not valid Unicode, sent to every endpoint: lone surrogates (``"\\ud800"`` escapes in JSON, their
CESU-8 bytes in form fields), invalid UTF-8 bytes in bodies, form fields, file names, headers and paths (raw, and
percent-encoded). Every answer is a JSON error (4xx) with the request id: never a 500, never plain text."""

from __future__ import annotations

import json
import socket
import uuid
from urllib.parse import urlparse

import pytest
import requests

from emoslm.service.testing import tone, wav_bytes

SURROGATE_BYTES = b"\xed\xa0\x80"  # U+D800 encoded as if it were a character (CESU-8): invalid UTF-8
INVALID = b"\xff\xfe\xc3("  # bytes no UTF-8 text has
JSON_BODIES = [
    b'{"id": "\\ud800"}',
    b'{"name": "ok \\udfff"}',
    b'{"\\ud800": 1}',
    b'{"model": "emoslm", "messages": [{"role": "user", "content": "hi \\ud83d"}]}',
    b'{"model": "emoslm", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]}',
    b'{"model": "emoslm", "user": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"id": "' + INVALID + b'"}',
    b'{"model": "emoslm", "messages": [{"role": "user", "content": "' + SURROGATE_BYTES + b'"}]}',
    b"\xff\xfe{\x00}\x00",  # UTF-16 with a BOM
]


def _is_json_error(r: requests.Response | tuple, expect_4xx: bool = True) -> dict:
    status, headers, body = r if isinstance(r, tuple) else (r.status_code, r.headers, r.content)
    ctype = headers.get("content-type", "")
    assert ctype.startswith("application/json"), (status, ctype, body[:300])
    data = json.loads(body)
    assert set(data) == {"error"} and {"type", "message"} <= set(data["error"]), data
    if expect_4xx:
        assert 400 <= status < 500, (status, data)
    return data["error"]


def _operations(server) -> list[tuple[str, str]]:
    spec = requests.get(f"{server.url}/openapi.json").json()
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if p not in ("/health", "/ready")]


def _multipart(fields: list[tuple[bytes, bytes, bytes | None]]) -> tuple[bytes, str]:
    """A multipart body from (name, value, filename) with raw bytes anywhere."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, value, filename in fields:
        disp = b'form-data; name="' + name + b'"' + (b'; filename="' + filename + b'"' if filename else b"")
        out += b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disp + b"\r\n"
        if filename:
            out += b"Content-Type: audio/wav\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


def _raw(server, request: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes over a socket; (status, headers, body) of the answer."""
    u = urlparse(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def owned(server):
    """A speaker with one enrollment, of the tests' key."""
    s = requests.Session()
    s.headers["X-API-Key"] = server.key
    s.post(f"{server.url}/v1/speakers", json={"id": "text-owner"}).raise_for_status()
    eid = s.post(f"{server.url}/v1/speakers/text-owner/enrollments", data={"label": "joy"},
                 files={"file": ("e.wav", wav_bytes(tone(150)))}).json()["id"]
    return {"speaker_id": "text-owner", "enrollment_id": eid}


def test_json_bodies_with_lone_surrogates_or_invalid_utf8(server, owned):
    auth = {"X-API-Key": server.key, "Content-Type": "application/json"}
    json_ops = [(m, p) for m, p in _operations(server) if (m, p) in {("POST", "/v1/speakers"),
                                                                       ("POST", "/v1/chat/completions")}]
    assert len(json_ops) == 2
    for method, path in json_ops:
        for body in JSON_BODIES:
            r = requests.request(method, server.url + path, data=body, headers=auth, timeout=60)
            err = _is_json_error(r)
            assert err["request_id"] == r.headers["x-request-id"]
            if b"\\ud" in body or b"\\udc" in body or INVALID in body or SURROGATE_BYTES in body:
                assert err["type"] == "invalid_text", (body, err)
    # nothing was created
    ids = {s["id"] for s in requests.get(f"{server.url}/v1/speakers", headers=auth).json()["data"]}
    assert not any(not i.isascii() for i in ids)


def test_form_fields_and_file_names_with_invalid_bytes(server, owned):
    audio = wav_bytes(tone(160))
    forms = {"/v1/emotion": [b"speaker_id", b"transcribe"],
             "/v1/speakers/{speaker_id}/enrollments": [b"label"],
             "/v1/audio/transcriptions": [b"speaker_id", b"response_format", b"model"]}
    for method, path in _operations(server):
        if method != "POST" or path not in forms:
            continue
        url = server.url + path.format(**owned)
        for bad in (SURROGATE_BYTES, INVALID, b"\\ud800"):
            variants = [[(b"file", audio, b"q.wav"), (field, bad, None)] for field in forms[path]]
            if bad == SURROGATE_BYTES or "transcriptions" not in path:  # (each transcription costs Whisper's time)
                variants.append([(b"file", audio, b"q" + bad + b".wav")] +
                                ([(b"label", b"joy", None)] if "enrollments" in path else []))
                variants.append([(b"file", audio, b"q.wav"), (bad, b"x", None)])  # a field name
            for fields in variants:
                body, ctype = _multipart(fields)
                r = requests.request(method, url, data=body, timeout=60,
                                     headers={"X-API-Key": server.key, "Content-Type": ctype})
                if r.status_code == 200 or r.status_code == 201:  # a bad name of an unused field is ignored
                    assert r.headers["content-type"].startswith(("application/json", "text/plain"))
                    continue
                _is_json_error(r)
            # url-encoded forms with bad percent-escapes
            r = requests.request(method, url, data=b"speaker_id=%ED%A0%80&label=%FF", timeout=60,
                                 headers={"X-API-Key": server.key,
                                          "Content-Type": "application/x-www-form-urlencoded"})
            _is_json_error(r)


def test_paths_with_invalid_utf8_or_surrogates(server, owned):
    auth = {"X-API-Key": server.key}
    for method, path in _operations(server):
        if "{" not in path:
            continue
        for bad in ("%ED%A0%80", "%FF%FE", "%C3%28", "%00"):
            url = server.url + path.format(speaker_id=bad, enrollment_id=bad)
            r = requests.request(method, url, headers=auth, timeout=60,
                                 files={"file": ("q.wav", wav_bytes(tone(150)))} if method == "POST" else None,
                                 data={"label": "joy"} if method == "POST" else None)
            err = _is_json_error(r)
            assert r.status_code in (404, 422), (url, r.status_code, err)
    # raw bytes in the request line never reach the app: uvicorn's protocol answers, in JSON
    for target in (b"/v1/speakers/\xff\xfe", b"/v1/speakers/" + SURROGATE_BYTES, b"/v1/info?x=\xff"):
        status, headers, body = _raw(server, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 400
        assert _is_json_error((status, headers, body))["type"] == "bad_http_request"


def test_headers_with_invalid_bytes(server, owned):
    audio = wav_bytes(tone(150))
    for method, path in _operations(server):
        url = server.url + path.format(**owned)
        for bad in (INVALID, SURROGATE_BYTES, b"\\ud800"):
            for headers in ({"X-API-Key": bad}, {"Authorization": b"Bearer " + bad}, {"Authorization": bad}):
                r = requests.request(method, url, headers=headers, timeout=60)
                assert _is_json_error(r)["type"] == "unauthorized" and r.status_code == 401
            # a valid key with a bad request id or content type: the id is replaced, the answer is JSON
            r = requests.request(method, url, timeout=60, headers={
                "X-API-Key": server.key.encode(), "X-Request-ID": b"id-" + bad, "Content-Type": b"text/" + bad},
                data=audio if method == "POST" else None)
            if bad.isascii():  # visible ASCII is a fine id, echoed as sent
                assert r.headers["x-request-id"] == (b"id-" + bad).decode()
            else:
                assert r.headers["x-request-id"].startswith("req-")
            if r.status_code >= 400:
                _is_json_error(r)
            else:
                assert method == "GET" or path.endswith("}"), (method, path, r.status_code)
    # a header name or value the HTTP parser refuses: JSON from the protocol layer
    for bad_header in (b"X-\xff: 1", b"X-Test: a\x00b", b"Bad Header: 1"):
        status, headers, body = _raw(server, b"GET /v1/info HTTP/1.1\r\nHost: x\r\n" + bad_header +
                                     b"\r\nConnection: close\r\n\r\n")
        assert status == 400 and _is_json_error((status, headers, body))["type"] == "bad_http_request"


def test_query_strings_with_invalid_bytes(server):
    for method, path in _operations(server):
        if method != "GET" or "{" in path:
            continue
        r = requests.get(f"{server.url}{path}?x=%ED%A0%80&%FF=1", headers={"X-API-Key": server.key}, timeout=60)
        assert r.status_code == 200, (path, r.text)

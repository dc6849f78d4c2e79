"""Assertions shared by the service tests."""

from __future__ import annotations

import requests


def json_error(r: requests.Response, status: int, type_: str) -> str:
    """Assert that ``r`` is the service's JSON error of this status and type; return its message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"]["type"] == type_, body
    return body["error"]["message"]

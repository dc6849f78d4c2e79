"""A real server for the service tests: a tiny random bundle, a fresh data folder with an API key (and an admin
key), uvicorn in a subprocess on 127.0.0.1 with the packaged Whisper tiny.en as its ASR (loaded on first use)."""

from __future__ import annotations

import pytest
import requests

from emoslm.service.store import Store
from emoslm.service.testing import ServerProcess, build_tiny_bundle, tone, wav_bytes


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("service_bundle"))


@pytest.fixture(scope="session")
def server(bundle, tmp_path_factory):
    data = tmp_path_factory.mktemp("service") / "data"
    store = Store(data)
    key = store.create_api_key("tests")
    admin_key = store.create_api_key("admin", admin=True)
    with ServerProcess(bundle, data, key=key, extra=["--max-upload-mb", "1", "--max-seconds", "10"]) as srv:
        srv.admin_key = admin_key
        yield srv


@pytest.fixture
def api(server):
    """A requests session with the API key, and the base URL."""
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {server.key}"
    s.base = server.url
    yield s
    s.close()


@pytest.fixture(scope="session")
def speech() -> list[bytes]:
    """Eight distinct test utterances (WAV bytes)."""
    return [wav_bytes(tone(110 + 25 * i, seconds=0.6 + 0.05 * i)) for i in range(8)]

"""Scoped keys: a key sees and changes only the speakers it created, an admin key all of them; older data folders
are migrated in place (speakers from before ownership are admin-only); ``emoslm apikey create NAME --admin``."""

from __future__ import annotations

import base64
import sqlite3

import pytest
import requests

from emoslm.cli import main
from emoslm.service.store import SCHEMA_VERSION, Store, hash_key
from emoslm.service.testing import tone, wav_bytes



def session(url: str, key: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {key}"
    return s

#: the database layout before keys were scoped (the first release of the service)
OLD_SCHEMA = """
CREATE TABLE speakers (id TEXT PRIMARY KEY, name TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE enrollments (id TEXT PRIMARY KEY, speaker_id TEXT NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    label TEXT NOT NULL, sha256 TEXT NOT NULL, path TEXT NOT NULL, duration REAL NOT NULL, created REAL NOT NULL);
CREATE INDEX enrollments_speaker ON enrollments(speaker_id, created);
CREATE TABLE api_keys (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, created REAL NOT NULL);
"""


def make_old_data_folder(root, key: str) -> None:
    """A data folder as the first release wrote it: one key named ``legacy``, one speaker ``legacy-spk``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    with sqlite3.connect(root / "emoslm.sqlite3") as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO api_keys VALUES ('legacy', ?, 1.0)", (hash_key(key),))
        db.execute("INSERT INTO speakers VALUES ('legacy-spk', 'Legacy', 2.0)")


@pytest.fixture(scope="module")
def keys(server):
    store = Store(server.data_dir)  # keys can be made while the server runs: it reads them from the database
    return {"alice": store.create_api_key("alice-app"), "bob": store.create_api_key("bob-app")}


def _status(r: requests.Response, status: int, type_: str | None = None) -> None:
    assert r.status_code == status, r.text
    if type_:
        assert r.json()["error"]["type"] == type_


def test_a_key_sees_and_changes_only_its_own_speakers(server, keys):
    alice, bob = session(server.url, keys["alice"]), session(server.url, keys["bob"])
    admin = session(server.url, server.admin_key)
    audio = wav_bytes(tone(170))
    assert alice.post(f"{server.url}/v1/speakers", json={"id": "a-spk"}).json()["owner"] == "alice-app"
    eid = alice.post(f"{server.url}/v1/speakers/a-spk/enrollments", data={"label": "joy"},
                     files={"file": ("e.wav", audio)}).json()["id"]
    assert [s["id"] for s in alice.get(f"{server.url}/v1/speakers").json()["data"]] == ["a-spk"]
    assert bob.get(f"{server.url}/v1/speakers").json()["data"] == []
    assert alice.get(f"{server.url}/v1/info").json()["n_speakers"] == 1
    assert bob.get(f"{server.url}/v1/info").json()["n_speakers"] == 0
    # to bob, alice's speaker does not exist: every route says 404, nothing changes
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}
    for r in (bob.get(f"{server.url}/v1/speakers/a-spk"),
              bob.get(f"{server.url}/v1/speakers/a-spk/enrollments"),
              bob.post(f"{server.url}/v1/speakers/a-spk/enrollments", data={"label": "joy"},
                       files={"file": ("e.wav", audio)}),
              bob.delete(f"{server.url}/v1/speakers/a-spk/enrollments/{eid}"),
              bob.delete(f"{server.url}/v1/speakers/a-spk"),
              bob.post(f"{server.url}/v1/emotion", data={"speaker_id": "a-spk"}, files={"file": ("q.wav", audio)}),
              bob.post(f"{server.url}/v1/audio/transcriptions", data={"speaker_id": "a-spk"},
                       files={"file": ("q.wav", audio)}),
              bob.post(f"{server.url}/v1/chat/completions", json={"user": "a-spk", "messages": [
                  {"role": "user", "content": [part]}]})):
        _status(r, 404, "unknown_speaker")
        assert "'a-spk'" in r.json()["error"]["message"]
    # ids are one namespace: bob cannot take the id either (a conflict, without showing whose)
    _status(bob.post(f"{server.url}/v1/speakers", json={"id": "a-spk"}), 409, "conflict")
    assert alice.get(f"{server.url}/v1/speakers/a-spk").json()["n_enrollments"] == 1
    r = alice.post(f"{server.url}/v1/emotion", data={"speaker_id": "a-spk"}, files={"file": ("q.wav", audio)})
    assert r.json()["n_enrollments_used"] == 1
    # the admin key sees everyone's speakers, with their owners, and may change them
    listed = {s["id"]: s["owner"] for s in admin.get(f"{server.url}/v1/speakers").json()["data"]}
    assert listed["a-spk"] == "alice-app"
    info = admin.get(f"{server.url}/v1/info").json()
    assert info["admin"] and info["key"] == "admin" and info["n_speakers"] == len(listed)
    assert admin.get(f"{server.url}/v1/speakers/a-spk/enrollments").json()["data"][0]["id"] == eid
    assert admin.delete(f"{server.url}/v1/speakers/a-spk").json()["n_enrollments_deleted"] == 1
    _status(alice.get(f"{server.url}/v1/speakers/a-spk"), 404)


def test_old_data_folders_are_migrated_in_place(tmp_path):
    root = tmp_path / "data"
    make_old_data_folder(root, "esk-legacy-key")
    store = Store(root)
    with sqlite3.connect(root / "emoslm.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "owner" in {r[1] for r in db.execute("PRAGMA table_info(speakers)")}
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert store.list_speakers()[0].owner is None  # from before ownership: admin keys only
    assert store.find_api_key("esk-legacy-key").admin is False
    assert store.check_api_key("esk-legacy-key") == "legacy"
    assert store.list_speakers(owner="legacy") == []
    Store(root)  # opening again changes nothing
    assert [s.id for s in Store(root).list_speakers()] == ["legacy-spk"]


def test_apikey_cli_admin_keys(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["apikey", "create", "boss", "--admin", "--data-dir", str(data)]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["apikey", "create", "app", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    assert Store(data).find_api_key(key).admin
    assert main(["apikey", "list", "--data-dir", str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("boss\t") and lines[0].endswith("\tadmin") and not lines[1].endswith("admin")
    assert main(["apikey", "revoke", "app", "--admin", "--data-dir", str(data)]) == 2

"""kill -9 of the server while enrollments are written: what was acknowledged survives, nothing half-written."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import numpy as np
import pytest
import requests
import soundfile as sf

from emoslm.service.core import Service, Settings
from emoslm.service.store import Store
from emoslm.service.testing import ServerProcess, tone, wav_bytes

LABELS = ["neutral", "anger", "joy", "sadness", "fear", "disgust", "surprise"]


def _writer(url: str, key: str, prefix: str, acked: list[tuple[str, str]], stop: threading.Event) -> None:
    """Create speakers and enroll into them until the server dies; record every acknowledged enrollment."""
    s = requests.Session()
    s.headers["X-API-Key"] = key
    n = 0
    try:
        while not stop.is_set():
            speaker = f"{prefix}-{n // 12}"
            if n % 12 == 0:
                s.post(f"{url}/v1/speakers", json={"id": speaker}, timeout=30).raise_for_status()
            r = s.post(f"{url}/v1/speakers/{speaker}/enrollments", timeout=30, data={"label": LABELS[n % 7]},
                       files={"file": ("u.wav", wav_bytes(tone(100 + 7 * n, 0.5)))})
            r.raise_for_status()
            acked.append((speaker, r.json()["id"]))
            n += 1
    except requests.RequestException:
        pass  # the server was killed


@pytest.mark.slow
def test_kill9_during_enrollment_writes_loses_nothing_acknowledged(bundle, tmp_path):
    data = tmp_path / "data"
    key = Store(data).create_api_key("durability")
    server = ServerProcess(bundle, data, key=key).start()
    acked: list[tuple[str, str]] = []
    stop = threading.Event()
    writers = [threading.Thread(target=_writer, args=(server.url, key, f"w{i}", acked, stop)) for i in range(3)]
    try:
        for w in writers:
            w.start()
        deadline = time.monotonic() + 60
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill9()  # writes are in flight: three writers never wait between requests
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=60)
        server.stop()
    assert len(acked) >= 40
    # before any recovery: every audio file under its final name is complete (temp file + fsync + rename)
    for f in (data / "audio").rglob("*.wav"):
        assert sf.info(str(f)).frames > 0 and len(sf.read(str(f))[0]) == sf.info(str(f)).frames

    admin = Store(data).create_api_key("durability-admin", admin=True)
    auth = {"X-API-Key": key}
    with ServerProcess(bundle, data, key=admin) as again:
        info = again.info()
        assert info["excluded_enrollments"] == {}
        speakers = {s["id"] for s in requests.get(f"{again.url}/v1/speakers", headers=auth).json()["data"]}
        present = {}
        for sid in speakers:
            for e in requests.get(f"{again.url}/v1/speakers/{sid}/enrollments", headers=auth).json()["data"]:
                present[e["id"]] = e
        missing = [eid for _, eid in acked if eid not in present]
        assert not missing, f"{len(missing)} acknowledged enrollments lost"
        assert info["n_enrollments"] == len(present)
        # at most one unacknowledged commit per writer can have landed (killed before its answer went out)
        assert len(present) - len(acked) <= len(writers)
        # every row's file is complete: the hash matches and the audio decodes
        for e in present.values():
            files = list((data / "audio").glob(f"*/{e['id']}.wav"))
            assert len(files) == 1 and hashlib.sha256(files[0].read_bytes()).hexdigest() == e["sha256"]
            assert sf.info(str(files[0])).frames == round(e["duration"] * 16000)
        # no orphan or temporary files are left, and the database is consistent
        on_disk = {p.stem for p in (data / "audio").rglob("*") if p.is_file()}
        assert on_disk == set(present)
        with sqlite3.connect(data / "emoslm.sqlite3") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        # a restart loads the cached encodings: predictions use every enrollment
        speaker, _ = acked[0]
        r = requests.post(f"{again.url}/v1/emotion", headers={"X-API-Key": key}, data={"speaker_id": speaker},
                          files={"file": ("q.wav", wav_bytes(tone(140)))})
        assert r.json()["n_enrollments_used"] == sum(1 for e in present.values() if e["speaker_id"] == speaker)


def test_startup_reports_and_excludes_damaged_enrollments(bundle, tmp_path):
    """A missing or altered audio file excludes its row (reported); orphan files are removed; encodings are
    re-made from the audio when their cache file is gone."""
    settings = Settings(bundle=str(bundle), data_dir=str(tmp_path / "data"), llm="tiny-llama")
    svc = Service(settings)
    svc.store.create_speaker("s", None)
    enr = [svc.add_enrollment("s", wav_bytes(tone(120 + 30 * i)), LABELS[i]) for i in range(4)]
    query = tone(170)
    before = svc.predict(query, "s")
    assert before.n_enroll == 4
    root = tmp_path / "data"
    (root / enr[0].path).unlink()
    damaged = root / enr[1].path
    damaged.write_bytes(damaged.read_bytes()[:-100] + b"\0" * 100)
    orphan = root / "audio" / "x" / ".half-written.wav.tmp"
    orphan.parent.mkdir()
    orphan.write_bytes(b"RIFF")
    for npy in (root / "encodings").rglob("*.npy"):
        npy.unlink()

    again = Service(settings)
    assert set(again.excluded) == {enr[0].id, enr[1].id}
    assert "missing" in again.excluded[enr[0].id] and "sha256" in again.excluded[enr[1].id]
    assert not orphan.exists()
    assert again.recognizer.speakers["s"].ids == [enr[2].id, enr[3].id]
    assert len(list((root / "encodings").rglob("*.npy"))) == 2  # re-encoded and cached again
    after = again.predict(query, "s")
    assert after.n_enroll == 2
    # loading the cached encodings gives what the fresh encodings gave
    third = Service(settings)
    assert np.allclose(list(third.predict(query, "s").probs.values()), list(after.probs.values()), atol=1e-5)
    again.delete_enrollment("s", enr[0].id)  # an excluded row can still be deleted
    assert [e.id for e in again.store.list_enrollments("s")] == [enr[1].id, enr[2].id, enr[3].id]

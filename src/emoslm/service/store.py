"""The service's durable state: speakers, enrollments and API keys in SQLite, enrollment audio on disk.

Layout of a data folder::

    emoslm.sqlite3                      speakers, enrollments, api_keys (WAL journal, foreign keys on)
    audio/<speaker>/<enrollment>.wav    the decoded 16 kHz enrollment audio (float WAV), sha256 in the DB
    encodings/<bundle key>/<enrollment>.npy   cached encoder output per model bundle (rebuilt when missing)

Write order of an enrollment: the audio goes to a temporary file, is fsync'ed and atomically renamed, the
folder is fsync'ed, and only then is the row committed (``synchronous=FULL``). A kill at any point leaves
either a committed row whose file is complete, or an orphan file without a row, which :meth:`Store.check`
removes at the next start. Rows whose file is missing or whose hash does not match are reported by
:meth:`Store.check` and left out of what the service loads; they stay in the database for inspection.

Ownership: each speaker records the API key (by name) that created it (``speakers.owner``); an ordinary key sees
and changes only its own speakers, an admin key (``api_keys.admin``) all of them. Older data folders are
migrated in place when opened (:data:`SCHEMA_VERSION`): the new columns are added, and speakers created before
keys were scoped have no owner, so only admin keys see them.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from emoslm.errors import EmoslmError

SCHEMA = """
CREATE TABLE IF NOT EXISTS speakers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS enrollments (
    id TEXT PRIMARY KEY,
    speaker_id TEXT NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    duration REAL NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS enrollments_speaker ON enrollments(speaker_id, created);
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0
);
"""

#: ``PRAGMA user_version`` of the current layout. 0/1: before ownership (no ``speakers.owner``, no
#: ``api_keys.admin``); 2: scoped keys.
SCHEMA_VERSION = 2
#: columns added after the first release: (table, column, definition)
MIGRATIONS = (("speakers", "owner", "TEXT"), ("api_keys", "admin", "INTEGER NOT NULL DEFAULT 0"))

SAMPLE_RATE = 16000


class StoreError(EmoslmError):
    """A request the store cannot carry out; ``kind`` says which: ``unknown_speaker``, ``not_found`` (another
    record), ``conflict``."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class Speaker:
    id: str
    name: str
    created: float
    owner: str | None = None  # the name of the API key that created it (None: admin keys only)


@dataclass(frozen=True)
class ApiKey:
    name: str
    created: float
    admin: bool = False


@dataclass(frozen=True)
class Enrollment:
    id: str
    speaker_id: str
    label: str
    sha256: str
    path: str  # relative to the data folder
    duration: float
    created: float


@dataclass
class CheckReport:
    """What :meth:`Store.check` found: usable enrollments, excluded rows (with why) and removed orphans."""

    ok: list[Enrollment]
    excluded: dict[str, str]
    orphans_removed: list[str]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either no file or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def wav_bytes(wave: np.ndarray) -> bytes:
    """A 16 kHz float32 waveform as WAV file bytes (float samples: reloading gives the same waveform)."""
    buf = io.BytesIO()
    sf.write(buf, wave, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return buf.getvalue()


class Store:
    """SQLite + files under ``root``. Thread-safe: one connection per thread, writes in transactions."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "audio").mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "emoslm.sqlite3"
        self._local = threading.local()
        self._conn().executescript(SCHEMA)  # idempotent (IF NOT EXISTS); executescript commits by itself
        self._migrate()

    # ------------------------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def ping(self) -> None:
        """A trivial query: raises when the database cannot be read."""
        self._conn().execute("SELECT COUNT(*) FROM api_keys").fetchone()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception)."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _migrate(self) -> None:
        """Bring an older database to :data:`SCHEMA_VERSION` in place (adds the missing columns; idempotent, and
        safe when two processes open the folder at once: the check runs inside the write transaction)."""
        if self._conn().execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self.transaction() as db:
            for table, column, definition in MIGRATIONS:
                if column not in {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            db.execute("CREATE INDEX IF NOT EXISTS speakers_owner ON speakers(owner)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------------------------------ API keys

    def create_api_key(self, name: str, admin: bool = False) -> str:
        """A new random key named ``name`` (``admin``: it sees every speaker); only its sha256 is stored, the key
        is returned once."""
        key = "esk-" + secrets.token_urlsafe(32)
        try:
            with self.transaction() as db:
                db.execute("INSERT INTO api_keys (name, sha256, created, admin) VALUES (?, ?, ?, ?)",
                           (name, hash_key(key), time.time(), int(admin)))
        except sqlite3.IntegrityError:
            raise StoreError("conflict", f"an API key named {name!r} exists already") from None
        return key

    def list_api_keys(self) -> list[ApiKey]:
        rows = self._conn().execute("SELECT name, created, admin FROM api_keys ORDER BY created")
        return [ApiKey(r["name"], r["created"], bool(r["admin"])) for r in rows]

    def revoke_api_key(self, name: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM api_keys WHERE name = ?", (name,)).rowcount == 0:
                raise StoreError("not_found", f"no API key named {name!r}")

    def check_api_key(self, key: str) -> str | None:
        """The name of the key, or None when it is not a valid key."""
        found = self.find_api_key(key)
        return found.name if found else None

    def find_api_key(self, key: str) -> ApiKey | None:
        """The key's record (name, created, admin), or None when it is not a valid key."""
        row = self._conn().execute("SELECT name, created, admin FROM api_keys WHERE sha256 = ?",
                                   (hash_key(key),)).fetchone()
        return ApiKey(row["name"], row["created"], bool(row["admin"])) if row else None

    # ------------------------------------------------------------------------------------ speakers

    def create_speaker(self, speaker_id: str | None, name: str | None, owner: str | None = None) -> Speaker:
        """A new speaker owned by the API key named ``owner`` (None: only admin keys see it)."""
        sid = speaker_id or "spk-" + uuid.uuid4().hex[:12]
        spk = Speaker(sid, name or sid, time.time(), owner)
        try:
            with self.transaction() as db:
                db.execute("INSERT INTO speakers (id, name, created, owner) VALUES (?, ?, ?, ?)",
                           (spk.id, spk.name, spk.created, spk.owner))
        except sqlite3.IntegrityError:
            raise StoreError("conflict", f"speaker {sid!r} exists already") from None
        return spk

    def get_speaker(self, speaker_id: str) -> Speaker:
        row = self._conn().execute("SELECT * FROM speakers WHERE id = ?", (speaker_id,)).fetchone()
        if row is None:
            raise StoreError("unknown_speaker", f"unknown speaker {speaker_id!r}")
        return Speaker(**dict(row))

    def has_speaker(self, speaker_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM speakers WHERE id = ?", (speaker_id,)).fetchone() is not None

    def list_speakers(self, owner: str | None = None) -> list[Speaker]:
        """All speakers, or those of the key named ``owner``."""
        if owner is None:
            rows = self._conn().execute("SELECT * FROM speakers ORDER BY created, id")
        else:
            rows = self._conn().execute("SELECT * FROM speakers WHERE owner = ? ORDER BY created, id", (owner,))
        return [Speaker(**dict(r)) for r in rows]

    def delete_speaker(self, speaker_id: str) -> list[Enrollment]:
        """Delete a speaker and its enrollments (rows first, then files); returns the deleted enrollments."""
        with self.transaction() as db:
            gone = self._enrollments(db, speaker_id)
            if db.execute("DELETE FROM speakers WHERE id = ?", (speaker_id,)).rowcount == 0:
                raise StoreError("unknown_speaker", f"unknown speaker {speaker_id!r}")
        for e in gone:
            self._unlink(e)
        return gone

    # ------------------------------------------------------------------------------------ enrollments

    @staticmethod
    def _enrollments(db: sqlite3.Connection, speaker_id: str | None = None) -> list[Enrollment]:
        if speaker_id is None:
            rows = db.execute("SELECT * FROM enrollments ORDER BY created, rowid")
        else:
            rows = db.execute("SELECT * FROM enrollments WHERE speaker_id = ? ORDER BY created, rowid", (speaker_id,))
        return [Enrollment(**dict(r)) for r in rows]

    def list_enrollments(self, speaker_id: str | None = None) -> list[Enrollment]:
        return self._enrollments(self._conn(), speaker_id)

    def write_audio(self, speaker_id: str, wave: np.ndarray) -> tuple[str, str, str]:
        """Write an enrollment's audio durably; returns (enrollment id, path relative to the root, sha256).

        The row is not there yet: :meth:`commit_enrollment` adds it, and a file without a row is an orphan."""
        eid = "enr-" + uuid.uuid4().hex[:16]
        data = wav_bytes(wave)
        rel = f"audio/{hashlib.sha256(speaker_id.encode()).hexdigest()[:16]}/{eid}.wav"
        atomic_write(self.root / rel, data)
        return eid, rel, hashlib.sha256(data).hexdigest()

    def commit_enrollment(self, eid: str, speaker_id: str, label: str, rel: str, sha256: str, duration: float,
                          max_per_speaker: int) -> Enrollment:
        """Commit the row of an enrollment whose audio :meth:`write_audio` wrote; the count is checked in the
        same transaction. On failure the file is removed."""
        enr = Enrollment(eid, speaker_id, label, sha256, rel, duration, time.time())
        try:
            with self.transaction() as db:
                if db.execute("SELECT 1 FROM speakers WHERE id = ?", (speaker_id,)).fetchone() is None:
                    raise StoreError("unknown_speaker", f"unknown speaker {speaker_id!r}")
                n = db.execute("SELECT COUNT(*) FROM enrollments WHERE speaker_id = ?", (speaker_id,)).fetchone()[0]
                if n >= max_per_speaker:
                    raise StoreError("conflict", f"speaker {speaker_id!r} has {n} enrollments; the model takes at "
                                                 f"most {max_per_speaker} (delete one first)")
                db.execute("INSERT INTO enrollments VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (enr.id, enr.speaker_id, enr.label, enr.sha256, enr.path, enr.duration, enr.created))
        except BaseException:
            (self.root / rel).unlink(missing_ok=True)
            raise
        return enr

    def delete_enrollment(self, speaker_id: str, eid: str) -> Enrollment:
        with self.transaction() as db:
            row = db.execute("SELECT * FROM enrollments WHERE id = ? AND speaker_id = ?", (eid, speaker_id)).fetchone()
            if row is None:
                if db.execute("SELECT 1 FROM speakers WHERE id = ?", (speaker_id,)).fetchone() is None:
                    raise StoreError("unknown_speaker", f"unknown speaker {speaker_id!r}")
                raise StoreError("not_found", f"speaker {speaker_id!r} has no enrollment {eid!r}")
            db.execute("DELETE FROM enrollments WHERE id = ?", (eid,))
        enr = Enrollment(**dict(row))
        self._unlink(enr)
        return enr

    def _unlink(self, enr: Enrollment) -> None:
        (self.root / enr.path).unlink(missing_ok=True)
        for npy in (self.root / "encodings").glob(f"*/{enr.id}.npy"):
            npy.unlink(missing_ok=True)

    def load_audio(self, enr: Enrollment) -> np.ndarray:
        wave, _sr = sf.read(self.root / enr.path, dtype="float32")
        return wave

    # ------------------------------------------------------------------------------------ start-up check

    def check(self) -> CheckReport:
        """Verify every enrollment's file against its hash; remove audio files no row refers to."""
        rows = self.list_enrollments()
        ok, excluded = [], {}
        for e in rows:
            path = self.root / e.path
            if not path.is_file():
                excluded[e.id] = f"audio file {e.path} is missing"
            elif hashlib.sha256(path.read_bytes()).hexdigest() != e.sha256:
                excluded[e.id] = f"audio file {e.path} does not match its sha256"
            else:
                ok.append(e)
        known = {e.path for e in rows}
        orphans = []
        for f in sorted((self.root / "audio").rglob("*")):
            rel = f.relative_to(self.root).as_posix()
            if f.is_file() and rel not in known:
                f.unlink()
                orphans.append(rel)
        return CheckReport(ok, excluded, orphans)

    # ------------------------------------------------------------------------------------ encoding cache

    def encoding_path(self, bundle_key: str, eid: str) -> Path:
        return self.root / "encodings" / bundle_key / f"{eid}.npy"

    def save_encoding(self, bundle_key: str, eid: str, encoding: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, encoding)
        atomic_write(self.encoding_path(bundle_key, eid), buf.getvalue())

    def load_encoding(self, bundle_key: str, eid: str) -> np.ndarray | None:
        path = self.encoding_path(bundle_key, eid)
        try:
            return np.load(path)
        except (OSError, ValueError):
            return None

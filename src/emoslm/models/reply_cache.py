"""A resumable JSONL cache of LLM replies, keyed by the whole request.

The pattern of :func:`emoslm.echat.dialogue.write_responses`, made generic for any request: every generation is
appended to the file and flushed before it is used, so a killed run loses at most the reply it was writing and
a rerun generates only what is missing. The key is a hash of the full message list, the backend's name, the
token limit and the temperature, so a different prompt, writer or limit never reads a stale reply.

Used by the dual-information conversations (:mod:`emoslm.dual_info.conversations`) and the LLM judge
(:mod:`emoslm.dual_info.judge`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any


def request_key(messages: list[dict[str, str]], backend_name: str, max_tokens: int, temperature: float = 0.0,
                **extra: Any) -> str:
    """sha256 of the request (messages, backend, limit, temperature and any ``extra`` fields)."""
    blob = json.dumps({"messages": messages, "backend": backend_name, "max_tokens": max_tokens,
                       "temperature": temperature, **extra}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplyCache:
    """Replies by request key, read from and appended to a JSONL file (one record a line; ``path=None`` keeps
    them in memory only).

    A line cut short by a kill is ignored on reading (and the file is given a fresh line before the next
    append), so the cache stays readable whatever moment the writer died.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None  # None: in memory only
        self.records: dict[str, dict[str, Any]] = {}
        self.n_generated = 0
        self.seconds_generating = 0.0
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except ValueError:  # a partial last line of a killed run
                    continue
                if isinstance(r, dict) and "key" in r:
                    self.records[r["key"]] = r

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` under ``key`` and flush it to disk."""
        record = {"key": key, **record}
        self.records[key] = record
        if self.path is None:
            return record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = self.path.is_file() and self.path.stat().st_size > 0 and not self._ends_with_newline()
        with self.path.open("a") as f:
            if needs_newline:
                f.write("\n")
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
        return record

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, 2)
            return f.read(1) == b"\n"

    def reply(self, backend, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0,
              **extra: Any) -> dict[str, Any]:
        """The cached record of ``backend``'s reply to ``messages`` (generated and appended when missing).

        The record holds ``text``, ``prompt_tokens``, ``completion_tokens``, ``finish_reason``, ``seconds`` and
        the request; ``extra`` fields are part of the key (e.g. a prompt version) and stored with it.
        """
        key = request_key(messages, backend.name, max_tokens, temperature, **extra)
        hit = self.records.get(key)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        r = backend.reply(messages, None, max_tokens, temperature)
        dt = time.perf_counter() - t0
        self.n_generated += 1
        self.seconds_generating += dt
        return self.put(key, {"backend": backend.name, "max_tokens": max_tokens, "temperature": temperature,
                              **extra, "messages": messages, "text": r.text, "prompt_tokens": r.prompt_tokens,
                              "completion_tokens": r.completion_tokens, "finish_reason": r.finish_reason,
                              "seconds": round(dt, 3)})

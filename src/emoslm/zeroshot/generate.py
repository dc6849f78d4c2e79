"""LLM-written labelled utterances: generation, lenient parsing, strict validation, deduplication, balance.

One call asks for ``per_call`` lines of one class (:func:`emoslm.zeroshot.description.build_messages`); classes
take turns (the class furthest below its target goes next), so a run stopped at any moment, or by its time
budget, holds a balanced part of the corpus. The budget (``max_minutes``) is the corpus's: the recorded time of
cached calls counts, so a finished run asked again makes no new call and a stopped one spends only the rest. Small LLMs write poor JSON, so parsing is lenient -- the whole
answer as JSON, else every ``{...}`` object in it, else ``label: text`` / numbered / quoted lines -- and the
validation is strict: the label (when the item has one) must be a class of the task and the requested one,
the text must be English, within the described length, not repetitive, not markup and not a prompt example,
and not a duplicate (after normalisation) of an accepted line. Every rejected line is logged with its reason.

Files in ``out_dir``:

    generations.jsonl   every LLM answer, appended and fsynced as it arrives: the resume cache
    rejected.jsonl      each rejected line with its reason (rewritten from the cache on every run)
    utterances.jsonl    the accepted, balanced corpus text: id, emotion, text, call
    generation.json     counts, rejection reasons, timing, tokens per second

A second run re-parses the cached answers (so a fix to the validation applies to them) and only asks the LLM
for calls it has not answered; nothing generated is lost when a run is killed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoslm.errors import EmoslmError
from emoslm.labels import LabelSet
from emoslm.zeroshot.description import (
    DEFAULT_EXAMPLES,
    CorpusDescription,
    adjective,
    build_messages,
)

#: Keys an item may hold its text and its label under.
_TEXT_KEYS = ("text", "line", "utterance", "sentence", "content")
_LABEL_KEYS = ("emotion", "label", "class", "category")
_OBJECT = re.compile(r"\{[^{}]*\}")
_STR = r'"((?:[^"\\]|\\.)*)"'
_PAIR = re.compile(r'"(?:emotion|label)"\s*:\s*' + _STR + r'\s*,\s*"text"\s*:\s*' + _STR)
_LABELLED_LINE = re.compile(r"^\s*(?:[-*\d.)\s]+)?\(?([A-Za-z]+)\)?\s*[:\-]\s+(.+)$")
_LISTED_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*])\s+(.+)$")
_QUOTED = re.compile(r'^\s*"(.+)"\s*,?\s*$')
_MARKUP = re.compile(r"[{}\[\]<>]|https?://|\bjson\b|\bemotion\s*:", re.IGNORECASE)
#: Frequent English words; a line of four words or more without any of them is not English.
_ENGLISH = frozenset(
    ["the", "a", "an", "i", "you", "he", "she", "we", "they", "it", "me", "my", "your", "our", "his", "her", "their", "this", "that", "these", "is", "are", "was", "were", "be", "been", "am", "to", "of", "in", "on", "at", "for", "with", "and", "or", "but", "not", "no", "yes", "so", "do", "does", "did", "have", "has", "had", "can", "could", "will", "would", "should", "just", "what", "why", "how", "when", "where", "who", "there", "here", "all", "get", "go", "got", "let", "don't", "i'm", "it's", "you're", "that's"])
_NON_LATIN = re.compile(r"[^\x00-\x7F\u00C0-\u024F\u2018\u2019\u201C\u201D\u2014\u2013\u2026]")


@dataclass(frozen=True)
class Item:
    """One line as parsed from an LLM answer: its text and the label it carried (None: the item had none)."""

    text: str
    label: str | None


def extract_items(raw: str) -> list[Item]:
    """Every line an answer holds, leniently: JSON (list, object or objects anywhere), else text lines."""
    body = re.sub(r"```(?:json)?", "", raw).strip()
    for candidate in (body, body[body.find("["): body.rfind("]") + 1] if "[" in body else ""):
        try:
            data = json.loads(candidate)
        except (ValueError, TypeError):
            continue
        items = _items_of(data)
        if items:
            return items
    objs = []
    for m in _OBJECT.finditer(body):
        try:
            objs.append(json.loads(m.group(0)))
        except ValueError:
            continue
    # objects cut by the token limit or missing a brace still have complete "emotion": ..., "text": ... pairs
    pairs = [Item(json.loads(f'"{m.group(2)}"'), json.loads(f'"{m.group(1)}"')) for m in _PAIR.finditer(body)]
    if objs or pairs:
        items = _items_of(objs)
        return items if len(items) >= len(pairs) else pairs
    out = []
    for line in body.splitlines():
        if not line.strip():
            continue
        m = _QUOTED.match(line)
        if m:
            out.append(Item(m.group(1), None))
            continue
        m = _LABELLED_LINE.match(line)
        if m and len(m.group(1)) <= 14:
            out.append(Item(m.group(2), m.group(1)))
            continue
        m = _LISTED_LINE.match(line)
        if m:
            out.append(Item(m.group(1).strip().strip(",").strip('"'), None))
    return out


def _items_of(data: Any) -> list[Item]:
    if isinstance(data, dict):
        for key in ("lines", "utterances", "items", "data"):
            if isinstance(data.get(key), list):
                return _items_of(data[key])
        data = [data]
    if not isinstance(data, list):
        return []
    out = []
    for x in data:
        if isinstance(x, str):
            out.append(Item(x, None))
        elif isinstance(x, dict):
            text = next((x[k] for k in _TEXT_KEYS if isinstance(x.get(k), str)), None)
            label = next((x[k] for k in _LABEL_KEYS if isinstance(x.get(k), str)), None)
            if text is not None:
                out.append(Item(text, label))
    return out


def normalise(text: str) -> str:
    """The deduplication key: lower case, letters, digits and apostrophes, single spaces."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def clean_text(text: str) -> str:
    return " ".join(text.strip().strip('"').strip().split())


def check_item(item: Item, requested: str, desc: CorpusDescription, labels: LabelSet) -> tuple[str | None, str]:
    """(reason for rejecting, or None; the cleaned text). The label must map to the requested class."""
    text = clean_text(item.text)
    if item.label is not None:
        mapped = labels.parse(item.label)
        if mapped is None and item.label.strip().lower() in re.findall(r"[a-z-]+", adjective(requested)):
            mapped = requested  # the word the prompt used for the class ("calm" in "neutral (calm, ...)")
        if mapped is None or mapped not in desc.emotions:
            return f"unknown label {item.label!r} (classes: {', '.join(desc.emotions)})", text
        if mapped != requested:
            return f"label {item.label!r} is not the requested {requested!r}", text
    if not text:
        return "empty text", text
    words = text.split()
    u = desc.utterances
    if len(words) < u.min_words:
        return f"too short ({len(words)} words < {u.min_words})", text
    if len(words) > u.max_words:
        return f"too long ({len(words)} words > {u.max_words})", text
    if _MARKUP.search(text):
        return "markup or prompt echo", text
    letters = [c for c in text if c.isalpha()]
    if not letters or _NON_LATIN.search(text) or sum(c.isascii() for c in letters) < 0.95 * len(letters):
        return "not English", text
    if len(words) >= 4 and not any(normalise(w) in _ENGLISH for w in words):
        return "not English", text
    if len(words) >= 8 and len({normalise(w) for w in words}) < 0.5 * len(words):
        return "repetitive", text
    examples = {normalise(x) for lines in (*desc.examples.values(), *DEFAULT_EXAMPLES.values()) for x in lines}
    if normalise(text) in examples:
        return "copies a prompt example", text
    return None, text


# ------------------------------------------------------------------------------------------------ generation


@dataclass
class GenerationConfig:
    n_utterances: int = 200  # the balanced corpus's size (fewer when the budget or the calls run out)
    per_call: int = 5
    temperature: float = 0.8
    max_tokens: int = 200
    seed: int = 0
    max_calls_factor: float = 4.0  # calls per class at most: factor x (class target / per_call)
    max_minutes: float | None = None  # LLM time budget of the corpus (cached calls count with their own time)


@dataclass
class GenerationResult:
    utterances: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)


def _call_seed(seed: int, emotion: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{emotion}/{index}".encode()).digest()[:4], "little")


def _prompt_key(messages: list[dict[str, str]], cfg: GenerationConfig) -> str:
    blob = json.dumps([messages, cfg.temperature, cfg.max_tokens], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_cache(path: Path, backend_name: str) -> dict[tuple[str, int, str], dict[str, Any]]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:  # a line cut by a kill mid-write: that call is simply made again
                continue
            if r.get("backend") == backend_name:
                out[(r["emotion"], int(r["index"]), r["prompt"])] = r
    return out


def _balanced_size(desc: CorpusDescription, available: dict[str, int], total: int) -> int:
    """The largest size <= total whose per-class targets (each at least 1) the accepted lines can fill."""
    for n in range(total, 0, -1):
        if all(1 <= t <= available.get(e, 0) for e, t in desc.targets(n).items()):
            return n
    return 0


def generate_utterances(desc: CorpusDescription, backend, out_dir: str | Path, cfg: GenerationConfig | None = None,
                        progress: bool = True) -> GenerationResult:
    """Write (or complete) the LLM-written corpus text of ``desc`` in ``out_dir``; see the module docstring."""
    from tqdm import tqdm

    cfg = cfg or GenerationConfig()
    if cfg.n_utterances < len(desc.emotions):
        raise EmoslmError(f"n_utterances {cfg.n_utterances} is below the number of classes ({len(desc.emotions)})")
    if cfg.per_call < 1:
        raise EmoslmError(f"per_call must be >= 1, got {cfg.per_call}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = desc.label_set
    targets = desc.targets(cfg.n_utterances)
    max_calls = {e: max(4, math.ceil(cfg.max_calls_factor * t / cfg.per_call)) for e, t in targets.items()}
    cache_path = out / "generations.jsonl"
    cache = _read_cache(cache_path, backend.name)
    accepted: dict[str, list[dict[str, Any]]] = {e: [] for e in desc.emotions}
    seen: set[str] = set()
    rejected: list[dict[str, Any]] = []
    calls = {e: 0 for e in desc.emotions}
    n_new = n_cached = new_tokens = 0
    new_seconds = spent = 0.0
    stopped_by_budget = False
    bar = tqdm(total=cfg.n_utterances, desc="LLM utterances", unit="utt", disable=not progress)
    with cache_path.open("a") as f:
        if cache_path.stat().st_size and not cache_path.read_bytes().endswith(b"\n"):
            f.write("\n")  # a line cut by a kill mid-write: the next answer starts on a line of its own
        while True:
            open_classes = [e for e in desc.emotions if len(accepted[e]) < targets[e] and calls[e] < max_calls[e]]
            if not open_classes:
                break
            emotion = min(open_classes, key=lambda e: (len(accepted[e]) / targets[e], calls[e]))
            index = calls[emotion]
            messages = build_messages(desc, emotion, cfg.per_call, index)
            key = (emotion, index, _prompt_key(messages, cfg))
            rec = cache.get(key)
            if rec is None:
                if cfg.max_minutes is not None and spent > 60 * cfg.max_minutes:
                    stopped_by_budget = True
                    break
                _seed_backend(_call_seed(cfg.seed, emotion, index))
                ts = time.perf_counter()
                reply = backend.reply(messages, None, cfg.max_tokens, cfg.temperature)
                dt = time.perf_counter() - ts
                rec = {"emotion": emotion, "index": index, "prompt": key[2], "backend": backend.name,
                       "seed": _call_seed(cfg.seed, emotion, index), "raw": reply.text,
                       "completion_tokens": reply.completion_tokens, "seconds": dt}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                n_new += 1
                new_tokens += reply.completion_tokens
                new_seconds += dt
            else:
                n_cached += 1
            spent += float(rec.get("seconds", 0.0))
            calls[emotion] += 1
            call_id = f"{emotion}/{index:04d}"
            items = extract_items(rec["raw"])
            if not items:
                rejected.append({"call": call_id, "text": rec["raw"][:300], "label": None,
                                 "reason": "no line found in the answer"})
            for item in items:
                reason, text = check_item(item, emotion, desc, labels)
                if reason is None and normalise(text) in seen:
                    reason = "duplicate"
                if reason is None and len(accepted[emotion]) >= targets[emotion]:
                    reason = "class already full"
                if reason is not None:
                    rejected.append({"call": call_id, "text": text, "label": item.label, "reason": reason})
                    continue
                seen.add(normalise(text))
                accepted[emotion].append({"emotion": emotion, "text": text, "call": call_id})
                bar.update()
            bar.set_postfix(calls=sum(calls.values()), rejected=len(rejected))
    bar.close()

    available = {e: len(v) for e, v in accepted.items()}
    n = _balanced_size(desc, available, cfg.n_utterances)
    _write_jsonl(out / "rejected.jsonl", rejected)
    stats = {
        "description": desc.name, "backend": backend.name, "config": cfg.__dict__, "targets": targets,
        "accepted_per_class": available, "balanced_size": n, "calls": sum(calls.values()), "new_calls": n_new,
        "cached_calls": n_cached, "rejected": len(rejected),
        "rejection_reasons": dict(Counter(_reason_kind(r["reason"]) for r in rejected).most_common()),
        "new_call_seconds": round(new_seconds, 1), "llm_seconds": round(spent, 1),
        "tokens_per_second": round(new_tokens / new_seconds, 1) if new_seconds else None,
        "stopped_by_time_budget": stopped_by_budget,
    }
    if n == 0:
        (out / "generation.json").write_text(json.dumps(stats, indent=2))
        raise EmoslmError(f"the LLM wrote no usable utterance for some class ({available}); "
                          f"see the reasons in {out / 'rejected.jsonl'}")
    chosen = []
    for e, t in desc.targets(n).items():
        for i, u in enumerate(accepted[e][:t]):
            chosen.append({"id": f"{_slug(desc.name)}_{e}_{i:04d}", **u})
    stats["per_class"] = dict(Counter(u["emotion"] for u in chosen))
    _write_jsonl(out / "utterances.jsonl", chosen)
    (out / "generation.json").write_text(json.dumps(stats, indent=2))
    return GenerationResult(chosen, stats)


def _seed_backend(seed: int) -> None:
    """Sampling seed of an in-process backend (torch); remote backends draw their own."""
    import torch

    torch.manual_seed(seed)


def _reason_kind(reason: str) -> str:
    """The reason without its particulars (quoted values, parentheses), for counting."""
    return " ".join(re.sub(r"\s*\([^)]*\)", "", re.sub(r"'[^']*'", "", reason)).split())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "corpus"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def load_utterances(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "utterances.jsonl"
    if not path.is_file():
        raise EmoslmError(f"{path} is missing: generate the text first (emoslm synth from-description)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

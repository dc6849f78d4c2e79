"""LLM judge of emotional conversation replies: paper 002's Table IV (CS score and EGS score).

- **CS** (after LLaMA-Omni): ``content`` (does the reply address what the user said, in context) and ``style``
  (does its style suit the spoken conversation), integers 1-5.
- **EGS** (after Li et al.'s emotional chain-of-thought paper): ``C1`` content relevance, ``C2`` negative emotion
  avoidance, ``C3`` positive emotion display, ``C4`` positive impact, integers 0-10.

The prompts are versioned files in ``emoslm/assets/judge_prompts/<version>/`` (their README gives the sources);
the version is recorded in every result and is part of the cache key. The judge is any chat backend
(``emoslm.models.text_llm.load_backend``): the packaged SmolLM2-135M offline by default -- a weak judge whose
parse rate is reported with every table -- or an OpenAI-compatible endpoint (``OpenAIChatBackend``). Every
judge output is kept raw, cached in a resumable JSONL file (:class:`~emoslm.models.reply_cache.ReplyCache`),
and parsed leniently (a JSON object, else ``Content: 4``-style pairs); a score that cannot be read or lies
outside its range is NaN, and means are taken over the parsed scores. Table IV prints a judge's scores only
after it passed the sanity check of :mod:`emoslm.dual_info.judge_sanity` (a relevant reply ranked above an
irrelevant one on at least 80 % of pairs); the packaged SmolLM2 does not pass it.

Note: the service's chat backends add their own system sentence ("You are a kind, helpful voice assistant...")
after the judge's system message; the judge's instructions come first and the user message carries the task.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emoslm.assets import SHIPPED_ROOT
from emoslm.data.captions import styled_transcript
from emoslm.errors import EmoslmError
from emoslm.models.reply_cache import ReplyCache, request_key

PROMPTS_ROOT = SHIPPED_ROOT / "judge_prompts"

#: Score ranges by metric, per prompt.
CS_RANGES = {"content": (1.0, 5.0), "style": (1.0, 5.0)}
EGS_RANGES = {"C1": (0.0, 10.0), "C2": (0.0, 10.0), "C3": (0.0, 10.0), "C4": (0.0, 10.0)}
METRICS = (*CS_RANGES, *EGS_RANGES)

#: Names a judge may use for each metric (lower case; the first is the canonical key).
ALIASES = {
    "content": ("content", "content score"),
    "style": ("style", "style score"),
    "C1": ("c1", "content relevance", "content_relevance", "relevance"),
    "C2": ("c2", "negative emotion avoidance", "negative_emotion_avoidance"),
    "C3": ("c3", "positive emotion display", "positive_emotion_display"),
    "C4": ("c4", "positive impact", "positive_impact"),
}

#: A number that is not the start of a range ("1-5", "<0-10>": a judge echoing the answer form).
_NUMBER = r"(-?\d+(?:\.\d+)?)(?!\d|\.\d)(?!\s*[-\u2013]\s*\d)"


def load_prompts(version: str = "v1") -> dict[str, str]:
    """The prompt files of ``version``: ``system``, ``cs`` and ``egs``."""
    folder = PROMPTS_ROOT / version
    if not folder.is_dir():
        have = sorted(p.name for p in PROMPTS_ROOT.iterdir() if p.is_dir()) if PROMPTS_ROOT.is_dir() else []
        raise EmoslmError(f"no judge prompts version {version!r} (have {have}) in {PROMPTS_ROOT}")
    out = {}
    for name in ("system", "cs", "egs"):
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise EmoslmError(f"judge prompts {version}: {path.name} is missing")
        out[name] = path.read_text().strip()
    return out


def format_context(context: Sequence[Mapping[str, str]]) -> str:
    """Earlier turns as ``User: ...`` / ``Assistant: ...`` lines (system messages left out), or ``(none)``."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in context if m.get("role") in ("user", "assistant")]
    return "\n".join(lines) if lines else "(none)"


def fill(template: str, context: Sequence[Mapping[str, str]], user_turn: str, response: str) -> str:
    """The prompt with its placeholders replaced literally (the JSON braces of the answer form stay)."""
    return (template.replace("{context}", format_context(context)).replace("{user_turn}", user_turn)
            .replace("{response}", response))


def _in_range(value: Any, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if lo <= v <= hi and math.isfinite(v) else math.nan


def _json_objects(text: str) -> list[dict]:
    out = []
    for m in re.finditer(r"\{[^{}]*\}", text):
        blob = m.group(0)
        for candidate in (blob, blob.replace("'", '"')):
            try:
                obj = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
                break
    return out


def parse_scores(text: str, ranges: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Scores of ``ranges``' metrics read from a judge's output; NaN where missing or out of range.

    First a JSON object holding any of the metrics (keys matched through :data:`ALIASES`, case-insensitive),
    else ``name: value`` / ``name = value`` / ``name score: value/5`` anywhere in the text.
    """
    scores = {k: math.nan for k in ranges}
    for obj in _json_objects(text or ""):
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        found = False
        for metric, (lo, hi) in ranges.items():
            for alias in ALIASES.get(metric, (metric.lower(),)):
                if alias in lowered:
                    if isinstance(lowered[alias], str):  # "4" or "4/5"
                        m = re.match(r"\s*" + _NUMBER, lowered[alias])
                        value = m.group(1) if m else None
                    else:
                        value = lowered[alias]
                    scores[metric] = _in_range(value, lo, hi)
                    found = True
                    break
        if found:
            return scores
    for metric, (lo, hi) in ranges.items():
        for alias in ALIASES.get(metric, (metric.lower(),)):
            # the name, at most a few non-digit characters on the same line (": ", "** = ", " score: "), a number
            m = re.search(r"(?<![\w])" + re.escape(alias) + r"(?![\w])[^\d\n-]{0,12}?" + _NUMBER, text or "",
                          flags=re.IGNORECASE)
            if m:
                scores[metric] = _in_range(m.group(1), lo, hi)
                break
    return scores


class ProbabilityScorer:
    """Scores read from a local judge LLM's next-token probabilities, G-Eval style.

    The judge's answer is forced into the prompt's JSON form (``{"content": ``...); at each score the
    probabilities of the digit tokens within the metric's range are renormalised and the score is their
    expected value; the most likely score is written before the next key. A 135M model rarely writes
    parsable JSON on its own, but its score probabilities still exist: every judgement gets a number.
    Two-digit 10 is the probability of "1" times that of a following "0".
    """

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tok = tokenizer
        enc = lambda t: self.tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.spaced = all(len(enc(f" {d}")) == 1 for d in "0123456789")
        self.digit_ids = [enc(f" {d}" if self.spaced else str(d))[-1] for d in range(10)]
        self.zero_id = enc("0")[-1]  # the second digit of "10" (never spaced)
        self.enc = enc

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        if getattr(self.tok, "chat_template", None):
            return list(self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False))
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.enc(text)

    def _step(self, ids: list[int], past):
        import torch

        out = self.model(input_ids=torch.tensor([ids]), past_key_values=past, use_cache=True)
        return torch.softmax(out.logits[0, -1].float(), -1), out.past_key_values

    def scores(self, messages: list[dict[str, str]], ranges: Mapping[str, tuple[float, float]]
               ) -> tuple[dict[str, float], str]:
        """``({metric: expected score}, the forced JSON answer with the most likely scores)``."""
        import torch

        with torch.no_grad():
            probs, past = self._step(self._prompt_ids(messages), None)
            answer, out = "", {}
            for i, (name, (lo, hi)) in enumerate(ranges.items()):
                piece = ("{" if i == 0 else ", ") + json.dumps(name) + (":" if self.spaced else ": ")
                answer += piece
                probs, past = self._step(self.enc(piece), past)
                p = {d: float(probs[self.digit_ids[d]]) for d in range(10)}
                if hi >= 10:  # split the mass of "1" between 1 and 10
                    after_one, _ = self._step([self.digit_ids[1]], copy.deepcopy(past))
                    q = float(after_one[self.zero_id])
                    q = q / (q + float(after_one[self.enc(",")[-1]]) + float(after_one[self.enc("}")[-1]]) + 1e-12)
                    p[10], p[1] = p[1] * q, p[1] * (1 - q)
                support = {v: w for v, w in p.items() if lo <= v <= hi}
                total = sum(support.values())
                if total <= 0:
                    out[name] = math.nan
                    continue
                out[name] = sum(v * w for v, w in support.items()) / total
                best = max(support, key=support.get)
                written = (" " if self.spaced else "") + str(best)
                answer += written.strip() if not self.spaced else written
                probs, past = self._step(self.enc(str(best)) if not self.spaced else
                                         [self.digit_ids[best]] if best < 10 else
                                         [self.digit_ids[1], self.zero_id], past)
            return out, answer + "}"


class ReplyJudge(Protocol):
    """What Table IV and its sanity check (:mod:`emoslm.dual_info.judge_sanity`) need of a judge: :class:`Judge`,
    or any other scorer of a reply in its conversation."""

    name: str
    prompts_version: str
    local: bool  # runs on this machine: False for an endpoint

    def score(self, context: Sequence[Mapping[str, str]], user_turn: str, response: str) -> dict[str, Any]:
        """``{"content", "style", "C1".."C4"}`` (floats, NaN where unparsed)."""
        ...


class Judge:
    """Scores a reply in its conversation with an LLM (CS and EGS prompts of ``prompts_version``).

    ``cache``: a JSONL file for the judge's outputs (resumable; keyed by the full prompt, backend, token limit
    and prompt version), or None to keep them in memory only.
    """

    def __init__(self, backend, prompts_version: str = "v1", cache: str | Path | None = None,
                 max_tokens: int = 48, method: str = "auto"):
        self.backend = backend
        self.prompts_version = prompts_version
        self.prompts = load_prompts(prompts_version)
        self.cache = ReplyCache(cache)
        self.max_tokens = max_tokens
        local = hasattr(backend, "model") and hasattr(backend, "tokenizer")
        if method == "auto":
            method = "probability" if local else "generate"
        if method not in ("probability", "generate"):
            raise EmoslmError(f"judge method must be auto, probability or generate, got {method!r}")
        if method == "probability" and not local:
            raise EmoslmError("the probability judge needs a local model (an endpoint only returns text)")
        self.method = method
        self.local = local
        self.scorer = ProbabilityScorer(backend.model, backend.tokenizer) if method == "probability" else None

    @property
    def name(self) -> str:
        return f"{self.backend.name}, {self.method}"

    def ask(self, kind: str, context: Sequence[Mapping[str, str]], user_turn: str, response: str) -> str:
        """The judge's raw output for prompt ``kind`` (``cs`` or ``egs``)."""
        messages = [{"role": "system", "content": self.prompts["system"]},
                    {"role": "user", "content": fill(self.prompts[kind], context, user_turn, response)}]
        return self.cache.reply(self.backend, messages, self.max_tokens, 0.0,
                                judge_prompt=f"{self.prompts_version}/{kind}")["text"]

    def read(self, kind: str, context: Sequence[Mapping[str, str]], user_turn: str, response: str
             ) -> dict[str, Any]:
        """Probability method: the expected scores of prompt ``kind`` (cached like generated outputs)."""
        messages = [{"role": "system", "content": self.prompts["system"]},
                    {"role": "user", "content": fill(self.prompts[kind], context, user_turn, response)}]
        key = request_key(messages, self.backend.name, 0, 0.0, judge_prompt=f"{self.prompts_version}/{kind}",
                          method="probability")
        hit = self.cache.get(key)
        if hit is None:
            ranges = CS_RANGES if kind == "cs" else EGS_RANGES
            t0 = time.perf_counter()
            scores, text = self.scorer.scores(messages, ranges)
            dt = time.perf_counter() - t0
            self.cache.n_generated += 1
            self.cache.seconds_generating += dt
            hit = self.cache.put(key, {"backend": self.backend.name, "method": "probability",
                                       "judge_prompt": f"{self.prompts_version}/{kind}", "messages": messages,
                                       "scores": scores, "text": text, "seconds": round(dt, 3)})
        return hit

    def score(self, context: Sequence[Mapping[str, str]], user_turn: str, response: str) -> dict[str, Any]:
        """``{"content", "style", "C1".."C4"}`` (floats, NaN where unparsed) and ``raw`` (the two outputs)."""
        if self.method == "probability":
            cs, egs = (self.read(k, context, user_turn, response) for k in ("cs", "egs"))
            return {**cs["scores"], **egs["scores"], "raw": {"cs": cs["text"], "egs": egs["text"]}}
        raw_cs = self.ask("cs", context, user_turn, response)
        raw_egs = self.ask("egs", context, user_turn, response)
        return {**parse_scores(raw_cs, CS_RANGES), **parse_scores(raw_egs, EGS_RANGES),
                "raw": {"cs": raw_cs, "egs": raw_egs}}


def spoken_turn(ex: Mapping[str, Any]) -> str:
    """A conversation example's last user turn as the judge reads it: ``user_turn``, else the styled transcript of
    ``text`` and ``attrs``."""
    if ex.get("user_turn"):
        return ex["user_turn"]
    return styled_transcript(ex["text"], ex.get("attrs") or {})


def aggregate(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means over the parsed scores of each metric, ``n_parsed`` (examples with all six parsed), ``n`` and the
    parsed count of each metric."""
    out: dict[str, Any] = {}
    by_metric = {}
    for m in METRICS:
        vals = np.array([s[m] for s in scores], dtype=float)
        ok = ~np.isnan(vals)
        out[m] = float(vals[ok].mean()) if ok.any() else math.nan
        by_metric[m] = int(ok.sum())
    out["n_parsed"] = sum(all(not math.isnan(s[m]) for m in METRICS) for s in scores)
    out["n"] = len(scores)
    out["n_parsed_by_metric"] = by_metric
    return out


def judge_table(examples: Sequence[Mapping[str, Any]], responses: Mapping[str, Sequence[str]], judge: ReplyJudge,
                progress: bool = True) -> dict[str, dict[str, Any]]:
    """Table IV: for each system, the judge's mean scores of its responses to ``examples``.

    ``examples`` are conversation examples (``context`` and ``user_turn``, or ``text`` + ``attrs``, as written by
    :func:`emoslm.dual_info.conversations.build_conversations`); ``responses[system][i]`` answers ``examples[i]``.
    Each system's entry: the six means, ``n_parsed``, ``n``, ``n_parsed_by_metric``, ``judge``,
    ``prompts_version`` and ``per_example`` (each example's scores with the judge's raw outputs).
    """
    from tqdm import tqdm

    for name, rs in responses.items():
        if len(rs) != len(examples):
            raise EmoslmError(f"system {name!r} has {len(rs)} responses for {len(examples)} examples")
    table = {}
    total = len(examples) * len(responses)
    bar = tqdm(total=total, desc=f"judging ({judge.name})", unit="reply", disable=not progress)
    for name, rs in responses.items():
        per = []
        for ex, r in zip(examples, rs):
            per.append({"id": ex.get("id"), **judge.score(ex.get("context") or [], spoken_turn(ex), r)})
            bar.update(1)
        table[name] = {**aggregate(per), "judge": judge.name, "prompts_version": judge.prompts_version,
                       "per_example": per}
    bar.close()
    return table


def table_iv_markdown(table: Mapping[str, Mapping[str, Any]]) -> str:
    """Paper 002's Table IV as markdown: a judge row, then one row per system with the parsed counts."""
    first = next(iter(table.values()), {})
    lines = ["| Methods | Content | Style | C1 | C2 | C3 | C4 | parsed / n |",
             "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| *Judge: {first.get('judge', '?')} (prompts {first.get('prompts_version', '?')})* |" + " |" * 7]

    def cell(v: float) -> str:
        return "-" if v is None or math.isnan(v) else f"{v:.2f}"

    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(cell(row[m]) for m in METRICS)
                     + f" | {row['n_parsed']} / {row['n']} |")
    return "\n".join(lines)

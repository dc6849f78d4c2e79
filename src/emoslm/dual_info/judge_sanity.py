"""Judge sanity check: before Table IV prints a judge's scores, the judge must show it can tell a relevant reply
from an irrelevant one.

For ``n`` examples of the conversation data (one per conversation, drawn with a fixed seed), the relevant reply is
the example's own target (the frozen LLM's reply to that turn) and the irrelevant one the target of an example
from another conversation whose sentence and reply differ. Both are judged in the same context; a pair is a win
when the relevant reply's score is higher, a tie when equal, a loss when lower, and unparsed when either score
could not be read. The check is on the CS content score (how well the reply addresses what the user said): the
judge passes when it wins on at least :data:`JUDGE_PASS_RATE` of the pairs (ties, losses and unparsed pairs all
count against it). C1 (EGS content relevance) and the mean of all six metrics are counted too, for the record.

The packaged SmolLM2-135M ranks the relevant reply first about as often as a coin would
(``benchmarks/judge_sanity.py``), so offline Table IV reports no judge scores; a stronger judge
(``--judge openai --judge-base-url URL --judge-model NAME``) passes or fails on its own merit. There is no way to
skip the check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from emoslm.dual_info.judge import METRICS, ReplyJudge, judge_table, spoken_turn

#: the share of pairs on which a judge must score the relevant reply higher (content score) to be used
JUDGE_PASS_RATE = 0.80
#: pairs checked before a Table IV (each costs two judgements)
SANITY_PAIRS = 20
#: the score the check is decided on; the others are counted for the record
DECIDING_SCORE = "content"
COMPARED_SCORES = ("content", "C1", "mean of six")
OUTCOMES = ("win", "tie", "loss", "unparsed")


@dataclass(frozen=True)
class SanityPair:
    """One example's context and user turn with a relevant reply (its own) and an irrelevant one (another's)."""

    example_id: str
    context: list[dict[str, str]]
    user_turn: str
    relevant: str
    irrelevant: str


@dataclass
class SanityResult:
    """The check's outcome: counts on the deciding (content) score, every compared score's counts, parse counts
    and each pair's scores."""

    judge: str
    prompts_version: str
    local: bool
    wins: int
    ties: int
    losses: int
    unparsed: int
    n: int
    win_rate: float
    passed: bool
    pass_rate: float = JUDGE_PASS_RATE
    score: str = DECIDING_SCORE
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # compared score -> outcome -> count
    parsed: dict[str, int] = field(default_factory=dict)  # metric -> replies (of 2n) whose score was read
    pairs: list[dict[str, Any]] = field(default_factory=list)  # id, both replies, both replies' six scores

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def verdict(self) -> str:
        return verdict(self.to_dict())


def pick_pairs(examples: Sequence[Mapping[str, Any]], n: int = SANITY_PAIRS, seed: int = 0) -> list[SanityPair]:
    """Pairs for ``n`` examples of distinct conversations (fewer when the data has fewer conversations, or an
    example has no other conversation's reply that differs from its own)."""
    rng = np.random.default_rng(seed)
    by_conv: dict[str, list[Mapping[str, Any]]] = {}
    for ex in examples:
        by_conv.setdefault(ex["conversation_id"], []).append(ex)
    chosen = [by_conv[c][int(rng.integers(len(by_conv[c])))] for c in rng.permutation(sorted(by_conv))[:n]]
    pairs = []
    for ex in chosen:
        others = [o for o in examples if o["conversation_id"] != ex["conversation_id"] and o["text"] != ex["text"]
                  and o["response"] != ex["response"]]
        if not others:
            continue
        other = others[int(rng.integers(len(others)))]
        pairs.append(SanityPair(ex["id"], list(ex.get("context") or []), spoken_turn(ex), ex["response"],
                                other["response"]))
    return pairs


def overall(scores: Mapping[str, float]) -> float:
    """The six metrics on a common 0-1 scale (CS 1-5, EGS 0-10), averaged; NaN unless all six parsed."""
    return float(np.mean([(scores["content"] - 1) / 4, (scores["style"] - 1) / 4,
                          *(scores[c] / 10 for c in ("C1", "C2", "C3", "C4"))]))


def compare(relevant: float, irrelevant: float) -> str:
    """``win`` when the relevant reply scored higher, ``tie``, ``loss``, or ``unparsed`` when either is NaN."""
    if math.isnan(relevant) or math.isnan(irrelevant):
        return "unparsed"
    return "win" if relevant > irrelevant else "tie" if relevant == irrelevant else "loss"


def judge_sanity(judge: ReplyJudge, pairs: Sequence[SanityPair], pass_rate: float = JUDGE_PASS_RATE
                 ) -> SanityResult:
    """Judge both replies of every pair (through the judge's own cache, when it has one) and count how often the
    relevant one scores higher. No pairs: not passed."""
    counts = {s: dict.fromkeys(OUTCOMES, 0) for s in COMPARED_SCORES}
    parsed = dict.fromkeys(METRICS, 0)
    rows = []
    for pair in pairs:
        rel = judge.score(pair.context, pair.user_turn, pair.relevant)
        irr = judge.score(pair.context, pair.user_turn, pair.irrelevant)
        for s in (rel, irr):
            for m in METRICS:
                parsed[m] += not math.isnan(s[m])
        for m in ("content", "C1"):
            counts[m][compare(rel[m], irr[m])] += 1
        counts["mean of six"][compare(overall(rel), overall(irr))] += 1
        rows.append({"id": pair.example_id, "relevant": pair.relevant, "irrelevant": pair.irrelevant,
                     "relevant_scores": {m: rel[m] for m in METRICS},
                     "irrelevant_scores": {m: irr[m] for m in METRICS}})
    n = len(pairs)
    deciding = counts[DECIDING_SCORE]
    win_rate = deciding["win"] / n if n else math.nan
    return SanityResult(judge=judge.name, prompts_version=judge.prompts_version, local=judge.local,
                        wins=deciding["win"], ties=deciding["tie"], losses=deciding["loss"],
                        unparsed=deciding["unparsed"], n=n, win_rate=win_rate,
                        passed=bool(n) and win_rate >= pass_rate, pass_rate=pass_rate, outcomes=counts,
                        parsed=parsed, pairs=rows)


def verdict(check: Mapping[str, Any] | None) -> str:
    """One sentence on a check (:meth:`SanityResult.to_dict`, as kept in the results): whether its judge's scores
    may be reported, and why."""
    if check is None:  # results written before the check existed
        return "judge scores not reported: the judge was not sanity-checked"
    if not check["n"]:
        return (f"judge scores not reported: judge `{check['judge']}` could not be checked (the conversations "
                "give no pair of a relevant and an irrelevant reply)")
    need = f"needs >= {100 * check['pass_rate']:.0f} %"
    how = f"judge `{check['judge']}` ranked the relevant reply first on {check['wins']}/{check['n']} pairs"
    if check["passed"]:
        return f"judge sanity check passed: {how} ({need})"
    if check["local"]:
        return f"no capable judge available offline ({how}; {need})"
    return f"the judge failed its sanity check ({how}; {need})"


def checked_judge_table(examples: Sequence[Mapping[str, Any]], responses: Mapping[str, Sequence[str]],
                        judge: ReplyJudge, check: SanityResult, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Table IV's judge part: :func:`~emoslm.dual_info.judge.judge_table` when the judge passed ``check``; else
    each system's ``n`` and the judge's name only (a failed judge's scores are not computed, so none can be
    printed)."""
    if check.passed:
        return judge_table(examples, responses, judge, progress=progress)
    return {name: {"n": len(rs), "judge": judge.name, "prompts_version": judge.prompts_version}
            for name, rs in responses.items()}

"""One evaluation for every corpus (EmoBox-style): WA, UA, macro-F1, confusion matrix, and UA_spk.

Conventions, the same for every corpus and model:

- ``refs`` are class labels of the label set in use; a reference outside it is a data error (LabelError).
- ``preds`` may hold anything a model produced, including ``None`` (a generation that parsed to no label).
  A prediction outside the label set is *invalid*: it counts as wrong for WA, UA, UA_spk and as a false
  negative for F1, it is counted in ``n_invalid`` and it has its own column in the confusion matrix of
  :func:`evaluate`. It is never dropped.
- WA (weighted accuracy) is plain accuracy. UA (unweighted accuracy) is balanced accuracy: the mean of the
  per-class recalls over the classes present in the references.
- Macro-F1 averages per-class F1 over the label-set classes that occur in the references or among the
  (valid) predictions. A class absent from both has F1 = 0/0 and is left out (scikit-learn's default,
  ``labels=None``); a class predicted but never present scores F1 = 0, as does a class present but never
  predicted.
- UA_spk (paper 000, V-D) is the mean over speakers of each speaker's accuracy; its spread is reported as in
  paper 000's Table II: population standard deviation (ddof=0), median, max and min.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from emoslm.errors import LabelError
from emoslm.labels import LabelSet, get_label_set

#: Name of the confusion-matrix column that counts predictions outside the label set.
INVALID = "<invalid>"

Labels = LabelSet | str | Sequence[str]


# ------------------------------------------------------------------------------------------------ input


def _label_tuple(labels: Labels) -> tuple[str, ...]:
    """The ordered class labels: a LabelSet, a label set name ("ekman7") or a list of labels (used verbatim)."""
    if isinstance(labels, LabelSet):
        out = labels.labels
    elif isinstance(labels, str):
        out = get_label_set(labels).labels
    else:
        out = tuple(labels)
    if not out:
        raise ValueError("the label set is empty")
    if len(set(out)) != len(out):
        raise ValueError(f"the label set has repeated labels: {list(out)}")
    return tuple(out)


def _check_lengths(refs: Sequence[Any], preds: Sequence[Any], speakers: Sequence[Any] | None = None) -> None:
    if len(refs) != len(preds):
        raise ValueError(f"refs and preds differ in length: {len(refs)} != {len(preds)}")
    if speakers is not None and len(speakers) != len(refs):
        raise ValueError(f"speakers and refs differ in length: {len(speakers)} != {len(refs)}")
    if len(refs) == 0:
        raise ValueError("nothing to evaluate: refs is empty")


def _check_refs(refs: Sequence[Any], labels: tuple[str, ...]) -> None:
    known = set(labels)
    for i, r in enumerate(refs):
        if r not in known:
            raise LabelError(f"reference {i} is {r!r}, which is not in the label set ({', '.join(labels)})")


def _prepare(
    refs: Sequence[Any], preds: Sequence[Any], labels: Labels | None
) -> tuple[list[Any], list[Any], tuple[str, ...]]:
    """Check inputs; the label set defaults to the sorted labels of the references (then any prediction
    outside them is invalid)."""
    refs, preds = list(refs), list(preds)
    _check_lengths(refs, preds)
    labs = _label_tuple(labels) if labels is not None else tuple(sorted(set(refs)))
    _check_refs(refs, labs)
    return refs, preds, labs


# ------------------------------------------------------------------------------------------------ metrics


def weighted_accuracy(refs: Sequence[Any], preds: Sequence[Any]) -> float:
    """WA: the fraction of predictions equal to their reference (invalid predictions are simply wrong)."""
    refs, preds = list(refs), list(preds)
    _check_lengths(refs, preds)
    return sum(r == p for r, p in zip(refs, preds)) / len(refs)


def confusion_matrix(
    refs: Sequence[Any], preds: Sequence[Any], labels: Labels, *, invalid_column: bool = False
) -> np.ndarray:
    """Counts with rows = reference class and columns = predicted class, both in the label set's order.

    With ``invalid_column`` an extra last column counts predictions outside the label set (shape
    ``(n, n + 1)``), so every row sums to its class's support. Without it the matrix is ``(n, n)`` and an
    invalid prediction raises ValueError rather than disappearing from the counts.
    """
    refs, preds, labs = _prepare(refs, preds, labels)
    index = {lab: i for i, lab in enumerate(labs)}
    n = len(labs)
    cm = np.zeros((n, n + 1), dtype=np.int64)
    for r, p in zip(refs, preds):
        cm[index[r], index.get(p, n)] += 1
    if invalid_column:
        return cm
    if cm[:, n].any():
        bad = sorted({repr(p) for p in preds if p not in index})
        raise ValueError(
            f"{int(cm[:, n].sum())} predictions are outside the label set ({', '.join(bad[:5])}); "
            "pass invalid_column=True to count them in an extra column"
        )
    return cm[:, :n]


def _per_class(cm: np.ndarray, labels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Support, recall, precision and F1 of each class from an (n, n+1) confusion matrix.

    A ratio with a zero denominator is None (not 0): recall of a class absent from the references,
    precision of a class never predicted, F1 of a class absent from both.
    """
    n = len(labels)
    out: dict[str, dict[str, Any]] = {}
    for i, lab in enumerate(labels):
        tp = int(cm[i, i])
        support = int(cm[i, :].sum())          # includes invalid predictions: they are false negatives
        predicted = int(cm[:n, i].sum())       # valid predictions of this class
        fp, fn = predicted - tp, support - tp
        out[lab] = {
            "support": support,
            "predicted": predicted,
            "recall": tp / support if support else None,
            "precision": tp / predicted if predicted else None,
            # 2TP / (2TP + FP + FN): defined whenever the class occurs in refs or preds; 0 if TP = 0.
            "f1": 2 * tp / (2 * tp + fp + fn) if (support or predicted) else None,
        }
    return out


def unweighted_accuracy(refs: Sequence[Any], preds: Sequence[Any], labels: Labels | None = None) -> float:
    """UA (balanced accuracy): the mean of per-class recalls over the classes present in ``refs``.

    ``labels`` (default: the classes of ``refs``) only decides which references are legal; classes absent
    from the references do not enter the mean.
    """
    refs, preds, labs = _prepare(refs, preds, labels)
    per = _per_class(confusion_matrix(refs, preds, labs, invalid_column=True), labs)
    recalls = [c["recall"] for c in per.values() if c["recall"] is not None]
    return float(np.mean(recalls))


def macro_f1(refs: Sequence[Any], preds: Sequence[Any], labels: Labels | None = None) -> float:
    """Macro-F1 over the label-set classes present in ``refs`` or among the valid ``preds``.

    Per class F1 = 2TP / (2TP + FP + FN). A class predicted but never present, or present but never
    predicted, scores 0; a class absent from both is left out of the mean (its F1 is 0/0). Invalid
    predictions are false negatives of their reference class and false positives of no class.
    """
    refs, preds, labs = _prepare(refs, preds, labels)
    per = _per_class(confusion_matrix(refs, preds, labs, invalid_column=True), labs)
    f1s = [c["f1"] for c in per.values() if c["f1"] is not None]
    return float(np.mean(f1s))


@dataclass(frozen=True)
class SpeakerStats:
    """UA_spk and its spread over speakers (paper 000, Table II). ``std`` is the population std (ddof=0)."""

    mean: float
    std: float
    median: float
    max: float
    min: float
    n_speakers: int
    per_speaker: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "median": self.median, "max": self.max, "min": self.min,
                "n_speakers": self.n_speakers, "per_speaker": dict(self.per_speaker)}


def ua_spk(refs: Sequence[Any], preds: Sequence[Any], speakers: Sequence[Hashable]) -> SpeakerStats:
    """UA_spk: the mean over speakers of each speaker's accuracy (paper 000, V-D), with std (ddof=0),
    median, max and min of the per-speaker accuracies. Each speaker weighs the same, whatever its count."""
    refs, preds, speakers = list(refs), list(preds), list(speakers)
    _check_lengths(refs, preds, speakers)
    hits: dict[str, list[int]] = {}
    for r, p, s in zip(refs, preds, speakers):
        c = hits.setdefault(str(s), [0, 0])
        c[0] += r == p
        c[1] += 1
    per = {s: h / n for s, (h, n) in sorted(hits.items())}
    accs = np.array(list(per.values()), dtype=float)
    return SpeakerStats(
        mean=float(accs.mean()), std=float(accs.std(ddof=0)), median=float(statistics.median(accs.tolist())),
        max=float(accs.max()), min=float(accs.min()), n_speakers=len(per), per_speaker=per,
    )


# --------------------------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class EvalResult:
    """Every metric of one evaluation, with the split protocol that produced the test set.

    ``confusion`` has rows = reference class and columns = predicted class in ``labels`` order, plus a last
    column (:data:`INVALID`) counting predictions outside the label set.
    """

    labels: tuple[str, ...]
    n: int
    n_invalid: int
    wa: float
    ua: float
    macro_f1: float
    confusion: np.ndarray
    per_class: dict[str, dict[str, Any]]
    speakers: SpeakerStats
    protocol: dict[str, Any] | None = None

    @property
    def ua_spk(self) -> float:
        return self.speakers.mean

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (plain Python numbers, lists and strings)."""
        return {
            "n": self.n, "n_invalid": self.n_invalid, "wa": self.wa, "ua": self.ua, "macro_f1": self.macro_f1,
            "ua_spk": self.speakers.to_dict(),
            "labels": list(self.labels),
            "confusion": self.confusion.tolist(),
            "confusion_columns": [*self.labels, INVALID],
            "per_class": {k: dict(v) for k, v in self.per_class.items()},
            "protocol": self.protocol,
        }

    def to_markdown(self) -> str:
        """Summary, UA_spk spread, per-class scores and the confusion matrix as Markdown tables."""
        f = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731
        s = self.speakers
        lines = []
        if self.protocol:
            lines += [f"Protocol: `{json.dumps(self.protocol, sort_keys=True)}`", ""]
        lines += [
            "| n | invalid | WA | UA | macro-F1 | UA_spk | σ(UA_spk) | median | max | min | speakers |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {self.n} | {self.n_invalid} | {f(self.wa)} | {f(self.ua)} | {f(self.macro_f1)} | {f(s.mean)} "
            f"| {f(s.std)} | {f(s.median)} | {f(s.max)} | {f(s.min)} | {s.n_speakers} |",
            "",
            "| class | support | predicted | recall | precision | F1 |",
            "|---|---|---|---|---|---|",
        ]
        for lab, c in self.per_class.items():
            lines.append(f"| {lab} | {c['support']} | {c['predicted']} | {f(c['recall'])} | {f(c['precision'])} "
                         f"| {f(c['f1'])} |")
        cols = list(self.labels) + ([INVALID] if self.n_invalid else [])
        lines += ["", "| ref \\ pred | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for i, lab in enumerate(self.labels):
            row = self.confusion[i, : len(cols)]
            lines.append(f"| {lab} | " + " | ".join(str(int(x)) for x in row) + " |")
        return "\n".join(lines) + "\n"


def _protocol_dict(protocol: Any) -> dict[str, Any] | None:
    if protocol is None:
        return None
    if hasattr(protocol, "describe"):
        protocol = protocol.describe()
    if not isinstance(protocol, Mapping):
        raise TypeError(f"protocol must be a dict or have describe(), got {type(protocol).__name__}")
    protocol = dict(protocol)
    try:
        json.dumps(protocol)
    except TypeError as e:
        raise ValueError(f"protocol description is not JSON-serialisable: {e}") from None
    return protocol


def evaluate(
    refs: Sequence[Any],
    preds: Sequence[Any],
    speakers: Sequence[Hashable],
    labels: Labels,
    protocol: Mapping[str, Any] | Any | None = None,
) -> EvalResult:
    """Evaluate predictions against references: WA, UA, macro-F1, confusion matrix, per-class scores, UA_spk.

    ``labels`` is a LabelSet, a label set name or a list of labels; ``protocol`` a dict describing the split
    protocol (or an object with ``describe()``, e.g. a :class:`emoslm.data.splits.SplitProtocol`), stored
    with the result so a number always says which split produced it.
    """
    refs, preds, speakers = list(refs), list(preds), list(speakers)
    _check_lengths(refs, preds, speakers)
    refs, preds, labs = _prepare(refs, preds, labels)
    cm = confusion_matrix(refs, preds, labs, invalid_column=True)
    per = _per_class(cm, labs)
    return EvalResult(
        labels=labs,
        n=len(refs),
        n_invalid=int(cm[:, -1].sum()),
        wa=float(np.trace(cm[:, :-1]) / len(refs)),
        ua=float(np.mean([c["recall"] for c in per.values() if c["recall"] is not None])),
        macro_f1=float(np.mean([c["f1"] for c in per.values() if c["f1"] is not None])),
        confusion=cm,
        per_class=per,
        speakers=ua_spk(refs, preds, speakers),
        protocol=_protocol_dict(protocol),
    )

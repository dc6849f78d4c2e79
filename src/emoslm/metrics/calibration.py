"""Calibration of class probabilities: expected calibration error, reliability bins and temperature scaling.

- :func:`expected_calibration_error` is the top-label ECE of Guo et al. (2017): the predictions are put into
  ``n_bins`` equal-width bins of confidence (the largest probability; bin ``b`` holds confidences in
  ``(b/n, (b+1)/n]``, a confidence of exactly 0 goes to the first bin), and ECE is the mean over predictions of
  ``|accuracy(bin) - mean confidence(bin)|`` of their bin, i.e. the bins weighted by their sizes.
- :func:`fit_temperature` finds the one temperature ``T > 0`` that minimises the negative log-likelihood of
  ``softmax(scores / T)``. The scores may be logits or log-probabilities: dividing a row's log-softmax by ``T``
  gives the same softmax as dividing its logits (a per-row constant shifts both). The NLL is convex in ``1/T``,
  so a golden-section search on ``log T`` within bounds finds its minimum; it is deterministic.
- :func:`apply_temperature` gives the scaled probabilities. Scaling never changes the argmax (accuracy stays).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: The temperatures :func:`fit_temperature` searches between (a fit at a bound says the data want more).
TEMPERATURE_BOUNDS = (0.01, 100.0)


def _probs_and_labels(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be [N, C] with N >= 1 and C >= 2, got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must be [N] = [{p.shape[0]}], got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must be class indices in 0..{p.shape[1] - 1}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite")
    return p, y.astype(np.int64)


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ``b`` holds confidences in (b/n, (b+1)/n]; 0 goes to bin 0."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    return np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> list[dict[str, float]]:
    """The reliability diagram's bins: for each of ``n_bins`` equal-width confidence bins its bounds, the number
    of predictions in it, their mean confidence and their accuracy (both None for an empty bin)."""
    p, y = _probs_and_labels(probs, labels)
    conf = p.max(1)
    correct = p.argmax(1) == y
    idx = _bin_index(conf, n_bins)
    out = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": n,
                    "confidence": float(conf[sel].mean()) if n else None,
                    "accuracy": float(correct[sel].mean()) if n else None})
    return out


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Top-label ECE over ``n_bins`` equal-width confidence bins (0: the confidence matches the accuracy in
    every bin; at most 1)."""
    bins = reliability_bins(probs, labels, n_bins)
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / n)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] < 2:
        raise ValueError(f"scores must be [N, C] with N >= 1 and C >= 2, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (log-probabilities of 0 give -inf: clip them first)")
    return s


def apply_temperature(log_probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log_probs / temperature)`` [N, C] (logits work the same)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"the temperature must be a positive number, got {temperature!r}")
    return np.exp(_log_softmax(_scores(log_probs) / temperature))


def negative_log_likelihood(log_probs: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean ``-log softmax(log_probs / T)[label]``."""
    s = _scores(log_probs)
    _, y = _probs_and_labels(s, labels)
    return float(-_log_softmax(s / temperature)[np.arange(len(y)), y].mean())


def fit_temperature(log_probs: Any, labels: Any, bounds: Sequence[float] = TEMPERATURE_BOUNDS,
                    tol: float = 1e-6) -> float:
    """The temperature ``T`` in ``bounds`` minimising the NLL of ``softmax(log_probs / T)`` (golden-section search
    on ``log T``; the NLL is convex in ``1/T``, so the search finds its minimum). ``T > 1`` softens
    over-confident probabilities, ``T < 1`` sharpens under-confident ones."""
    s = _scores(log_probs)
    _, y = _probs_and_labels(s, labels)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-_log_softmax(s / math.exp(log_t))[rows, y].mean())

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))

"""Calibration metrics (emoslm.metrics.calibration): ECE on hand-checkable data, temperature scaling that recovers
the temperature the labels were drawn with."""

from __future__ import annotations

import numpy as np
import pytest

from emoslm.metrics import apply_temperature, expected_calibration_error, fit_temperature, reliability_bins
from emoslm.metrics.calibration import negative_log_likelihood


def _sample_labels(probs: np.ndarray, seed: int) -> np.ndarray:
    """One label per row drawn from that row's probabilities: the probabilities are then calibrated."""
    rng = np.random.default_rng(seed)
    cum = probs.cumsum(1)
    return (rng.random((len(probs), 1)) > cum).sum(1).clip(0, probs.shape[1] - 1)


def _logits(n: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2.0, (n, c))


def test_ece_by_hand():
    # four predictions at confidence 0.8 (bin (0.8-1/15, 0.8]); three right: |0.75 - 0.8| = 0.05
    probs = np.array([[0.8, 0.2]] * 4)
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == pytest.approx(0.05)
    # two bins of two: confidence 0.6 with accuracy 1/2, confidence 1.0 with accuracy 1 -> (0.1 * 2 + 0) / 4
    probs = np.array([[0.6, 0.4], [0.4, 0.6], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == pytest.approx(0.05)
    bins = reliability_bins(probs, [0, 0, 0, 1], n_bins=5)
    assert [b["count"] for b in bins] == [0, 0, 1 + 1, 0, 2]  # 0.6 lies in (0.4, 0.6]
    assert bins[2]["accuracy"] == 0.5 and bins[4]["confidence"] == 1.0 and bins[0]["accuracy"] is None


def test_labels_drawn_from_the_probabilities_are_calibrated():
    probs = apply_temperature(_logits(20000, 5, 0), 1.0)
    assert expected_calibration_error(probs, _sample_labels(probs, 1)) < 0.015


def test_over_confident_probabilities_get_a_temperature_above_one_and_a_smaller_ece():
    logits = _logits(5000, 4, 2)
    labels = _sample_labels(apply_temperature(logits, 1.0), 3)
    sharp = logits * 3  # the model's scores are three times too sure
    t = fit_temperature(sharp, labels)
    assert t > 1
    before = expected_calibration_error(apply_temperature(sharp, 1.0), labels)
    after = expected_calibration_error(apply_temperature(sharp, t), labels)
    assert before > 0.1 and after < before / 3
    assert negative_log_likelihood(sharp, labels, t) < negative_log_likelihood(sharp, labels)
    # scaling never changes the predicted class
    assert (apply_temperature(sharp, t).argmax(1) == sharp.argmax(1)).all()


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_t):
    logits = _logits(20000, 6, 4)
    labels = _sample_labels(apply_temperature(logits, true_t), 5)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)
    # log-probabilities give the same fit as logits
    log_probs = np.log(apply_temperature(logits, 1.0))
    assert fit_temperature(log_probs, labels) == pytest.approx(fit_temperature(logits, labels), rel=1e-4)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="labels must be class indices"):
        expected_calibration_error([[0.5, 0.5]], [2])
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        fit_temperature(np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="positive"):
        apply_temperature([[0.0, 1.0]], 0.0)
    with pytest.raises(ValueError, match="finite"):
        fit_temperature([[-np.inf, 0.0]], [1])

"""Metrics: SER (:mod:`emoslm.metrics.ser`: WA, UA, macro-F1, UA_spk, confusion), calibration
(:mod:`emoslm.metrics.calibration`: ECE, reliability bins, temperature scaling) and generated text
(:mod:`emoslm.metrics.text`: WER/CER, BLEU, SIM). The SER and calibration names are re-exported here."""

from emoslm.metrics.calibration import (
                                        TEMPERATURE_BOUNDS,
                                        apply_temperature,
                                        expected_calibration_error,
                                        fit_temperature,
                                        negative_log_likelihood,
                                        reliability_bins,
)

from emoslm.metrics.ser import (
                                INVALID,
                                EvalResult,
                                SpeakerStats,
                                confusion_matrix,
                                evaluate,
                                macro_f1,
                                ua_spk,
                                unweighted_accuracy,
                                weighted_accuracy,
)

__all__ = ["INVALID", "TEMPERATURE_BOUNDS", "EvalResult", "SpeakerStats", "apply_temperature", "confusion_matrix",
           "evaluate", "expected_calibration_error", "fit_temperature", "macro_f1", "negative_log_likelihood",
           "reliability_bins", "ua_spk", "unweighted_accuracy", "weighted_accuracy"]

"""Metrics: SER (:mod:`emoslm.metrics.ser`: WA, UA, macro-F1, UA_spk, confusion) and generated text
(:mod:`emoslm.metrics.text`: WER/CER, BLEU, SIM). The SER names are re-exported here."""

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

__all__ = ["INVALID", "EvalResult", "SpeakerStats", "confusion_matrix", "evaluate", "macro_f1", "ua_spk",
           "unweighted_accuracy", "weighted_accuracy"]

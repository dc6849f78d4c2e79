"""Personalised emotion recognition in use (paper 000): kept at ``emoslm.inference`` for users' code.

The implementation lives in :mod:`emoslm.personalization.inference`.
"""

from emoslm.personalization.inference import EmotionRecognizer, Prediction, SegmentPrediction, save_bundle

__all__ = ["EmotionRecognizer", "Prediction", "SegmentPrediction", "save_bundle"]

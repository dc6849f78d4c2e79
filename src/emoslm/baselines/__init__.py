"""Peers of the ICL speech LM that a user would otherwise pick, evaluated on the very same episodes."""

from emoslm.baselines.egemaps_peer import NORMS, EgemapsPeer, items_from_supervisions, normalise

__all__ = ["NORMS", "EgemapsPeer", "items_from_supervisions", "normalise"]

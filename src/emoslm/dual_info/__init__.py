"""Paper 002, the dual-information speech LM: a frozen encoder and LLM joined by a paralinguistic and a linguistic
adapter, trained in three stages with Equivalence Replacement Regularization.

- :mod:`~emoslm.dual_info.model`: the input layout (context, P-Embs, L-Embs, instruction) on the shared
  :class:`~emoslm.models.speech_llm.SpeechLLM`;
- :mod:`~emoslm.dual_info.tasks`, :mod:`~emoslm.dual_info.conversations`: attribute questions, ASR and the
  multi-turn conversations;
- :mod:`~emoslm.dual_info.recipe`: the three stages; :mod:`~emoslm.dual_info.evaluation`,
  :mod:`~emoslm.dual_info.judge`, :mod:`~emoslm.dual_info.judge_sanity` (the judge's check before Table IV):
  Tables I, III and IV;
- :mod:`~emoslm.dual_info.pipeline`: all of it end to end (``emoslm run dual_info``).
"""

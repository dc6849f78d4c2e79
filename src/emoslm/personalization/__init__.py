"""Paper 000, personalised speech emotion recognition by in-context learning.

- :mod:`~emoslm.personalization.model`: the input layout ``W (U_1 Z_1) ... (U_k Z_k) U_t`` on the shared
  :class:`~emoslm.models.speech_llm.SpeechLLM` (speech encoder outputs -> Q-Former -> LLM);
- :mod:`~emoslm.personalization.data`: utterances, cached encoder outputs and episodes for training;
- :mod:`~emoslm.personalization.classifier`, :mod:`~emoslm.personalization.speech_lm`: the recipes (classifier
  baselines and the speaker-relative encoder; the speech LM's stage 1 and MetaICL stage 2);
- :mod:`~emoslm.personalization.scoring`, :mod:`~emoslm.personalization.evaluation`,
  :mod:`~emoslm.personalization.egemaps_peer`, :mod:`~emoslm.personalization.report`: Tables II-IV, the eGeMAPS
  peer and the HTML report;
- :mod:`~emoslm.personalization.pipeline`: all of it end to end (``emoslm run personalization``, ``emoslm demo``);
- :mod:`~emoslm.personalization.inference`: :class:`EmotionRecognizer` (also importable as ``emoslm.inference``).
"""

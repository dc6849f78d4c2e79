"""Paper 003, E-chat: emotion-sensitive spoken dialogue.

- :mod:`~emoslm.echat.model`: the input layout (BOS, emotion embedding, speech embeddings, prompt) on the shared
  :class:`~emoslm.models.speech_llm.SpeechLLM`; layer-weighted speech and emotion embeddings;
- :mod:`~emoslm.echat.dialogue`: the dialogue dataset (question, response, emotion, question speech);
- :mod:`~emoslm.echat.recipe`: the two training stages;
- :mod:`~emoslm.echat.api`: :class:`EChat`, a trained model answering spoken questions;
- :mod:`~emoslm.echat.cascade`: the ASR + SER + LLM baseline;
- :mod:`~emoslm.echat.evaluation`: Tables 2 and 3 and the report;
- :mod:`~emoslm.echat.pipeline`: all of it end to end (``emoslm run echat``).
"""

from emoslm.echat.api import ChatTurn, EChat

__all__ = ["ChatTurn", "EChat"]

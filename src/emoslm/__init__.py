"""emoslm: emotion-aware speech language models.

The Python API mirrors the command line (``emoslm --help``). Heavy parts (torch models, TTS) are imported
lazily by the modules that need them, so ``import emoslm`` stays fast.
"""

__version__ = "0.1.0"

from emoslm.errors import (  # noqa: E402
    AudioError,
    CorpusError,
    EmoslmError,
    EpisodeError,
    LabelError,
    ManifestError,
)
from emoslm.labels import EKMAN7, LABEL_SETS, canonical_emotion, get_label_set  # noqa: E402

__all__ = [
    "__version__", "AudioError", "CorpusError", "EmoslmError", "EpisodeError", "LabelError", "ManifestError",
    "EKMAN7", "LABEL_SETS", "canonical_emotion", "get_label_set",
]

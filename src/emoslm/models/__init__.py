"""Neural models: speech encoder and SER classifiers, the Q-Former, adapters, LLM backbones and the SpeechLLM shell.

Torch is imported here; ``transformers``/``peft``/``tokenizers`` only when an LLM backbone is loaded.
"""

from emoslm.models.adapters import LayerWeighting, LinguisticAdapter, ParalinguisticAdapter
from emoslm.models.encoders import (
    ENCODER_PRESETS,
    AttentivePooling,
    EncoderOutput,
    FbankEncoderConfig,
    FbankTransformerEncoder,
    SERClassifier,
    SERClassifierConfig,
    SoftmaxHead,
    encoder_config,
    fbank_encoder,
    subsampled_lengths,
)
from emoslm.models.io import PretrainedMixin
from emoslm.models.llm import (
    LLM_PRESETS,
    Backbone,
    LLMSpec,
    build_tiny_tokenizer,
    load_backbone,
)
from emoslm.models.qformer import (
    QFORMER_PRESETS,
    QFormer,
    QFormerConfig,
    qformer,
    qformer_config,
)
from emoslm.models.speech_llm import SpeechLLM
from emoslm.threads import set_torch_threads

__all__ = [
    "ENCODER_PRESETS", "AttentivePooling", "EncoderOutput", "FbankEncoderConfig", "FbankTransformerEncoder",
    "SERClassifier", "SERClassifierConfig", "SoftmaxHead", "encoder_config", "fbank_encoder", "subsampled_lengths",
    "PretrainedMixin",
    "LLM_PRESETS", "Backbone", "LLMSpec", "build_tiny_tokenizer", "load_backbone",
    "QFORMER_PRESETS", "QFormer", "QFormerConfig", "qformer", "qformer_config",
    "LayerWeighting", "LinguisticAdapter", "ParalinguisticAdapter", "SpeechLLM",
    "set_torch_threads",
]

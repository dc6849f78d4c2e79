"""E-chat (paper 003): speech encoder -> two layer weightings -> connection module -> frozen LLM decoder.

- The speech encoder exposes all its hidden layers (:class:`SpeechEncoder`): the fbank transformer of this
  project, the packaged Whisper (tiny.en, base; :class:`WhisperSpeechEncoder`), or any ``transformers`` speech
  encoder that returns hidden states (Whisper, HuBERT, WavLM, ...) loaded from a local directory.
- Two learned softmax weightings over those layers (:class:`~emoslm.models.adapters.LayerWeighting`): one
  gives the speech embeddings, the other the emotion embeddings (Sec. 3.1).
- The connection module: frames stacked by ``stack``, a linear map, ``connector_layers`` (4) transformer
  encoder layers and a projection into the LLM's embedding space. The emotion embedding is the attentively
  pooled emotion-weighted hidden states projected to one LLM token; an auxiliary head classifies the same
  pooled vector. Its prediction is never fed to the LLM (Sec. 3.2).
- Optionally (``emotion_encoder``) a second, always frozen encoder feeds the emotion weighting instead of the
  speech encoder, e.g. an SER model's fbank encoder beside Whisper. Whisper's layers carry the words and little
  of how they were said: warmed up on the SER corpus, an emotion branch on them reaches about 53 % on its dev
  speakers, one on the SER encoder 83 % (chance 20 %; ``benchmarks/echat_emotion_probe.py``). So the emotion
  embedding comes from an encoder trained on emotion, as paper 002 gives its LLM a paralinguistic encoder beside
  the linguistic one. The paper's E-chat uses one encoder; ``emotion_encoder: null`` is that.
- LLM input: ``BOS, emotion embedding, speech embeddings, prompt`` (stage 1 leaves the emotion embedding out,
  as in Fig. 2), then the target text and EOS; the loss is on the target and EOS only.

Training stages (:meth:`EChatModel.set_stage`): stage 1 trains encoder + speech weighting + connector (the
encoder stays frozen with ``freeze_encoder``); stage 2 trains connector + emotion weighting, pooling, projection
and head, with encoder, speech weighting and LLM frozen. The LLM is always frozen. A frozen encoder's hidden
states can be kept per utterance during training (:class:`FrozenStatesCache`). Loss: :func:`mix_loss`,
``(1 - alpha) L_decoder + alpha L_emotion``.
What trains, the frozen parts' eval mode and the checkpoints are the shared
:class:`~emoslm.models.speech_llm.SpeechLLM`'s (``model.speech_llm``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emoslm.features import fbank
from emoslm.labels import get_label_set
from emoslm.models.adapters import LayerWeighting  # shared; re-exported
from emoslm.models.encoders import (
    AttentivePooling,
    FbankTransformerEncoder,
    encoder_config,
    lengths_to_mask,
)
from emoslm.models.io import config_from_dict, config_to_dict
from emoslm.models.llm import LLMSpec, load_backbone
from emoslm.models.speech_llm import SpeechLLM, checkpoint_config
from emoslm.models.whisper_convert import whisper_encoder_states, whisper_hf_dir

#: Prompts of paper 003 (Sec. 5.1).
ASR_PROMPT = "Transcribe the speech."
RESPONSE_PROMPT = "You are requested to provide a comforting response based on the emotion conveyed in this speech."

_CONNECTOR = ("in_proj", "connector", "out_proj")
_KIND = "an E-chat"  # what the checkpoint errors say a folder is not


def _stage_parts(stage: int, freeze_encoder: bool = False) -> tuple[str, ...]:
    """The parts that train in ``stage`` (1: ASR, 2: emotional-response SFT); the LLM never does, the encoder
    in stage 1 only, unless ``freeze_encoder``."""
    if stage == 1:
        return (*(() if freeze_encoder else ("encoder",)), "speech_weights", *_CONNECTOR)
    if stage == 2:
        return (*_CONNECTOR, "emotion_weights", "emotion_pool", "emotion_proj", "emotion_head")
    raise ValueError(f"stage must be 1 or 2, got {stage}")


def mix_loss(decoder_loss: torch.Tensor, emotion_loss: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """Eq. 1: ``(1 - alpha) * L_decoder + alpha * L_emotion`` (``alpha = 0``: the decoder loss alone)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0.0 or emotion_loss is None:
        if alpha and emotion_loss is None:
            raise ValueError("alpha > 0 needs an emotion loss (emotion labels in the batch)")
        return decoder_loss
    return (1.0 - alpha) * decoder_loss + alpha * emotion_loss


# ------------------------------------------------------------------------------------------------ encoders


class SpeechEncoder(nn.Module):
    """A speech encoder that returns all its hidden layers.

    ``spec`` rebuilds the same architecture with :func:`build_speech_encoder`. ``featurize(wave)`` turns one 16 kHz waveform into the encoder's input (computed once per utterance and
    cached by the recipes); ``forward(inputs)`` runs a batch of them and returns ``(hidden_states, mask)``:
    ``n_hidden_states`` tensors ``[B, T, d_model]`` and a ``[B, T]`` bool mask, True on valid frames.
    """

    n_hidden_states: int
    d_model: int
    spec: dict[str, Any]

    def featurize(self, wave: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, inputs: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError


def _pad(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Arrays ``[T_i, ...]`` -> float32 ``[B, T, ...]`` (zero padded) and lengths ``[B]``."""
    lengths = torch.tensor([a.shape[0] for a in arrays])
    out = torch.zeros((len(arrays), int(lengths.max()), *arrays[0].shape[1:]))
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return out, lengths


class FbankSpeechEncoder(SpeechEncoder):
    """This project's fbank transformer (:class:`FbankTransformerEncoder`): ``n_layers + 1`` hidden states.

    ``init``: a pretrained encoder directory (e.g. the demo's SER encoder) whose architecture and weights are
    used; otherwise ``preset`` with ``overrides``, randomly initialised.
    """

    def __init__(self, preset: str = "tiny", init: str | None = None, **overrides: Any):
        super().__init__()
        if init is not None:
            if overrides:
                raise ValueError(f"an encoder initialised from {init} takes its sizes from there, not {overrides}")
            self.net = FbankTransformerEncoder.from_pretrained(init)
        else:
            self.net = FbankTransformerEncoder(encoder_config(preset, **overrides))
        self.n_hidden_states = self.net.config.n_layers + 1
        self.d_model = self.net.config.d_model
        #: the architecture, without the init path: a saved E-chat model rebuilds its encoder from this
        self.spec = {"kind": "fbank", "preset": preset, **asdict(self.net.config)}

    def featurize(self, wave: np.ndarray) -> np.ndarray:
        return fbank(wave)

    def forward(self, inputs: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, lengths = _pad(inputs)
        dev = next(self.net.parameters()).device
        out = self.net(feats.to(dev), lengths.to(dev), output_hidden_states=True)
        return list(out.hidden_states or []), out.mask


class HFSpeechEncoder(SpeechEncoder):
    """A ``transformers`` speech encoder from a local directory (model + feature extractor files).

    Whisper-style models (log-mel ``input_features``) use their encoder. With ``pad_30s`` (the default) the
    log-mel is padded to Whisper's 30 s window and all its 1500 output frames are passed on (Whisper was trained
    attending to its padding); without it only the utterance's frames are encoded (2 log-mel frames per output
    frame, as ctranslate2 does for :class:`~emoslm.models.frozen_speech.WhisperCT2Encoder`): ~10x faster for
    a 3 s utterance, and a batch's padding is masked. wav2vec2-style models (HuBERT, WavLM, wav2vec 2.0:
    ``input_values``) are used whole, padding masked.
    """

    def __init__(self, path: str, pad_30s: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        p = Path(path).expanduser()
        if not (p / "config.json").is_file() or not (p / "preprocessor_config.json").is_file():
            raise FileNotFoundError(f"{p}: not a local transformers speech encoder directory (needs config.json and "
                                    "preprocessor_config.json; model hub ids are not looked up)")
        config = AutoConfig.from_pretrained(p, local_files_only=True)
        for name in ("layerdrop", "encoder_layerdrop"):  # a skipped layer would be missing from the hidden states
            if hasattr(config, name):
                setattr(config, name, 0.0)
        model = AutoModel.from_pretrained(p, config=config, local_files_only=True)
        self.extractor = AutoFeatureExtractor.from_pretrained(p, local_files_only=True)
        self.whisper = "input_features" in self.extractor.model_input_names
        if not pad_30s and not self.whisper:
            raise ValueError(f"{p}: pad_30s=False applies to Whisper encoders only")
        self.pad_30s = pad_30s
        self.net = model.get_encoder() if self.whisper else model
        # counted, not read from the config: models differ (WavLM returns no separate input embedding)
        with torch.no_grad():
            probe, _ = self.forward([self.featurize(np.zeros(16000, dtype=np.float32))])
        self.n_hidden_states = len(probe)
        self.d_model = int(probe[0].shape[-1])
        self.spec = {"kind": "hf", "path": str(p), **({} if pad_30s else {"pad_30s": False})}

    def featurize(self, wave: np.ndarray) -> np.ndarray:
        if self.whisper:  # [3000, n_mels]: frames first, so that utterances stack along time like fbank
            feats = self.extractor(wave, sampling_rate=16000, return_tensors="np")["input_features"][0].T
            if not self.pad_30s:  # the utterance's frames of the same log-mel, an even number (conv stride 2)
                feats = feats[: 2 * max(1, min(len(feats) // 2, len(wave) // 320))]
            return feats
        return self.extractor(wave, sampling_rate=16000, return_tensors="np")["input_values"][0]

    def forward(self, inputs: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        x, lengths = _pad(inputs)
        dev = next(self.net.parameters()).device
        if self.whisper and not self.pad_30s:
            states = whisper_encoder_states(self.net, x.transpose(1, 2).to(dev), lengths)
            mask = lengths_to_mask((lengths // 2).to(dev), states[0].shape[1])
            return [h.masked_fill(~mask[..., None], 0.0) for h in states], mask
        if self.whisper:
            out = self.net(x.transpose(1, 2).to(dev), output_hidden_states=True)
            n = out.hidden_states[0].shape[1]
            mask = torch.ones(len(inputs), n, dtype=torch.bool, device=dev)  # Whisper attends to its padding
        else:
            att = lengths_to_mask(lengths, x.shape[1]).long().to(dev)
            out = self.net(x.to(dev), attention_mask=att, output_hidden_states=True)
            n = out.hidden_states[0].shape[1]
            frames = self.net._get_feat_extract_output_lengths(lengths).clamp(max=n)
            mask = lengths_to_mask(frames.to(dev), n)
        return [h.masked_fill(~mask[..., None], 0.0) for h in out.hidden_states], mask


class WhisperSpeechEncoder(HFSpeechEncoder):
    """The packaged Whisper (``tiny.en``, ``base``) or a local CTranslate2 Whisper directory, with all its
    ``n_layers + 1`` hidden states: ctranslate2 exposes only the last, so the model is converted once to a
    ``transformers`` directory in the emoslm cache (:func:`~emoslm.models.whisper_convert.whisper_hf_dir`).
    ``pad_30s=False`` by default, like :class:`~emoslm.models.frozen_speech.WhisperCT2Encoder`."""

    def __init__(self, model: str = "tiny.en", pad_30s: bool = False):
        super().__init__(str(whisper_hf_dir(model)), pad_30s=pad_30s)
        #: the model's name, not the cache path: a saved E-chat model converts it again where it is missing
        self.spec = {"kind": "whisper", "model": model, "pad_30s": pad_30s}


def build_speech_encoder(spec: dict[str, Any]) -> SpeechEncoder:
    """``{"kind": "fbank", "preset": "tiny", ...overrides}``, ``{"kind": "whisper", "model": "tiny.en"|"base"|
    CT2_DIR, "pad_30s": False}`` or ``{"kind": "hf", "path": DIR, "pad_30s": True}``."""
    spec = dict(spec)
    kind = spec.pop("kind", "fbank")
    if kind == "fbank":
        return FbankSpeechEncoder(**spec)
    if kind == "whisper":
        return WhisperSpeechEncoder(**spec)
    if kind == "hf":
        return HFSpeechEncoder(**spec)
    raise ValueError(f"unknown speech encoder kind {kind!r} (fbank, whisper or hf)")


class FrozenStatesCache:
    """A frozen encoder's hidden states, per utterance, computed the first time the utterance is encoded.

    A training run meets each utterance many times (stage 2 on the demo data: 150 steps of 8 over 92 entries,
    ~13 times each; the valid split at every evaluation), and a frozen encoder (eval mode, no gradient) gives
    the same states every time, so each is computed once: a step then costs the connector and the LLM only.
    The key is the input array's identity: the recipe keeps its samples' arrays for the whole run, and the
    cache holds a reference to each, so an id is never reused. Each utterance's valid frames are kept apart
    from its batch (a batch's padding is masked, so they are those it gets alone, to float rounding); memory:
    ``n_hidden_states * frames * d_model`` floats per utterance (Whisper tiny.en, 3 s: ~1 MB).
    """

    def __init__(self) -> None:
        self._states: dict[int, tuple[np.ndarray, list[torch.Tensor]]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __call__(self, encode, inputs: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``encode(inputs) -> (hidden_states, mask)`` for the utterances not seen yet; all of ``inputs``'
        states, padded into a batch, and their mask."""
        missing = list({id(x): x for x in inputs if id(x) not in self._states}.values())
        if missing:
            with torch.no_grad():
                states, mask = encode(missing)
            for i, x in enumerate(missing):
                n = int(mask[i].sum())
                self._states[id(x)] = (x, [h[i, :n].detach().clone() for h in states])
        kept = [self._states[id(x)][1] for x in inputs]
        lengths = torch.tensor([k[0].shape[0] for k in kept])
        t = int(lengths.max())
        batch = [torch.stack([F.pad(k[layer], (0, 0, 0, t - k[layer].shape[0])) for k in kept])
                 for layer in range(len(kept[0]))]
        return batch, lengths_to_mask(lengths, t).to(batch[0].device)


# ------------------------------------------------------------------------------------------------- model


@dataclass(frozen=True, eq=False)
class DualInputs:
    """One utterance's inputs when the emotion branch has its own encoder: the speech encoder's and the emotion
    encoder's (:meth:`EChatModel.featurize`)."""

    speech: np.ndarray
    emotion: np.ndarray


@dataclass
class EChatConfig:
    """Sizes of :class:`EChatModel`. ``llm`` is an :class:`LLMSpec` as a dict; its mode is always ``frozen``."""

    encoder: dict = field(default_factory=lambda: {"kind": "fbank", "preset": "tiny"})
    llm: dict = field(default_factory=lambda: {"name": "smollm2"})
    label_set: str = "echat5"
    stack: int = 2
    d_connector: int = 256
    connector_layers: int = 4
    connector_heads: int = 4
    connector_ff: int = 1024
    dropout: float = 0.1
    max_new_tokens: int = 48
    freeze_encoder: bool = False  # stage 1 trains the encoder (the paper) unless set; stage 2 never does
    #: a second encoder spec (as ``encoder``) whose layers feed the emotion weighting instead of the speech
    #: encoder's, always frozen (e.g. {"kind": "fbank", "init": "runs/shipped_bundle/encoder"}); None: the paper's
    #: one encoder
    emotion_encoder: dict | None = None


@dataclass
class Sample:
    """One training example: encoder input, prompt, target text, and the emotion (index) when known. A sample
    without a target (an SER corpus's utterance, ``target=None``) trains the emotion branch only."""

    inputs: "np.ndarray | DualInputs"
    prompt: str
    target: str | None
    emotion: int | None = None


class EChatModel(nn.Module):
    """The E-chat model (paper 003, Fig. 2)."""

    #: the shared shell over this model's parts (attached in __init__, not a submodule: SpeechLLM.attach)
    speech_llm: SpeechLLM

    def __init__(self, cfg: EChatConfig):
        super().__init__()
        self.encoder = build_speech_encoder(cfg.encoder)
        #: the emotion branch's own encoder (frozen), or None: the speech encoder's layers feed both weightings
        self.emotion_encoder = build_speech_encoder(cfg.emotion_encoder) if cfg.emotion_encoder else None
        self.cfg = replace(cfg, encoder=self.encoder.spec,
                           emotion_encoder=self.emotion_encoder.spec if self.emotion_encoder else None)
        self.label_set = get_label_set(cfg.label_set)
        d, n_layers = self.encoder.d_model, self.encoder.n_hidden_states
        emo = self.emotion_encoder or self.encoder
        d_emo = emo.d_model
        self.speech_weights = LayerWeighting(n_layers)
        self.emotion_weights = LayerWeighting(emo.n_hidden_states)
        self.backbone = load_backbone(LLMSpec(**{**cfg.llm, "mode": "frozen"}))
        self.llm = self.backbone.model  # a registered submodule: its (frozen) weights are part of the state
        hidden = self.backbone.hidden_size
        self.in_proj = nn.Linear(d * cfg.stack, cfg.d_connector)
        self.connector = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(cfg.d_connector, cfg.connector_heads, cfg.connector_ff, cfg.dropout,
                                       batch_first=True, norm_first=True),
            cfg.connector_layers, enable_nested_tensor=False)
        self.out_proj = nn.Sequential(nn.LayerNorm(cfg.d_connector), nn.Linear(cfg.d_connector, hidden))
        self.emotion_pool = AttentivePooling(d_emo)
        self.emotion_proj = nn.Linear(d_emo, hidden)
        self.emotion_head = nn.Linear(d_emo, len(self.label_set))
        adapters = ("speech_weights", "emotion_weights", *_CONNECTOR, "emotion_pool", "emotion_proj", "emotion_head",
                    *(("emotion_encoder",) if self.emotion_encoder is not None else ()))
        SpeechLLM(self.backbone, {name: getattr(self, name) for name in adapters}, encoder=self.encoder).attach(self)
        #: set by the training recipe: a frozen encoder's hidden states, kept per utterance
        self.states_cache: FrozenStatesCache | None = None
        self.stage = 1
        self.set_stage(1)

    # ------------------------------------------------------------------------------------ stages

    def stage_modules(self, stage: int) -> list[nn.Module]:
        """The modules trained in ``stage`` (1: ASR, 2: emotional-response SFT)."""
        return [getattr(self, name) for name in _stage_parts(stage, self.cfg.freeze_encoder)]

    def set_stage(self, stage: int) -> "EChatModel":
        trained = _stage_parts(stage, self.cfg.freeze_encoder)
        self.speech_llm.set_trainable(**{name: name in trained for name in self.speech_llm.part_names})
        self.stage = stage
        return self.train(self.training)

    def train(self, mode: bool = True) -> "EChatModel":
        super().train(mode)
        self.speech_llm.train(mode)  # the frozen parts (always the LLM; the encoder in stage 2) in eval mode
        return self

    # ------------------------------------------------------------------------------------ encoding

    @property
    def device(self) -> torch.device:
        return self.speech_llm.device

    def featurize(self, wave: np.ndarray) -> "np.ndarray | DualInputs":
        """One 16 kHz waveform -> this model's input: the speech encoder's, and the emotion encoder's beside it
        when there is one."""
        if self.emotion_encoder is None:
            return self.encoder.featurize(wave)
        return DualInputs(self.encoder.featurize(wave), self.emotion_encoder.featurize(wave))

    def _hidden_states(self, inputs: Sequence) -> tuple[list[torch.Tensor], torch.Tensor]:
        inputs = [x.speech if isinstance(x, DualInputs) else x for x in inputs]
        if self.states_cache is not None and not self.speech_llm.trainable["encoder"]:
            return self.states_cache(self.speech_llm.encode, inputs)
        return self.speech_llm.encode(inputs)  # without autograd when frozen (stage 2)

    def _emotion_encoder_states(self, inputs: Sequence) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The emotion encoder's hidden states (frozen: no autograd; kept in the states cache, whose keys are the
        input arrays, distinct from the speech encoder's)."""
        if any(not isinstance(x, DualInputs) for x in inputs):
            raise ValueError("this E-chat has an emotion encoder: its inputs come from EChatModel.featurize")
        feats = [x.emotion for x in inputs]

        def run(batch):
            with torch.no_grad():
                return self.emotion_encoder(batch)

        return self.states_cache(run, feats) if self.states_cache is not None else run(feats)

    def encode_emotion(self, inputs: Sequence) -> torch.Tensor:
        """The pooled emotion vectors ``[B, d]`` alone (the emotion branch; the connector does not run)."""
        if self.emotion_encoder is not None:
            hidden_states, mask = self._emotion_encoder_states(inputs)
        else:
            hidden_states, mask = self._hidden_states(inputs)
        return self.emotion_pool(self.emotion_weights(hidden_states), mask)

    def encode(self, inputs: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Speech embeddings ``[B, N, H]`` with their mask ``[B, N]``, and pooled emotion vectors ``[B, d]``."""
        hidden_states, mask = self._hidden_states(inputs)
        speech = self.speech_weights(hidden_states)
        if self.emotion_encoder is not None:
            emotion = self.encode_emotion(inputs)
        else:
            emotion = self.emotion_pool(self.emotion_weights(hidden_states), mask)
        k = self.cfg.stack
        b, t, d = speech.shape
        t_k = -(-t // k)
        speech = F.pad(speech, (0, 0, 0, t_k * k - t)).reshape(b, t_k, d * k)
        lengths = -(-mask.sum(1) // k)
        smask = lengths_to_mask(lengths, t_k)
        x = self.connector(self.in_proj(speech), src_key_padding_mask=~smask)
        return self.out_proj(x), smask, emotion

    def emotion_logits(self, emotion: torch.Tensor) -> torch.Tensor:
        return self.emotion_head(emotion)

    def _ids(self, text: str) -> list[int]:
        return list(self.backbone.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix(self, speech: torch.Tensor, emotion: torch.Tensor | None, prompt: str) -> torch.Tensor:
        """``BOS, [emotion embedding], speech embeddings, prompt`` as embeddings ``[L, H]``."""
        tok = self.backbone.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        parts = [self.speech_llm.embed([bos])]
        if emotion is not None:
            parts.append(self.emotion_proj(emotion)[None])
        parts += [speech, self.speech_llm.embed(self._ids(" " + prompt + "\n"))]
        return torch.cat(parts)

    def _use_emotion(self) -> bool:
        return self.stage == 2

    # ------------------------------------------------------------------------------------ training

    def loss(self, batch: Sequence[Sample], alpha: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 1 over a batch; info: the two losses and the emotion head's accuracy."""
        speech, smask, emotion = self.encode([s.inputs for s in batch])
        eos = self.backbone.tokenizer.eos_token_id
        seqs, labels = [], []
        for i, s in enumerate(batch):
            if s.target is None:  # an emotion-only sample: no response to predict
                continue
            prefix = self._prefix(speech[i][smask[i]], emotion[i] if self._use_emotion() else None, s.prompt)
            target = torch.tensor(self._ids(s.target) + [eos], device=self.device)
            seqs.append(torch.cat([prefix, self.speech_llm.embed(target)]))
            labels.append(torch.cat([torch.full((prefix.shape[0],), -100, device=self.device), target]))
        if seqs:
            n = max(x.shape[0] for x in seqs)
            embeds = torch.stack([F.pad(x, (0, 0, 0, n - x.shape[0])) for x in seqs])
            att = torch.stack([torch.arange(n, device=self.device) < x.shape[0] for x in seqs]).long()
            lab = torch.stack([F.pad(y, (0, n - y.shape[0]), value=-100) for y in labels])
            decoder_loss = self.llm(inputs_embeds=embeds, attention_mask=att, labels=lab).loss
        else:
            decoder_loss = emotion.sum() * 0.0  # keeps the graph: no response in this batch
        info = {"decoder_loss": float(decoder_loss.detach())}
        emotion_loss = None
        known = [i for i, s in enumerate(batch) if s.emotion is not None]
        if known and alpha > 0:
            logits = self.emotion_logits(emotion[known])
            target_emo = torch.tensor([batch[i].emotion for i in known], device=self.device)
            emotion_loss = F.cross_entropy(logits, target_emo)
            info["emotion_loss"] = float(emotion_loss.detach())
            info["emotion_acc"] = float((logits.argmax(-1) == target_emo).float().mean())
        return mix_loss(decoder_loss, emotion_loss, alpha), info

    # ------------------------------------------------------------------------------------ inference

    @torch.no_grad()
    def generate(self, inputs: Sequence[np.ndarray], prompt: str, max_new_tokens: int | None = None
                 ) -> list[tuple[str, str]]:
        """``(recognised emotion, text)`` for each utterance (greedy decoding, one utterance at a time)."""
        speech, smask, emotion = self.encode(inputs)
        probs = torch.softmax(self.emotion_logits(emotion), -1)
        tok = self.backbone.tokenizer
        out = []
        for i in range(len(inputs)):
            prefix = self._prefix(speech[i][smask[i]], emotion[i] if self._use_emotion() else None, prompt)[None]
            ids = self.llm.generate(inputs_embeds=prefix, attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long),
                                    max_new_tokens=max_new_tokens or self.cfg.max_new_tokens, do_sample=False,
                                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            text = tok.decode(ids[0], skip_special_tokens=True).strip()
            out.append((self.label_set.labels[int(probs[i].argmax())], text))
        return out

    # ------------------------------------------------------------------------------------ checkpoints

    def save_pretrained(self, path: str | Path) -> Path:
        """Every weight except a pretrained LLM's (the frozen encoder too: stage 1 trained it), and the stage."""
        return self.speech_llm.save_pretrained(
            path, {"_class": "EChatModel", "_stage": self.stage, **config_to_dict(self.cfg)})

    def load_weights(self, path: str | Path) -> "EChatModel":
        """Load a checkpoint's weights into this model (the LLM's may be absent: they are the package's)."""
        self.speech_llm.load_weights(path, _KIND)
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "EChatModel":
        """The model a checkpoint folder holds, at its stage, on ``map_location``, in eval mode."""
        raw = checkpoint_config(path, _KIND)
        model = cls(config_from_dict(EChatConfig, raw)).load_weights(path)
        model.set_stage(int(raw.get("_stage", 2)))
        return model.to(map_location).eval()

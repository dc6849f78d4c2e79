"""The speech encoder of paper 000 (Sec. III-A, V-C) and the SER classifiers built on it.

:class:`FbankTransformerEncoder` (Eq. 1): 80 log-mel filterbanks -> two (Conv1d, ReLU, MaxPool stride 2)
blocks -> linear to ``d_model`` -> sinusoidal positions -> pre-LN transformer encoder blocks.

- The 80 mel bins are the *channels* of a ``Conv1d`` over time (kernel 3, padding 1, so the convolution keeps
  the length); each max-pool (kernel 2, stride 2, floor mode) halves it. A ``T``-frame input therefore gives
  exactly ``T' = floor(floor(T / 2) / 2) = T // 4`` frames (10 ms shift -> 40 ms), and inputs shorter than
  4 frames are rejected. Conv1d rather than Conv2d: it treats the filterbank as a feature vector per frame
  (as the Q-Former and attentive pooling do later) and costs ~4x less than an ESPnet-style Conv2d stem.
- Padding never leaks into valid frames: frames past each utterance's length are zeroed before every
  convolution (so a padded utterance sees the same zero padding as when it is alone), floor-mode pooling
  only combines frames that are both inside the utterance, and the transformer blocks get a key padding
  mask. Outputs at padded frames are set to zero.

:class:`SERClassifier` is the classifier model of paper 000 (Eq. 1-3) with its four baselines (Sec. V-B):

- ``Scratch``: ``enroll_mode="none"``, everything trained;
- ``Pretrained``: ``enroll_mode="none"``, encoder loaded and frozen (:meth:`SERClassifier.freeze_encoder`);
- ``Personalized_N`` (Triantafyllopoulos et al. 2021, deep speaker conditioning): ``enroll_mode="neutral"``,
  one (or ``n_enroll``) neutral utterance(s) of the target speaker. The head sees
  ``[h_t, mean_e h_e, h_t - mean_e h_e]``: the speaker's neutral reference and the target's offset from it.
- ``Personalized_A`` (Triantafyllopoulos & Schuller 2024): ``enroll_mode="all"``, one utterance of each
  emotion in label order. The head sees ``[h_t, h_e1..h_eN, h_t - h_e1..h_t - h_eN]``: since position i is
  always emotion i, the head can compare the target with the speaker's own rendering of every emotion.

Target and enrollment utterances go through the same encoder and pooling (shared weights), so a frozen
pretrained encoder serves all of them; only pooling and head are new parameters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from emoslm.models.io import PretrainedMixin

SUBSAMPLING = 4  # two max-pools of stride 2


@dataclass
class FbankEncoderConfig:
    """Sizes of :class:`FbankTransformerEncoder`. ``conv_channels=None`` means ``d_model``."""

    n_mels: int = 80
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    d_ff: int = 2048
    dropout: float = 0.1
    conv_channels: int | None = None

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")


#: Named sizes. ``paper``: paper 000, Sec. V-C (d 512, 6 blocks, 8 heads, ffn 2048); ``tiny``: for tests and
#: CPU smoke runs.
ENCODER_PRESETS: dict[str, FbankEncoderConfig] = {
    "paper": FbankEncoderConfig(d_model=512, n_layers=6, n_heads=8, d_ff=2048, conv_channels=512),
    "tiny": FbankEncoderConfig(d_model=128, n_layers=2, n_heads=4, d_ff=256, conv_channels=128),
}


def encoder_config(preset: str = "tiny", **overrides) -> FbankEncoderConfig:
    """A preset's :class:`FbankEncoderConfig` with some fields replaced."""
    if preset not in ENCODER_PRESETS:
        raise ValueError(f"unknown encoder preset {preset!r}; known: {', '.join(ENCODER_PRESETS)}")
    return dataclasses.replace(ENCODER_PRESETS[preset], **overrides)


def fbank_encoder(preset: str = "tiny", **overrides) -> "FbankTransformerEncoder":
    """Builder: ``fbank_encoder("paper")``, ``fbank_encoder("tiny", n_layers=4)``."""
    return FbankTransformerEncoder(encoder_config(preset, **overrides))


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frame counts after the two stride-2 max-pools: ``T // 4`` (floor at each halving, same thing)."""
    return torch.div(torch.div(lengths, 2, rounding_mode="floor"), 2, rounding_mode="floor")


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``[B, max_len]`` bool mask, True on valid frames."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def sinusoidal_positions(n: int, d: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The ``[n, d]`` sine/cosine position table of Vaswani et al. (2017)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv[: d // 2])
    return table.to(dtype)


@dataclass
class EncoderOutput:
    """Output of :class:`FbankTransformerEncoder`.

    ``hidden`` [B, T', d] (final LayerNorm applied, zero on padded frames), ``lengths`` [B] frames after
    subsampling, ``mask`` [B, T'] True on valid frames, and when requested ``hidden_states``: the input
    embedding followed by every block's output, ``n_layers + 1`` tensors; as in HF models the last one is
    ``hidden`` (after the final norm).
    """

    hidden: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    hidden_states: list[torch.Tensor] | None = None


class FbankTransformerEncoder(PretrainedMixin, nn.Module):
    """Conv subsampling (x1/4) + pre-LN transformer encoder over log-mel filterbanks (paper 000, Eq. 1)."""

    config_class: ClassVar[type] = FbankEncoderConfig

    def __init__(self, config: FbankEncoderConfig):
        super().__init__()
        self.config = config
        c = config.conv_channels or config.d_model
        self.conv1 = nn.Conv1d(config.n_mels, c, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c, c, kernel_size=3, padding=1)
        self.pool = nn.MaxPool1d(kernel_size=2, stride=2)
        self.proj = nn.Linear(c, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.d_model, config.n_heads, config.d_ff, config.dropout, batch_first=True, norm_first=True
            )
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)

    @property
    def d_model(self) -> int:
        return self.config.d_model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, output_hidden_states: bool = False) -> EncoderOutput:
        """``feats`` [B, T, n_mels] float, ``lengths`` [B] long (frames, each >= 4)."""
        if feats.dim() != 3 or feats.shape[-1] != self.config.n_mels:
            raise ValueError(f"feats must be [B, T, {self.config.n_mels}], got {tuple(feats.shape)}")
        lengths = lengths.to(device=feats.device, dtype=torch.long)
        if lengths.shape != feats.shape[:1]:
            raise ValueError(f"lengths must be [B={feats.shape[0]}], got {tuple(lengths.shape)}")
        if int(lengths.min()) < SUBSAMPLING or int(lengths.max()) > feats.shape[1]:
            raise ValueError(
                f"lengths must be in [{SUBSAMPLING}, T={feats.shape[1]}] frames, got {lengths.tolist()}"
            )

        x = feats.transpose(1, 2)  # [B, n_mels, T]: mel bins are channels
        x = x * lengths_to_mask(lengths, x.shape[-1])[:, None, :]
        x = self.pool(F.relu(self.conv1(x)))
        half = torch.div(lengths, 2, rounding_mode="floor")
        x = x * lengths_to_mask(half, x.shape[-1])[:, None, :]
        x = self.pool(F.relu(self.conv2(x)))
        out_lengths = subsampled_lengths(lengths)
        mask = lengths_to_mask(out_lengths, x.shape[-1])

        x = self.proj(x.transpose(1, 2))
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        x = self.dropout(x)
        hidden_states = [x] if output_hidden_states else None
        pad = ~mask
        for i, layer in enumerate(self.layers):
            x = layer(x, src_key_padding_mask=pad)
            if hidden_states is not None and i < len(self.layers) - 1:
                hidden_states.append(x.masked_fill(pad[..., None], 0.0))
        x = self.norm(x).masked_fill(pad[..., None], 0.0)
        if hidden_states is not None:
            hidden_states[0] = hidden_states[0].masked_fill(pad[..., None], 0.0)
            hidden_states.append(x)
        return EncoderOutput(hidden=x, lengths=out_lengths, mask=mask, hidden_states=hidden_states)


class AttentivePooling(nn.Module):
    """Masked attentive pooling (paper 000, Eq. 2): ``h = sum_t softmax_t(w^T tanh(W H_t + b)) H_t``."""

    def __init__(self, d: int, d_attention: int | None = None):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(d, d_attention or d), nn.Tanh(), nn.Linear(d_attention or d, 1))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden`` [B, T, d], ``mask`` [B, T] True on valid frames -> [B, d]."""
        scores = self.score(hidden).squeeze(-1)  # [B, T]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
            hidden = hidden.masked_fill(~mask[..., None], 0.0)  # 0 * NaN padding would still be NaN
        weights = torch.softmax(scores, dim=-1)
        return torch.einsum("bt,btd->bd", weights, hidden)


class SoftmaxHead(nn.Module):
    """The output layer of Eq. 3: a linear map to class logits (softmax is left to the loss / caller)."""

    def __init__(self, d: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(d, n_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)


ENROLL_MODES = ("none", "neutral", "all", "unlabeled")


@dataclass
class SERClassifierConfig:
    """Config of :class:`SERClassifier`.

    ``n_enroll`` is the number of enrollment utterances per target: 0 for ``none``, any number >= 1 of neutral
    utterances for ``neutral`` (default 1, paper 000's Personalized_N), one per class in label order for
    ``all`` (default and only valid value: ``n_classes``), any number >= 1 of utterances of any (unknown) emotion
    for ``unlabeled`` (default 7: the speaker-relative encoder pre-training of the classifier recipe).
    """

    encoder: FbankEncoderConfig = field(default_factory=FbankEncoderConfig)
    n_classes: int = 7
    enroll_mode: str = "none"
    n_enroll: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = FbankEncoderConfig(**self.encoder)
        if self.enroll_mode not in ENROLL_MODES:
            raise ValueError(f"enroll_mode must be one of {ENROLL_MODES}, got {self.enroll_mode!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")
        default = {"none": 0, "neutral": 1, "all": self.n_classes, "unlabeled": 7}[self.enroll_mode]
        if self.n_enroll is None:
            self.n_enroll = default
        if self.enroll_mode == "none" and self.n_enroll != 0:
            raise ValueError("enroll_mode='none' takes no enrollment utterances (n_enroll=0)")
        if self.enroll_mode in ("neutral", "unlabeled") and self.n_enroll < 1:
            raise ValueError(f"enroll_mode={self.enroll_mode!r} needs n_enroll >= 1, got {self.n_enroll}")
        if self.enroll_mode == "all" and self.n_enroll != self.n_classes:
            raise ValueError(f"enroll_mode='all' takes one utterance per class: n_enroll must be {self.n_classes}")

    @property
    def head_inputs(self) -> int:
        """How many d-dim vectors are concatenated for the head."""
        return {"none": 1, "neutral": 3, "unlabeled": 3, "all": 1 + 2 * int(self.n_enroll or 0)}[self.enroll_mode]


class SERClassifier(PretrainedMixin, nn.Module):
    """Encoder + attentive pooling + softmax head (paper 000, Eq. 1-3), optionally speaker-conditioned."""

    config_class: ClassVar[type] = SERClassifierConfig

    def __init__(self, config: SERClassifierConfig):
        super().__init__()
        self.config = config
        d = config.encoder.d_model
        self.encoder = FbankTransformerEncoder(config.encoder)
        self.pooling = AttentivePooling(d)
        self.head = SoftmaxHead(config.head_inputs * d, config.n_classes)
        self._encoder_frozen = False

    @classmethod
    def from_encoder(cls, encoder: FbankTransformerEncoder, n_classes: int, enroll_mode: str = "none",
                     n_enroll: int | None = None, freeze: bool = True) -> "SERClassifier":
        """The Pretrained / Personalized variants: a classifier around a copy of a (pretrained) encoder."""
        config = SERClassifierConfig(dataclasses.replace(encoder.config), n_classes, enroll_mode, n_enroll)
        model = cls(config)
        model.encoder.load_state_dict(encoder.state_dict())
        if freeze:
            model.freeze_encoder()
        return model

    def freeze_encoder(self) -> None:
        """Fix the encoder (paper 000's Pretrained model): no gradients, and kept in eval mode (no dropout)."""
        self._encoder_frozen = True
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> "SERClassifier":
        super().train(mode)
        if self._encoder_frozen:
            self.encoder.eval()
        return self

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pooled utterance embeddings ``[B, d]``."""
        out = self.encoder(feats, lengths)
        return self.pooling(out.hidden, out.mask)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, enroll_feats: torch.Tensor | None = None,
                enroll_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``[B, n_classes]``.

        ``feats`` [B, T, n_mels], ``lengths`` [B]; for ``neutral``/``all``: ``enroll_feats`` [B, N, T_e, n_mels]
        and ``enroll_lengths`` [B, N], the N enrollment utterances of each target's speaker (``all``: utterance
        i has emotion i of the label set).
        """
        h_t = self.encode(feats, lengths)
        mode = self.config.enroll_mode
        if mode == "none":
            if enroll_feats is not None:
                raise ValueError("this classifier has enroll_mode='none' but enrollment utterances were given")
            return self.head(h_t)
        if enroll_feats is None or enroll_lengths is None:
            raise ValueError(f"enroll_mode={mode!r} needs enroll_feats [B, N, T, n_mels] and enroll_lengths [B, N]")
        if enroll_feats.dim() != 4 or enroll_lengths.shape != enroll_feats.shape[:2]:
            raise ValueError(
                f"enroll_feats must be [B, N, T, n_mels] with enroll_lengths [B, N], got "
                f"{tuple(enroll_feats.shape)} and {tuple(enroll_lengths.shape)}"
            )
        b, n = enroll_feats.shape[:2]
        if b != h_t.shape[0]:
            raise ValueError(f"{b} enrollment sets for {h_t.shape[0]} targets")
        if mode == "all" and n != self.config.n_enroll:
            raise ValueError(f"enroll_mode='all' needs one utterance per class ({self.config.n_enroll}), got {n}")
        h_e = self.encode(enroll_feats.flatten(0, 1), enroll_lengths.flatten()).view(b, n, -1)  # [B, N, d]
        if mode in ("neutral", "unlabeled"):
            return self.relative_logits(h_t, h_e.mean(dim=1))
        z = torch.cat([h_t, h_e.flatten(1), (h_t[:, None, :] - h_e).flatten(1)], dim=-1)
        return self.head(z)

    def relative_logits(self, h_t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Head over a target embedding and a reference (mean of the speaker's enrollment embeddings)."""
        return self.head(torch.cat([h_t, ref, h_t - ref], dim=-1))

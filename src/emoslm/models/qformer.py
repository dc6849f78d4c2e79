"""The Q-Former conversion module of paper 000 (Eq. 8, Sec. V-C): speech frames -> a fixed number of vectors.

``n_queries`` learned query vectors go through ``n_layers`` transformer *decoder* blocks (self-attention
among the queries, cross-attention to the encoder frames, feed-forward) with **no causal mask**: every query
sees every other query. Padded encoder frames are excluded with ``memory_key_padding_mask`` (and zeroed
first, so even non-finite padding cannot leak). Pre-LN blocks with a final LayerNorm, as in the encoder.
The output ``U`` [B, n_queries, d_model] is mapped to the LLM's embedding size by the speech LM, not here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from emoslm.models.io import PretrainedMixin


@dataclass
class QFormerConfig:
    n_queries: int = 150
    d_model: int = 512
    n_layers: int = 2
    n_heads: int = 8
    d_ff: int = 2048
    dropout: float = 0.1
    d_encoder: int = 512

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")


#: ``paper``: paper 000, Sec. V-C (150 queries, d 512, 2 blocks, 8 heads, ffn 2048); ``tiny``: tests / CPU.
QFORMER_PRESETS: dict[str, QFormerConfig] = {
    "paper": QFormerConfig(n_queries=150, d_model=512, n_layers=2, n_heads=8, d_ff=2048, d_encoder=512),
    "tiny": QFormerConfig(n_queries=4, d_model=128, n_layers=2, n_heads=4, d_ff=256, d_encoder=128),
}


def qformer_config(preset: str = "tiny", **overrides) -> QFormerConfig:
    if preset not in QFORMER_PRESETS:
        raise ValueError(f"unknown Q-Former preset {preset!r}; known: {', '.join(QFORMER_PRESETS)}")
    return dataclasses.replace(QFORMER_PRESETS[preset], **overrides)


def qformer(preset: str = "tiny", **overrides) -> "QFormer":
    """Builder: ``qformer("paper")``, ``qformer("tiny", n_queries=8)``."""
    return QFormer(qformer_config(preset, **overrides))


class QFormer(PretrainedMixin, nn.Module):
    """``U = QFormer(Q, H)``: learned queries cross-attending to encoder frames, non-causal (paper 000, Eq. 8)."""

    config_class: ClassVar[type] = QFormerConfig

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.config = config
        self.queries = nn.Parameter(torch.randn(config.n_queries, config.d_model) * 0.02)
        self.input_proj = (
            nn.Linear(config.d_encoder, config.d_model) if config.d_encoder != config.d_model else nn.Identity()
        )
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                config.d_model, config.n_heads, config.d_ff, config.dropout, batch_first=True, norm_first=True
            )
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden`` [B, T, d_encoder], ``mask`` [B, T] True on valid frames (None: all valid)
        -> ``U`` [B, n_queries, d_model]."""
        if hidden.dim() != 3 or hidden.shape[-1] != self.config.d_encoder:
            raise ValueError(f"hidden must be [B, T, {self.config.d_encoder}], got {tuple(hidden.shape)}")
        pad = None
        if mask is not None:
            if mask.shape != hidden.shape[:2]:
                raise ValueError(f"mask must be {tuple(hidden.shape[:2])}, got {tuple(mask.shape)}")
            if not bool(mask.any(dim=1).all()):
                raise ValueError("every utterance needs at least one valid frame")
            pad = ~mask.bool()
            hidden = hidden.masked_fill(pad[..., None], 0.0)
        memory = self.input_proj(hidden)
        x = self.queries.unsqueeze(0).expand(hidden.shape[0], -1, -1)
        for layer in self.layers:
            # No tgt_mask: the queries attend to each other without a causal mask.
            x = layer(x, memory, memory_key_padding_mask=pad)
        return self.norm(x)

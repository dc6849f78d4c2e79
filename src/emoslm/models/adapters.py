"""Adapters between a speech encoder's outputs and an LLM, shared by the speech LMs (:mod:`emoslm.models.speech_llm`).

- :class:`ParalinguisticAdapter` (paper 002, Eq. 4): one transformer layer over the encoder's frames, masked
  adaptive average pooling along time to a fixed number of vectors, and a linear projection to the LLM's input
  size: a fixed-length soft prompt ("P-Embs").
- :class:`LinguisticAdapter` (paper 002, Eq. 5): every ``k`` adjacent frames concatenated, then two linear
  layers with a ReLU between: one vector per ``k`` frames where the text embeddings would be ("L-Embs").
- :class:`LayerWeighting` (paper 003, Sec. 3.1): a learned softmax weighting of an encoder's hidden layers.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from emoslm.models.encoders import lengths_to_mask


class ParalinguisticAdapter(nn.Module):
    """Frames ``[B, T, d]`` + mask -> a fixed-length soft prompt ``[B, p_len, d_llm]`` (Eq. 4)."""

    def __init__(self, d_in: int, d_llm: int, p_len: int = 8, heads: int = 8, layers: int = 1, d_ff: int = 1024,
                 dropout: float = 0.1):
        super().__init__()
        if d_in % heads:
            raise ValueError(f"speech dim {d_in} is not divisible by {heads} heads")
        self.p_len = p_len
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_in, heads, d_ff, dropout, batch_first=True, norm_first=True),
            layers, enable_nested_tensor=False)
        self.proj = nn.Linear(d_in, d_llm)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.blocks(frames, src_key_padding_mask=~mask)
        lengths = mask.sum(1)
        # adaptive average pooling over each utterance's own frames (padding never enters a pool)
        pooled = [F.adaptive_avg_pool1d(x[i, : int(n)].T[None], self.p_len)[0].T for i, n in enumerate(lengths)]
        return self.proj(torch.stack(pooled))


class LinguisticAdapter(nn.Module):
    """Frames ``[B, T, d]`` + mask -> ``[B, ceil(T/k), d_llm]`` and its mask (Eq. 5)."""

    def __init__(self, d_in: int, d_llm: int, k: int = 5, hidden: int = 1024):
        super().__init__()
        self.k = k
        self.net = nn.Sequential(nn.Linear(d_in * k, hidden), nn.ReLU(), nn.Linear(hidden, d_llm))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = frames.shape
        k = self.k
        t_k = -(-t // k)
        x = frames.masked_fill(~mask[..., None], 0.0)  # a group's padded frames are zeros, whatever the batch
        x = F.pad(x, (0, 0, 0, t_k * k - t)).reshape(b, t_k, d * k)
        out_mask = lengths_to_mask(-(-mask.sum(1) // k), t_k)
        return self.net(x), out_mask


class LayerWeighting(nn.Module):
    """A learned softmax weighting of ``n`` layers: ``sum_l softmax(w)_l H_l`` (uniform at initialisation)."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_layers))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(hidden_states) != self.logits.numel():
            raise ValueError(f"expected {self.logits.numel()} hidden states, got {len(hidden_states)}")
        return torch.einsum("l,lbtd->btd", self.weights(), torch.stack(list(hidden_states)))

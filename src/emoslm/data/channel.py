"""Transmission channels: what a phone line, a codec, background noise or a microphone's level do to an utterance.

A model trained on clean 16 kHz audio answers differently for the same sentence heard over an 8 kHz phone line
or as a low-bitrate mp3. Training on channel-degraded copies of its utterances (paper 000's issue: "the same
utterance gets the same answer over a phone line") and measuring the answers per channel both need the same
degradations, defined here.

A :class:`Channel` is a chain of :class:`Stage` s applied in order (no stage: the clean channel):

- ``telephone``: the 8 kHz narrowband line: resampled to 8 kHz, band-passed (300-3400 Hz) and back to 16 kHz;
- ``codec``: encoded and decoded by the ``sox`` program: ``mp3`` (at 16 kHz, ``kbps`` 8-64), ``gsm`` (GSM 06.10
  full rate, 8 kHz), ``mu-law`` and ``a-law`` (G.711, 8 kHz), ``amr-nb`` (the mobile codec, 8 kHz, ``kbps`` one
  of :data:`AMR_NB_KBPS`). The codec's delay is removed, so frames stay aligned with the clean utterance;
- ``noise``: white or pink noise at ``snr_db`` below the utterance's power (the whole utterance, pauses included);
- ``gain``: a level change in dB, clipped to [-1, 1] like a fixed-point line.

:func:`apply_channel` keeps the length and is deterministic for a (channel, seed); numpy/scipy/soxr do everything
but the codecs, which go through sox (raw samples piped in and out, no temporary files).
:func:`sample_channels` draws random channels for training; :data:`EVAL_CHANNELS` are fixed ones for measuring.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from emoslm.audio import TARGET_SR, resample
from emoslm.errors import EmoslmError

KINDS = ("telephone", "codec", "noise", "gain")
CODECS = ("mp3", "gsm", "mu-law", "a-law", "amr-nb")
NOISE_COLORS = ("white", "pink")
#: AMR-NB's eight modes (kbit/s); sox takes the mode's index
AMR_NB_KBPS = (4.75, 5.15, 5.9, 6.7, 7.4, 7.95, 10.2, 12.2)
MP3_KBPS = (8, 16, 24, 32, 40, 48, 56, 64)  # MPEG-2 layer III bitrates at 16 kHz

#: sox's file type and sampling rate of each codec; the 8 kHz ones are resampled by sox on the way in and out
_CODEC_FORMATS = {"mp3": ("mp3", 16000), "gsm": ("gsm", 8000), "mu-law": ("ul", 8000), "a-law": ("al", 8000),
                  "amr-nb": ("amr-nb", 8000)}
#: headerless types: the decoder must be told the rate and channel count
_HEADERLESS = {"ul", "al"}
#: our raw samples, as sox reads and writes them on its pipes
_RAW = ["-t", "f32", "-r", str(TARGET_SR), "-c", "1"]


@dataclass(frozen=True)
class Stage:
    """One step of a channel; only the fields of its ``kind`` are used (see the module docs)."""

    kind: str
    codec: str = ""  # kind codec: one of CODECS
    kbps: float = 0.0  # kind codec: the mp3 bitrate, or an AMR-NB mode's rate; 0 for fixed-rate codecs
    snr_db: float = 0.0  # kind noise
    color: str = "white"  # kind noise: one of NOISE_COLORS
    gain_db: float = 0.0  # kind gain
    low_hz: float = 300.0  # kind telephone: the pass band
    high_hz: float = 3400.0

    def __post_init__(self) -> None:
        for name in ("kbps", "snr_db", "gain_db", "low_hz", "high_hz"):  # 16 and 16.0: one cache key
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.kind not in KINDS:
            raise EmoslmError(f"channel stage kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.kind == "codec":
            if self.codec not in CODECS:
                raise EmoslmError(f"codec must be one of {', '.join(CODECS)}; got {self.codec!r}")
            if self.codec == "mp3" and self.kbps not in MP3_KBPS:
                raise EmoslmError(f"mp3 at 16 kHz takes kbps in {MP3_KBPS}; got {self.kbps!r}")
            if self.codec == "amr-nb" and self.kbps not in AMR_NB_KBPS:
                raise EmoslmError(f"amr-nb takes kbps in {AMR_NB_KBPS}; got {self.kbps!r}")
            if self.codec not in ("mp3", "amr-nb") and self.kbps:
                raise EmoslmError(f"{self.codec} has a fixed bitrate: leave kbps at 0, got {self.kbps!r}")
        if self.kind == "noise" and (self.color not in NOISE_COLORS or not np.isfinite(self.snr_db)):
            raise EmoslmError(f"noise needs a finite snr_db and a color in {NOISE_COLORS}; got {self}")
        if self.kind == "gain" and not np.isfinite(self.gain_db):
            raise EmoslmError(f"gain_db must be finite; got {self.gain_db!r}")
        if self.kind == "telephone" and not 0 < self.low_hz < self.high_hz < 4000:
            raise EmoslmError(f"telephone band must satisfy 0 < low_hz < high_hz < 4000; got {self.low_hz}, "
                              f"{self.high_hz}")

    def describe(self) -> str:
        if self.kind == "telephone":
            return f"telephone {self.low_hz:g}-{self.high_hz:g} Hz"
        if self.kind == "codec":
            return self.codec + (f" {self.kbps:g} kbps" if self.kbps else "")
        if self.kind == "noise":
            return f"{self.color} noise {self.snr_db:.0f} dB SNR"
        return f"gain {self.gain_db:+g} dB"


def telephone(low_hz: float = 300.0, high_hz: float = 3400.0) -> Stage:
    return Stage("telephone", low_hz=low_hz, high_hz=high_hz)


def codec(name: str, kbps: float = 0.0) -> Stage:
    return Stage("codec", codec=name, kbps=kbps)


def noise(snr_db: float, color: str = "white") -> Stage:
    return Stage("noise", snr_db=float(snr_db), color=color)


def gain(gain_db: float) -> Stage:
    return Stage("gain", gain_db=float(gain_db))


@dataclass(frozen=True)
class Channel:
    """A transmission channel: its stages, applied in order (none: the clean channel)."""

    stages: tuple[Stage, ...] = ()

    @property
    def kind(self) -> str:
        """``clean``, or the stage kinds joined by ``+`` (``telephone+codec``)."""
        return "+".join(s.kind for s in self.stages) or "clean"

    @property
    def is_clean(self) -> bool:
        return not self.stages

    def describe(self) -> str:
        return ", ".join(s.describe() for s in self.stages) or "clean"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def key(self) -> str:
        """A short digest of the channel's parameters, for cache keys."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


CLEAN = Channel()
#: the narrowband line alone: what an 8 kHz recording keeps of a 16 kHz one
TELEPHONE_BAND = Channel((telephone(),))
#: a landline call: the narrowband line and G.711 mu-law
PHONE_LINE = Channel((telephone(), codec("mu-law")))
#: a mobile call: the narrowband line and AMR-NB at 7.4 kbps
MOBILE = Channel((telephone(), codec("amr-nb", 7.4)))
MP3_LOW = Channel((codec("mp3", 16),))
NOISY = Channel((noise(10, "pink"),))
QUIET = Channel((gain(-20),))

#: the fixed channels of the robustness measurement (emoslm.personalization.channel_eval), clean first
EVAL_CHANNELS: dict[str, Channel] = {
    "clean": CLEAN, "telephone_band": TELEPHONE_BAND, "phone_line": PHONE_LINE, "mobile_amr": MOBILE,
    "mp3_16kbps": MP3_LOW, "pink_noise_10db": NOISY, "quiet_-20db": QUIET,
}


# ------------------------------------------------------------------------------------------------ applying


def utterance_seed(seed: int, utterance_id: str) -> int:
    """The seed of one utterance's degradation: a stable function of a run's seed and the utterance id."""
    return zlib.crc32(f"{int(seed)}:{utterance_id}".encode())


def apply_channel(wave: np.ndarray, channel: Channel, seed: int = 0) -> np.ndarray:
    """``wave`` (16 kHz mono float32) through ``channel``: float32, 16 kHz, the same length, in [-1, 1].

    Deterministic for (channel, seed): the noise of stage ``i`` comes from ``default_rng([seed, i])``.
    Codec stages need the ``sox`` program; EmoslmError names what is missing or what sox said."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1:
        raise EmoslmError(f"apply_channel takes a mono waveform, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise EmoslmError("apply_channel: the waveform contains NaN or infinite samples")
    n = x.size
    if channel.is_clean or n == 0:
        return x.copy()
    for i, stage in enumerate(channel.stages):
        rng = np.random.default_rng([int(seed), i])
        x = _fit(_STAGES[stage.kind](x, stage, rng), n)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` trimmed or zero-padded at the end to ``n`` samples (resamplers and codecs round lengths)."""
    x = np.asarray(x, dtype=np.float32)
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


@functools.lru_cache(maxsize=16)
def _band_pass(low_hz: float, high_hz: float, sr: int) -> np.ndarray:
    from scipy.signal import butter

    return butter(4, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")


def _telephone(x: np.ndarray, stage: Stage, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import sosfiltfilt

    y = resample(x, TARGET_SR, 8000)
    sos = _band_pass(stage.low_hz, stage.high_hz, 8000)
    if y.size > 1:
        # zero-phase: the band-limited utterance's frames stay aligned with the clean one's
        y = sosfiltfilt(sos, y, padlen=min(3 * (2 * len(sos) + 1), y.size - 1))
    return resample(np.ascontiguousarray(y, dtype=np.float32), 8000, TARGET_SR)


def _noise(x: np.ndarray, stage: Stage, rng: np.random.Generator) -> np.ndarray:
    n = x.size
    if stage.color == "white":
        z = rng.standard_normal(n)
    else:  # pink: white noise shaped to a 1/f power spectrum
        spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
        f = np.arange(n // 2 + 1, dtype=np.float64)
        f[0] = 1.0
        spec /= np.sqrt(f)
        spec[0] = 0.0
        z = np.fft.irfft(spec, n)
    z_power = float(np.mean(np.square(z))) if n else 0.0
    x_power = float(np.mean(np.square(x, dtype=np.float64)))
    if z_power == 0.0 or x_power == 0.0:  # nothing to scale the noise to
        return x
    scale = np.sqrt(x_power / 10 ** (stage.snr_db / 10) / z_power)
    return (x + scale * z).astype(np.float32)


def _gain(x: np.ndarray, stage: Stage, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x * np.float32(10 ** (stage.gain_db / 20)), -1.0, 1.0)


def _codec(x: np.ndarray, stage: Stage, rng: np.random.Generator) -> np.ndarray:
    return transcode(x, stage.codec, stage.kbps)[_codec_delay(stage.codec, stage.kbps):]


_STAGES = {"telephone": _telephone, "codec": _codec, "noise": _noise, "gain": _gain}


# ------------------------------------------------------------------------------------------------ sox


def run_sox(args: list[str], data: bytes, what: str = "") -> bytes:
    """Run ``sox ARGS`` with ``data`` on stdin; its stdout. Repeatable (``-R``: fixed seeds) and without dither
    (``-D``), so a codec's output depends on its input only. EmoslmError when sox is missing or fails."""
    sox = shutil.which("sox")
    if sox is None:
        raise EmoslmError("codec channels (mp3, gsm, mu-law, a-law, amr-nb) need the sox program, which is not on "
                          "PATH: install it (apt-get install sox libsox-fmt-mp3)")
    cmd = [sox, "-R", "-D", "-V1", *args]
    proc = subprocess.run(cmd, input=data, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        hint = (" (sox lacks this format's handler: install libsox-fmt-all, or libsox-fmt-mp3 for mp3)"
                if "handler" in msg or "compiled without" in msg else "")
        raise EmoslmError(f"sox failed{f' ({what})' if what else ''}: {msg}{hint}; command: {' '.join(cmd)}")
    return proc.stdout


def transcode(x: np.ndarray, name: str, kbps: float = 0.0) -> np.ndarray:
    """16 kHz float32 samples encoded with codec ``name`` and decoded back to 16 kHz by sox, as sox returns them
    (with the codec's delay and padding: :func:`apply_channel` removes them)."""
    fmt, rate = _CODEC_FORMATS[name]
    opts = []
    if name == "mp3":
        opts = ["-C", f"{kbps:g}"]
    elif name == "amr-nb":
        opts = ["-C", str(AMR_NB_KBPS.index(kbps))]
    coded_as = ["-t", fmt, "-r", str(rate), "-c", "1"]
    coded = run_sox([*_RAW, "-", *opts, *coded_as, "-"], np.ascontiguousarray(x, dtype=np.float32).tobytes(),
                    what=f"encoding {name}")
    decode_as = coded_as if fmt in _HEADERLESS else ["-t", fmt]
    out = run_sox([*decode_as, "-", *_RAW, "-"], coded, what=f"decoding {name}")
    return np.frombuffer(out, dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _codec_delay(name: str, kbps: float) -> int:
    """The codec's delay in 16 kHz samples (mp3: the encoder's and decoder's, 1105 samples; AMR-NB: 80), measured
    once per process on a speech-band burst rather than hard-coded, since it depends on sox's codec libraries."""
    from scipy.signal import correlate, sosfiltfilt

    rng = np.random.default_rng(0)
    probe = np.zeros(TARGET_SR, dtype=np.float32)
    burst = sosfiltfilt(_band_pass(300.0, 3400.0, TARGET_SR), rng.standard_normal(TARGET_SR // 2))
    probe[TARGET_SR // 5: TARGET_SR // 5 + burst.size] = 0.3 * burst / np.max(np.abs(burst))
    out = transcode(probe, name, kbps)
    max_lag = 4000
    out = np.pad(out, (0, max(0, probe.size + max_lag - out.size)))[: probe.size + max_lag]
    return int(np.argmax(correlate(out, probe, mode="valid", method="fft")))


# ------------------------------------------------------------------------------------------------ sampling


def sample_channels(n: int, seed: int = 0) -> list[Channel]:
    """``n`` channels for training: the first clean, the others random chains of a level change, noise, and a
    narrowband line (with or without a phone codec) or a low-bitrate mp3. Channel ``i`` depends only on
    (seed, i), so a longer list starts with a shorter one's channels (and their feature caches are reused)."""
    channels = [CLEAN]
    for i in range(1, n):
        channels.append(_random_channel(np.random.default_rng([int(seed), i])))
    return channels[:max(n, 0)]


def _random_channel(rng: np.random.Generator) -> Channel:
    stages = []
    if rng.random() < 0.4:  # a quiet or hot microphone
        stages.append(gain(round(float(rng.uniform(-20, 6)), 1)))
    if rng.random() < 0.5:  # background noise enters before the line
        stages.append(noise(round(float(rng.uniform(5, 30)), 1), str(rng.choice(NOISE_COLORS))))
    line = rng.random()
    if line < 0.5:
        stages.append(telephone())
        if rng.random() < 0.7:
            name = str(rng.choice(["gsm", "mu-law", "a-law", "amr-nb"]))
            stages.append(codec(name, float(rng.choice(AMR_NB_KBPS)) if name == "amr-nb" else 0.0))
    elif line < 0.8:
        stages.append(codec("mp3", int(rng.choice([8, 16, 24, 32]))))
    if not stages:  # channel 0 is the only clean one
        stages.append(gain(round(float(rng.uniform(-20, 6)), 1)))
    return Channel(tuple(stages))

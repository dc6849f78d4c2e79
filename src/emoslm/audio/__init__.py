"""Audio loading and validation: soundfile in, 16 kHz mono float32 out, a clear error for anything unusable."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf

from emoslm.errors import AudioError

TARGET_SR = 16000

AudioInput = Union[str, Path, bytes, "io.IOBase"]


@dataclass(frozen=True)
class AudioLimits:
    """What counts as usable audio. Defaults suit utterance-level SER; the service may tighten them."""

    min_duration: float = 0.1
    max_duration: float = 60.0
    silence_rms: float = 1e-5  # below this the whole file is digital silence


DEFAULT_LIMITS = AudioLimits()

#: Header values beyond these are taken as corruption, not as audio (checked before anything is decoded).
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64
_READ_BLOCK = 1 << 18  # frames per read: memory follows the data actually there, not what a header claims


def _name(src: AudioInput) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    return getattr(src, "name", "<audio bytes>")


def _check_file(path: Path, name: object) -> None:
    try:
        if not path.is_file():
            raise AudioError(name, "no such file")
        size = path.stat().st_size
    except (OSError, ValueError) as e:  # e.g. a name too long for the file system
        raise AudioError(name, f"cannot access file ({e})") from None
    if size == 0:
        raise AudioError(name, "empty file (0 bytes)")


#: libsndfile's log line for a data chunk shorter than its header says ("data : 32000 (should be 15978)").
_SHORT_CHUNK = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
#: Data sizes streaming writers put in a header they cannot rewind to fill in: "unknown", not a promise.
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF - 1}


def _check_truncation(name: object, log: str) -> None:
    """libsndfile reads a truncated WAV/AIFF silently (it clamps to the bytes there); its log tells."""
    for declared, actual in _SHORT_CHUNK.findall(log or ""):
        declared, actual = int(declared), int(actual)
        if declared not in _UNKNOWN_SIZES and declared > actual + 1:
            raise AudioError(
                name, f"truncated: the header promises {declared} bytes of audio, the file holds {actual}"
            )


def _check_header(name: object, sr: int, channels: int) -> None:
    if sr <= 0:
        raise AudioError(name, f"invalid sampling rate {sr}")
    if sr > MAX_SAMPLE_RATE:
        raise AudioError(name, f"implausible sampling rate {sr} Hz (corrupt header?)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(name, f"implausible channel count {channels} (corrupt header?)")


def probe(src: str | Path) -> tuple[int, int]:
    """(sampling rate, number of frames) of an audio file, without decoding it; AudioError if unreadable."""
    path = Path(src)
    _check_file(path, path)
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(path, f"not a readable audio file ({e})") from None
    _check_header(path, info.samplerate, info.channels)
    _check_truncation(path, getattr(info, "extra_info", ""))
    if info.frames <= 0:
        raise AudioError(path, "no audio frames")
    return int(info.samplerate), int(info.frames)


def resample(wave: np.ndarray, sr: int, target_sr: int = TARGET_SR) -> np.ndarray:
    """Resample with libsoxr (sox's resampler, high quality; ~3x faster than scipy's polyphase filter,
    which is the fallback when the ``soxr`` package is missing)."""
    if sr == target_sr:
        return wave
    try:
        import soxr
    except ImportError:
        soxr = None
    if soxr is not None and wave.ndim == 1:
        return soxr.resample(np.ascontiguousarray(wave, dtype=np.float32), int(sr), int(target_sr), quality="HQ")
    from scipy.signal import resample_poly

    g = gcd(int(sr), int(target_sr))
    return resample_poly(wave, target_sr // g, int(sr) // g, axis=-1).astype(np.float32)


def validate(wave: np.ndarray, sr: int, name: str = "<array>", limits: AudioLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Check a mono float waveform; return it (float32) or raise AudioError saying what is wrong."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AudioError(name, f"expected a mono waveform, got shape {wave.shape}")
    if wave.size == 0:
        raise AudioError(name, "no audio samples")
    if not np.issubdtype(wave.dtype, np.floating):
        raise AudioError(name, f"expected float samples, got {wave.dtype}")
    if not np.all(np.isfinite(wave)):
        raise AudioError(name, "contains NaN or infinite samples")
    dur = wave.size / sr
    if dur < limits.min_duration:
        raise AudioError(name, f"too short: {dur:.3f} s (minimum {limits.min_duration} s)")
    if dur > limits.max_duration:
        raise AudioError(name, f"too long: {dur:.1f} s (maximum {limits.max_duration} s)")
    if float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) < limits.silence_rms:
        raise AudioError(name, "digital silence: the file holds no signal")
    return wave.astype(np.float32, copy=False)


def load_audio(
    src: AudioInput,
    target_sr: int = TARGET_SR,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    limits: AudioLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Load audio as a 16 kHz (``target_sr``) mono float32 waveform, validated.

    ``src`` is a path, raw file bytes, or a binary file object. Multi-channel audio is averaged to mono.
    Raises AudioError naming the source for empty, corrupt, truncated, non-finite, too short or too long audio.
    """
    name = _name(src)
    if offset < 0 or (duration is not None and not duration > 0):
        raise AudioError(name, f"invalid segment: offset {offset} s, duration {duration} s")
    if isinstance(src, (str, Path)):
        path = Path(src)
        _check_file(path, name)
        handle: object = str(path)
    elif isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise AudioError(name, "empty upload (0 bytes)")
        handle = io.BytesIO(bytes(src))
    else:
        handle = src
    try:
        with sf.SoundFile(handle) as f:
            sr = f.samplerate
            _check_header(name, sr, f.channels)
            _check_truncation(name, f.extra_info)
            expected = f.frames
            if expected <= 0:
                raise AudioError(name, "no audio frames")
            start = int(round(offset * sr))
            if start >= expected:
                raise AudioError(name, f"offset {offset} s is beyond the end ({expected / sr:.3f} s)")
            want = expected - start if duration is None else min(int(round(duration * sr)), expected - start)
            if want / sr > limits.max_duration:  # refuse before decoding (or allocating for) a huge claim
                raise AudioError(name, f"too long: {want / sr:.1f} s (maximum {limits.max_duration} s)")
            if start:
                f.seek(start)
            blocks, got = [], 0
            while got < want:
                try:
                    block = f.read(frames=min(want - got, _READ_BLOCK), dtype="float32", always_2d=True)
                except Exception as e:  # libsndfile: "flac decoder lost sync", "psf_fseek() failed", ...
                    raise AudioError(
                        name, f"truncated or corrupt: {got} of the {want} frames the header promises read ({e})"
                    ) from None
                if block.shape[0] == 0:
                    break
                blocks.append(block)
                got += block.shape[0]
            data = np.concatenate(blocks) if blocks else np.zeros((0, f.channels), dtype=np.float32)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(name, f"not a readable audio file ({e})") from None
    if data.shape[0] < want:
        raise AudioError(name, f"truncated: header promises {want} frames, only {data.shape[0]} could be read")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = validate(wave, sr, name, limits)
    return validate(resample(wave, sr, target_sr), target_sr, name, limits)

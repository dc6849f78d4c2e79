"""load_audio / probe / validate / resample: each kind of bad input with the error it must give, and the
conversions (channels, sampling rates, bytes and file objects) that must work."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoslm.audio import DEFAULT_LIMITS, TARGET_SR, AudioLimits, load_audio, probe, resample, validate
from emoslm.errors import AudioError, EmoslmError


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * sr))) / sr)).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int, **kw: str) -> Path:
    sf.write(path, x, sr, **kw)
    return path


def encode(x: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    b = io.BytesIO()
    sf.write(b, x, sr, format=fmt, subtype=subtype)
    return b.getvalue()


def raises(src: object, text: str, **kw: object) -> AudioError:
    with pytest.raises(AudioError) as info:
        load_audio(src, **kw)  # type: ignore[arg-type]
    msg = str(info.value)
    assert text in msg, msg
    if isinstance(src, (str, Path)):
        assert str(src) in msg, msg  # the error names the file
    return info.value


# ------------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path) -> None:
    raises(tmp_path / "nope.wav", "no such file")
    raises(tmp_path, "no such file")  # a directory
    with pytest.raises(AudioError, match="no such file"):
        probe(tmp_path / "nope.wav")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    e = raises(p, "empty file (0 bytes)")
    assert e.path == str(p) and e.reason == "empty file (0 bytes)"
    with pytest.raises(AudioError, match=r"empty\.wav: empty file"):
        probe(p)
    raises(b"", "<audio bytes>: empty upload (0 bytes)")


def test_corrupt_file(tmp_path: Path) -> None:
    p = tmp_path / "corrupt.wav"
    p.write_bytes(bytes(range(256)) * 8)
    raises(p, "not a readable audio file")
    with pytest.raises(AudioError, match="not a readable audio file"):
        probe(p)
    text = tmp_path / "notes.flac"
    text.write_text("this is not audio\n")
    raises(text, "not a readable audio file")
    raises(b"RIFF\x00\x00\x00\x00WAVEjunk", "<audio bytes>: not a readable audio file")


def test_errors_are_emoslm_errors() -> None:
    with pytest.raises(EmoslmError):
        load_audio(b"\x00" * 100)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    data = encode(tone(1.0, 16000), 16000, fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    # WAV: libsndfile would quietly read the half that is there; FLAC: the decoder loses sync
    raises(p, "truncated")
    if fmt == "WAV":
        with pytest.raises(AudioError, match="truncated: the header promises 32000 bytes"):
            probe(p)


def test_truncated_flac_stream_is_truncated_error(tmp_path: Path) -> None:
    """A FLAC whose frames end cleanly before the total STREAMINFO promises: fewer frames than the header."""
    full = encode(tone(2.0, 16000), 16000, "FLAC")
    short = encode(tone(1.0, 16000), 16000, "FLAC")
    # STREAMINFO of the 2 s file (total samples) with the audio frames of the 1 s file
    p = tmp_path / "short.flac"
    p.write_bytes(full[:42] + short[42:])
    assert probe(p) == (16000, 32000)
    raises(p, "of the 32000 frames the header promises read")


def test_streamed_wav_with_unknown_length_loads(tmp_path: Path) -> None:
    """Streaming writers (ffmpeg to a pipe) put 0xFFFFFFFF as the data size: not a truncation."""
    data = bytearray(encode(tone(0.5, 16000), 16000))
    assert data[36:40] == b"data"
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    p = tmp_path / "stream.wav"
    p.write_bytes(bytes(data))
    assert load_audio(p).shape == (8000,)


def test_nan_and_inf(tmp_path: Path) -> None:
    for bad in (np.nan, np.inf, -np.inf):
        x = tone(0.5, 16000)
        x[1234] = bad
        raises(write(tmp_path / "bad.wav", x, 16000, subtype="FLOAT"), "contains NaN or infinite samples")


def test_too_short(tmp_path: Path) -> None:
    raises(write(tmp_path / "short.wav", tone(0.05, 16000), 16000), "too short: 0.050 s (minimum 0.1 s)")
    raises(write(tmp_path / "one.wav", tone(1 / 16000, 16000), 16000), "too short")
    assert load_audio(write(tmp_path / "ok.wav", tone(0.1, 16000), 16000)).shape == (1600,)


def test_too_long(tmp_path: Path) -> None:
    p = write(tmp_path / "long.wav", tone(61.0, 8000), 8000)
    raises(p, "too long: 61.0 s (maximum 60.0 s)")
    assert load_audio(p, limits=AudioLimits(max_duration=120)).shape == (61 * 16000,)
    assert load_audio(p, duration=10.0).shape == (160000,)  # a segment of a long file is fine


def test_huge_header_claim_is_refused_before_decoding(tmp_path: Path) -> None:
    """A FLAC header claiming 2**36 samples: refused as too long, without allocating 256 GiB."""
    flac = bytearray(encode(tone(0.5, 16000), 16000, "FLAC"))
    flac[21] = (flac[21] & 0xF0) | 0x0F
    flac[22:26] = b"\xff\xff\xff\xff"
    p = tmp_path / "huge.flac"
    p.write_bytes(bytes(flac))
    raises(p, "too long")


def _wav_header_with(tmp_path: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(encode(tone(0.5, 16000), 16000))
    data[offset: offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    p = tmp_path / "hdr.wav"
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize(
    "offset,fmt,value,text",
    [
        (24, "<I", 0, "not a readable audio file"),  # sample rate 0: libsndfile refuses
        (24, "<I", 4_000_000, "implausible sampling rate 4000000 Hz"),
        (24, "<I", 10, "too long"),  # 8000 frames at 10 Hz = 800 s
        (22, "<H", 0, "not a readable audio file"),  # zero channels
        (22, "<H", 1000, "implausible channel count 1000"),
        (34, "<H", 0, "not a readable audio file"),  # zero bits per sample
    ],
)
def test_corrupt_header_fields(tmp_path: Path, offset: int, fmt: str, value: int, text: str) -> None:
    p = _wav_header_with(tmp_path, offset, fmt, value)
    raises(p, text)
    if text == "too long":
        assert probe(p) == (10, 8000)  # probe only reports the header; loading refuses the 800 s
    else:
        with pytest.raises(AudioError):
            probe(p)


def test_silence(tmp_path: Path) -> None:
    raises(write(tmp_path / "zeros.wav", np.zeros(16000, np.float32), 16000), "digital silence")
    raises(write(tmp_path / "zeros.flac", np.zeros((16000, 2), np.float32), 16000), "digital silence")
    quiet = tone(1.0, 16000, amp=1e-3)  # quiet but not silent
    assert load_audio(write(tmp_path / "quiet.wav", quiet, 16000, subtype="FLOAT")).shape == (16000,)


def test_segment_arguments(tmp_path: Path) -> None:
    p = write(tmp_path / "a.wav", tone(1.0, 16000), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(p, offset=0.25, duration=0.5), tone(1.0, 16000)[4000:12000], atol=1e-7)
    raises(p, "beyond the end", offset=2.0)
    raises(p, "invalid segment", offset=-1.0)
    raises(p, "invalid segment", duration=0.0)
    raises(p, "too short", offset=0.95)


# ------------------------------------------------------------------------------------------ conversions


def test_multichannel_is_averaged(tmp_path: Path) -> None:
    left, right = tone(1.0, 16000, 300), tone(1.0, 16000, 500, amp=0.25)
    p = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(p), (left + right) / 2, atol=1e-7)
    six = np.stack([tone(1.0, 16000, 200 + 100 * c, 0.1) for c in range(6)], axis=1)
    p6 = write(tmp_path / "six.flac", six, 16000, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(p6), six.mean(axis=1), atol=1e-5)


@pytest.mark.parametrize("sr", [44100, 22050, 8000, 48000, 11025])
def test_resampled_to_16k_with_correct_length(tmp_path: Path, sr: int) -> None:
    seconds = 1.3
    x = tone(seconds, sr, freq=440.0)
    p = write(tmp_path / f"t{sr}.wav", x, sr, subtype="FLOAT")
    assert probe(p) == (sr, x.size)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - x.size * TARGET_SR / sr) < 1  # within one sample: resamplers round differently
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * TARGET_SR / y.size - 440.0) < 2.0  # the pitch survives
    assert abs(np.sqrt(np.mean(y[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01  # so does the level
    z = load_audio(p, target_sr=sr)  # no resampling asked for
    np.testing.assert_allclose(z, x, atol=1e-7)


def test_formats_agree(tmp_path: Path) -> None:
    x = tone(1.0, 16000)
    ref = load_audio(write(tmp_path / "a.wav", x, 16000, subtype="FLOAT"))
    for name, kw, tol in [("a16.wav", {"subtype": "PCM_16"}, 1e-4), ("a.flac", {}, 1e-4),
                          ("a.ogg", {"format": "OGG", "subtype": "VORBIS"}, 0.05)]:
        y = load_audio(write(tmp_path / name, x, 16000, **kw))
        assert y.shape == ref.shape
        assert np.abs(y - ref).max() < tol, name


def test_wrong_extension_is_read_by_content(tmp_path: Path) -> None:
    p = tmp_path / "really_a_flac.wav"
    p.write_bytes(encode(tone(0.5, 22050), 22050, "FLAC"))
    assert probe(p) == (22050, 11025)
    assert load_audio(p).shape == (8000,)


def test_bytes_and_file_objects(tmp_path: Path) -> None:
    x = tone(0.5, 22050)
    data = encode(x, 22050, "FLAC")
    from_bytes = load_audio(data)
    assert from_bytes.shape == (8000,) and from_bytes.dtype == np.float32
    np.testing.assert_array_equal(load_audio(bytearray(data)), from_bytes)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), from_bytes)
    p = tmp_path / "x.flac"
    p.write_bytes(data)
    np.testing.assert_array_equal(load_audio(p), from_bytes)
    np.testing.assert_array_equal(load_audio(str(p)), from_bytes)
    with p.open("rb") as f:
        np.testing.assert_array_equal(load_audio(f), from_bytes)
    with (tmp_path / "bad.bin").open("wb+") as f:
        f.write(b"garbage" * 10)
        f.seek(0)
        with pytest.raises(AudioError, match=r"bad\.bin: not a readable audio file"):
            load_audio(f)  # a file object's error names the file too
    raises(encode(np.zeros(8000, np.float32), 16000), "<audio bytes>: digital silence")


# ------------------------------------------------------------------------------------ validate, resample


def test_validate() -> None:
    assert validate(np.ones(1600, np.float64) * 0.1, 16000).dtype == np.float32
    with pytest.raises(AudioError, match="x: expected a mono waveform"):
        validate(np.ones((2, 1600), np.float32), 16000, "x")
    with pytest.raises(AudioError, match="no audio samples"):
        validate(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="expected float samples"):
        validate(np.ones(1600, np.int16), 16000)
    lim = AudioLimits(min_duration=1.0, max_duration=2.0, silence_rms=0.1)
    with pytest.raises(AudioError, match="too short"):
        validate(np.ones(8000, np.float32), 16000, limits=lim)
    with pytest.raises(AudioError, match="silence"):
        validate(np.full(16000, 0.01, np.float32), 16000, limits=lim)
    assert DEFAULT_LIMITS.min_duration == 0.1 and DEFAULT_LIMITS.max_duration == 60.0


def test_resample_lengths() -> None:
    for sr in (8000, 22050, 44100, 48000):
        x = tone(1.0, sr)
        assert resample(x, sr).size == 16000
        assert resample(x, sr).dtype == np.float32
    x = tone(1.0, 16000)
    assert resample(x, 16000) is x

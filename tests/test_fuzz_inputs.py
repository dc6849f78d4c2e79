"""Bad-input fuzzing of the loaders: malformed audio files (``probe``, ``load_audio``) and flat manifests
(``import_table``). Every input must either load correctly or raise an emoslm error naming the file; any other
exception, or a silently dropped row, fails.

Hypothesis runs derandomized (a fixed seed per test, no example database), so CI sees the same inputs every
run. Each test counts the examples it ran and asserts the minimum, so the numbers below are checked:
>= 1000 audio files (1500 run), >= 300 CSV and >= 300 JSONL manifests (400 each run).
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emoslm.audio import DEFAULT_LIMITS, TARGET_SR, load_audio, probe
from emoslm.data.manifests import FLAT_COLUMNS, import_table
from emoslm.errors import AudioError, LabelError, ManifestError
from emoslm.labels import ALIASES

AUDIO_EXAMPLES = 1500
MANIFEST_EXAMPLES = 400  # per format (CSV, JSONL)

#: Examples run per test, asserted by each test (and summed up in the last one).
COUNTS: Counter = Counter()

FUZZ = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ------------------------------------------------------------------------------------------ audio inputs


def _signal(n: int, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)
    if channels == 1:
        return x.astype(np.float32)
    return np.stack([x * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1).astype(np.float32)


def _encode(x: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    b = io.BytesIO()
    sf.write(b, x, sr, format=fmt, subtype=subtype)
    return b.getvalue()


def pcm16_wav(x: np.ndarray, sr: int) -> bytes:
    """A canonical 44-byte-header PCM WAV, built by hand so header fields sit at known offsets."""
    x2 = x if x.ndim == 2 else x[:, None]
    ch = x2.shape[1]
    data = (np.clip(x2, -1, 1) * 32767).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, ch, sr, sr * ch * 2, ch * 2, 16)
    header += b"data" + struct.pack("<I", len(data))
    return header + data


#: (name, bytes, extension) of valid files the mutations start from.
BASES: list[tuple[str, bytes, str]] = [
    ("wav16k_pcm16", pcm16_wav(_signal(8000, 16000), 16000), ".wav"),
    ("wav22k_stereo_pcm16", pcm16_wav(_signal(11025, 22050, 2), 22050), ".wav"),
    ("wav44k_float", _encode(_signal(22050, 44100), 44100, "WAV", "FLOAT"), ".wav"),
    ("wav8k_u8", _encode(_signal(4000, 8000), 8000, "WAV", "PCM_U8"), ".wav"),
    ("wav16k_pcm24_4ch", _encode(_signal(8000, 16000, 4), 16000, "WAV", "PCM_24"), ".wav"),
    ("flac16k", _encode(_signal(8000, 16000), 16000, "FLAC", "PCM_16"), ".flac"),
    ("flac48k_stereo", _encode(_signal(24000, 48000, 2), 48000, "FLAC", "PCM_24"), ".flac"),
    ("ogg16k", _encode(_signal(8000, 16000), 16000, "OGG", "VORBIS"), ".ogg"),
    ("ogg22k_stereo", _encode(_signal(11025, 22050, 2), 22050, "OGG", "VORBIS"), ".ogg"),
]
WAV_HEADER_FIELDS = {  # name: (offset, struct format) in pcm16_wav's header
    "riff_size": (4, "<I"), "fmt_size": (16, "<I"), "format_tag": (20, "<H"), "channels": (22, "<H"),
    "sample_rate": (24, "<I"), "byte_rate": (28, "<I"), "block_align": (32, "<H"),
    "bits_per_sample": (34, "<H"), "data_size": (40, "<I"),
}
FORMATS = [("WAV", "PCM_16", ".wav"), ("WAV", "FLOAT", ".wav"), ("FLAC", "PCM_16", ".flac")]


@dataclass
class AudioCase:
    kind: str
    data: bytes
    ext: str
    expect: str = "any"  # "fail": must raise; "pass": must load; "any": either, but correctly
    reason: str = ""  # a word the error must contain when expect == "fail"


def _pack(fmt: str, value: int) -> bytes:
    return struct.pack(fmt, value & ((1 << (8 * struct.calcsize(fmt))) - 1))


@st.composite
def audio_cases(draw: Any) -> AudioCase:
    kind = draw(st.sampled_from([  # hypothesis favours early entries: the damaged-file kinds come first, twice
        "truncated", "wav_header", "flac_header", "magic_then_random",
        "empty", "truncated", "random_bytes", "magic_then_random", "wav_header", "flac_header", "byte_flips",
        "nonfinite", "silence", "too_short", "too_long", "wrong_extension", "valid", "text",
    ]))
    name, base, ext = draw(st.sampled_from(BASES))
    if kind == "empty":
        return AudioCase(kind, b"", draw(st.sampled_from([".wav", ".flac", ".ogg", ""])), "fail", "empty")
    if kind == "truncated":
        cut = draw(st.integers(1, len(base) - 1))
        return AudioCase(f"{kind}:{name}@{cut}", base[:cut], ext)
    if kind == "random_bytes":
        junk = draw(st.binary(min_size=1, max_size=4096))
        return AudioCase(kind, junk, draw(st.sampled_from([".wav", ".flac", ".ogg"])))
    if kind == "magic_then_random":
        magic = draw(st.sampled_from([b"RIFF", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS", b"FORM", b".snd"]))
        return AudioCase(f"{kind}:{magic!r}", magic + draw(st.binary(max_size=2048)), ext)
    if kind == "wav_header":
        wav = bytearray(BASES[draw(st.sampled_from([0, 1]))][1])
        fields = draw(st.lists(st.sampled_from(sorted(WAV_HEADER_FIELDS)), min_size=1, max_size=3, unique=True))
        for f in fields:
            off, fmt = WAV_HEADER_FIELDS[f]
            value = draw(st.one_of(
                st.sampled_from([0, 1, 2, 3, 7, 255, 1024, 65535, 2**31 - 1, 2**31, 2**32 - 1]),
                st.integers(0, 2**32 - 1),
            ))
            wav[off: off + struct.calcsize(fmt)] = _pack(fmt, value)
        if draw(st.booleans()):
            wav = wav[: draw(st.integers(0, len(wav)))]
        return AudioCase(f"{kind}:{','.join(fields)}", bytes(wav), ".wav")
    if kind == "flac_header":
        flac = bytearray(BASES[5][1])
        start = draw(st.integers(4, 41))  # block header + STREAMINFO: sizes, rate, channels, bits, frames
        flac[start: start + 4] = draw(st.binary(min_size=4, max_size=4))
        return AudioCase(f"{kind}@{start}", bytes(flac), ".flac")
    if kind == "byte_flips":
        b = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return AudioCase(f"{kind}:{name}", bytes(b), ext)
    if kind == "nonfinite":
        x = _signal(draw(st.integers(1600, 16000)), 16000)
        idx = draw(st.lists(st.integers(0, x.size - 1), min_size=1, max_size=5))
        x[idx] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        sub = draw(st.sampled_from(["FLOAT", "DOUBLE"]))
        return AudioCase(f"{kind}:{sub}", _encode(x, 16000, "WAV", sub), ".wav", "fail", "NaN or infinite")
    if kind == "silence":
        fmt, sub, ext = draw(st.sampled_from(FORMATS))
        sr = draw(st.sampled_from([8000, 16000, 22050]))
        x = np.zeros((int(sr * draw(st.floats(0.2, 3.0))), draw(st.integers(1, 2))), dtype=np.float32)
        return AudioCase(kind, _encode(x, sr, fmt, sub), ext, "fail", "silence")
    if kind == "too_short":
        fmt, sub, ext = draw(st.sampled_from(FORMATS))
        sr = draw(st.sampled_from([8000, 16000, 44100]))
        n = draw(st.integers(1, int(sr * DEFAULT_LIMITS.min_duration) - 1))
        return AudioCase(kind, _encode(_signal(n, sr), sr, fmt, sub), ext, "fail", "too short")
    if kind == "too_long":
        sr = draw(st.sampled_from([4000, 8000]))
        n = int(sr * draw(st.floats(DEFAULT_LIMITS.max_duration + 0.5, DEFAULT_LIMITS.max_duration + 30)))
        return AudioCase(kind, _encode(_signal(n, sr), sr, "WAV", "PCM_U8"), ".wav", "fail", "too long")
    if kind == "wrong_extension":
        new_ext = draw(st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".txt", ".au", ""]))
        return AudioCase(f"{kind}:{name}->{new_ext or 'none'}", base, new_ext, "pass")
    if kind == "text":
        text = draw(st.text(min_size=1, max_size=200)).encode("utf-8", "surrogatepass")
        return AudioCase(kind, text, ext)
    # valid: a fresh file at a random rate, length and channel count
    fmt, sub, ext = draw(st.sampled_from(FORMATS))
    sr = draw(st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000]))
    n = int(sr * draw(st.floats(0.1 + 1e-3, 2.0)))
    x = _signal(n, sr, draw(st.integers(1, 3)), seed=draw(st.integers(0, 9)))
    return AudioCase(f"valid:{fmt}/{sub}@{sr}", _encode(x, sr, fmt, sub), ext, "pass")


def _check_wave(wave: np.ndarray, case: AudioCase, info: tuple[int, int] | None) -> None:
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float32 and wave.ndim == 1, case.kind
    assert np.all(np.isfinite(wave)), case.kind
    dur = wave.size / TARGET_SR
    assert DEFAULT_LIMITS.min_duration - 1e-3 <= dur <= DEFAULT_LIMITS.max_duration + 1e-3, (case.kind, dur)
    if info is not None:  # the length the header promises, resampled to 16 kHz
        sr, frames = info
        assert abs(wave.size - frames * TARGET_SR / sr) < 1, (case.kind, wave.size, frames, sr)  # resamplers round differently


def _outcome(fn: Any, name: str, case: AudioCase) -> tuple[Any, AudioError | None]:
    """Call a loader; return (result, None) or (None, AudioError). Any other exception propagates (fails)."""
    try:
        return fn(), None
    except AudioError as e:
        assert name in str(e), f"{case.kind}: error does not name the file: {e}"
        if case.expect == "fail":
            assert case.reason in str(e), f"{case.kind}: expected {case.reason!r} in {e}"
        return None, e


def test_fuzz_audio_files(tmp_path: Path) -> None:
    kinds: Counter = Counter()
    outcomes: Counter = Counter()

    @settings(max_examples=AUDIO_EXAMPLES, **FUZZ)
    @given(case=audio_cases())
    def run(case: AudioCase) -> None:
        n = sum(kinds.values())
        kinds[case.kind.split(":")[0].split("@")[0]] += 1
        path = tmp_path / f"case{n}{case.ext}"
        path.write_bytes(case.data)
        try:
            info, probe_err = _outcome(lambda: probe(path), str(path), case)
            wave, load_err = _outcome(lambda: load_audio(path), str(path), case)
            wave_b, load_b_err = _outcome(lambda: load_audio(case.data), "<audio bytes>", case)
        finally:
            path.unlink()
        if case.expect == "fail":
            assert load_err is not None and load_b_err is not None, f"{case.kind}: loaded but must fail"
        if case.expect == "pass":
            assert probe_err is None and load_err is None and load_b_err is None, (
                f"{case.kind}: must load: {probe_err or load_err or load_b_err}")
        if wave is not None:
            assert probe_err is None, f"{case.kind}: load_audio accepts what probe rejects ({probe_err})"
            _check_wave(wave, case, info)
        if wave_b is not None:
            _check_wave(wave_b, case, None)
        outcomes["loaded" if wave is not None else "error"] += 1

    run()
    total = sum(kinds.values())
    COUNTS["audio files"] += total
    assert total >= 1000, total
    assert len(kinds) == 14 and min(kinds.values()) >= 20, kinds
    assert outcomes["loaded"] >= 100 and outcomes["error"] >= 300, outcomes
    print(f"audio fuzz: {total} files, {dict(outcomes)}, by kind {dict(kinds)}")


# --------------------------------------------------------------------------------------- flat manifests


@dataclass
class AudioFile:
    name: str
    sr: int
    frames: int
    ok: bool  # probe() accepts it

    @property
    def duration(self) -> float:
        return self.frames / self.sr


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, AudioFile]]:
    d = tmp_path_factory.mktemp("fuzz_audio")
    files = {
        "a16k.wav": (pcm16_wav(_signal(16000, 16000), 16000), 16000, 16000),
        "b22k.flac": (_encode(_signal(44100, 22050, 2), 22050, "FLAC", "PCM_16"), 22050, 44100),
        "c8k.ogg": (_encode(_signal(12000, 8000), 8000, "OGG", "VORBIS"), 8000, 12000),
    }
    out: dict[str, AudioFile] = {}
    for name, (data, sr, frames) in files.items():
        (d / name).write_bytes(data)
        assert probe(d / name) == (sr, frames)
        out[name] = AudioFile(name, sr, frames, True)
    broken = {"empty.wav": b"", "garbage.wav": bytes(range(256)) * 4, "text.flac": b"not audio at all\n",
              "header_only.wav": pcm16_wav(_signal(16000, 16000), 16000)[:44]}
    for name, data in broken.items():
        (d / name).write_bytes(data)
        with pytest.raises(AudioError):
            probe(d / name)
        out[name] = AudioFile(name, 16000, 0, False)
    (d / "a_directory.wav").mkdir()
    out["a_directory.wav"] = AudioFile("a_directory.wav", 16000, 0, False)
    out["missing.wav"] = AudioFile("missing.wav", 16000, 0, False)
    return d, out


GOOD = ["a16k.wav", "b22k.flac", "c8k.ogg"]
BROKEN = ["empty.wav", "garbage.wav", "text.flac", "header_only.wav", "a_directory.wav", "missing.wav"]
REQUIRED = ("id", "audio_path", "speaker", "emotion")
NUMERIC = ("start", "duration", "sampling_rate", "num_samples")
EXTRA_NAMES = ["valence", "arousal", "notes", "recording_id", "channel", "x-1", "Ünïcode", "custom", "type"]
UNKNOWN_LABELS = ["ecstatic", "angryy", "neutral sadness", "7", "none", "😀", "NaN", "joy!", "hap py"]
BAD_NUMBERS_TEXT = ["NaN", "nan", "inf", "-inf", "-1", "-0.5", "abc", "1,5", "1e400", "0x10", "one", "--1", "1 2"]
assert not any(lbl.strip().lower() in ALIASES for lbl in UNKNOWN_LABELS)


@dataclass
class Table:
    rows: list[dict[str, Any]]
    files: list[str]  # audio file of each row
    probe_audio: bool
    fmt: str  # "csv" or "jsonl"
    expect: str = "pass"  # "pass", "fail", "any"
    why: list[str] = field(default_factory=list)

    def mark(self, expect: str, why: str) -> None:
        self.why.append(why)
        order = {"pass": 0, "any": 1, "fail": 2}
        if order[expect] > order[self.expect]:
            self.expect = expect

    def probed(self, i: int) -> bool:
        r = self.rows[i]
        return self.probe_audio or r.get("sampling_rate") in (None, "") or r.get("num_samples") in (None, "")


def _num_value(draw: Any, x: float, fmt: str) -> Any:
    """A valid number as JSON number, or as text (with stray spaces)."""
    if fmt == "jsonl" and draw(st.booleans()):
        return x
    return draw(st.sampled_from([repr(x), f" {x} ", f"{x:.6f}"]))


@st.composite
def tables(draw: Any, fmt: str, files: dict[str, AudioFile]) -> Table:
    n = draw(st.integers(1, 6))
    ident = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
    prefix = draw(ident)
    rows, used = [], []
    for i in range(n):
        af = files[draw(st.sampled_from(GOOD))]
        label = draw(st.sampled_from(sorted(ALIASES)))
        label = draw(st.sampled_from([label, label.upper(), label.title(), f" {label} "]))
        r: dict[str, Any] = {
            "id": f"{prefix}{i}",
            "audio_path": draw(st.sampled_from([af.name, f"./{af.name}", "ABS"])),
            "speaker": draw(ident),
            "emotion": label,
        }
        if draw(st.booleans()):
            start = draw(st.floats(0, af.duration * 0.5))
            r["start"] = _num_value(draw, round(start, 3), fmt)
            if draw(st.booleans()):
                r["duration"] = _num_value(draw, round(draw(st.floats(0.01, af.duration * 0.5 - 1e-3)), 3), fmt)
        if draw(st.booleans()):
            r["sampling_rate"] = _num_value(draw, af.sr, fmt) if draw(st.booleans()) else str(af.sr)
            r["num_samples"] = _num_value(draw, af.frames, fmt) if draw(st.booleans()) else str(af.frames)
        for col, values in [("gender", ["M", "F"]), ("split", ["train", "dev", "test"]),
                            ("pitch_level", ["low", "normal", "high"]), ("session", ["1", "Ses02"]),
                            ("text", ["hello, world", 'say "hi"\nbye', "ünï"]), ("language", ["en", "de"])]:
            if draw(st.integers(0, 3)) == 0:
                r[col] = draw(st.sampled_from(values))
        for name in draw(st.lists(st.sampled_from(EXTRA_NAMES), max_size=2, unique=True)):
            r[name] = draw(st.one_of(ident, st.integers(-5, 5).map(str)))
        rows.append(r)
        used.append(af.name)
    t = Table(rows, used, draw(st.booleans()), fmt)

    for _ in range(draw(st.integers(0, 3))):
        m = draw(st.sampled_from([
            "drop_required", "blank_required", "duplicate_id", "unknown_label", "bad_number", "zero_rate",
            "missing_audio", "segment_outside", "bad_gender", "bad_level", "non_utf8", "extra_field_or_bad_line",
            "blank_lines", "bom", "crlf", "empty_file", "garbage", "wrong_extension", "header_only",
        ]))
        i = draw(st.integers(0, len(t.rows) - 1))
        r = t.rows[i]
        if m == "drop_required":
            col = draw(st.sampled_from(REQUIRED[1:]))  # without an id column, ids are derived (not an error)
            for row in t.rows:
                row.pop(col, None)
            t.mark("fail", m)
        elif m == "blank_required":
            r[draw(st.sampled_from(REQUIRED))] = draw(st.sampled_from(["", None]))
            t.mark("fail", m)
        elif m == "duplicate_id":
            if len(t.rows) == 1:
                t.rows.append(dict(r))
                t.files.append(t.files[0])
            else:
                t.rows[(i + 1) % len(t.rows)]["id"] = r.get("id")
            t.mark("fail", m)
        elif m == "unknown_label":
            r["emotion"] = draw(st.sampled_from(UNKNOWN_LABELS))
            t.mark("fail", m)
        elif m == "bad_number":
            col = draw(st.sampled_from(NUMERIC))
            bad = [*BAD_NUMBERS_TEXT, *([float("nan"), float("inf"), -1, -1e-9, 10**400, [1], {"x": 1}]
                                        if fmt == "jsonl" else [])]
            r[col] = draw(st.sampled_from(bad))
            t.mark("fail", m)
        elif m == "zero_rate":
            rates: list[Any] = ["0", "0.0", "0.5", "16000.5", *([0, 0.25] if fmt == "jsonl" else [])]
            r["sampling_rate"] = draw(st.sampled_from(rates))
            r["num_samples"] = r.get("num_samples") or str(files[t.files[i]].frames)
            t.mark("pass" if t.probe_audio else "fail", m)
        elif m == "missing_audio":
            t.files[i] = draw(st.sampled_from(BROKEN))
            r["audio_path"] = t.files[i]
            t.mark("fail" if t.probed(i) else "pass", m)
        elif m == "segment_outside":
            dur = files[t.files[i]].duration
            how = draw(st.sampled_from(["start", "end", "zero"]))
            if how == "start":
                r["start"] = str(round(dur + draw(st.floats(0.01, 10)), 3))
                r.pop("duration", None)
            elif how == "end":
                r["start"] = "0"
                r["duration"] = str(round(dur + draw(st.floats(0.01, 10)), 3))
            else:
                r["duration"] = "0"
            t.mark("fail", m)
        elif m == "bad_gender":
            r["gender"] = draw(st.sampled_from(["m", "x", "male", "FM"]))
            t.mark("fail", m)
        elif m == "bad_level":
            r[draw(st.sampled_from(["pitch_level", "tempo_level", "energy_level"]))] = draw(
                st.sampled_from(["medium", "LOW", "3"]))
            t.mark("fail", m)
        else:
            t.why.append(m)  # byte-level: applied in _serialize
    return t


def _serialize(t: Table, draw: Any, files_dir: Path) -> tuple[bytes, str]:
    for r in t.rows:
        if r.get("audio_path") == "ABS":
            r["audio_path"] = str(files_dir / t.files[t.rows.index(r)])
    if t.fmt == "jsonl":
        lines = [json.dumps(r, ensure_ascii=draw(st.booleans())) for r in t.rows]
    else:
        cols = list(dict.fromkeys(k for r in t.rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in t.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        lines = buf.getvalue().rstrip("\n").split("\n")
    text_lines = lines
    ext = f".{t.fmt}"
    for m in list(t.why):
        if m == "blank_lines":
            pos = draw(st.integers(1, len(text_lines)))
            text_lines = [*text_lines[:pos], "", *text_lines[pos:]]
        elif m == "extra_field_or_bad_line":
            if t.fmt == "csv":
                text_lines = [*text_lines[:-1], text_lines[-1] + ",surplus"]
            else:
                text_lines = [*text_lines, draw(st.sampled_from(["{not json", "[1, 2]", "42", '"row"', "null"]))]
            t.mark("fail", m)
    body = "\n".join(text_lines) + "\n"
    if "crlf" in t.why:
        body = body.replace("\n", "\r\n")
    data = body.encode("utf-8")
    if "bom" in t.why:
        data = b"\xef\xbb\xbf" + data
    if "non_utf8" in t.why:
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3", b"\x80abc"])) + data[pos:]
        t.mark("fail", "non_utf8")
    if "header_only" in t.why and t.fmt == "csv":
        data = data.split(b"\n", 1)[0] + b"\n"
        t.mark("fail", "header_only")
    if "garbage" in t.why:
        data = draw(st.binary(max_size=512))
        t.expect = "any"  # whatever the rows were, the file is now random bytes
    if "empty_file" in t.why:
        data = b""
        t.mark("fail", "empty_file")
    if "wrong_extension" in t.why:
        ext = draw(st.sampled_from([".txt", ".json", ".xlsx", ""]))
        t.mark("fail", "wrong_extension")
    return data, ext


def _check_imported(prepared: dict, t: Table, files_dir: Path) -> None:
    sups = {s.id: (split, s) for split, parts in prepared.items() for s in parts["supervisions"]}
    assert len(sups) == len(t.rows), f"{len(t.rows)} rows given, {len(sups)} imported ({t.why})"
    for i, r in enumerate(t.rows):
        split, s = sups[str(r["id"])]
        assert split == (r.get("split") or "all")
        assert s.custom["emotion"] == ALIASES[str(r["emotion"]).strip().lower()]
        assert s.speaker == str(r["speaker"])
        af_dur = None
        rec = prepared[split]["recordings"][s.recording_id]
        assert Path(rec.sources[0].source).resolve() == (files_dir / t.files[i]).resolve()
        if t.probed(i):
            af_dur = rec.duration
            assert rec.sampling_rate > 0 and rec.num_samples > 0
        start = float(r["start"]) if r.get("start") not in (None, "") else 0.0
        assert s.start == pytest.approx(start)
        if r.get("duration") not in (None, ""):
            assert s.duration == pytest.approx(float(r["duration"]))
        elif af_dur is not None:
            assert s.duration == pytest.approx(af_dur - start)
        assert math.isfinite(s.duration) and s.duration > 0 and s.start >= 0
        for k, v in r.items():
            if k not in FLAT_COLUMNS and v not in (None, ""):
                assert s.custom[k] == v, (k, s.custom.get(k), v)


def _fuzz_manifests(fmt: str, tmp_path: Path, files_dir: Path, files: dict[str, AudioFile]) -> Counter:
    outcomes: Counter = Counter()

    @settings(max_examples=MANIFEST_EXAMPLES, **FUZZ)
    @given(t=tables(fmt, files), data=st.data())
    def run(t: Table, data: st.DataObject) -> None:
        raw, ext = _serialize(t, data.draw, files_dir)
        path = tmp_path / f"manifest{sum(outcomes.values())}{ext}"
        path.write_bytes(raw)
        try:
            prepared = import_table(path, audio_root=files_dir, probe_audio=t.probe_audio)
        except (ManifestError, LabelError, AudioError) as e:
            assert str(path) in str(e), f"error does not name the manifest: {e}"
            assert t.expect != "pass", f"valid manifest rejected ({t.why}): {e}"
            outcomes["error"] += 1
            return
        finally:
            path.unlink()
        assert t.expect != "fail", f"malformed manifest accepted ({t.why})"
        _check_imported(prepared, t, files_dir)
        outcomes["loaded"] += 1

    run()
    return outcomes


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_fuzz_manifests(fmt: str, tmp_path: Path, audio_dir: tuple[Path, dict[str, AudioFile]]) -> None:
    outcomes = _fuzz_manifests(fmt, tmp_path, *audio_dir)
    total = sum(outcomes.values())
    COUNTS[f"{fmt} manifests"] += total
    assert total >= 300, outcomes
    assert outcomes["loaded"] >= 50 and outcomes["error"] >= 50, outcomes  # both paths exercised


def test_fuzz_counts() -> None:
    """Runs last in this file: the totals the fuzz tests above reached (skipped when they were deselected)."""
    if not COUNTS:
        pytest.skip("fuzz tests not run in this session")
    assert COUNTS["audio files"] >= 1000, COUNTS
    assert COUNTS["csv manifests"] + COUNTS["jsonl manifests"] >= 600, COUNTS
    print(dict(COUNTS))

"""espeak-ng text-to-speech, in process.

The engine calls libespeak-ng through ctypes: one library instance per worker process, no process start per
utterance (about 3x faster than running the ``espeak-ng`` program for short sentences, measured in
``benchmarks/synth_throughput.py``). mbrola voices go through the same library (it runs mbrola itself).
When the library cannot be loaded, the ``espeak-ng`` program is used instead with the same parameters.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# espeak_PARAMETER values (speak_lib.h)
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1

MBROLA_DIRS = (Path("/usr/share/mbrola"), Path("/usr/lib/x86_64-linux-gnu/mbrola"), Path("/usr/lib/mbrola"))

# Variants that do not sound like a human speaker (robots, whisper, effects) are not used as speakers.
_NON_HUMAN_VARIANTS = {"demonic", "unirobot", "anikarobot", "whisper", "whisperf", "croak", "mr serious",
                       "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "edward2", "norbert", "kaukovalta"}


class TTSError(RuntimeError):
    pass


@dataclass(frozen=True)
class Voice:
    """A voice name espeak-ng accepts (``en-us+f3``, ``mb-us1``) with its gender and kind."""

    name: str
    gender: str  # "M" or "F"
    kind: str  # "espeak" or "mbrola"


def espeak_program() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise TTSError("espeak-ng is not installed: run scripts/install.sh (Debian package espeak-ng)")
    return path


def _list(arg: str) -> list[tuple[str, str, str]]:
    out = subprocess.run([espeak_program(), f"--voices={arg}"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines()[1:]:
        # Pty Language Age/Gender VoiceName File [Other Languages]; VoiceName has no spaces except variants
        m = re.match(r"\s*\d+\s+(\S+)\s+\S*/(\w)\s+(.+?)\s+(\S+/\S+(?: \S+)?)\s*(\(.*)?$", line)
        if m:
            rows.append((m.group(1), m.group(2), m.group(4).strip()))
    return rows


def mbrola_installed(db: str) -> bool:
    return any((d / db).exists() for d in MBROLA_DIRS)


@functools.lru_cache(maxsize=1)
def english_voices() -> tuple[tuple[str, ...], tuple[Voice, ...], tuple[Voice, ...]]:
    """(espeak English base voices, human-sounding variants, installed English mbrola voices)."""
    bases, mbrola = [], []
    for lang, gender, file in _list("en"):
        if file.startswith("mb/"):
            ident = file.split("/", 1)[1]  # mb-us1, mb-de1-en
            db = ident.split("-")[1]
            # only native English mbrola databases; the foreign-accented ones (mb-de1-en) need other databases
            if ident.count("-") == 1 and mbrola_installed(db):
                mbrola.append(Voice(ident, gender if gender in "MF" else "M", "mbrola"))
        elif file.startswith("gmw/en"):
            bases.append(file.split("/", 1)[1].lower())
    variants = []
    for _lang, gender, file in _list("variant"):
        name = file.split("/", 1)[1]
        if name.lower() not in _NON_HUMAN_VARIANTS and gender in "MF":
            variants.append(Voice(name, gender, "espeak"))
    return tuple(sorted(set(bases))), tuple(sorted(set(variants), key=lambda v: v.name)), tuple(
        sorted(set(mbrola), key=lambda v: v.name))


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Espeak:
    """One espeak-ng synthesiser. Not thread-safe (the library keeps global state): one per process."""

    def __init__(self, prefer_library: bool = True):
        self._chunks: list[np.ndarray] = []
        self._lib = None
        if prefer_library and os.environ.get("EMOSLM_ESPEAK_CLI") != "1":
            self._lib = self._load_library()
        if self._lib is None:
            espeak_program()  # raises a clear error when espeak-ng is missing altogether

    @property
    def backend(self) -> str:
        return "library" if self._lib is not None else "program"

    def _load_library(self):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            return None
        if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0) <= 0:
            return None
        lib.espeak_ng_GetSampleRate.restype = ctypes.c_int

        def on_audio(wav, n, _events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = _CALLBACK(on_audio)  # keep a reference: the library holds the pointer
        lib.espeak_SetSynthCallback(self._cb)
        return lib

    def synth(self, voice: str, text: str, *, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
              volume: int = 100, word_gap: int = 0) -> tuple[np.ndarray, int]:
        """Speak ``text``; return (int16 samples, sampling rate). Parameters are espeak-ng's own units:
        rate in words per minute (80-450), pitch and pitch_range 0-100, volume 0-200, word_gap in 10 ms."""
        rate = int(np.clip(rate, 80, 450))
        pitch, pitch_range = int(np.clip(pitch, 0, 100)), int(np.clip(pitch_range, 0, 100))
        volume, word_gap = int(np.clip(volume, 0, 200)), int(max(0, word_gap))
        if self._lib is None:
            return self._synth_program(voice, text, rate, pitch, pitch_range, volume, word_gap)
        lib = self._lib
        self._chunks.clear()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise TTSError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, volume),
                             (_WORDGAP, word_gap)):
            lib.espeak_SetParameter(param, value, 0)
        data = text.encode("utf-8")
        err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if err != 0 or not self._chunks:
            raise TTSError(f"espeak-ng produced no audio for voice {voice!r} (error {err})")
        return np.concatenate(self._chunks), int(lib.espeak_ng_GetSampleRate())

    def _synth_program(self, voice, text, rate, pitch, pitch_range, volume, word_gap):
        import soundfile as sf

        # The program has no pitch-range flag; SSML's range is relative to the default range of 50.
        ssml = f'<speak><prosody range="{pitch_range * 2}%">{_xml_escape(text)}</prosody></speak>'
        cmd = [espeak_program(), "-m", "-v", voice, "-s", str(rate), "-p", str(pitch), "-a", str(volume),
               "-g", str(word_gap), "--stdout", ssml]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0 or len(proc.stdout) < 100:
            raise TTSError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.decode(errors='replace').strip()}")
        wave, sr = sf.read(io.BytesIO(proc.stdout), dtype="int16")
        return wave, sr


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

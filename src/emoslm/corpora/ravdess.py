"""RAVDESS (Livingstone & Russo, 2018): 24 actors (12 female, 12 male) speaking and singing two fixed statements.

Layout of the audio-only archives (``Audio_Speech_Actors_01-24.zip``, ``Audio_Song_Actors_01-24.zip``),
unpacked into the directory to pass::

    Actor_01/03-01-01-01-01-01-01.wav       # 48 kHz
    ...
    Actor_24/...

The file name is seven two-digit fields: modality (01 full-AV, 02 video-only, 03 audio-only), vocal channel
(01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust,
08 surprised), intensity (01 normal, 02 strong; neutral has only normal), statement (01 "Kids are talking by the
door", 02 "Dogs are sitting by the door"), repetition (01, 02) and actor (01-24; odd actors are male, even ones
female). Every label is in the name; there is no other label file.

RAVDESS has no official partition: everything goes to one split, ``all`` (split protocols such as
leave-one-speaker-out work on the speaker field).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from emoslm.corpora._common import (
    DropLog,
    Utterance,
    build_prepared,
    corpus_root,
    is_hidden,
)
from emoslm.data.manifests import PreparedCorpus
from emoslm.errors import CorpusError, ManifestError

CORPUS = "ravdess"
SPLIT = "all"

MODALITIES = {"01": "full-AV", "02": "video-only", "03": "audio-only"}
VOCAL_CHANNELS = {"01": "speech", "02": "song"}
#: Emotion codes -> (the corpus's word, canonical label).
EMOTIONS = {
    "01": ("neutral", "neutral"), "02": ("calm", "calm"), "03": ("happy", "joy"), "04": ("sad", "sadness"),
    "05": ("angry", "anger"), "06": ("fearful", "fear"), "07": ("disgust", "disgust"),
    "08": ("surprised", "surprise"),
}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITIONS = {"01": 1, "02": 2}

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_DIR = re.compile(r"^Actor_(\d{2})$")


def _code(table: dict, code: str, what: str, path: Path):
    if code not in table:
        raise ManifestError(path, f"unknown {what} code {code!r} in the file name; known: {', '.join(table)}")
    return table[code]


def prepare_ravdess(
    corpus_dir: Path | str,
    output_dir: Path | str | None = None,
    *,
    num_jobs: int = 1,
    include_song: bool = True,
) -> PreparedCorpus:
    """Prepare RAVDESS's audio files (speech, and song unless ``include_song=False``) as one split ``all``."""
    root = corpus_root(corpus_dir, CORPUS)
    actor_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _ACTOR_DIR.match(p.name))
    if not actor_dirs:
        raise CorpusError(f"{CORPUS}: expected folders Actor_01 ... Actor_24 in {root}, found none "
                          f"(unpack Audio_Speech_Actors_01-24.zip there)")
    drops = DropLog(CORPUS)
    utterances: list[Utterance] = []
    for adir in actor_dirs:
        actor_of_dir = _ACTOR_DIR.match(adir.name)[1]  # type: ignore[index]
        for f in sorted(adir.iterdir()):
            if is_hidden(f) or not f.is_file():
                drops.add("ignored, hidden files and folders", f, logging.INFO)
                continue
            if f.suffix.lower() != ".wav":
                drops.add("ignored, non-WAV files (video)", f, logging.INFO)
                continue
            m = _NAME.match(f.stem)
            if m is None:
                raise ManifestError(f, "file name is not seven two-digit fields like 03-01-01-01-01-01-01.wav")
            modality, channel, emo, intensity, statement, repetition, actor = m.groups()
            _code(MODALITIES, modality, "modality", f)
            vocal = _code(VOCAL_CHANNELS, channel, "vocal channel", f)
            word, emotion = _code(EMOTIONS, emo, "emotion", f)
            level = _code(INTENSITIES, intensity, "intensity", f)
            text = _code(STATEMENTS, statement, "statement", f)
            rep = _code(REPETITIONS, repetition, "repetition", f)
            if not 1 <= int(actor) <= 24:
                raise ManifestError(f, f"actor {actor} outside 01-24")
            if actor != actor_of_dir:
                raise ManifestError(f, f"actor {actor} in the file name, but the file is in {adir.name}")
            if vocal == "song" and not include_song:
                drops.add("dropped, song files (include_song=False)", f.name, logging.INFO)
                continue
            utterances.append(Utterance(
                id=f.stem, split=SPLIT, audio=f, speaker=f"{CORPUS}_Actor_{actor}",
                emotion=emotion, emotion_orig=word,
                fields=dict(gender="M" if int(actor) % 2 else "F", text=text, language="en", intensity=level,
                            vocal_channel=vocal, statement=int(statement), repetition=rep),
            ))
    return build_prepared(CORPUS, utterances, output_dir=output_dir, drops=drops, num_jobs=num_jobs,
                          split_order=[SPLIT])

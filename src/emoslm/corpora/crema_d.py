"""CREMA-D (Cao et al., 2014): 91 actors, 12 sentences, six emotions, crowd-rated.

Layout of the release (the GitHub ``CREMA-D`` repository, the directory to pass)::

    AudioWAV/1001_DFA_ANG_XX.wav      # 16 kHz
    VideoDemographics.csv              # ActorID, Age, Sex, Race, Ethnicity

The file name is ``<actor>_<sentence>_<emotion>_<level>``: actor 1001-1091; sentence one of twelve codes
(table below); emotion ANG anger, DIS disgust, FEA fear, HAP happy, NEU neutral, SAD sad; level LO low,
MD medium, HI high, XX unspecified. The label is the emotion the actor was asked to portray; the crowd's
ratings (``processedResults/``) are not read.

CREMA-D has no official partition: everything goes to one split, ``all``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path

from emoslm.corpora._common import (
    DropLog,
    Utterance,
    build_prepared,
    corpus_root,
    is_hidden,
    read_text,
    require_dir,
    require_file,
)
from emoslm.data.manifests import PreparedCorpus
from emoslm.errors import CorpusError, ManifestError

CORPUS = "crema_d"
SPLIT = "all"

SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
LABELS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "joy", "NEU": "neutral", "SAD": "sadness"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SEXES = {"Male": "M", "Female": "F"}
DEMOGRAPHICS = "VideoDemographics.csv"

_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def _read_demographics(path: Path) -> dict[str, dict[str, object]]:
    reader = csv.DictReader(io.StringIO(read_text(path)))
    missing = [c for c in ("ActorID", "Age", "Sex") if c not in (reader.fieldnames or ())]
    if missing:
        raise ManifestError(path, f"missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
    actors: dict[str, dict[str, object]] = {}
    for row, r in enumerate(reader, start=2):
        actor = (r["ActorID"] or "").strip()
        if not re.fullmatch(r"\d{4}", actor):
            raise ManifestError(path, f"ActorID must be four digits, got {actor!r}", row=row)
        sex = (r["Sex"] or "").strip()
        if sex not in SEXES:
            raise ManifestError(path, f"unknown Sex {sex!r}; known: {', '.join(SEXES)}", row=row)
        age = (r["Age"] or "").strip()
        if age and not age.isdigit():
            raise ManifestError(path, f"Age must be a whole number, got {age!r}", row=row)
        actors[actor] = {
            "gender": SEXES[sex], "age": int(age) if age else None,
            "race": (r.get("Race") or "").strip() or None, "ethnicity": (r.get("Ethnicity") or "").strip() or None,
        }
    return actors


def prepare_crema_d(
    corpus_dir: Path | str,
    output_dir: Path | str | None = None,
    *,
    num_jobs: int = 1,
) -> PreparedCorpus:
    """Prepare CREMA-D's audio as one split ``all``, with gender and age from ``VideoDemographics.csv``."""
    root = corpus_root(corpus_dir, CORPUS)
    audio_dir = require_dir(root / "AudioWAV", CORPUS, "the audio files")
    actors = _read_demographics(require_file(root / DEMOGRAPHICS, CORPUS, "the actors' sex and age"))
    drops = DropLog(CORPUS)
    utterances: list[Utterance] = []
    for f in sorted(audio_dir.iterdir()):
        if is_hidden(f) or f.suffix.lower() != ".wav":
            drops.add("ignored, hidden or non-WAV files", f, logging.INFO)
            continue
        m = _NAME.match(f.stem)
        if m is None:
            raise ManifestError(f, "file name is not <actor>_<sentence>_<emotion>_<level> like 1001_DFA_ANG_XX.wav")
        actor, sentence, emo, level = m.groups()
        if sentence not in SENTENCES:
            raise ManifestError(f, f"unknown sentence code {sentence!r}; known: {', '.join(SENTENCES)}")
        if emo not in LABELS:
            raise ManifestError(f, f"unknown emotion code {emo!r}; known: {', '.join(LABELS)}")
        if level not in LEVELS:
            raise ManifestError(f, f"unknown level code {level!r}; known: {', '.join(LEVELS)}")
        demo = actors.get(actor)
        if demo is None:
            drops.add(f"files of actors missing from {DEMOGRAPHICS} (kept, gender left empty)", f.name)
            demo = {}
        utterances.append(Utterance(
            id=f.stem, split=SPLIT, audio=f, speaker=f"{CORPUS}_{actor}", emotion=LABELS[emo], emotion_orig=emo,
            fields=dict(text=SENTENCES[sentence], language="en", intensity=LEVELS[level], sentence=sentence,
                        **demo),
        ))
    if not utterances:
        raise CorpusError(f"{CORPUS}: no WAV file in {audio_dir}")
    return build_prepared(CORPUS, utterances, output_dir=output_dir, drops=drops, num_jobs=num_jobs,
                          split_order=[SPLIT])

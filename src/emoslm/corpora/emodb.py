"""EmoDB, the Berlin Database of Emotional Speech (Burkhardt et al., 2005): ten actors, ten German sentences.

Layout of the release (``download.zip`` from emodb.bilderbar.info, the directory to pass)::

    wav/03a01Fa.wav       # 16 kHz
    (lablaut/, silb/, ...: phonetic labels, not read)

The file name is speaker (2 digits) + text code (3 characters) + emotion letter (German initial: W Ärger/Wut
anger, L Langeweile boredom, E Ekel disgust, A Angst fear, F Freude happiness, T Trauer sadness, N neutral) +
version letter (a, b, ... when an actor recorded a sentence more than once). The ten speakers and the ten texts
are documented on the corpus's web page; both tables are below.

EmoDB has no official partition: everything goes to one split, ``all``.
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
    require_dir,
)
from emoslm.data.manifests import PreparedCorpus
from emoslm.errors import CorpusError, ManifestError

CORPUS = "emodb"
SPLIT = "all"

#: Emotion letter -> (German word, canonical label).
LABELS = {
    "W": ("Ärger (Wut)", "anger"), "L": ("Langeweile", "boredom"), "E": ("Ekel", "disgust"),
    "A": ("Angst", "fear"), "F": ("Freude", "joy"), "T": ("Trauer", "sadness"), "N": ("neutral", "neutral"),
}
#: Speaker -> (gender, age at recording).
SPEAKERS = {
    "03": ("M", 31), "08": ("F", 34), "09": ("F", 21), "10": ("M", 32), "11": ("M", 26),
    "12": ("M", 30), "13": ("F", 32), "14": ("F", 35), "15": ("M", 25), "16": ("F", 31),
}
TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}

_NAME = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])$")


def prepare_emodb(
    corpus_dir: Path | str,
    output_dir: Path | str | None = None,
    *,
    num_jobs: int = 1,
) -> PreparedCorpus:
    """Prepare EmoDB as one split ``all``: speaker, gender, age, German text, emotion, version."""
    root = corpus_root(corpus_dir, CORPUS)
    wav_dir = require_dir(root / "wav", CORPUS, "the audio files, e.g. wav/03a01Fa.wav")
    drops = DropLog(CORPUS)
    utterances: list[Utterance] = []
    for f in sorted(wav_dir.iterdir()):
        if is_hidden(f) or f.suffix.lower() != ".wav":
            drops.add("ignored, hidden or non-WAV files", f, logging.INFO)
            continue
        m = _NAME.match(f.stem)
        if m is None:
            raise ManifestError(f, "file name is not speaker+text+emotion+version like 03a01Fa.wav")
        spk, text_code, letter, version = m.groups()
        if spk not in SPEAKERS:
            raise ManifestError(f, f"unknown speaker {spk!r}; EmoDB's speakers are {', '.join(SPEAKERS)}")
        if text_code not in TEXTS:
            raise ManifestError(f, f"unknown text code {text_code!r}; known: {', '.join(TEXTS)}")
        if letter not in LABELS:
            raise ManifestError(f, f"unknown emotion letter {letter!r}; known: {', '.join(LABELS)}")
        gender, age = SPEAKERS[spk]
        word, emotion = LABELS[letter]
        utterances.append(Utterance(
            id=f.stem, split=SPLIT, audio=f, speaker=f"{CORPUS}_{spk}", emotion=emotion, emotion_orig=letter,
            fields=dict(gender=gender, age=age, text=TEXTS[text_code], language="de", text_code=text_code,
                        emotion_word=word, version=version),
        ))
    if not utterances:
        raise CorpusError(f"{CORPUS}: no WAV file in {wav_dir}")
    return build_prepared(CORPUS, utterances, output_dir=output_dir, drops=drops, num_jobs=num_jobs,
                          split_order=[SPLIT])

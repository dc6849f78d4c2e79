"""ESD, the Emotional Speech Dataset (Zhou et al., 2021): 10 Mandarin and 10 English speakers, 350 parallel
sentences each in five emotions.

Layout of the release (``Emotion Speech Dataset``, the directory to pass; the folder holding it also works)::

    ReadMe.txt
    0001/
        0001.txt                          # <utt><TAB><text><TAB><emotion>, one line per utterance
        Angry/train/0001_000351.wav       # 16 kHz; some copies have no train/evaluation/test folders
        Angry/evaluation/...
        Angry/test/...
        Happy/ Neutral/ Sad/ Surprise/
    ...
    0020/

Speakers 0001-0010 speak Mandarin (language ``zh``), 0011-0020 English (``en``); genders follow the ReadMe.
Each speaker's utterances are numbered in blocks of 350 per emotion (Neutral 1-350, Angry 351-700, Happy
701-1050, Sad 1051-1400, Surprise 1401-1750). Within a block the release puts the first 20 in
``evaluation``, the next 30 in ``test`` and the last 300 in ``train``; when a copy lacks those folders the
adapter applies the same rule to the utterance number. Splits are named train, dev (``evaluation``) and test.

The transcript files come in several encodings (UTF-8, UTF-16, GB2312, Latin-1 depending on the speaker); the
adapter detects them. The emotion label comes from the folder; the transcript's third column (English words, or
Chinese ones such as 中立 for the Mandarin speakers) is only cross-checked, and disagreements are logged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

from emoslm.corpora._common import (
    DropLog,
    Utterance,
    build_prepared,
    corpus_root,
    read_text,
)
from emoslm.data.manifests import PreparedCorpus
from emoslm.errors import CorpusError, ManifestError

CORPUS = "esd"
#: Emotion folders -> canonical labels.
LABELS = {"Neutral": "neutral", "Angry": "anger", "Happy": "joy", "Sad": "sadness", "Surprise": "surprise"}
#: Words of the transcripts' emotion column -> emotion folder.
TRANSCRIPT_EMOTIONS = {
    **{k: k for k in LABELS},
    "中立": "Neutral", "生气": "Angry", "快乐": "Happy", "伤心": "Sad", "惊喜": "Surprise",
}
#: Gender of each speaker, from the corpus's ReadMe.
GENDERS = {
    "0001": "F", "0002": "F", "0003": "F", "0004": "M", "0005": "M",
    "0006": "M", "0007": "F", "0008": "M", "0009": "F", "0010": "M",
    "0011": "M", "0012": "M", "0013": "M", "0014": "M", "0015": "F",
    "0016": "F", "0017": "F", "0018": "F", "0019": "F", "0020": "M",
}
SPLIT_DIRS = {"train": "train", "evaluation": "dev", "test": "test"}
SPLITS = ("train", "dev", "test")
BLOCK = 350  # utterances per emotion and speaker

_SPEAKER_DIR = re.compile(r"^\d{4}$")
_UTT = re.compile(r"^(\d{4})_(\d{6})$")
_RELEASE_DIRS = ("Emotion Speech Dataset", "Emotional Speech Dataset (ESD)/Emotion Speech Dataset")


def language_of(speaker: str) -> str:
    return "zh" if int(speaker) <= 10 else "en"


def split_of_number(number: int) -> str:
    """The documented split of utterance ``number`` (1-1750) of a speaker."""
    offset = (number - 1) % BLOCK + 1
    if offset <= 20:
        return "dev"
    if offset <= 50:
        return "test"
    return "train"


def _read_transcript(path: Path, speaker: str) -> dict[str, tuple[str, str | None]]:
    """utterance -> (text, the transcript's emotion word or None)."""
    encodings = ("utf-8", "gb18030") if language_of(speaker) == "zh" else ("utf-8", "cp1252", "latin-1")
    out: dict[str, tuple[str, str | None]] = {}
    for row, line in enumerate(read_text(path, encodings).splitlines(), start=1):
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        fields = [x.strip() for x in (line.split("\t") if "\t" in line else line.split())]
        uid = fields[0]
        m = _UTT.match(uid)
        if m is None or m[1] != speaker:
            raise ManifestError(path, f"line does not start with an utterance id of speaker {speaker} "
                                      f"like {speaker}_000001: {line[:60]!r}", row=row)
        rest = fields[1:]
        # <utt> <text> <emotion>; a few lines of the release lack the emotion column or hold extra tabs
        tabbed = "\t" in line
        if (tabbed and len(rest) == 2) or (len(rest) >= 2 and rest[-1] in TRANSCRIPT_EMOTIONS):
            emotion_word: str | None = rest.pop()
        else:
            emotion_word = None
        text = " ".join(" ".join(rest).split())
        if uid in out:
            raise ManifestError(path, f"utterance {uid} appears twice", row=row)
        out[uid] = (text, emotion_word)
    return out


def _find_root(root: Path) -> Path:
    if any(_SPEAKER_DIR.match(p.name) for p in root.iterdir() if p.is_dir()):
        return root
    for sub in _RELEASE_DIRS:
        if (root / sub).is_dir():
            return root / sub
    raise CorpusError(f"{CORPUS}: expected speaker folders 0001 ... 0020 in {root}, found none; pass the "
                      f"'Emotion Speech Dataset' folder")


def prepare_esd(
    corpus_dir: Path | str,
    output_dir: Path | str | None = None,
    *,
    num_jobs: int = 1,
    languages: Sequence[str] | None = None,
) -> PreparedCorpus:
    """Prepare ESD's train/dev/test splits; ``languages`` (``("en",)``, ``("zh",)``) keeps some speakers only."""
    root = _find_root(corpus_root(corpus_dir, CORPUS))
    if languages is not None and set(languages) - {"zh", "en"}:
        raise CorpusError(f"{CORPUS}: languages must be among 'zh' and 'en', got {list(languages)}")
    drops = DropLog(CORPUS)
    log = logging.getLogger("emoslm.corpora")
    utterances: list[Utterance] = []
    for sdir in sorted(p for p in root.iterdir() if p.is_dir() and _SPEAKER_DIR.match(p.name)):
        spk = sdir.name
        if spk not in GENDERS:
            raise CorpusError(f"{CORPUS}: unexpected speaker folder {sdir}; ESD's speakers are 0001-0020")
        lang = language_of(spk)
        if languages is not None and lang not in languages:
            log.info("%s: speaker %s (%s) left out by languages=%s", CORPUS, spk, lang, list(languages))
            continue
        tpath = sdir / f"{spk}.txt"
        if tpath.is_file():
            transcript = _read_transcript(tpath, spk)
        else:
            drops.add("speakers without a transcript file (text left empty)", tpath)
            transcript = {}
        emo_dirs = [sdir / e for e in LABELS if (sdir / e).is_dir()]
        if not emo_dirs:
            raise CorpusError(f"{CORPUS}: speaker folder {sdir} has none of the emotion folders "
                              f"{', '.join(LABELS)}")
        for e in LABELS:
            if not (sdir / e).is_dir():
                drops.add("missing emotion folders", sdir / e)
        for edir in emo_dirs:
            folder = edir.name
            for f in sorted(edir.rglob("*")):
                if f.is_dir():
                    continue
                rel = f.relative_to(edir).parts
                if any(part.startswith(".") for part in rel) or f.suffix.lower() != ".wav":
                    drops.add("ignored, hidden or non-WAV files", f, logging.INFO)
                    continue
                m = _UTT.match(f.stem)
                if m is None or m[1] != spk:
                    raise ManifestError(f, f"file name is not {spk}_<6 digits>.wav")
                number = int(m[2])
                if len(rel) == 1:
                    split = split_of_number(number)
                elif len(rel) == 2 and rel[0] in SPLIT_DIRS:
                    split = SPLIT_DIRS[rel[0]]
                else:
                    raise CorpusError(f"{CORPUS}: unexpected folder for {f}; audio lies in {edir} or in its "
                                      f"{'/'.join(SPLIT_DIRS)} sub-folders")
                text, word = transcript.get(f.stem, (None, None))
                if transcript and f.stem not in transcript:
                    drops.add("utterances without a transcript line (text left empty)", f.stem)
                if word is not None and word not in TRANSCRIPT_EMOTIONS:
                    drops.add("transcript emotion words not recognised (not cross-checked)", f"{f.stem}: {word}",
                              logging.INFO)
                elif word is not None and TRANSCRIPT_EMOTIONS[word] != folder:
                    drops.add("transcript emotion disagrees with the folder (the folder is used)",
                              f"{f.stem}: {word} vs {folder}")
                utterances.append(Utterance(
                    id=f.stem, split=split, audio=f, speaker=f"{CORPUS}_{spk}", emotion=LABELS[folder],
                    emotion_orig=folder,
                    fields=dict(gender=GENDERS[spk], text=text or None, language=lang),
                ))
    return build_prepared(CORPUS, utterances, output_dir=output_dir, drops=drops, num_jobs=num_jobs,
                          split_order=SPLITS)

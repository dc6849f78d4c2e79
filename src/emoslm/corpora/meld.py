"""MELD (Poria et al., 2019): multi-party dialogues from the TV series *Friends*, one label per utterance.

Layout of ``MELD.Raw`` (the directory to pass) once its archives are unpacked::

    train/train_sent_emo.csv        # the CSV may also sit at the top level (as dev/test ones do)
    dev_sent_emo.csv
    test_sent_emo.csv
    train_splits/dia0_utt0.mp4      # or train/train_splits/
    dev_splits_complete/dia0_utt0.mp4
    output_repeated_splits_test/dia0_utt0.mp4

Each CSV row has ``Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season,
Episode, StartTime, EndTime``; the clip of a row is ``dia{Dialogue_ID}_utt{Utterance_ID}`` in its split's folder.
Emotions: neutral, joy, sadness, anger, surprise, fear, disgust.

The official clips are MP4 video. Most users extract the audio first (e.g.
``ffmpeg -i dia0_utt0.mp4 -ac 1 -ar 16000 dia0_utt0.wav``) next to, or instead of, the MP4: for each row the
adapter takes ``.wav``, else ``.flac``, else ``.mp4`` (which needs an audio backend able to read MP4, such as
ffmpeg). Rows whose clip is missing (the release lacks a few) are dropped, counted and logged.

Splits: train, dev, test. Utterance ids carry the split (``train_dia0_utt0``) because the official ids restart in
each split. Speakers are the character names (``meld_Joey``); MELD gives no gender.
"""

from __future__ import annotations

import csv
import io
import logging
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

CORPUS = "meld"
SPLITS = ("train", "dev", "test")
#: Folders the clips of each split come in (official names first).
CLIP_DIRS = {
    "train": ("train_splits", "train/train_splits"),
    "dev": ("dev_splits_complete", "dev/dev_splits_complete", "dev_splits"),
    "test": ("output_repeated_splits_test", "test/output_repeated_splits_test", "test_splits"),
}
AUDIO_EXTS = (".wav", ".flac", ".mp4")  # in order of preference
LABELS = {"neutral": "neutral", "joy": "joy", "sadness": "sadness", "anger": "anger", "surprise": "surprise",
          "fear": "fear", "disgust": "disgust"}
COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode",
           "StartTime", "EndTime")


def _find(root: Path, candidates: Sequence[str], is_dir: bool) -> Path | None:
    for c in candidates:
        p = root / c
        if (p.is_dir() if is_dir else p.is_file()):
            return p
    return None


def _int(value: str | None, name: str, path: Path, row: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ManifestError(path, f"{name} must be an integer, got {value!r}", row=row) from None


def prepare_meld(
    corpus_dir: Path | str,
    output_dir: Path | str | None = None,
    *,
    num_jobs: int = 1,
    splits: Sequence[str] = SPLITS,
) -> PreparedCorpus:
    """Prepare MELD's train/dev/test splits (``splits`` selects some of them)."""
    root = corpus_root(corpus_dir, CORPUS)
    drops = DropLog(CORPUS)
    utterances: list[Utterance] = []
    for split in splits:
        if split not in SPLITS:
            raise CorpusError(f"{CORPUS}: unknown split {split!r}; known: {', '.join(SPLITS)}")
        csv_names = (f"{split}_sent_emo.csv", f"{split}/{split}_sent_emo.csv")
        csv_path = _find(root, csv_names, is_dir=False)
        if csv_path is None:
            raise CorpusError(f"{CORPUS}: expected label file {root / csv_names[0]} (or {root / csv_names[1]}) "
                              f"is missing; is this the MELD.Raw root?")
        clip_dir = _find(root, CLIP_DIRS[split], is_dir=True)
        if clip_dir is None:
            raise CorpusError(f"{CORPUS}: expected clip folder {root / CLIP_DIRS[split][0]} is missing "
                              f"(also looked for {', '.join(CLIP_DIRS[split][1:])})")
        present = {p.name for p in clip_dir.iterdir() if not p.name.startswith(".")}

        # The CSVs are UTF-8, but copies saved by spreadsheet programs are often cp1252.
        reader = csv.DictReader(io.StringIO(read_text(csv_path)))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ManifestError(csv_path, f"missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        for row, r in enumerate(reader, start=2):
            if None in r:
                raise ManifestError(csv_path, "more fields than header columns", row=row)
            label = (r["Emotion"] or "").strip()
            if label.lower() not in LABELS:
                raise ManifestError(csv_path, f"unknown Emotion {label!r}; known: {', '.join(LABELS)}", row=row)
            dia = _int(r["Dialogue_ID"], "Dialogue_ID", csv_path, row)
            utt = _int(r["Utterance_ID"], "Utterance_ID", csv_path, row)
            speaker = (r["Speaker"] or "").strip()
            if not speaker:
                raise ManifestError(csv_path, "empty Speaker", row=row)
            stem = f"dia{dia}_utt{utt}"
            audio = next((clip_dir / f"{stem}{e}" for e in AUDIO_EXTS if f"{stem}{e}" in present), None)
            if audio is None:
                drops.add("dropped, rows whose clip is missing", f"{split}/{stem}")
                continue
            utterances.append(Utterance(
                id=f"{split}_{stem}", split=split, audio=audio, speaker=f"{CORPUS}_{speaker}",
                emotion=LABELS[label.lower()], emotion_orig=label,
                fields=dict(
                    text=" ".join((r["Utterance"] or "").split()) or None, language="en",
                    dialog=f"{split}_dia{dia}", utterance_index=utt,
                    sentiment=(r["Sentiment"] or "").strip() or None,
                    season=_int(r["Season"], "Season", csv_path, row),
                    episode=_int(r["Episode"], "Episode", csv_path, row),
                    start_time=(r["StartTime"] or "").strip() or None,
                    end_time=(r["EndTime"] or "").strip() or None,
                ),
            ))
        n_rows = sum(1 for u in utterances if u.split == split)
        logging.getLogger("emoslm.corpora").info("%s: %s: %d rows with a clip in %s", CORPUS, split, n_rows,
                                                 clip_dir)
    return build_prepared(CORPUS, utterances, output_dir=output_dir, drops=drops, num_jobs=num_jobs,
                          split_order=SPLITS)

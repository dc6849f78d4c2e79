"""Tiny copies of real corpora: the released file names, label files and folder layouts, with 0.3 s sine waves
at each corpus's sampling rate. Each builder returns the directory to pass to the adapter."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

SECONDS = 0.3


def write_wav(path: Path, sr: int = 16000, seconds: float = SECONDS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, 0.1 * np.sin(2 * np.pi * 220 * t), sr, subtype="PCM_16")
    return path


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# ------------------------------------------------------------------------------------------------ IEMOCAP

#: session -> dialog -> [(utterance, label, (val, act, dom), text)]
IEMOCAP_SESSIONS = {
    1: {
        "Ses01F_impro01": [
            ("Ses01F_impro01_F000", "neu", (2.5, 2.5, 2.5), "Excuse me."),
            ("Ses01F_impro01_M000", "ang", (1.5, 4.0, 4.5), "Do you have your forms?"),
            ("Ses01F_impro01_F001", "xxx", (2.0, 3.0, 3.0), "Yeah."),
            ("Ses01F_impro01_M001", "fru", (2.0, 3.5, 3.0), "Let me see them."),
        ],
        "Ses01F_script01_1": [
            ("Ses01F_script01_1_F000", "exc", (4.0, 4.0, 3.0), "Oh my God!"),
            ("Ses01F_script01_1_M000", "hap", (4.5, 3.0, 3.0), "I know."),
        ],
    },
    **{n: {f"Ses0{n}M_impro02": [
        (f"Ses0{n}M_impro02_F000", "sad", (1.5, 2.0, 2.0), "I miss him."),
        (f"Ses0{n}M_impro02_M000", "neu", (3.0, 2.5, 3.0), "I know."),
    ]} for n in (2, 3, 4, 5)},
}


def iemocap_label_line(utt: str, label: str, vad: tuple[float, float, float], start: float = 6.2901) -> str:
    v, a, d = vad
    return f"[{start:.4f} - {start + 1.9456:.4f}]\t{utt}\t{label}\t[{v:.4f}, {a:.4f}, {d:.4f}]"


def make_iemocap(root: Path, sessions=IEMOCAP_SESSIONS) -> Path:
    release = root / "IEMOCAP_full_release"
    for n, dialogs in sessions.items():
        sdir = release / f"Session{n}"
        for dialog, utts in dialogs.items():
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            trans = []
            for i, (utt, label, vad, text) in enumerate(utts):
                start = 6.2901 + 3 * i
                lines += [iemocap_label_line(utt, label, vad, start), "C-E2:\tNeutral;\t()", "C-E3:\tAnger;\t()",
                          "A-E3:\tval 3; act 2; dom  2;\t()", ""]
                trans.append(f"{utt} [{start:08.4f}-{start + 1.9456:08.4f}]: {text}")
                write_wav(sdir / "sentences" / "wav" / dialog / f"{utt}.wav")
            write_text(sdir / "dialog" / "EmoEvaluation" / f"{dialog}.txt", "\n".join(lines) + "\n")
            write_text(sdir / "dialog" / "transcriptions" / f"{dialog}.txt", "\n".join(trans) + "\n")
            # per-annotator files live in sub-folders and must not be read as labels
            write_text(sdir / "dialog" / "EmoEvaluation" / "Categorical" / f"{dialog}_e2_cat.txt",
                       f"{utts[0][0]} :Neutral state; ()\n")
    return release


# -------------------------------------------------------------------------------------------- MSP-Podcast

MSP_COLUMNS = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
#: (FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set, transcript or None)
MSP_ROWS = [
    ("MSP-PODCAST_0001_0008.wav", "N", "4.2", "4.0", "4.4", "127", "Female", "Train", "so what we did was"),
    ("MSP-PODCAST_0001_0009.wav", "H", "5.0", "6.2", "5.0", "Unknown", "Unknown", "Train", None),
    ("MSP-PODCAST_0001_0010.wav", "X", "3.0", "3.0", "3.0", "127", "Female", "Train", "right"),
    ("MSP-PODCAST_0002_0001.wav", "A", "6.0", "1.8", "5.6", "45", "Male", "Development", "no way"),
    ("MSP-PODCAST_0003_0001.wav", "S", "2.2", "2.0", "3.0", "310", "Male", "Test1", "it was hard"),
    ("MSP-PODCAST_0004_0001.wav", "C", "4.0", "3.0", "5.0", "99", "Female", "Test2", "whatever"),
]


def make_msp_podcast(root: Path, rows=MSP_ROWS) -> Path:
    with_labels = root / "Labels"
    with_labels.mkdir(parents=True, exist_ok=True)
    with (with_labels / "labels_consensus.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MSP_COLUMNS)
        for r in rows:
            w.writerow(r[:8])
    for r in rows:
        write_wav(root / "Audios" / r[0])
        if r[8] is not None:
            write_text(root / "Transcripts" / r[0].replace(".wav", ".txt"), r[8] + "\n")
    return root


# --------------------------------------------------------------------------------------------------- MELD

MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
                "Episode", "StartTime", "EndTime"]
#: split -> [(Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, has_clip)]
MELD_ROWS = {
    "train": [
        ("also I was the point person on my company's transition from the KL-5 to GR-6 system.", "Chandler",
         "neutral", "neutral", 0, 0, True),
        ("You must've had your hands full.", "The Interviewer", "neutral", "neutral", 0, 1, True),
        ("That I did. That I did.", "Chandler", "joy", "positive", 0, 2, True),
        ("So let's talk a little bit about your duties.", "The Interviewer", "neutral", "neutral", 0, 3, False),
    ],
    "dev": [
        ("Oh my God, he's lost it. He's totally lost it.", "Phoebe", "sadness", "negative", 0, 0, True),
        ("What?", "Monica", "surprise", "negative", 0, 1, True),
    ],
    "test": [
        ("Why do all you're coffee mugs have numbers on the bottom?", "Mark", "surprise", "positive", 0, 0, True),
        ("Oh. That's so Monica can keep track.", "Rachel", "anger", "negative", 0, 1, True),
    ],
}
MELD_CLIP_DIRS = {"train": "train/train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}


def make_meld(root: Path, rows=MELD_ROWS) -> Path:
    csv_paths = {"train": root / "train" / "train_sent_emo.csv", "dev": root / "dev_sent_emo.csv",
                 "test": root / "test_sent_emo.csv"}
    for split, items in rows.items():
        path = csv_paths[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(MELD_COLUMNS)
            for i, (text, spk, emo, sent, dia, utt, has_clip) in enumerate(items, start=1):
                w.writerow([i, text, spk, emo, sent, dia, utt, 8, 21, "00:16:16,059", "00:16:21,731"])
                if has_clip:
                    write_wav(root / MELD_CLIP_DIRS[split] / f"dia{dia}_utt{utt}.wav")
    # the official clips are MP4; a converted WAV beside one must be preferred (this MP4 is not even readable)
    write_text(root / MELD_CLIP_DIRS["dev"] / "dia0_utt0.mp4", "not a video")
    return root


# ------------------------------------------------------------------------------------------------ RAVDESS

RAVDESS_FILES = [
    "03-01-01-01-01-01-01.wav",  # speech, neutral, normal, kids, rep 1, actor 1 (male)
    "03-01-05-02-02-02-01.wav",  # speech, angry, strong, dogs, rep 2, actor 1
    "03-02-03-01-01-01-01.wav",  # song, happy, actor 1
    "03-01-02-01-01-01-02.wav",  # speech, calm, actor 2 (female)
    "03-01-08-02-02-01-02.wav",  # speech, surprised, strong, actor 2
]


def make_ravdess(root: Path, files=RAVDESS_FILES) -> Path:
    for name in files:
        write_wav(root / f"Actor_{name[-6:-4]}" / name, sr=48000)
    return root


# ------------------------------------------------------------------------------------------------ CREMA-D

CREMA_FILES = ["1001_DFA_ANG_XX.wav", "1001_IEO_HAP_HI.wav", "1002_TIE_SAD_LO.wav", "1091_WSI_NEU_XX.wav"]
CREMA_DEMOGRAPHICS = [
    ("1001", "51", "Male", "Caucasian", "Not Hispanic"),
    ("1002", "21", "Female", "Caucasian", "Not Hispanic"),
    ("1091", "29", "Female", "Asian", "Not Hispanic"),
]


def make_crema_d(root: Path, files=CREMA_FILES, demographics=CREMA_DEMOGRAPHICS) -> Path:
    for name in files:
        write_wav(root / "AudioWAV" / name)
    lines = ["ActorID,Age,Sex,Race,Ethnicity"] + [",".join(r) for r in demographics]
    write_text(root / "VideoDemographics.csv", "\n".join(lines) + "\n")
    return root


# -------------------------------------------------------------------------------------------------- EmoDB

EMODB_FILES = ["03a01Fa.wav", "03a01Nc.wav", "08a02Wa.wav", "16b10Tb.wav", "11b03Lb.wav"]


def make_emodb(root: Path, files=EMODB_FILES) -> Path:
    for name in files:
        write_wav(root / "wav" / name)
    write_text(root / "lablaut" / "03a01Fa.lab", "phonetic labels, not read\n")
    return root


# ---------------------------------------------------------------------------------------------------- ESD

def make_esd(root: Path) -> Path:
    """Three speakers: 0001 (Mandarin, GB2312 transcript, train/evaluation/test folders), 0004 (Mandarin, UTF-16
    transcript, folders) and 0011 (English, UTF-8 transcript, the flat layout of some copies)."""
    data = root / "Emotional Speech Dataset (ESD)" / "Emotion Speech Dataset"
    write_text(data / "ReadMe.txt", "0001: Chinese Female\n")
    # 0001: Neutral evaluation/test/train and one Angry file, official folders
    for folder, split, num in [("Neutral", "evaluation", 1), ("Neutral", "test", 21), ("Neutral", "train", 51),
                               ("Angry", "train", 700)]:
        write_wav(data / "0001" / folder / split / f"0001_{num:06d}.wav")
    write_text(data / "0001" / "0001.txt",
               "0001_000001\t打远一看，它们的确很是美丽，\t中立\n"
               "0001_000021\t他说话很慢。\t中立\n"
               "0001_000051\t今天天气很好。\t中立\n"
               "0001_000700\t我不想去！\t生气\n", encoding="gb2312")
    for folder, split, num in [("Happy", "evaluation", 701), ("Sad", "train", 1400)]:
        write_wav(data / "0004" / folder / split / f"0004_{num:06d}.wav")
    write_text(data / "0004" / "0004.txt",
               "0004_000701\t太好了！\t快乐\n0004_001400\t我很难过。\t伤心\n", encoding="utf-16")
    # 0011: flat layout, split from the utterance number
    for folder, num in [("Neutral", 1), ("Neutral", 21), ("Neutral", 51), ("Surprise", 1401), ("Surprise", 1750)]:
        write_wav(data / "0011" / folder / f"0011_{num:06d}.wav")
    write_text(data / "0011" / "0011.txt",
               "0011_000001\tAuthor of the danger trail, Philip Steels, etc.\tNeutral\n"
               "0011_000021\tThey went up to the dark mass job had pointed out.\tNeutral\n"
               "0011_000051\tLet the glass globe be.\n"  # a line without the emotion column, as the release has
               "0011_001401\tWell, we'll see.\tSurprise\n"
               "0011_001750\tI was not aware of it.\tSurprise\n")
    return data

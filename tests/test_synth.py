"""The synthetic emotional corpus: determinism, splits, relative emotion rendering, caching and resume."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoslm.data.manifests import emotion_of, load_prepared
from emoslm.labels import EKMAN7
from emoslm.synth.corpus import PRESETS, plan_corpus, synthesize_corpus
from emoslm.synth.prosody import EMOTION_CUES
from emoslm.synth.sentences import EMOTION_WORDS, sentence_bank

TINY = replace(PRESETS["tiny"], n_speakers=6, sentences_per_speaker=1, dev_speakers=1, test_speakers=1)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.wav")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    synthesize_corpus(out, "tiny", workers=2, progress=False)
    return out


def test_sentences_do_not_name_emotions():
    bank = sentence_bank()
    assert len(bank) == len(set(bank)) == 400
    for s in bank:
        words = {w.strip(".,'").lower() for w in s.split()}
        assert not words & EMOTION_WORDS, s


def test_demo_preset_has_enough_speakers_and_is_speaker_disjoint():
    speakers, utts = plan_corpus(PRESETS["demo"])
    split_of = {}
    for u in utts:
        assert split_of.setdefault(u.speaker, u.split) == u.split  # one split per speaker
    counts = defaultdict(int)
    for s, sp in split_of.items():
        counts[sp] += 1
    assert len(speakers) >= 100 and counts["train"] >= 100
    assert {u.emotion for u in utts} == set(EKMAN7)
    # every speaker says the same sentences in every emotion: the words carry no emotion
    by_spk = defaultdict(lambda: defaultdict(set))
    for u in utts:
        by_spk[u.speaker][u.emotion].add(u.text)
    for per_emotion in by_spk.values():
        assert len({frozenset(t) for t in per_emotion.values()}) == 1
    # speakers differ in baseline pitch, rate and voice
    assert np.std([s.pitch for s in speakers]) > 8 and np.std([s.rate for s in speakers]) > 10
    assert len({s.voice for s in speakers}) > 0.8 * len(speakers)


def test_emotion_is_rendered_relative_to_the_speaker_baseline():
    speakers, utts = plan_corpus(PRESETS["demo"])
    pitch = defaultdict(lambda: defaultdict(list))
    for u in utts:
        pitch[u.speaker][u.emotion].append(u.params.pitch)
    # population average departure from the speaker's own neutral follows the prototype's sign ...
    for e in ("joy", "surprise", "sadness"):
        d = np.mean([np.mean(p[e]) - np.mean(p["neutral"]) for p in pitch.values()])
        assert np.sign(d) == np.sign(EMOTION_CUES[e]["pitch"]), (e, d)
    # ... but absolute pitch overlaps across speakers: one speaker's sad is higher than another's joy
    sad_hi = max(np.mean(p["sadness"]) for p in pitch.values())
    joy_lo = min(np.mean(p["joy"]) for p in pitch.values())
    assert sad_hi > joy_lo + 20
    # expressivity differs and some speakers are idiosyncratic
    assert np.std([s.expressivity for s in speakers]) > 0.15
    assert 0.2 < np.mean([bool(s.idiosyncrasies) for s in speakers]) < 0.7


def test_tiny_corpus_manifests_and_attributes(tiny_corpus: Path):
    prepared = load_prepared(tiny_corpus, "synth")
    assert set(prepared) == {"train", "dev", "test"}
    speakers = {sp: {s.speaker for s in prepared[sp]["supervisions"]} for sp in prepared}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["dev"])
    sups = [s for sp in prepared.values() for s in sp["supervisions"]]
    assert len(sups) == 12 * 2 * 7
    for s in sups[:20]:
        assert emotion_of(s) in EKMAN7 and s.gender in ("M", "F") and s.text
        for a in ("pitch_level", "tempo_level", "energy_level"):
            assert s.custom[a] in ("low", "normal", "high")
    levels = [s.custom["pitch_level"] for s in sups]
    assert {levels.count(x) for x in ("low", "normal", "high")} and min(levels.count(x) for x in ("low", "high")) > 30
    rec = prepared["train"]["recordings"][sups[0].recording_id] if sups[0].recording_id in prepared["train"]["recordings"].ids else None
    path = Path((rec or next(iter(prepared["dev"]["recordings"]))).sources[0].source)
    info = sf.info(str(path))
    assert info.samplerate == 16000 and info.channels == 1 and info.duration > 0.5
    spk_rows = [json.loads(l) for l in (tiny_corpus / "speakers.jsonl").read_text().splitlines()]
    assert len(spk_rows) == 12 and all("expressivity" in r and "emotion_cues" in r for r in spk_rows)


def test_loud_emotions_are_louder_than_sad_for_the_same_speaker(tiny_corpus: Path):
    prepared = load_prepared(tiny_corpus, "synth")
    rms = defaultdict(dict)
    for sp in prepared.values():
        for s in sp["supervisions"]:
            if emotion_of(s) in ("anger", "sadness") and s.id.endswith("_00"):
                x, _ = sf.read(sp["recordings"][s.recording_id].sources[0].source)
                rms[s.speaker][emotion_of(s)] = float(np.sqrt(np.mean(x**2)))
    louder = [r["anger"] > r["sadness"] for r in rms.values()]
    assert sum(louder) >= 0.75 * len(louder)


def test_deterministic_for_a_seed_whatever_the_workers(tmp_path: Path):
    a = synthesize_corpus(tmp_path / "a", TINY, workers=1, progress=False)
    b = synthesize_corpus(tmp_path / "b", TINY, workers=2, progress=False)
    assert a["utterances"] == b["utterances"] == 6 * 7
    assert _digest(tmp_path / "a" / "wav") == _digest(tmp_path / "b" / "wav")
    c = synthesize_corpus(tmp_path / "c", replace(TINY, seed=1), workers=2, progress=False)
    assert c["key"] != a["key"] and _digest(tmp_path / "c" / "wav") != _digest(tmp_path / "a" / "wav")


def test_cached_and_resumed(tmp_path: Path):
    out = tmp_path / "r"
    first = synthesize_corpus(out, TINY, workers=2, progress=False)
    again = synthesize_corpus(out, TINY, workers=2, progress=False)
    assert again["cached"] and again["key"] == first["key"]
    # an interrupted run: the summary was never written and some files are missing -> only those are redone
    (out / "summary.json").unlink()
    wavs = sorted((out / "wav").rglob("*.wav"))
    before = _digest(out / "wav")
    for f in wavs[:5]:
        f.unlink()
    (wavs[5].with_name(wavs[5].name + ".part")).write_bytes(b"half-written")
    resumed = synthesize_corpus(out, TINY, workers=2, progress=False)
    # only the speakers with missing files are redone (whole speakers: see render_speaker)
    assert 0 < resumed["synthesised_now"] < resumed["utterances"] and resumed["synthesised_now"] % 7 == 0
    assert not resumed["cached"]
    assert _digest(out / "wav") == before

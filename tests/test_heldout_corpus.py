"""The held-out synthetic corpus: splits that share no sentence and no voice, speakers who differ in how they
express emotion, several rendering methods, and an `unseen` split of a held-out voice family and method."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoslm.data.manifests import load_prepared
from emoslm.data.splits import split_overlap
from emoslm.synth.corpus import PRESETS, plan_corpus, synthesize_corpus
from emoslm.synth.prosody import CUES, RenderParams
from emoslm.synth.rendering import RenderError, run_sox, sox_chain, tape_speed

SR = 16000


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[int(np.argmax(spec))])


def _tone(hz: float = 200.0, seconds: float = 1.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(int(SR * seconds)) / SR)).astype(np.float32)


def _params(**kw) -> RenderParams:
    base = dict(pitch=50, pitch_range=50, rate=175, word_gap=0, loudness_db=0.0, bright=0.0, breath=0.0, harsh=0.0,
                tremolo=0.0, tremolo_hz=5.0, method="sox", base_pitch=50, base_range=50, base_rate=175)
    return RenderParams(**{**base, **kw})


def test_heldout_plan_shares_no_sentence_voice_or_method_across_splits():
    speakers, utts = plan_corpus(PRESETS["heldout"])
    texts, bases, variants, methods, spk = (defaultdict(set) for _ in range(5))
    for u in utts:
        texts[u.split].add(u.text)
        base, _, variant = u.voice.partition("+")
        bases[u.split].add(base)
        variants[u.split].add(variant or base)
        methods[u.split].add(u.params.method)
        spk[u.split].add(u.speaker)
    assert {sp: len(s) for sp, s in spk.items()} == {"train": 100, "dev": 10, "test": 20, "unseen": 16}
    for a in spk:
        for b in spk:
            if a < b:
                assert not texts[a] & texts[b], (a, b)
                assert not bases[a] & bases[b], (a, b)
                assert not variants[a] & variants[b], (a, b)
    assert len(bases["test"]) >= 2
    # the unseen split: only mbrola voices (a family no other split uses) and only the held-out method
    assert all(b.startswith("mb-") for b in bases["unseen"])
    assert not any(b.startswith("mb-") for sp in ("train", "dev", "test") for b in bases[sp])
    assert methods["unseen"] == {"sox"}
    assert methods["train"] == {"engine", "tape"} and "sox" not in methods["test"] | methods["dev"]


def test_speakers_differ_in_which_cues_they_use_and_how():
    speakers, _ = plan_corpus(PRESETS["heldout"])
    used = [tuple(s.cues_used) for s in speakers]
    assert len(set(used)) > 20 and all(len(u) >= 3 for u in used)
    assert any(len(u) < len(CUES) for u in used)
    # the same emotion moves pitch up for some speakers and down for others
    signs = {np.sign(s.emotion_cues["joy"][CUES.index("pitch")]) for s in speakers}
    assert {-1.0, 1.0} <= signs
    # the corpus without variation keeps every cue for every speaker
    assert all(len(s.cues_used) == len(CUES) for s in plan_corpus(PRESETS["tiny"])[0])


def test_a_held_out_method_used_in_training_is_refused():
    with pytest.raises(ValueError, match="held out"):
        plan_corpus(replace(PRESETS["heldout_tiny"], methods=("engine", "sox")))
    with pytest.raises(ValueError, match="unknown rendering method"):
        plan_corpus(replace(PRESETS["heldout_tiny"], methods=("vocoder",)))


def test_tape_speed_raises_pitch_and_shortens():
    y = tape_speed(_tone(200.0), SR, 12.0)  # one octave up
    assert abs(_peak_hz(y) - 400.0) < 5
    assert abs(y.size - SR / 2) < 20


def test_sox_method_shifts_pitch_without_changing_tempo_and_changes_tempo_alone():
    up = run_sox(_tone(200.0), SR, sox_chain(_params(pitch=62)))  # +12 units = +2.4 semitones
    assert abs(_peak_hz(up) - 200.0 * 2 ** (2.4 / 12)) < 6
    assert abs(up.size - SR) < SR * 0.02
    fast = run_sox(_tone(200.0), SR, sox_chain(_params(rate=210)))  # 1.2x faster, same pitch
    assert abs(_peak_hz(fast) - 200.0) < 5
    assert abs(fast.size - SR / 1.2) < SR * 0.03
    loud = run_sox(_tone(200.0), SR, sox_chain(_params(loudness_db=-6.0)))
    assert np.sqrt(np.mean(loud**2)) / np.sqrt(np.mean(_tone() ** 2)) == pytest.approx(0.5, abs=0.03)


def test_bad_sox_chain_is_a_clear_error():
    with pytest.raises(RenderError, match="sox"):
        run_sox(_tone(), SR, ["pitch", "not-a-number"])


@pytest.fixture(scope="module")
def heldout_tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("heldout") / "corpus"
    synthesize_corpus(out, "heldout_tiny", workers=2, progress=False)
    return out


def test_one_split_alone_is_that_split_of_the_whole_corpus(heldout_tiny: Path, tmp_path):
    """``splits=("test",)`` (the demo's view of the shipped model's corpus): the same utterances, audio and
    metadata (levels included) as the whole corpus's test split, nothing else, and its own cache key."""
    summary = synthesize_corpus(tmp_path / "test_only", "heldout_tiny", workers=2, progress=False, splits=("test",))
    part, whole = load_prepared(tmp_path / "test_only"), load_prepared(heldout_tiny)
    assert set(part) == {"test"} and set(summary["splits"]) == {"test"}
    mine = {s.id: s for s in part["test"]["supervisions"]}
    theirs = {s.id: s for s in whole["test"]["supervisions"]}
    assert mine.keys() == theirs.keys()
    for uid, sup in mine.items():
        assert sup.custom == theirs[uid].custom and sup.text == theirs[uid].text
        a, _ = sf.read(part["test"]["recordings"][uid].sources[0].source)
        b, _ = sf.read(whole["test"]["recordings"][uid].sources[0].source)
        assert np.array_equal(a, b), uid
    assert summary["key"] != json.loads((heldout_tiny / "summary.json").read_text())["key"]
    with pytest.raises(ValueError, match="splits"):
        synthesize_corpus(tmp_path / "bad", "heldout_tiny", splits=("tset",))


def test_heldout_tiny_corpus_has_an_unseen_split_and_no_leakage(heldout_tiny: Path):
    prepared = load_prepared(heldout_tiny)
    assert set(prepared) == {"train", "dev", "test", "unseen"}
    for target in ("dev", "test", "unseen"):
        audit = split_overlap(prepared, target=target)
        assert audit["shared_speakers"] == 0, target
        assert audit["shared_sentences"] == 0 and audit["text_share"] == 0.0, target
        assert audit["shared_base_voices"] == 0, target
    methods = {s.custom["render_method"] for s in prepared["unseen"]["supervisions"]}
    assert methods == {"sox"}
    for rec in prepared["unseen"]["recordings"]:
        x, sr = sf.read(rec.sources[0].source)
        assert sr == SR and x.size > SR // 2 and np.isfinite(x).all() and np.abs(x).max() <= 1.0

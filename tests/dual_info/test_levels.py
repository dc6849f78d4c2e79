"""Pitch/energy/tempo levels measured from audio (for real corpora) agree with the synthetic corpus's truth."""

from __future__ import annotations

import numpy as np

from emoslm.data.levels import derive_levels, syllables, thresholds
from emoslm.data.manifests import load_prepared


def test_syllable_count():
    assert syllables("The cat sat on the mat") == 6
    assert syllables("beautiful idea") == 3 + 2  # vowel groups: beau-ti-ful, i-dea (a rough count)
    assert syllables("") == 0


def test_thresholds_need_enough_values():
    import pytest

    with pytest.raises(ValueError, match="at least 3"):
        thresholds([1.0, 2.0])
    lo, hi = thresholds(list(range(9)))
    assert lo < hi


def test_derived_levels_follow_the_rendered_ones(corpus, tmp_path):
    prepared = load_prepared(corpus)
    truth = {s.id: dict(s.custom) for p in prepared.values() for s in p["supervisions"]}
    for p in prepared.values():
        for s in p["supervisions"]:  # a "real" corpus: no levels
            s.custom = {k: v for k, v in s.custom.items() if not k.endswith("_level")}
    stats = derive_levels(prepared, cache=tmp_path / "eg.npz", progress=False)
    sups = [s for p in prepared.values() for s in p["supervisions"]]
    assert all(s.custom[f"{k}_level"] in ("low", "normal", "high") for s in sups for k in ("pitch", "energy", "tempo"))
    train = list(prepared["train"]["supervisions"])
    for k in ("energy", "tempo"):  # terciles of the reference split
        counts = np.unique([s.custom[f"{k}_level"] for s in train], return_counts=True)[1]
        assert counts.min() >= len(train) / 3 - 2
    order = {"low": 0, "normal": 1, "high": 2}
    for k in ("pitch", "energy", "tempo"):
        derived = np.array([order[s.custom[f"{k}_level"]] for s in sups])
        rendered = np.array([order[truth[s.id][f"{k}_level"]] for s in sups])
        r = np.corrcoef(derived, rendered)[0, 1]
        assert r > 0.3, (k, r)  # measured from audio, the levels track how the utterance was rendered
    assert set(stats["thresholds"]["pitch"]) >= {"*"}
    # existing levels are kept unless overwrite
    s0 = sups[0]
    s0.custom["pitch_level"] = "high"
    derive_levels(prepared, cache=tmp_path / "eg.npz", progress=False)
    assert s0.custom["pitch_level"] == "high"


def test_levels_cli_makes_a_real_corpus_usable_by_the_recipe(corpus, tmp_path):
    from emoslm.cli import main
    from emoslm.data.manifests import save_prepared
    from emoslm.data.utterances import load_utterances
    from emoslm.dual_info.recipe import has_attributes

    prepared = load_prepared(corpus)
    for p in prepared.values():
        for s in p["supervisions"]:
            s.custom = {k: v for k, v in s.custom.items() if not k.endswith("_level")}
    save_prepared(prepared, tmp_path / "real", "synth")
    tasks = ["gender", "pitch", "tempo", "energy", "emotion"]
    assert not any(has_attributes(u, tasks) for u in load_utterances(tmp_path / "real", "train"))
    assert main(["levels", str(tmp_path / "real")]) == 0
    utts = load_utterances(tmp_path / "real", "train")
    assert utts and all(has_attributes(u, tasks) for u in utts)

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emoslm.data.episodes import (
    Episode, EpisodeSampler, load_episodes, parse_setting, sample_enrollment, select_procedure, setting_name,
)
from emoslm.data.manifests import make_supervision
from emoslm.errors import EpisodeError
from emoslm.labels import EKMAN7, get_label_set

SETTINGS = [(t, lab) for t in ("TU", "TO", "TE") for lab in ("LU", "LO", "LD")]


def feasible(target, label, pool, target_id, target_label, k, lo_label=None):
    """Independent oracle: can the setting be met at all?"""
    if k == 0:
        return True
    cands = [lab for i, lab in pool if i != target_id]
    counts = Counter(cands)
    same, others = counts[target_label], len(cands) - counts[target_label]
    other_labels = [lab for lab in counts if lab != target_label]
    if label == "LU":
        return {"TU": len(cands) >= k, "TE": others >= k, "TO": same >= 1 and len(cands) >= k}[target]
    if label == "LO":
        if target == "TO":
            return (lo_label in (None, target_label)) and same >= k
        allowed = [lab for lab in counts if not (target == "TE" and lab == target_label)]
        if lo_label is not None:
            return lo_label in allowed and counts[lo_label] >= k
        return any(counts[lab] >= k for lab in allowed)
    # LD
    return {"TU": len(counts) >= k, "TE": len(other_labels) >= k,
            "TO": same >= 1 and len(other_labels) >= k - 1}[target]


def check_guarantees(target, label, pool, target_id, target_label, k, pairs, lo_label=None):
    assert len(pairs) == k
    ids = [i for i, _ in pairs]
    assert len(set(ids)) == k, "an utterance repeated in the context"
    assert target_id not in ids, "the target is in its own context"
    assert set(pairs) <= set(pool), "a pair not from the speaker's pool (or with a wrong label)"
    labels = [lab for _, lab in pairs]
    if k == 0:
        return
    if target == "TO":
        assert target_label in labels
    if target == "TE":
        assert target_label not in labels
    if label == "LO":
        assert len(set(labels)) == 1
        if lo_label is not None:
            assert labels[0] == lo_label
    if label == "LD":
        assert len(set(labels)) == k


pools = st.lists(st.sampled_from(EKMAN7[:5]), min_size=1, max_size=14).map(
    lambda labs: [(f"u{i}", lab) for i, lab in enumerate(labs)]
)


@settings(max_examples=300, deadline=None)
@given(pool=pools, k=st.integers(0, 6), setting=st.sampled_from(SETTINGS), seed=st.integers(0, 2**32),
       t=st.integers(0, 13), lo=st.sampled_from([None, "neutral", "anger"]))
def test_every_setting_guarantee_or_error(pool, k, setting, seed, t, lo):
    target, label = setting
    lo_label = lo if label == "LO" else None
    target_id, target_label = pool[t % len(pool)]
    ok = feasible(target, label, pool, target_id, target_label, k, lo_label)
    if ok:
        pairs = sample_enrollment(target_id, target_label, pool, k, target, label, random.Random(seed), lo_label)
        check_guarantees(target, label, pool, target_id, target_label, k, pairs, lo_label)
    else:
        with pytest.raises(EpisodeError, match=rf"{target}\+{label}.* k={k}"):
            sample_enrollment(target_id, target_label, pool, k, target, label, random.Random(seed), lo_label)


def test_k0_is_empty_and_error_message_names_what_is_missing():
    pool = [("a", "joy"), ("b", "anger"), ("c", "neutral"), ("d", "sadness")]
    assert sample_enrollment("a", "joy", pool, 0, "TO", "LD", rng=1) == []
    with pytest.raises(EpisodeError) as e:
        sample_enrollment("a", "joy", pool, 5, "TU", "LD", rng=1, speaker="X")
    msg = str(e.value)
    assert "speaker X" in msg and "TU+LD" in msg and "k=5" in msg and "has 3" in msg
    with pytest.raises(EpisodeError, match="other than joy"):
        sample_enrollment("a", "joy", pool, 4, "TE", "LD", rng=1)
    with pytest.raises(EpisodeError, match="another joy utterance"):
        sample_enrollment("a", "joy", pool, 1, "TO", "LU", rng=1)
    with pytest.raises(EpisodeError, match="2 neutral utterances"):
        sample_enrollment("a", "joy", pool, 2, "TU", "LO", rng=1, lo_label="neutral")


def test_malformed_requests():
    pool = [("a", "joy"), ("b", "anger")]
    with pytest.raises(ValueError, match="target setting"):
        sample_enrollment("a", "joy", pool, 1, "TX", "LU", rng=0)
    with pytest.raises(ValueError, match="k must be"):
        sample_enrollment("a", "joy", pool, -1, rng=0)
    with pytest.raises(ValueError, match="only applies to the LO"):
        sample_enrollment("a", "joy", pool, 1, "TU", "LD", rng=0, lo_label="neutral")
    with pytest.raises(TypeError, match="rng is required"):
        sample_enrollment("a", "joy", pool, 1)


def test_to_lu_is_uniform_over_valid_subsets():
    # 2 target-label and 2 other utterances, k=2: C(4,2) - C(2,2) = 5 subsets hold a joy utterance.
    pool = [("t", "joy"), ("a1", "joy"), ("a2", "joy"), ("b1", "anger"), ("b2", "sadness")]
    rng = random.Random(0)
    counts = Counter(frozenset(i for i, _ in sample_enrollment("t", "joy", pool, 2, "TO", "LU", rng))
                     for _ in range(5000))
    assert len(counts) == 5
    assert all(800 < c < 1200 for c in counts.values()), counts


def test_ld_draws_labels_uniformly_and_order_is_shuffled():
    # neutral is 10x more frequent, but LD draws labels, not utterances.
    pool = [(f"n{i}", "neutral") for i in range(20)] + [("j", "joy"), ("a", "anger")]
    rng = random.Random(0)
    labels = Counter(sample_enrollment("n0", "neutral", pool, 1, "TU", "LD", rng)[0][1] for _ in range(3000))
    assert all(850 < c < 1150 for c in labels.values()), labels
    firsts = Counter(sample_enrollment("n0", "neutral", pool, 3, "TO", "LD", rng)[0][1] for _ in range(300))
    assert set(firsts) == {"neutral", "joy", "anger"}  # the target's label is not always first


def test_select_procedure_k_distribution():
    pool = [(f"u{i}", EKMAN7[i % 7]) for i in range(30)]
    rng = random.Random(0)
    ks = Counter(len(select_procedure("u0", "neutral", pool, rng)) for _ in range(1600))
    assert set(ks) == set(range(8))
    assert all(140 < c < 260 for c in ks.values()), ks  # uniform: 200 each
    # capped by the pool: 3 candidates besides the target
    small = pool[:4]
    assert len(select_procedure("u0", "neutral", small, rng, k=7)) == 3
    assert max(len(select_procedure("u0", "neutral", small, rng)) for _ in range(200)) == 3
    assert len(select_procedure("u0", "neutral", pool, rng, k=5)) == 5


def make_items(n_speakers=4, per_label=2, labels=EKMAN7):
    return [(f"s{s}_{lab}_{i}", f"s{s}", lab) for s in range(n_speakers) for lab in labels for i in range(per_label)]


def test_sampler_deterministic_and_complete():
    sampler = EpisodeSampler(make_items())
    a = sampler.episodes(3, "TU", "LD", seed=7)
    b = sampler.episodes(3, "TU", "LD", seed=7)
    c = sampler.episodes(3, "TU", "LD", seed=8)
    assert list(a) == list(b)
    assert list(a) != list(c)
    assert len(a) == len(sampler) == 4 * 7 * 2 and a.n_skipped == 0
    for ep in a:
        assert ep.setting == "TU+LD" and ep.k == 3 and ep.seed == 7
        pool = sampler.pools[ep.speaker]
        assert all(i.startswith(ep.speaker + "_") for i, _ in ep.enrollment)  # same speaker only
        check_guarantees("TU", "LD", pool, ep.target_id, ep.target_label, 3, list(ep.enrollment))


def test_sampler_episodes_independent_of_other_speakers():
    items = make_items()
    few = {e.target_id: e for e in EpisodeSampler(items[: len(items) // 2]).episodes(2, "TE", "LU", seed=3)}
    full = {e.target_id: e for e in EpisodeSampler(items).episodes(2, "TE", "LU", seed=3)}
    assert all(full[t] == ep for t, ep in few.items())


def test_sampler_per_speaker_subset():
    sampler = EpisodeSampler(make_items())
    eps = sampler.episodes(1, "TU", "LU", seed=0, per_speaker=3)
    assert Counter(e.speaker for e in eps) == {f"s{s}": 3 for s in range(4)}
    assert list(eps) == list(sampler.episodes(1, "TU", "LU", seed=0, per_speaker=3))


def test_sampler_errors_raise_or_skip_with_count():
    # s0 has every emotion twice; s1 only neutral and joy once each.
    items = make_items(1) + [("x1", "s1", "neutral"), ("x2", "s1", "joy")]
    sampler = EpisodeSampler(items)
    with pytest.raises(EpisodeError, match="speaker s1"):
        sampler.episodes(3, "TU", "LD", seed=0)
    res = sampler.episodes(3, "TU", "LD", seed=0, on_error="skip")
    assert res.n_skipped == 2 and res.skipped_per_speaker == {"s1": 2}
    assert len(res) == 14
    with pytest.raises(ValueError, match="on_error"):
        sampler.episodes(1, on_error="ignore")


def test_sampler_lo_neutral_like_paper_1shot_n():
    sampler = EpisodeSampler(make_items(per_label=3))  # a neutral target still has 2 other neutral utterances
    eps = sampler.episodes(2, "TU", "LO", seed=1, lo_label="neutral")
    assert all({lab for _, lab in e.enrollment} == {"neutral"} for e in eps)
    assert all(e.target_id not in dict(e.enrollment) for e in eps)


def test_sampler_from_supervisions_with_label_set():
    sups = [make_supervision(f"u{i}", f"r{i}", 1.0, speaker="A", emotion=lab, corpus="t")
            for i, lab in enumerate(["joy", "excitement", "frustration", "anger", "neutral", None])]
    sampler = EpisodeSampler(sups, label_set=get_label_set("iemocap4"))
    assert sampler.n_excluded == 2  # frustration (outside iemocap4) and the unlabelled one
    assert dict(sampler.pools["A"])["u1"] == "joy"  # excitement folded into joy
    pairs = sampler.enrollment("u0", 1, "TO", "LU", rng=0)
    assert pairs == [("u1", "joy")]
    ep = sampler.select_procedure("u0", rng=0, k=2)
    assert ep.k == 2 and ep.setting == "TU+LU" and "u0" not in dict(ep.enrollment)


def test_save_load_roundtrip(tmp_path):
    eps = EpisodeSampler(make_items(per_label=3)).episodes(2, "TU", "LO", seed=5, lo_label="joy")
    path = eps.save(tmp_path / "eps.jsonl")
    back = load_episodes(path)
    assert list(back) == list(eps)
    assert back[0].lo_label == "joy" and isinstance(back[0].enrollment, tuple)
    (tmp_path / "bad.jsonl").write_text('{"target_id": "x"}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_episodes(tmp_path / "bad.jsonl")


def test_setting_names():
    assert parse_setting("TU+LO(neutral)") == ("TU", "LO", "neutral")
    assert parse_setting("TE+LD") == ("TE", "LD", None)
    assert setting_name("TU", "LO", "neutral") == "TU+LO(neutral)"
    with pytest.raises(ValueError):
        parse_setting("TU+LD(neutral)")
    with pytest.raises(ValueError):
        parse_setting("XX")


def test_episode_is_hashable_value():
    e = Episode("t", "joy", "s", [["a", "anger"]], "TU+LU", 1)
    assert e.enrollment == (("a", "anger"),) and hash(e) == hash(Episode("t", "joy", "s", (("a", "anger"),),
                                                                         "TU+LU", 1))
    assert len({e, e}) == 1


def test_derangement_leaves_no_label_in_place_even_at_k1():
    import numpy as np

    from emoslm.data.episodes import derange_labels

    names = ["anger", "joy", "neutral", "sadness"]
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        labels = list(rng.choice(names, size=int(rng.integers(1, 8))))
        out = derange_labels(labels, names, rng)
        assert len(out) == len(labels) and all(a != b for a, b in zip(out, labels))
        assert set(out) <= set(names)
        seen.update(out)
    assert seen == set(names)  # every wrong label is drawn, not one fixed substitute

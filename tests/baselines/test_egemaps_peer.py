import numpy as np
import pytest

from emoslm.personalization.egemaps_peer import EgemapsPeer, items_from_supervisions, normalise
from emoslm.data.episodes import Episode, EpisodeSampler
from emoslm.data.manifests import make_supervision
from emoslm.labels import EKMAN7


def make_speakers(n_spk, per_class, rng, prefix, means, offset_sd=3.0):
    """Gaussian 'eGeMAPS': each speaker adds a random offset and scale to class means (speaker dependence)."""
    items = []
    for s in range(n_spk):
        off = rng.normal(0, offset_sd, means.shape[1])
        scale = np.exp(rng.normal(0, 0.3, means.shape[1]))
        for c, lab in enumerate(EKMAN7):
            for j in range(per_class):
                x = off + scale * (means[c] + rng.normal(0, 1, means.shape[1]))
                items.append((f"{prefix}{s}_{lab}_{j}", f"{prefix}{s}", lab, x))
    return items


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 1.0, (len(EKMAN7), 12))
    train = make_speakers(30, 4, rng, "tr", means)
    test = make_speakers(10, 4, rng, "te", means)
    feats = {u: x for u, _, _, x in test}
    sampler = EpisodeSampler([(u, s, lab) for u, s, lab, _ in test])
    return train, feats, sampler


def test_normalised_peer_beats_unnormalised_at_k7(data):
    train, feats, sampler = data
    eps = sampler.episodes(7, "TU", "LU", seed=0)
    plain = EgemapsPeer(norm="none").fit(train).evaluate_episodes(eps, feats)
    mean = EgemapsPeer(norm="enroll_mean").fit(train, ks=[7]).evaluate_episodes(eps, feats)
    z = EgemapsPeer(norm="enroll_z").fit(train, ks=[7]).evaluate_episodes(eps, feats)
    assert mean.ua_spk > plain.ua_spk + 0.2, (mean.ua_spk, plain.ua_spk)
    assert z.ua_spk > plain.ua_spk + 0.2, (z.ua_spk, plain.ua_spk)
    assert mean.ua > plain.ua + 0.2


def test_k0_is_the_unnormalised_peer(data):
    train, feats, sampler = data
    eps = sampler.episodes(0, seed=0)
    a = EgemapsPeer(norm="enroll_mean").fit(train, ks=[0]).predict_proba_episodes(eps, feats)
    b = EgemapsPeer(norm="none").fit(train).predict_proba_episodes(eps, feats)
    np.testing.assert_allclose(a, b)


def test_deterministic_for_a_seed(data):
    train, feats, sampler = data
    eps = sampler.episodes(3, "TU", "LD", seed=1)
    p1 = EgemapsPeer(seed=5).fit(train, ks=[3]).predict_proba_episodes(eps, feats)
    p2 = EgemapsPeer(seed=5).fit(list(reversed(train)), ks=[3]).predict_proba_episodes(eps, feats)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    p3 = EgemapsPeer(seed=6).fit(train, ks=[3]).predict_proba_episodes(eps, feats)
    assert not np.allclose(p1, p3)  # other enrollment draws in training


@pytest.mark.parametrize("k_train", ["per_k", "uniform", 2])
@pytest.mark.parametrize("norm", ["none", "enroll_mean", "enroll_z"])
def test_predictions_in_label_set_for_any_k(data, norm, k_train):
    train, feats, sampler = data
    peer = EgemapsPeer(norm=norm, k_train=k_train, k_max=3).fit(train, ks=[1])
    eps = list(sampler.episodes(1, seed=0, per_speaker=2)) + list(sampler.episodes(5, seed=0, per_speaker=2))
    preds = peer.predict_episodes(eps, feats)
    assert len(preds) == len(eps) and set(preds) <= set(EKMAN7)
    proba = peer.predict_proba_episodes(eps, feats)
    assert proba.shape == (len(eps), len(EKMAN7))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    if norm != "none" and k_train == "per_k":
        assert 5 in peer.models  # trained when first needed


def test_class_missing_from_training_gets_probability_zero(data):
    train, feats, sampler = data
    peer = EgemapsPeer(norm="enroll_mean").fit([it for it in train if it[2] != "surprise"], ks=[2])
    proba = peer.predict_proba_episodes(sampler.episodes(2, seed=0, per_speaker=3), feats)
    assert (proba[:, EKMAN7.index("surprise")] == 0).all()


def test_training_enrollment_excludes_the_target():
    # 3 utterances per speaker and k = 2: the only enrollment of each target is its two companions.
    xs = {"a": 1.0, "b": 2.0, "c": 6.0, "d": 10.0, "e": 20.0, "f": 60.0}
    labs = ["neutral", "anger", "joy"] * 2
    items = [(u, "s1" if i < 3 else "s2", labs[i], [v]) for i, (u, v) in enumerate(xs.items())]
    peer = EgemapsPeer(norm="enroll_mean", k_train=2).fit(items)
    xn, _ = peer._training_set(2)
    expected = sorted([1 - 4, 2 - 3.5, 6 - 1.5, 10 - 40, 20 - 35, 60 - 15])
    np.testing.assert_allclose(sorted(xn[:, 0]), expected)


def test_normalise():
    x = np.array([[1.0, 2.0]])
    enroll = np.array([[[0.0, 0.0], [2.0, 0.0]]])  # mean (1, 0); std (1.41, 0)
    np.testing.assert_allclose(normalise(x, enroll[:, :0], "enroll_mean"), x)  # k = 0: unchanged
    np.testing.assert_allclose(normalise(x, enroll, "none"), x)
    np.testing.assert_allclose(normalise(x, enroll, "enroll_mean"), [[0.0, 2.0]])
    np.testing.assert_allclose(normalise(x, enroll, "enroll_z", floor=0.5), [[0.0, 4.0]])  # floored std
    np.testing.assert_allclose(normalise(x, enroll[:, :1], "enroll_z", floor=0.5), [[1.0, 2.0]])  # k=1: mean
    with pytest.raises(ValueError):
        normalise(x, enroll, "cmvn")


def test_missing_features_name_the_utterance(data):
    train, feats, sampler = data
    peer = EgemapsPeer().fit(train, ks=[1])
    ep = Episode("te0_joy_0", "joy", "te0", (("nowhere", "anger"),), "TU+LU", 1)
    with pytest.raises(KeyError, match="nowhere"):
        peer.predict_episodes([ep], feats)


def test_bad_arguments_and_unfitted():
    with pytest.raises(ValueError):
        EgemapsPeer(norm="cmvn")
    with pytest.raises(ValueError):
        EgemapsPeer(k_train="sometimes")
    ep = Episode("u", "joy", "s", (), "TU+LU", 0)
    with pytest.raises(RuntimeError, match="not fitted"):
        EgemapsPeer().predict_episodes([ep], {"u": [0.0]})


def test_items_from_supervisions_maps_and_filters_labels():
    sups = [
        make_supervision("u1", "u1", 1.0, speaker="s", emotion="anger", corpus="c"),
        make_supervision("u2", "u2", 1.0, speaker="s", emotion="excitement", corpus="c"),
        make_supervision("u3", "u3", 1.0, speaker="s", emotion=None, corpus="c"),
    ]
    feats = {"u1": [1.0], "u2": [2.0], "u3": [3.0]}
    assert [(u, lab) for u, _, lab, _ in items_from_supervisions(sups, feats, "ekman7")] == [("u1", "anger")]
    assert [lab for _, _, lab, _ in items_from_supervisions(sups, feats, "iemocap4")] == ["anger", "joy"]

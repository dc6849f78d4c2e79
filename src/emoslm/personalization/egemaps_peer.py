"""The classic peer of personalised SER: eGeMAPS functionals, per-speaker normalisation, a linear classifier.

This is what a user would pick instead of an ICL speech LM: the 88 eGeMAPS v02 functionals of an utterance,
normalised with the *same* k enrollment utterances of the target's speaker that the ICL model sees in its
context (their labels are not used), then ``StandardScaler`` + ``LogisticRegression``.

Normalisation (``norm``), from the k enrollment utterances' features ``E`` (k x 88) of the target's speaker:

- ``"none"``: no normalisation, one speaker-independent classifier; enrollment is ignored.
- ``"enroll_mean"`` (default): ``x - mean(E)``. Removes a speaker's offset (pitch level, loudness, ...) and
  is well defined from one utterance on.
- ``"enroll_z"``: ``(x - mean(E)) / max(std(E), floor)`` for k >= 2 (k = 1: mean only). ``std`` is the
  sample std (ddof=1); ``floor`` is ``std_floor`` times the pooled within-speaker std of each feature in
  the training set, because the std of 2-3 utterances is very noisy and may be ~0 for a feature.

With k = 0 there is nothing to normalise with: the features are used as they are.

Training uses the same scheme. For each training utterance, k enrollment utterances are drawn from the same
speaker (TU+LU: any emotion, the utterance itself excluded, uniformly without replacement; capped by what
the speaker has), seeded by (seed, speaker, k, draw) so that adding a speaker changes no other draw. Because
k changes the distribution of the normalised features (the mean of 1 utterance is noisier than that of 7),
the default (``k_train="per_k"``) trains one classifier per k, lazily for a k first seen at test time;
``k_train="uniform"`` trains one classifier with k drawn uniformly from 0..k_max per utterance (MetaICL's
TU+LU_{0:7}); an int trains one classifier with that fixed k.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from emoslm.data.episodes import Episode, EpisodeList
from emoslm.labels import LabelSet, get_label_set
from emoslm.metrics import evaluate

if TYPE_CHECKING:
    from emoslm.metrics import EvalResult

NORMS = ("none", "enroll_mean", "enroll_z")

#: A training item: (utterance id, speaker, label, feature vector).
Item = tuple[str, Hashable, str, Sequence[float]]


def normalise(x: np.ndarray, enroll: np.ndarray, norm: str, floor: np.ndarray | float = 0.0) -> np.ndarray:
    """Normalise targets ``x`` (m, d) with their enrollment features ``enroll`` (m, k, d) under ``norm``.

    k = 0 (or ``norm="none"``) returns ``x`` unchanged; ``"enroll_z"`` divides only when k >= 2.
    """
    x = np.asarray(x, dtype=np.float64)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    enroll = np.asarray(enroll, dtype=np.float64)
    if norm == "none" or enroll.ndim < 3 or enroll.shape[1] == 0:
        return x
    out = x - enroll.mean(axis=1)
    if norm == "enroll_z" and enroll.shape[1] >= 2:
        out = out / np.maximum(enroll.std(axis=1, ddof=1), floor)
    return out


def _rng_for(seed: int, speaker: str, k_mode: int | str, draw: int) -> np.random.Generator:
    """The generator of one speaker's enrollment draws: independent of every other speaker and k."""
    h = lambda v: zlib.crc32(str(v).encode("utf-8"))  # noqa: E731  (stable across runs, unlike hash())
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, h(speaker), h(k_mode), int(draw)])


def items_from_supervisions(
    supervisions: Iterable[Any], features: Mapping[str, Sequence[float]], label_set: LabelSet | str = "ekman7"
) -> list[Item]:
    """(id, speaker, label, features) items for :meth:`EgemapsPeer.fit` from emoslm supervisions.

    Supervisions without a label or whose label is outside the label set are left out (labels are mapped
    into the set, e.g. IEMOCAP4 folds excitement into joy); a supervision without features is an error.
    """
    ls = get_label_set(label_set)
    out = []
    for s in supervisions:
        lab = (s.custom or {}).get("emotion")
        lab = ls.map(lab) if lab is not None else None
        if lab is None:
            continue
        if s.id not in features:
            raise KeyError(f"no eGeMAPS features for utterance {s.id!r}")
        out.append((str(s.id), str(s.speaker), lab, features[s.id]))
    return out


class EgemapsPeer:
    """eGeMAPS + enrollment normalisation + StandardScaler + LogisticRegression (see the module docstring).

    ``fit(items)`` with (utterance id, speaker, label, feature vector) items of the training speakers;
    ``predict_episodes(episodes, features)`` for ICL episodes, with ``features`` holding the vectors of
    every target and enrollment utterance. Deterministic for a seed.
    """

    def __init__(
        self,
        label_set: LabelSet | str = "ekman7",
        norm: str = "enroll_mean",
        C: float = 1.0,
        seed: int = 0,
        *,
        k_train: str | int = "per_k",
        k_max: int = 7,
        draws: int = 1,
        std_floor: float = 0.5,
        max_iter: int = 2000,
    ):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not (k_train in ("per_k", "uniform") or (isinstance(k_train, int) and not isinstance(k_train, bool)
                                                     and k_train >= 0)):
            raise ValueError(f"k_train must be 'per_k', 'uniform' or an int >= 0, got {k_train!r}")
        if not isinstance(k_max, int) or k_max < 0:
            raise ValueError(f"k_max must be an int >= 0, got {k_max!r}")
        if not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws must be an int >= 1, got {draws!r}")
        self.label_set = get_label_set(label_set)
        self.labels: tuple[str, ...] = self.label_set.labels
        self.norm, self.C, self.seed = norm, float(C), int(seed)
        self.k_train, self.k_max, self.draws = k_train, k_max, draws
        self.std_floor, self.max_iter = float(std_floor), int(max_iter)
        self.models: dict[int | str, Pipeline] = {}
        self.n_excluded = 0
        self._X: np.ndarray | None = None

    def describe(self) -> dict[str, Any]:
        """The settings, JSON-serialisable, for the report's metadata."""
        return {"model": "egemaps_peer", "label_set": self.label_set.name, "norm": self.norm, "C": self.C,
                "seed": self.seed, "k_train": self.k_train, "k_max": self.k_max, "draws": self.draws,
                "std_floor": self.std_floor if self.norm == "enroll_z" else None,
                "classifier": "StandardScaler+LogisticRegression"}

    # ------------------------------------------------------------------------------------------ training

    def fit(self, train_items: Iterable[Item], ks: Iterable[int] | None = None) -> "EgemapsPeer":
        """Train on the training speakers' items. Labels are mapped into the label set; items outside it
        are left out (counted in ``n_excluded``). With ``k_train="per_k"`` the classifiers for ``ks``
        (default 0..k_max) are trained now, any other k when first needed."""
        ids, spks, ys, xs = [], [], [], []
        self.n_excluded = 0
        seen: set[str] = set()
        for uid, spk, lab, x in train_items:
            lab = self.label_set.map(lab) if lab is not None else None
            if lab is None:
                self.n_excluded += 1
                continue
            if str(uid) in seen:
                raise ValueError(f"utterance id {uid!r} appears twice")
            seen.add(str(uid))
            ids.append(str(uid))
            spks.append(str(spk))
            ys.append(lab)
            xs.append(np.asarray(x, np.float64))
        if not xs:
            raise ValueError("no training items with a label in the label set")
        # Sorted by (speaker, id): the enrollment draws and the fit do not depend on the input order.
        order = sorted(range(len(ids)), key=lambda i: (spks[i], ids[i]))
        ids, spks, ys = [ids[i] for i in order], [spks[i] for i in order], [ys[i] for i in order]
        try:
            X = np.stack([xs[i] for i in order])
        except ValueError as e:
            raise ValueError(f"feature vectors must be 1-D of one length: {e}") from None
        if X.ndim != 2:
            raise ValueError(f"feature vectors must be 1-D of one length, got array of shape {X.shape}")
        if not np.isfinite(X).all():
            bad = [ids[i] for i in np.flatnonzero(~np.isfinite(X).all(axis=1))[:5]]
            raise ValueError(f"non-finite features in training items ({', '.join(bad)}, ...)")
        if len(set(ys)) < 2:
            raise ValueError(f"training needs at least 2 classes, got {sorted(set(ys))}")
        self._X, self._y = X, np.array(ys)
        rows: dict[str, list[int]] = {}
        for i, s in enumerate(spks):
            rows.setdefault(s, []).append(i)
        self._speakers = {s: np.array(v) for s, v in sorted(rows.items())}
        # Pooled within-speaker std of each feature: the scale of enroll_z's floor.
        centred = X.copy()
        for idx in self._speakers.values():
            centred[idx] -= X[idx].mean(axis=0)
        self.floor_ = self.std_floor * np.maximum(centred.std(axis=0), 1e-12)
        self.models = {}
        if self.norm == "none":
            self._train("none")
        elif self.k_train == "per_k":
            for k in sorted(set(range(self.k_max + 1) if ks is None else ks)):
                self._train(int(k))
        else:
            self._train(self.k_train)
        return self

    def _training_set(self, k_mode: int | str) -> tuple[np.ndarray, np.ndarray]:
        """Normalised training features: each utterance with ``draws`` enrollment draws of its speaker."""
        assert self._X is not None
        X = self._X
        groups: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for spk, idx in self._speakers.items():
            n = len(idx)
            for draw in range(self.draws if k_mode not in ("none", 0) else 1):
                rng = _rng_for(self.seed, spk, k_mode, draw)
                if k_mode == "none":
                    ks = np.zeros(n, dtype=int)
                elif k_mode == "uniform":
                    ks = rng.integers(0, self.k_max + 1, size=n)
                else:
                    ks = np.full(n, int(k_mode))
                ks = np.minimum(ks, n - 1)
                keys = rng.random((n, n))
                np.fill_diagonal(keys, 2.0)             # the target sorts last: never its own enrollment
                order = np.argsort(keys, axis=1)
                for k in np.unique(ks):
                    t = np.flatnonzero(ks == k)
                    groups.setdefault(int(k), []).append((idx[t], idx[order[t, :k]]))
        Xs, ys = [], []
        for k, parts in sorted(groups.items()):
            tgt = np.concatenate([p[0] for p in parts])
            enr = np.concatenate([p[1] for p in parts]).reshape(len(tgt), k)
            Xs.append(normalise(X[tgt], X[enr], self.norm, self.floor_))
            ys.append(self._y[tgt])
        return np.concatenate(Xs), np.concatenate(ys)

    def _train(self, k_mode: int | str) -> Pipeline:
        Xn, y = self._training_set(k_mode)
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter,
                                                                 random_state=self.seed))
        # One BLAS thread: with 88 features threads only add overhead, and on a busy machine the
        # oversubscription made one fit 60x slower (21 s instead of 0.3 s for 4200 utterances).
        with threadpool_limits(limits=1):
            clf.fit(Xn, y)
        self.models[k_mode] = clf
        return clf

    def _model_for(self, k: int) -> Pipeline:
        if self._X is None:
            raise RuntimeError("EgemapsPeer is not fitted: call fit(train_items) first")
        key: int | str = "none" if self.norm == "none" else (k if self.k_train == "per_k" else self.k_train)
        return self.models[key] if key in self.models else self._train(key)

    # ------------------------------------------------------------------------------------------ inference

    def _episode_arrays(
        self, episodes: Sequence[Episode], features: Mapping[str, Sequence[float]]
    ) -> dict[int, tuple[list[int], np.ndarray]]:
        """Normalised target features grouped by k: {k: (episode positions, features (m, d))}."""

        def vec(uid: str, role: str, ep: Episode) -> np.ndarray:
            try:
                return np.asarray(features[uid], dtype=np.float64)
            except KeyError:
                raise KeyError(f"no features for {role} utterance {uid!r} (episode of target {ep.target_id!r}, "
                               f"speaker {ep.speaker})") from None

        by_k: dict[int, list[int]] = {}
        for i, ep in enumerate(episodes):
            by_k.setdefault(len(ep.enrollment) if self.norm != "none" else 0, []).append(i)
        out = {}
        for k, pos in sorted(by_k.items()):
            x = np.stack([vec(episodes[i].target_id, "target", episodes[i]) for i in pos])
            e = np.stack([np.stack([vec(u, "enrollment", episodes[i]) for u, _ in episodes[i].enrollment])
                          if k else np.zeros((0, x.shape[1])) for i in pos])
            out[k] = (pos, normalise(x, e, self.norm, self.floor_))
        return out

    def predict_proba_episodes(
        self, episodes: EpisodeList | Sequence[Episode], features: Mapping[str, Sequence[float]]
    ) -> np.ndarray:
        """Class probabilities (n_episodes, n_labels), columns in the label set's order (``self.labels``);
        a class absent from training has probability 0."""
        if self._X is None:
            raise RuntimeError("EgemapsPeer is not fitted: call fit(train_items) first")
        episodes = list(episodes)
        proba = np.zeros((len(episodes), len(self.labels)))
        if not episodes:
            return proba
        for k, (pos, xn) in self._episode_arrays(episodes, features).items():
            clf = self._model_for(k)
            cols = [self.labels.index(c) for c in clf.classes_]
            with threadpool_limits(limits=1):
                proba[np.ix_(pos, cols)] = clf.predict_proba(xn)
        return proba

    def predict_episodes(
        self, episodes: EpisodeList | Sequence[Episode], features: Mapping[str, Sequence[float]]
    ) -> list[str]:
        """The predicted label of each episode's target, in episode order (always in the label set)."""
        proba = self.predict_proba_episodes(episodes, features)
        return [self.labels[j] for j in proba.argmax(axis=1)]

    def evaluate_episodes(
        self, episodes: EpisodeList | Sequence[Episode], features: Mapping[str, Sequence[float]],
        protocol: Mapping[str, Any] | Any | None = None,
    ) -> "EvalResult":
        """:func:`emoslm.metrics.evaluate` of the predictions (references and speakers from the episodes)."""
        episodes = list(episodes)
        preds = self.predict_episodes(episodes, features)
        return evaluate([ep.target_label for ep in episodes], preds, [ep.speaker for ep in episodes],
                        self.label_set, protocol)

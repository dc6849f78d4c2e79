"""Evaluating the speech LM on ICL episodes (paper 000, Tables II-IV).

Every utterance's speech query vectors are computed once (Q-Former over the cached encoder outputs); each
episode is then scored by the likelihood of every label of the label set (a probability per emotion, never an
invalid label) in batches, or, with ``decode="beam"``, by beam search (beam 4, exact match: a text that is no
label counts as wrong, as in the paper).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from emoslm.data.episodes import Episode, derange_labels
from emoslm.labels import LabelSet
from emoslm.metrics import EvalResult, evaluate
from emoslm.personalization.data import EncodedStore
from emoslm.personalization.model import Example, SpeechICLModel


@torch.no_grad()
def speech_tokens_for(model: SpeechICLModel, store: EncodedStore, ids: Iterable[str], batch_size: int = 256,
                      style: int = 0) -> dict[str, torch.Tensor]:
    ids = sorted(set(ids))
    out: dict[str, torch.Tensor] = {}
    for b in range(0, len(ids), batch_size):
        chunk = ids[b: b + batch_size]
        hidden, mask = store.batch(chunk, style)
        tok = model.speech_tokens(hidden, mask)
        out.update(zip(chunk, tok))
    return out


def _contexts(label_set: LabelSet, episodes: Sequence[Episode], tokens: dict[str, torch.Tensor],
              shuffle_labels_seed: int | None, derange_labels_seed: int | None
              ) -> tuple[list[list[Example]], list[torch.Tensor]]:
    """Each episode's enrollment examples (labels shuffled or deranged for the controls) and target vectors."""
    idx = {l: i for i, l in enumerate(label_set.labels)}
    if shuffle_labels_seed is not None and derange_labels_seed is not None:
        raise ValueError("choose one control: shuffled or deranged labels")
    rng = np.random.default_rng(shuffle_labels_seed if derange_labels_seed is None else derange_labels_seed)
    contexts, targets = [], []
    for e in episodes:
        labels = [l for _, l in e.enrollment]
        if shuffle_labels_seed is not None and len(labels) > 1:
            labels = [labels[j] for j in rng.permutation(len(labels))]
        elif derange_labels_seed is not None:
            labels = derange_labels(labels, label_set.labels, rng)
        contexts.append([Example(tokens[i], idx[l]) for (i, _), l in zip(e.enrollment, labels)])
        targets.append(tokens[e.target_id])
    return contexts, targets


def _tokens_of(model: SpeechICLModel, store: EncodedStore, episodes: Sequence[Episode],
               tokens: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    if tokens is not None:
        return tokens
    return speech_tokens_for(model, store, {e.target_id for e in episodes} | {i for e in episodes
                                                                              for i, _ in e.enrollment})


@torch.no_grad()
def episode_scores(model: SpeechICLModel, store: EncodedStore, label_set: LabelSet, episodes: Sequence[Episode],
                   *, batch_size: int = 128, tokens: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Label log-likelihoods [N, n_labels] of the episodes (their softmax: the probabilities; what temperature
    scaling divides)."""
    was_training = model.training
    model.eval()
    contexts, targets = _contexts(label_set, episodes, _tokens_of(model, store, episodes, tokens), None, None)
    scores = _score_batches(model, contexts, targets, batch_size, len(label_set))
    model.train(was_training)
    return scores


def _score_batches(model: SpeechICLModel, contexts, targets, batch_size: int, n_labels: int) -> torch.Tensor:
    """Label log-likelihoods [N, n_labels] of (context, target) pairs, ``batch_size`` at a time."""
    chunks = [model.score_batch(contexts[b: b + batch_size], targets[b: b + batch_size])
              for b in range(0, len(contexts), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, n_labels)


def evaluate_scores(scores: torch.Tensor, episodes: Sequence[Episode], label_set: LabelSet,
                    protocol: dict | None = None) -> EvalResult:
    """:func:`emoslm.metrics.evaluate` of the argmax labels of :func:`episode_scores`."""
    preds = [label_set.labels[i] for i in scores.argmax(-1).tolist()]
    return evaluate([e.target_label for e in episodes], preds, [e.speaker for e in episodes], label_set,
                    protocol=protocol)


@torch.no_grad()
def predict_episodes(model: SpeechICLModel, store: EncodedStore, label_set: LabelSet, episodes: Sequence[Episode],
                     *, decode: str = "score", batch_size: int = 128, shuffle_labels_seed: int | None = None,
                     derange_labels_seed: int | None = None, tokens: dict[str, torch.Tensor] | None = None
                     ) -> tuple[list[str | None], torch.Tensor | None]:
    """Predicted labels (None = invalid generation) and, when scoring, probabilities [N, n_labels].

    ``shuffle_labels_seed``: the shuffled-label control -- each episode's enrollment labels are permuted among
    its pairs (the utterances stay), so a model that reads the labels loses its k-shot gain. A permutation can
    leave labels in place (at k=1 always), so it may understate the loss.
    ``derange_labels_seed``: the derangement control -- every enrollment label is replaced by a different one
    (uniformly among the others), at every k including 1: no correct label is left to read.
    ``tokens``: speech query vectors computed beforehand (:func:`speech_tokens_for`) for many episode sets.
    """
    was_training = model.training
    model.eval()
    contexts, targets = _contexts(label_set, episodes, _tokens_of(model, store, episodes, tokens),
                                  shuffle_labels_seed, derange_labels_seed)
    preds: list[str | None] = []
    probs = None
    if decode == "score":
        probs = _score_batches(model, contexts, targets, batch_size, len(label_set)).softmax(-1)
        preds = [label_set.labels[i] for i in probs.argmax(-1).tolist()]
    elif decode == "beam":
        for c, t in zip(contexts, targets):
            preds.append(model.generate_label(c, t, num_beams=4)[0])
    else:
        raise ValueError(f"decode must be 'score' or 'beam', got {decode!r}")
    model.train(was_training)
    return preds, probs


def evaluate_episodes(model: SpeechICLModel, store: EncodedStore, label_set: LabelSet, episodes: Sequence[Episode],
                      *, decode: str = "score", protocol: dict | None = None,
                      shuffle_labels_seed: int | None = None, derange_labels_seed: int | None = None,
                      tokens: dict[str, torch.Tensor] | None = None) -> EvalResult:
    preds, _ = predict_episodes(model, store, label_set, episodes, decode=decode,
                                shuffle_labels_seed=shuffle_labels_seed, derange_labels_seed=derange_labels_seed,
                                tokens=tokens)
    return evaluate([e.target_label for e in episodes], preds, [e.speaker for e in episodes], label_set,
                    protocol=protocol)

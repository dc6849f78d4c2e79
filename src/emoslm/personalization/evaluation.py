"""``emoslm eval``: paper 000's Tables II-IV on held-out speakers, every model on the same episodes.

Episode sets are drawn once per (setting, k) from the evaluated speakers (seeded) and saved as JSONL beside the
results, so that the speech LMs, the eGeMAPS peer and the label controls (shuffled: permuted among the pairs;
deranged: every label wrong) see identical enrollments.

Any prepared corpus can be evaluated, also one with a single split and no training data (a user's own
recordings): the models are already trained, and the eGeMAPS peer, which must be fitted, is then fitted on the
training split of another corpus (by default the embedded synthetic one) and the report says so.

Calibration: when the corpus has a ``dev`` split (and another split is evaluated), one temperature per ICL model
is fitted on the dev speakers' episodes (0-shot and TU+LD at every k the model is evaluated at, pooled; at most
``calibration_episodes_per_k`` per k, a seeded subset) and the test episodes of those settings, scored once for
the tables, give the expected calibration error before and after scaling (pooled and per k) and the reliability
bins. Nothing about the calibration is chosen on the test speakers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from emoslm.data.augment import SpeakerStyle
from emoslm.data.episodes import (
    EpisodeList,
    EpisodeSampler,
    load_episodes,
    save_episodes,
)
from emoslm.data.manifests import emotion_of, load_prepared
from emoslm.data.splits import split_overlap
from emoslm.egemaps import egemaps_for
from emoslm.errors import EmoslmError
from emoslm.labels import LabelSet, get_label_set
from emoslm.metrics import (
    TEMPERATURE_BOUNDS,
    EvalResult,
    apply_temperature,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from emoslm.models.encoders import FbankTransformerEncoder, SERClassifier
from emoslm.personalization.classifier import pick_enrollment
from emoslm.personalization.data import EncodedStore, SERData, pad_batch
from emoslm.personalization.egemaps_peer import EgemapsPeer
from emoslm.personalization.inference import EmotionRecognizer, write_calibration
from emoslm.personalization.model import SpeechICLModel
from emoslm.personalization.report import (
    Results,
    RunMetadata,
    render_terminal,
    to_markdown,
    write_html,
)
from emoslm.personalization.scoring import (
    episode_scores,
    evaluate_episodes,
    evaluate_scores,
    speech_tokens_for,
)

log = logging.getLogger(__name__)


@dataclass
class ICLModelSpec:
    name: str
    path: str  # SpeechICLModel checkpoint directory
    encoder: str  # its frozen encoder
    training_setting: str = "TU+LU_0:7"
    role: str = "main"  # "main" (Tables II, III), "stage1" (the 0-shot row), "table4" (training settings)


@dataclass
class EvalPlan:
    corpus: str
    out_dir: str
    icl: list[ICLModelSpec] = field(default_factory=list)
    classifiers: dict[str, str] = field(default_factory=dict)  # name -> SERClassifier checkpoint
    label_set: str = "ekman7"
    k_max: int = 7
    lo_k_max: int = 4
    seed: int = 0  # the episodes, the label controls and (unless peer_seed) the eGeMAPS peer's draws
    #: the eGeMAPS peer's training draws: a training replicate varies it while every replicate is scored on the
    #: same episodes (None: ``seed``)
    peer_seed: int | None = None
    peer: bool = True
    shuffled_control: bool = True  # the label controls of the main ICL model (those of label_controls)
    #: which: "shuffled" (the labels permuted among the pairs) and "deranged" (every label made wrong)
    label_controls: tuple[str, ...] = ("shuffled", "deranged")
    decode: str = "score"
    split: str | None = None  # the split to evaluate (default: "test", or the corpus's only split)
    peer_train: str | None = None  # corpus whose "train" split fits the peer (default: the target's own, else EMBEDDED)
    calibrate: bool = True  # fit a temperature per ICL model on the dev split, when the corpus has one
    calibration_episodes_per_k: int = 200  # dev episodes per k for the fit (a seeded subset; bounds its cost)
    calibration_bins: int = 15  # equal-width confidence bins of the ECE
    #: the k values and enrollment settings scored (None: k = 0..k_max; TU/TE x LD/LU, and TU+LO up to lo_k_max).
    #: A slow model (a pretrained LLM on CPU) is scored on a subset of the full plan's sets: every set is drawn
    #: with its own seeded sampler, so a subset holds exactly the full plan's episodes.
    ks: tuple[int, ...] | None = None
    settings: tuple[str, ...] | None = None


#: The split temperatures are fitted on.
CALIBRATION_SPLIT = "dev"
#: The enrollment setting of the calibration episodes at k >= 1 (k = 0: the 0-shot episodes).
CALIBRATION_SETTING = "TU+LD"


EMBEDDED_CORPUS = "data/synth_demo"  # written by `emoslm demo` / `emoslm synth corpus --preset demo`


def eval_split(corpus: str | Path, split: str | None = None) -> str:
    """The split of ``corpus`` to evaluate: the one asked for, else "test", else the corpus's only split."""
    splits = sorted(load_prepared(corpus))
    if split is not None:
        if split not in splits:
            raise EmoslmError(f"{corpus} has no split {split!r} (its splits: {', '.join(splits)})")
        return split
    if "test" in splits:
        return "test"
    if len(splits) == 1:
        return splits[0]
    raise EmoslmError(f"{corpus} has no test split and several others ({', '.join(splits)}): choose one with --split")


def peer_training_corpus(plan: EvalPlan, split: str) -> str:
    """Where the eGeMAPS peer is fitted: a named corpus, else the target's own training split (when it is not the
    evaluated one), else the embedded synthetic corpus."""
    if plan.peer_train:
        corpus = plan.peer_train
    elif split != "train" and "train" in load_prepared(plan.corpus):
        return plan.corpus
    else:
        corpus = EMBEDDED_CORPUS
    if not Path(corpus).is_dir():
        raise EmoslmError(f"the eGeMAPS peer needs a training corpus: {corpus} does not exist (make the embedded one "
                          "with `emoslm synth corpus --preset demo`, name one with --peer-train DIR, or skip the "
                          "peer with --no-peer)")
    if "train" not in load_prepared(corpus):
        raise EmoslmError(f"the eGeMAPS peer's training corpus {corpus} has no train split")
    return corpus


def leakage_check(plan: EvalPlan, split: str) -> dict:
    """:func:`split_overlap` of the evaluated split against the models' training data where that is known: the
    corpus's own train split, else the train split of the corpus the peer is fitted on (``peer_train``, else the
    embedded one), else ``{"unknown": why}``. The speech LMs are trained elsewhere; this is the split their
    pipeline trains on, not a record read from their checkpoints."""
    prepared = load_prepared(plan.corpus)
    if split != "train" and "train" in prepared:
        return split_overlap(prepared, "train", split)
    other = plan.peer_train or EMBEDDED_CORPUS
    if not Path(other).is_dir() or "train" not in load_prepared(other):
        why = "has no train split" if Path(other).is_dir() else "does not exist"
        return {"target": split, "reference": None,
                "unknown": f"the corpus has no train split of its own and {other} {why}"}
    reference = f"train of {other}"
    return split_overlap({reference: load_prepared(other)["train"], split: prepared[split]}, reference, split)


def peer_items(corpus: str, split: str, label_set: LabelSet, progress: bool):
    """(id, speaker, label, eGeMAPS) of the labelled utterances of one split (cached in the corpus folder)."""
    prepared = load_prepared(corpus)
    recs = prepared[split]["recordings"]
    sups = [s for s in prepared[split]["supervisions"] if emotion_of(s) and label_set.map(emotion_of(s))]
    feats = egemaps_for([(s.id, recs[s.recording_id].sources[0].source, s.start, s.duration) for s in sups],
                        cache=Path(corpus) / "egemaps.npz", workers=2, progress=progress)
    return [(s.id, s.speaker, label_set.map(emotion_of(s)), feats[s.id]) for s in sups], feats


def _episode_sets(data: SERData, plan: EvalPlan) -> dict[tuple[str, int], EpisodeList]:
    """Every (setting, k) the tables need, drawn once and cached on disk."""
    sampler = EpisodeSampler(data.items(plan.split or "test"), label_set=data.label_set)
    wanted: list[tuple[str, str, int, str | None]] = [("0-shot", "TU+LU", 0, None)]
    for k in range(1, plan.k_max + 1):
        for t, l in (("TU", "LD"), ("TU", "LU"), ("TE", "LD"), ("TE", "LU")):
            wanted.append((f"{t}+{l}", f"{t}+{l}", k, None))
    for k in range(1, plan.lo_k_max + 1):
        for lab in data.label_set.labels:
            wanted.append((f"TU+LO({lab})", "TU+LO", k, lab))
    if plan.ks is not None:
        wanted = [w for w in wanted if w[2] in plan.ks]
    if plan.settings is not None:
        wanted = [w for w in wanted if w[2] == 0 or w[1] in plan.settings]
    folder = Path(plan.out_dir) / "episodes"
    sets = {}
    for name, setting, k, lo in wanted:
        path = folder / f"{name}_k{k}.jsonl"
        if path.is_file():
            eps = load_episodes(path)
        else:
            t, l = setting.split("+")
            eps = sampler.episodes(k=k, target=t, label=l, seed=plan.seed, lo_label=lo, on_error="skip")
            save_episodes(eps, path)
        if len(eps):
            sets[(name, k)] = eps
    return sets


def calibration_split(plan: EvalPlan, split: str, decode: str = "score") -> tuple[str | None, str]:
    """The split temperatures are fitted on (None: no fit) and why."""
    if not plan.calibrate:
        return None, "not fitted (calibration turned off)"
    if decode != "score":
        return None, f"not fitted ({decode} decoding gives no probabilities)"
    if split == CALIBRATION_SPLIT:
        return None, f"not fitted (the {CALIBRATION_SPLIT} split is the one evaluated)"
    if CALIBRATION_SPLIT not in load_prepared(plan.corpus):
        return None, f"not fitted (the corpus has no {CALIBRATION_SPLIT} split)"
    return CALIBRATION_SPLIT, f"fitted on the {CALIBRATION_SPLIT} split"


def _is_calibration_key(setting: str, k: int) -> bool:
    return k == 0 or setting == CALIBRATION_SETTING


def calibration_episodes(data: SERData, split: str, ks: Sequence[int], *, seed: int = 0, per_k: int = 200,
                         folder: Path | None = None) -> dict[int, EpisodeList]:
    """The episodes of a temperature fit on ``split``: 0-shot and TU+LD at each k (at most ``per_k`` each, a
    seeded subset), drawn once and cached in ``folder`` when given."""
    sampler = EpisodeSampler(data.items(split), label_set=data.label_set)
    out = {}
    for k in ks:
        path = folder / f"{'0-shot' if k == 0 else CALIBRATION_SETTING}_k{k}.jsonl" if folder else None
        if path is not None and path.is_file():
            eps = load_episodes(path)
        else:
            t, l = ("TU", "LU") if k == 0 else CALIBRATION_SETTING.split("+")  # as the test's 0-shot set
            eps = sampler.episodes(k=k, target=t, label=l, seed=seed, on_error="skip")
            if len(eps) > per_k:
                keep = np.random.default_rng(seed + k).choice(len(eps), per_k, replace=False)
                eps = replace(eps, episodes=[eps[i] for i in sorted(keep)])
            if path is not None:
                save_episodes(eps, path)
        if len(eps):
            out[k] = eps
    return out


def _label_indices(episodes, label_set: LabelSet) -> np.ndarray:
    return np.array([label_set.index(e.target_label) for e in episodes], dtype=np.int64)


def calibration_summary(dev: tuple[np.ndarray, np.ndarray], test: dict[int, tuple[np.ndarray, np.ndarray]],
                        n_bins: int) -> dict:
    """Fit the temperature on ``dev`` (label log-likelihoods [N, C], label indices [N]); ECE (and NLL) of the
    test scores per k and pooled, before and after scaling, with the reliability bins."""
    dev_scores, dev_labels = dev
    t = fit_temperature(dev_scores, dev_labels)

    def ece(scores, labels, temperature=1.0):
        return expected_calibration_error(apply_temperature(scores, temperature), labels, n_bins)

    # a fit at a bound of the search: the data want a more extreme temperature (at the upper one: the model's
    # probabilities carry no information on dev, uniform ones fit best)
    at_bound = any(abs(math.log(t / b)) < 1e-3 for b in TEMPERATURE_BOUNDS)
    out = {"temperature": t, "at_bound": at_bound, "n_dev": int(len(dev_labels)),
           "dev_ece_before": ece(dev_scores, dev_labels),
           "dev_ece_after": ece(dev_scores, dev_labels, t)}
    if test:
        scores = np.concatenate([s for s, _ in test.values()])
        labels = np.concatenate([y for _, y in test.values()])
        out["test"] = {
            "n": int(len(labels)), "ks": sorted(test), "ece_before": ece(scores, labels),
            "ece_after": ece(scores, labels, t), "nll_before": negative_log_likelihood(scores, labels),
            "nll_after": negative_log_likelihood(scores, labels, t),
            "per_k": {str(k): {"n": int(len(y)), "ece_before": ece(s, y), "ece_after": ece(s, y, t)}
                      for k, (s, y) in sorted(test.items())},
            "reliability_before": reliability_bins(apply_temperature(scores, 1.0), labels, n_bins),
            "reliability_after": reliability_bins(apply_temperature(scores, t), labels, n_bins)}
    return out


def _store_for(encoder_dir: str, data: SERData, split: str, cache: Path, progress: bool) -> EncodedStore:
    enc = FbankTransformerEncoder.from_pretrained(encoder_dir)
    fb = {u.id: data.fbank[u.id] for u in data.utts[split]}
    eid = str(Path(encoder_dir).resolve()) + str((Path(encoder_dir) / "model.safetensors").stat().st_mtime_ns)
    return EncodedStore.build(enc, fb, [SpeakerStyle()], cache=cache, encoder_id=f"{eid}:{split}", progress=progress)


def _classifier_eval(path: str, data: SERData, label_set: LabelSet, seed: int, split: str = "test"):
    model = SERClassifier.from_pretrained(path).eval()
    mode = model.config.enroll_mode
    rng = np.random.default_rng(seed)
    spk = data.by_speaker[split]
    neutral = label_set.index("neutral")
    refs, preds, speakers = [], [], []
    items = []
    for u in data.utts[split]:
        enroll = pick_enrollment(mode, u, spk[u.speaker], rng, n_labels=len(label_set), neutral=neutral,
                                 n_unlabeled=model.config.n_enroll)
        if enroll is not None:
            items.append((u, enroll))
    with torch.no_grad():
        for b in range(0, len(items), 64):
            chunk = items[b: b + 64]
            feats, lengths = pad_batch([data.fbank[u.id] for u, _ in chunk])
            ef = el = None
            if mode != "none":
                n = len(chunk[0][1])
                f2, l2 = pad_batch([data.fbank[e.id] for _, es in chunk for e in es])
                ef, el = f2.view(len(chunk), n, *f2.shape[1:]), l2.view(len(chunk), n)
            out = model(feats, lengths, ef, el).argmax(-1).tolist()
            for (u, _), p in zip(chunk, out):
                refs.append(label_set.labels[u.label])
                preds.append(label_set.labels[p])
                speakers.append(u.speaker)
    return evaluate(refs, preds, speakers, label_set), mode


#: The eGeMAPS peer's enrollment normalisations tried on dev (each trained per k, as the peer always is).
PEER_NORMS = ("enroll_mean", "enroll_z")


def select_peer(train_items, dev_sets: dict[int, EpisodeList], dev_feats, label_set: LabelSet, seed: int,
                k_max: int) -> tuple[EgemapsPeer, dict]:
    """The eGeMAPS peer whose normalisation (:data:`PEER_NORMS`) has the best mean UA_spk over the dev
    episodes (0-shot and TU+LD at each k), fitted on ``train_items``; and what the choice rested on."""
    scores, best = {}, None
    for norm in PEER_NORMS:
        peer = EgemapsPeer(label_set, norm=norm, seed=seed).fit(train_items, ks=range(k_max + 1))
        score = round(float(np.mean([peer.evaluate_episodes(eps, dev_feats).ua_spk for eps in dev_sets.values()])), 4)
        scores[norm] = score
        if best is None or score > best[0]:
            best = (score, peer)
    return best[1], {"selected_on": f"{CALIBRATION_SPLIT} episodes (0-shot and {CALIBRATION_SETTING} at each k): "
                                    "mean UA_spk per normalisation", "dev_ua_spk": scores}


def run_eval(plan: EvalPlan, protocol: dict | None = None, progress: bool = True):
    """Evaluate everything in the plan; return the report's Results (also written to out_dir)."""
    from tqdm import tqdm

    unknown = sorted(set(plan.label_controls) - {"shuffled", "deranged"})
    if unknown:
        raise EmoslmError(f"unknown label control(s) {', '.join(unknown)}: expected shuffled or deranged")
    out = Path(plan.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = plan.split = eval_split(plan.corpus, plan.split)
    ls = get_label_set(plan.label_set)
    peer_corpus = peer_training_corpus(plan, split) if plan.peer else None
    own_train = peer_corpus == plan.corpus and split != "train"
    cal_split, cal_status = calibration_split(plan, split, plan.decode)
    data = SERData(plan.corpus, label_set=plan.label_set, splits=[split] + (["train"] if own_train else [])
                   + ([cal_split] if cal_split else []), progress=progress)
    if cal_split and not data.utts[cal_split]:
        cal_split, cal_status = None, f"not fitted (the {CALIBRATION_SPLIT} split has no labelled utterance)"
    if not data.utts[split]:
        raise EmoslmError(f"the {split} split of {plan.corpus} has no utterance with a label of {ls.name} "
                          f"({', '.join(ls.labels)})")
    protocol = protocol or {"name": "predefined" if split == "test" else f"split {split}",
                            "description": f"the {split} split of {plan.corpus}; models trained elsewhere",
                            "test_speakers": len(data.by_speaker[split])}
    if peer_corpus is not None:
        protocol["peer_training"] = (f"the train split of {peer_corpus}" + ("" if own_train else
                                     " (the evaluated corpus has no training split of its own)"))
    sets = _episode_sets(data, plan)
    results = Results(metadata=RunMetadata.collect(corpus=plan.corpus, split_protocol=protocol,
                                                   leakage_check=leakage_check(plan, split)))
    results.calibration = {"status": cal_status, "split": cal_split, "method": "temperature scaling",
                           "settings": f"0-shot and {CALIBRATION_SETTING} at each k, pooled",
                           "episodes_per_k": plan.calibration_episodes_per_k, "n_bins": plan.calibration_bins,
                           "models": {}}
    n_targets = sum(len(e) for e in sets.values())
    cal_sets = calibration_episodes(data, cal_split, sorted({k for _, k in sets}), seed=plan.seed,
                                    per_k=plan.calibration_episodes_per_k,
                                    folder=out / "episodes" / cal_split) if cal_split else {}

    for name, path in tqdm(plan.classifiers.items(), desc="classifiers", disable=not progress or not plan.classifiers):
        res, _mode = _classifier_eval(path, data, ls, plan.seed, split)
        results.add_model(name, kind="baseline")
        results.add(name, None, res)

    stores: dict[str, EncodedStore] = {}
    dev_stores: dict[str, EncodedStore] = {}
    for spec in plan.icl:
        model = SpeechICLModel.from_pretrained(spec.path).eval()
        if spec.encoder not in stores:
            stores[spec.encoder] = _store_for(spec.encoder, data, split, out / "encoded", progress)
        store = stores[spec.encoder]
        tokens = speech_tokens_for(model, store, [u.id for u in data.utts[split]])  # once for every episode set
        results.add_model(spec.name, kind="icl", training_setting=spec.training_setting, role=spec.role)
        todo = [(key, eps) for key, eps in sets.items()
                if not (spec.role == "stage1" and key[1] > 0)
                and not (spec.role == "table4" and key[0] not in ("TU+LD", "TU+LO(neutral)", "0-shot"))]
        test_scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # k -> (label log-likelihoods, labels)
        own: dict[tuple[str, int], EvalResult] = {}  # (setting, k) -> this model's result
        with tqdm(total=sum(len(e) for _, e in todo), desc=spec.name[:32], unit="ep",
                  disable=not progress or n_targets < 500) as bar:
            for (setting, k), eps in todo:
                if cal_split and _is_calibration_key(setting, k):  # scored once: the tables and the test ECE
                    scores = episode_scores(model, store, ls, eps, tokens=tokens)
                    res = evaluate_scores(scores, eps, ls, protocol)
                    test_scores[k] = (scores.numpy().astype(np.float64), _label_indices(eps, ls))
                else:
                    res = evaluate_episodes(model, store, ls, eps, decode=plan.decode, protocol=protocol,
                                            tokens=tokens)
                results.add(spec.name, None if k == 0 else setting, res, k=k)
                own[(setting, k)] = res
                bar.update(len(eps))
        dev_sets = [eps for k, eps in cal_sets.items() if k in test_scores]
        if dev_sets:
            if spec.encoder not in dev_stores:
                dev_stores[spec.encoder] = _store_for(spec.encoder, data, cal_split, out / "encoded", progress)
            dev_store = dev_stores[spec.encoder]
            dev_tokens = speech_tokens_for(model, dev_store, [u.id for u in data.utts[cal_split]])
            dev_scores = np.concatenate([episode_scores(model, dev_store, ls, eps, tokens=dev_tokens).numpy()
                                         for eps in dev_sets]).astype(np.float64)
            dev_labels = np.concatenate([_label_indices(eps, ls) for eps in dev_sets])
            results.calibration["models"][spec.name] = calibration_summary((dev_scores, dev_labels), test_scores,
                                                                           plan.calibration_bins)
        if spec.role == "main" and plan.shuffled_control:
            # two controls on the TU+LD episodes: the labels permuted among the pairs, and every label made wrong
            controls = {"shuffled": (f"{spec.name}, shuffled enrollment labels", {"shuffle_labels_seed": plan.seed}),
                        "deranged": (f"{spec.name}, deranged enrollment labels", {"derange_labels_seed": plan.seed})}
            for ctrl, control in (controls[c] for c in plan.label_controls):
                results.add_model(ctrl, kind="control", training_setting=spec.training_setting)
                for (setting, k), eps in sets.items():
                    if k == 0:  # no enrollment label to change: the model's own 0-shot result
                        results.add(ctrl, None, own[(setting, k)], k=k)
                    elif setting == "TU+LD":
                        res = evaluate_episodes(model, store, ls, eps, protocol=protocol, tokens=tokens, **control)
                        results.add(ctrl, setting, res, k=k)

    if peer_corpus is not None:
        peer_seed = plan.seed if plan.peer_seed is None else plan.peer_seed
        train_items, _ = peer_items(peer_corpus, "train", ls, progress)
        _, feats = peer_items(plan.corpus, split, ls, progress)
        if cal_sets:  # the peer at its best: its normalisation chosen on the dev episodes the temperatures use
            _, dev_feats = peer_items(plan.corpus, cal_split, ls, progress)
            peer, selection = select_peer(train_items, cal_sets, dev_feats, ls, peer_seed, plan.k_max)
        else:
            peer = EgemapsPeer(ls, seed=peer_seed).fit(train_items, ks=range(plan.k_max + 1))
            selection = {"selected_on": f"nothing (no {CALIBRATION_SPLIT} split): the default normalisation"}
        name = "eGeMAPS peer (enrollment-normalised LR)"
        results.add_model(name, kind="peer", **peer.describe(), trained_on=f"{peer_corpus} (train)", **selection)
        for (setting, k), eps in sets.items():
            if setting == "TU+LD" or k == 0:
                results.add(name, None if k == 0 else setting, peer.evaluate_episodes(eps, feats, protocol), k=k)
    return results


def calibrate_bundle(bundle: str | Path, corpus: str | Path, split: str = CALIBRATION_SPLIT,
                     ks: Sequence[int] = (0, 1, 4, 7), *, per_k: int = 500, seed: int = 0, n_bins: int = 15,
                     progress: bool = True) -> dict:
    """Fit the temperature of a bundle's speech LM on ``split`` of a prepared corpus and write the bundle's
    calibration.json. The episodes are built as :func:`run_eval` builds them (0-shot and TU+LD at each of ``ks``,
    at most ``per_k`` each) and scored with the bundle's own encoder and model, uncalibrated; the ECE before and
    after is measured on those same episodes. Returns what was written."""
    rec = EmotionRecognizer.load(bundle, calibrated=False, threads=None)
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 0 or ks[-1] > rec.max_enroll:
        raise EmoslmError(f"k must be whole numbers from 0 to {rec.max_enroll} (the model's most enrollment "
                          f"pairs), got {ks}")
    split = eval_split(corpus, split)
    ls = rec.label_set
    data = SERData(corpus, label_set=ls.name, splits=[split], progress=progress)
    if not data.utts[split]:
        raise EmoslmError(f"the {split} split of {corpus} has no utterance with a label of {ls.name}")
    sets = calibration_episodes(data, split, ks, seed=seed, per_k=per_k)
    if not sets:
        raise EmoslmError(f"no episode of k in {ks} could be drawn from the {split} split of {corpus} (its speakers "
                          "have too few utterances: try smaller k)")
    store = EncodedStore.build(rec.encoder, {u.id: data.fbank[u.id] for u in data.utts[split]}, [SpeakerStyle()],
                               progress=progress)
    tokens = speech_tokens_for(rec.model, store, [u.id for u in data.utts[split]])
    scores = np.concatenate([episode_scores(rec.model, store, ls, eps, tokens=tokens).numpy()
                             for eps in sets.values()]).astype(np.float64)
    labels = np.concatenate([_label_indices(eps, ls) for eps in sets.values()])
    fit = calibration_summary((scores, labels), {}, n_bins)
    info = {"temperature": fit["temperature"],
            "fitted_on": f"the {split} split of {corpus}: 0-shot and {CALIBRATION_SETTING} episodes at k = "
                         f"{', '.join(map(str, sorted(sets)))} (at most {per_k} per k, seed {seed})",
            "corpus": str(corpus), "split": split, "ks": sorted(sets), "n": fit["n_dev"],
            "n_per_k": {str(k): len(eps) for k, eps in sets.items()}, "n_bins": n_bins,
            "ece_before": fit["dev_ece_before"], "ece_after": fit["dev_ece_after"],
            "nll_before": negative_log_likelihood(scores, labels),
            "nll_after": negative_log_likelihood(scores, labels, fit["temperature"]),
            "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")}
    write_calibration(bundle, info)
    return info


def write_report(results, out_dir: str | Path, console=None, render: bool = True) -> dict[str, Path]:
    """results.json, report.md and report.html in ``out_dir``; every table on the terminal unless not ``render``."""
    out = Path(out_dir)
    paths = {"json": out / "results.json", "markdown": out / "report.md", "html": out / "report.html"}
    results.to_json(paths["json"])
    paths["markdown"].write_text(to_markdown(results))
    write_html(results, paths["html"])
    if render:
        render_terminal(results, console)
    return paths

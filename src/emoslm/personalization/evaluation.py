"""``emoslm eval``: paper 000's Tables II-IV on held-out speakers, every model on the same episodes.

Episode sets are drawn once per (setting, k) from the evaluated speakers (seeded) and saved as JSONL beside the
results, so that the speech LMs, the eGeMAPS peer and the label controls (shuffled: permuted among the pairs;
deranged: every label wrong) see identical enrollments.

Any prepared corpus can be evaluated, also one with a single split and no training data (a user's own
recordings): the models are already trained, and the eGeMAPS peer, which must be fitted, is then fitted on the
training split of another corpus (by default the embedded synthetic one) and the report says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

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
from emoslm.egemaps import egemaps_for
from emoslm.errors import EmoslmError
from emoslm.labels import LabelSet, get_label_set
from emoslm.metrics import evaluate
from emoslm.models.encoders import FbankTransformerEncoder, SERClassifier
from emoslm.personalization.classifier import pick_enrollment
from emoslm.personalization.data import EncodedStore, SERData, pad_batch
from emoslm.personalization.egemaps_peer import EgemapsPeer
from emoslm.personalization.model import SpeechICLModel
from emoslm.personalization.report import (
    Results,
    RunMetadata,
    render_terminal,
    to_markdown,
    write_html,
)
from emoslm.personalization.scoring import evaluate_episodes, speech_tokens_for

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
    seed: int = 0
    peer: bool = True
    shuffled_control: bool = True
    decode: str = "score"
    split: str | None = None  # the split to evaluate (default: "test", or the corpus's only split)
    peer_train: str | None = None  # corpus whose "train" split fits the peer (default: the target's own, else EMBEDDED)


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


def _peer_items(corpus: str, split: str, label_set: LabelSet, progress: bool):
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


def run_eval(plan: EvalPlan, protocol: dict | None = None, progress: bool = True):
    """Evaluate everything in the plan; return the report's Results (also written to out_dir)."""
    from tqdm import tqdm

    out = Path(plan.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = plan.split = eval_split(plan.corpus, plan.split)
    ls = get_label_set(plan.label_set)
    peer_corpus = peer_training_corpus(plan, split) if plan.peer else None
    own_train = peer_corpus == plan.corpus and split != "train"
    data = SERData(plan.corpus, label_set=plan.label_set, splits=[split] + (["train"] if own_train else []),
                   progress=progress)
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
    results = Results(metadata=RunMetadata.collect(corpus=plan.corpus, split_protocol=protocol))
    n_targets = sum(len(e) for e in sets.values())

    for name, path in tqdm(plan.classifiers.items(), desc="classifiers", disable=not progress or not plan.classifiers):
        res, _mode = _classifier_eval(path, data, ls, plan.seed, split)
        results.add_model(name, kind="baseline")
        results.add(name, None, res)

    stores: dict[str, EncodedStore] = {}
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
        with tqdm(total=sum(len(e) for _, e in todo), desc=spec.name[:32], unit="ep",
                  disable=not progress or n_targets < 500) as bar:
            for (setting, k), eps in todo:
                res = evaluate_episodes(model, store, ls, eps, decode=plan.decode, protocol=protocol, tokens=tokens)
                results.add(spec.name, None if k == 0 else setting, res, k=k)
                bar.update(len(eps))
        if spec.role == "main" and plan.shuffled_control:
            # two controls on the TU+LD episodes: the labels permuted among the pairs, and every label made wrong
            for ctrl, control in ((f"{spec.name}, shuffled enrollment labels", {"shuffle_labels_seed": plan.seed}),
                                  (f"{spec.name}, deranged enrollment labels", {"derange_labels_seed": plan.seed})):
                results.add_model(ctrl, kind="peer", training_setting=spec.training_setting)
                for (setting, k), eps in sets.items():
                    if setting == "TU+LD" or k == 0:
                        res = evaluate_episodes(model, store, ls, eps, protocol=protocol, tokens=tokens, **control)
                        results.add(ctrl, None if k == 0 else setting, res, k=k)

    if peer_corpus is not None:
        train_items, _ = _peer_items(peer_corpus, "train", ls, progress)
        _, feats = _peer_items(plan.corpus, split, ls, progress)
        peer = EgemapsPeer(ls, seed=plan.seed).fit(train_items, ks=range(plan.k_max + 1))
        name = "eGeMAPS peer (enrollment-normalised LR)"
        results.add_model(name, kind="peer", **peer.describe(), trained_on=f"{peer_corpus} (train)")
        for (setting, k), eps in sets.items():
            if setting == "TU+LD" or k == 0:
                preds = peer.predict_episodes(eps, feats)
                res = evaluate([e.target_label for e in eps], preds, [e.speaker for e in eps], ls, protocol=protocol)
                results.add(name, None if k == 0 else setting, res, k=k)
    return results


def write_report(results, out_dir: str | Path, console=None) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"json": out / "results.json", "markdown": out / "report.md", "html": out / "report.html"}
    results.to_json(paths["json"])
    paths["markdown"].write_text(to_markdown(results))
    write_html(results, paths["html"])
    render_terminal(results, console)
    return paths

"""``emoslm eval``: paper 000's Tables II-IV on held-out speakers, every model on the same episodes.

Episode sets are drawn once per (setting, k) from the test speakers (seeded) and saved as JSONL beside the
results, so that the speech LMs, the eGeMAPS peer and the shuffled-label control see identical enrollments.
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
from emoslm.data.manifests import load_prepared
from emoslm.egemaps import egemaps_for
from emoslm.labels import LabelSet
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


def _episode_sets(data: SERData, plan: EvalPlan) -> dict[tuple[str, int], EpisodeList]:
    """Every (setting, k) the tables need, drawn once and cached on disk."""
    sampler = EpisodeSampler(data.items("test"), label_set=data.label_set)
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


def _store_for(encoder_dir: str, data: SERData, cache: Path) -> EncodedStore:
    enc = FbankTransformerEncoder.from_pretrained(encoder_dir)
    fb = {u.id: data.fbank[u.id] for u in data.utts["test"]}
    eid = str(Path(encoder_dir).resolve()) + str((Path(encoder_dir) / "model.safetensors").stat().st_mtime_ns)
    return EncodedStore.build(enc, fb, [SpeakerStyle()], cache=cache, encoder_id=eid + ":test", progress=False)


def _classifier_eval(path: str, data: SERData, label_set: LabelSet, seed: int):
    model = SERClassifier.from_pretrained(path).eval()
    mode = model.config.enroll_mode
    rng = np.random.default_rng(seed)
    spk = data.by_speaker["test"]
    neutral = label_set.index("neutral")
    refs, preds, speakers = [], [], []
    items = []
    for u in data.utts["test"]:
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
    out = Path(plan.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = SERData(plan.corpus, label_set=plan.label_set, splits=["train", "test"], progress=progress)
    ls = data.label_set
    protocol = protocol or {"name": "predefined", "description": "the corpus's speaker-disjoint test split",
                            "test_speakers": len(data.by_speaker["test"])}
    sets = _episode_sets(data, plan)
    results = Results(metadata=RunMetadata.collect(corpus=plan.corpus, split_protocol=protocol))

    for name, path in plan.classifiers.items():
        res, _mode = _classifier_eval(path, data, ls, plan.seed)
        results.add_model(name, kind="baseline")
        results.add(name, None, res)

    stores: dict[str, EncodedStore] = {}
    for spec in plan.icl:
        model = SpeechICLModel.from_pretrained(spec.path).eval()
        if spec.encoder not in stores:
            stores[spec.encoder] = _store_for(spec.encoder, data, out / "encoded")
        store = stores[spec.encoder]
        model.eval()
        tokens = speech_tokens_for(model, store, [u.id for u in data.utts["test"]])  # once for every episode set
        results.add_model(spec.name, kind="icl", training_setting=spec.training_setting, role=spec.role)
        for (setting, k), eps in sets.items():
            if spec.role == "stage1" and k > 0:
                continue
            if spec.role == "table4" and setting not in ("TU+LD", "TU+LO(neutral)", "0-shot"):
                continue
            res = evaluate_episodes(model, store, ls, eps, decode=plan.decode, protocol=protocol, tokens=tokens)
            results.add(spec.name, None if k == 0 else setting, res, k=k)
        if spec.role == "main" and plan.shuffled_control:
            ctrl = f"{spec.name}, shuffled enrollment labels"
            results.add_model(ctrl, kind="peer", training_setting=spec.training_setting)
            for (setting, k), eps in sets.items():
                if setting == "TU+LD" or k == 0:
                    res = evaluate_episodes(model, store, ls, eps, protocol=protocol, shuffle_labels_seed=plan.seed,
                                            tokens=tokens)
                    results.add(ctrl, None if k == 0 else setting, res, k=k)

    if plan.peer:
        prepared = load_prepared(plan.corpus)
        items = []
        for split in ("train", "test"):
            recs = prepared[split]["recordings"]
            items += [(s.id, recs[s.recording_id].sources[0].source, s.start, s.duration)
                      for s in prepared[split]["supervisions"]]
        feats = egemaps_for(items, cache=Path(plan.corpus) / "egemaps.npz", workers=2, progress=progress)
        train_items = [(u.id, u.speaker, ls.labels[u.label], feats[u.id]) for u in data.utts["train"]]
        peer = EgemapsPeer(ls, seed=plan.seed).fit(train_items, ks=range(plan.k_max + 1))
        name = "eGeMAPS peer (enrollment-normalised LR)"
        results.add_model(name, kind="peer", **peer.describe())
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

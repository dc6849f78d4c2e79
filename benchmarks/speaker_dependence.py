"""How speaker-dependent is the synthetic corpus? eGeMAPS + a linear classifier, with and without the speaker.

The corpus is meant to make a speaker-independent model limited and a few utterances of the target speaker
useful. This measures it on held-out speakers with the classic front end (eGeMAPS functionals + logistic
regression, trained on the training speakers):

- raw: features standardised over the training set only (speaker-independent);
- speaker z-norm: each speaker's features standardised with that speaker's own mean/std over all their
  utterances (labels unused), in training and test alike;
- neutral reference: each speaker's features minus the mean of that speaker's neutral utterances
  (what a single neutral enrollment utterance gives, idealised);
- speaker-dependent ceiling: for each test speaker, a classifier trained on their own utterances of the other
  sentences (leave-one-sentence-out), as a reference for how separable one speaker's emotions are.

Usage: python benchmarks/speaker_dependence.py [--corpus data/synth_demo] [--preset demo]
Writes benchmarks/results/speaker_dependence.md.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

TITLE = "Speaker dependence of the synthetic corpus"

from emoslm.data.manifests import emotion_of, load_prepared  # noqa: E402
from emoslm.egemaps import egemaps_for  # noqa: E402
from emoslm.labels import EKMAN7  # noqa: E402
from emoslm.metrics import ua_spk, unweighted_accuracy, weighted_accuracy  # noqa: E402
from emoslm.synth.corpus import synthesize_corpus  # noqa: E402


def _fit_predict(xtr, ytr, xte) -> np.ndarray:
    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=3000, C=1.0)
    clf.fit(sc.transform(xtr), ytr)
    return clf.predict(sc.transform(xte))


def _per_speaker(x: np.ndarray, spk: list[str], fn) -> np.ndarray:
    out = np.empty_like(x)
    groups = defaultdict(list)
    for i, s in enumerate(spk):
        groups[s].append(i)
    for s, idx in groups.items():
        out[idx] = fn(x[idx], idx)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/synth_demo")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/speaker_dependence.md")
    add_title_option(ap)
    args = ap.parse_args()

    synthesize_corpus(args.corpus, args.preset, workers=args.workers)
    prepared = load_prepared(args.corpus, "synth")
    rows = {}
    for split in ("train", "test"):
        sups = list(prepared[split]["supervisions"])
        recs = prepared[split]["recordings"]
        items = [(s.id, recs[s.recording_id].sources[0].source, s.start, s.duration) for s in sups]
        feats = egemaps_for(items, cache=Path(args.corpus) / "egemaps.npz", workers=args.workers)
        x = np.stack([feats[s.id] for s in sups]).astype(np.float64)
        rows[split] = (x, [emotion_of(s) for s in sups], [s.speaker for s in sups], [s.id for s in sups])

    xtr, ytr, str_, _ = rows["train"]
    xte, yte, ste, ids_te = rows["test"]
    results = {}

    def record(name, pred):
        results[name] = (weighted_accuracy(yte, pred), unweighted_accuracy(yte, pred), ua_spk(yte, pred, ste))

    record("raw (speaker-independent)", _fit_predict(xtr, ytr, xte))

    def znorm(x, _idx):
        return (x - x.mean(0)) / (x.std(0) + 1e-6)

    record("speaker z-norm (all utterances, labels unused)",
           _fit_predict(_per_speaker(xtr, str_, znorm), ytr, _per_speaker(xte, ste, znorm)))

    def neutral_ref(y):
        def fn(x, idx):
            neu = [j for j, i in enumerate(idx) if y[i] == "neutral"]
            return x - x[neu].mean(0)
        return fn

    record("neutral reference (speaker's neutral mean subtracted)",
           _fit_predict(_per_speaker(xtr, str_, neutral_ref(ytr)), ytr, _per_speaker(xte, ste, neutral_ref(yte))))

    # speaker-dependent ceiling: leave-one-sentence-out inside each test speaker
    pred_sd = np.empty(len(yte), dtype=object)
    sent = [i.rsplit("_", 1)[1] for i in ids_te]
    for s in sorted(set(ste)):
        idx = [i for i, sp in enumerate(ste) if sp == s]
        for held in sorted({sent[i] for i in idx}):
            tr = [i for i in idx if sent[i] != held]
            te = [i for i in idx if sent[i] == held]
            pred_sd[te] = _fit_predict(xte[tr], [yte[i] for i in tr], xte[te])
    record("speaker-dependent ceiling (own other sentences)", list(pred_sd))

    n_spk_tr, n_spk_te = len(set(str_)), len(set(ste))
    lines = [
        heading(TITLE, args.title),
        "",
        f"eGeMAPS v02 functionals (88) + logistic regression; trained on {n_spk_tr} training speakers "
        f"({len(ytr)} utterances), tested on {n_spk_te} held-out speakers ({len(yte)} utterances), "
        f"{len(EKMAN7)} emotions (chance 0.143).",
        "",
        "| features | WA | UA | UA_spk | sigma | min | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (wa, ua, st) in results.items():
        lines.append(f"| {name} | {wa:.3f} | {ua:.3f} | {st.mean:.3f} | {st.std:.3f} | {st.min:.3f} | {st.max:.3f} |")
    raw = results["raw (speaker-independent)"][2].mean
    z = results["speaker z-norm (all utterances, labels unused)"][2].mean
    lines += ["", f"Speaker normalisation gain over raw: {z - raw:+.3f} UA_spk "
              f"({z / raw:.2f}x).", ""]
    text = "\n".join(lines)
    print(text)
    write_result(args.out, text, command_line())


if __name__ == "__main__":
    main()

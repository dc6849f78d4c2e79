"""How honest is a synthetic corpus? Leakage between its splits, and how far a classic peer gets on it.

For each corpus preset: the split-overlap audit (shared speakers, sentences, base voices) of dev, test and (when
present) unseen against train; then the eGeMAPS peer (enrollment-normalised logistic regression, normalisation
chosen on the dev episodes) trained on the train split and scored with UA_spk on TU+LD episodes of the test and
unseen speakers at several k. The last row trains the same peer on the unseen speakers themselves (two folds of
speakers, each scored by the peer fitted on the other): the emotions are there to be found when this row is high,
and a gap between it and the train-fitted peer measures what the train split does not teach.

Usage: python benchmarks/heldout_corpus.py [--presets demo,heldout] [--data data] [--ks 0,1,4,7]
Writes benchmarks/results/heldout_corpus.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

TITLE = "Held-out synthetic corpus: leakage and a classic peer"


def peer_table(corpus: Path, ks: list[int], progress: bool) -> dict:
    from emoslm.data.episodes import EpisodeSampler
    from emoslm.data.manifests import load_prepared
    from emoslm.labels import get_label_set
    from emoslm.metrics import evaluate
    from emoslm.personalization.egemaps_peer import EgemapsPeer
    from emoslm.personalization.evaluation import peer_items, select_peer

    ls = get_label_set("ekman7")
    items, feats = {}, {}
    for split in load_prepared(corpus):  # eGeMAPS cached in the corpus folder, as emoslm eval does
        items[split], split_feats = peer_items(str(corpus), split, ls, progress)
        feats.update(split_feats)

    def episodes(split: str, k: int, speakers: set[str] | None = None):
        rows = [(i, s, lab) for i, s, lab, _ in items[split] if speakers is None or s in speakers]
        return EpisodeSampler(rows, label_set=ls).episodes(k=k, target="TU", label="LD" if k else "LU", seed=0,
                                                            on_error="skip")

    dev_sets = {k: episodes("dev", k) for k in ks}
    peer, selection = select_peer(items["train"], dev_sets, feats, ls, seed=0, k_max=max(ks))
    table = {}
    for split in [s for s in ("test", "unseen") if s in items]:
        table[f"{split}, peer fitted on train"] = [peer.evaluate_episodes(episodes(split, k), feats).ua_spk
                                                   for k in ks]
    if "unseen" in items:
        spk = sorted({s for _, s, _, _ in items["unseen"]})
        folds = [set(spk[0::2]), set(spk[1::2])]
        scores = []
        for k in ks:
            refs, preds, who = [], [], []
            for i, held in enumerate(folds):
                own = EgemapsPeer(ls, norm=peer.norm, seed=0).fit(
                    [it for it in items["unseen"] if it[1] in folds[1 - i]], ks=ks)
                eps = episodes("unseen", k, held)
                refs += [e.target_label for e in eps]
                preds += own.predict_episodes(eps, feats)
                who += [e.speaker for e in eps]
            scores.append(evaluate(refs, preds, who, ls).ua_spk)
        table["unseen, peer fitted on other unseen speakers (2 folds)"] = scores
    return {"table": table, "selection": selection, "norm": peer.norm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="demo,heldout")
    ap.add_argument("--data", default="data")
    ap.add_argument("--ks", default="0,1,4,7")
    ap.add_argument("--out", default="benchmarks/results/heldout_corpus.md")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    add_title_option(ap)
    args = ap.parse_args()

    from emoslm.data.manifests import load_prepared
    from emoslm.data.splits import describe_overlap, split_overlap
    from emoslm.synth.corpus import synthesize_corpus

    ks = [int(k) for k in args.ks.split(",")]
    lines = [heading(TITLE, args.title), ""]
    t0 = time.perf_counter()
    for preset in args.presets.split(","):
        corpus = Path(args.data) / f"synth_{preset}"
        summary = synthesize_corpus(corpus, preset, progress=not args.quiet)
        prepared = load_prepared(corpus)
        sizes = ", ".join(f"{sp} {row['speakers']} speakers" for sp, row in summary["splits"].items())
        lines += [f"## Preset `{preset}` (`{corpus}`: {sizes})", "", "Split overlap with train:", ""]
        for target in [s for s in ("dev", "test", "unseen") if s in prepared]:
            lines.append(f"- {target}: {describe_overlap(split_overlap(prepared, target=target))}")
        res = peer_table(corpus, ks, progress=not args.quiet)
        lines += ["", f"eGeMAPS peer, UA_spk on TU+LD episodes (normalisation {res['norm']}, chosen on dev: "
                      f"{res['selection']['dev_ua_spk']}):", "",
                  "| episodes | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
        for name, row in res["table"].items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        lines.append("")
    lines.append(f"Wall time {time.perf_counter() - t0:.0f} s (eGeMAPS cached in each corpus folder).")
    text = "\n".join(lines) + "\n"
    print(text)
    write_result(args.out, text, command_line())


if __name__ == "__main__":
    main()

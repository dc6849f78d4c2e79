"""Personalised SER by in-context learning (paper 000) on held-out speakers: tables, controls and latency.

1. Trains (or reuses) every model of the demo pipeline and evaluates them on the same episodes of the test
   speakers: Table II, III, IV, the eGeMAPS peer and the shuffled-label control (``runs/<preset>/eval``).
2. Latency through the Python API on test utterances: 0-shot, 7-shot with the caches (enrollment encodings
   computed once, decoder prefix key/value cache reused), and 7-shot uncached (enrollment audio re-encoded
   and the prefix recomputed for every query); the real-time factor of the 0-shot path.

Usage: python benchmarks/personalization.py [--preset demo] [--runs runs/demo] [--queries 100]
Writes benchmarks/results/personalization.md (the report's tables are in runs/<preset>/eval/report.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

TITLE = "Personalised SER by in-context learning (paper 000)"


def latency_table(bundle: Path, corpus: Path, n_queries: int, threads: int = 1) -> tuple[str, dict]:
    import torch

    from emoslm.audio import load_audio
    from emoslm.data.manifests import emotion_of, load_prepared
    from emoslm.personalization.inference import EmotionRecognizer

    torch.set_num_threads(threads)
    rec = EmotionRecognizer.load(bundle, threads=threads)
    test = load_prepared(corpus)["test"]
    by_spk: dict[str, list] = {}
    for s in test["supervisions"]:
        by_spk.setdefault(s.speaker, []).append(s)
    rng = np.random.default_rng(0)
    # "7-shot, cached": the speaker's enrollment prefix already cached (every query after the first);
    # "first query": the one that computes it after an enrollment (its own row, so it does not blur the cached one)
    first = "7-shot, first query after enrolling (computes the cache)"
    rows = {"0-shot": [], "7-shot, cached": [], first: [], "7-shot, uncached": []}
    durations = []
    speakers = sorted(by_spk)
    per = max(1, n_queries // len(speakers))
    for spk in speakers:
        sups = by_spk[spk]
        # enrollment: one utterance of each emotion (TU+LD k=7), queries: other utterances
        enroll, seen = [], set()
        for s in rng.permutation(len(sups)):
            e = emotion_of(sups[s])
            if e not in seen:
                seen.add(e)
                enroll.append(sups[s])
        queries = [s for s in sups if s not in enroll][:per]
        path = lambda s: test["recordings"][s.recording_id].sources[0].source  # noqa: E731
        pairs = [(load_audio(path(s)), emotion_of(s)) for s in enroll]
        rec.enroll(spk, pairs)
        for i, q in enumerate(queries):
            wave = load_audio(path(q))
            durations.append(wave.size / 16000)
            rec.predict(wave)  # warm
            if i == 0:
                rows[first].append(rec.predict(wave, speaker=spk).latency_ms)
            rows["0-shot"].append(rec.predict(wave).latency_ms)
            rows["7-shot, cached"].append(rec.predict(wave, speaker=spk).latency_ms)
            rows["7-shot, uncached"].append(rec.predict(wave, enroll_pairs=pairs).latency_ms)
    med = {k: statistics.median(v) for k, v in rows.items()}
    p90 = {k: float(np.percentile(v, 90)) for k, v in rows.items()}
    dur = statistics.median(durations)
    lines = [f"Latency through `EmotionRecognizer.predict`, {len(rows['0-shot'])} test queries of "
             f"{len(speakers)} held-out speakers (median audio {dur:.2f} s), {threads} torch thread{'s' if threads > 1 else ''}:", "",
             "| path | median ms | p90 ms | ratio to 0-shot | real-time factor |", "|---|---|---|---|---|"]
    for k in rows:
        lines.append(f"| {k} | {med[k]:.1f} | {p90[k]:.1f} | {med[k] / med['0-shot']:.2f} | {med[k] / 1000 / dur:.4f} |")
    return "\n".join(lines), {"median_ms": med, "audio_s": dur}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--profile", default="long", help="training schedule of emoslm.personalization.pipeline.PROFILES")
    ap.add_argument("--runs", default=None)
    ap.add_argument("--data", default="data")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--skip-train", action="store_true", help="only the latency part, on an existing bundle")
    ap.add_argument("--out", default="benchmarks/results/personalization.md")
    add_title_option(ap)
    args = ap.parse_args()
    runs = Path(args.runs or f"runs/{args.profile}")
    corpus = Path(args.data) / f"synth_{args.preset}"

    t0 = time.perf_counter()
    if not args.skip_train:
        from emoslm.personalization.pipeline import run_personalization_demo

        run_personalization_demo(args.data, runs, preset=args.preset, profile=args.profile, progress=False)
    report = (runs / "eval" / "report.md").read_text()
    lat, _ = latency_table(runs / "bundle", corpus, args.queries)
    text = "\n".join([
        heading(TITLE, args.title), "",
        f"Corpus: `{corpus}` (synthetic, speaker-disjoint test split); models and settings as in the report "
        f"below; pipeline wall time {time.perf_counter() - t0:.0f} s.", "",
        report, "", "## Latency and real-time factor", "", lat, ""])
    print(text)
    write_result(args.out, text, command_line())


if __name__ == "__main__":
    main()

"""Paper 000's SmolLM2 model over training seeds: Table II, UA_spk vs k with both label controls, and the claims.

Each training seed of the SmolLM2 MetaICL model is a run of ``benchmarks/personalization_llm.py`` (one per
seed: ``--out-dir runs/smollm2_heldout_seed<N> --set train.seed=<N> --set style_seed=<N>``), which scores it on the
test split and the ``unseen`` split (a voice family and an emotion rendering no training split has) into
``RUN/eval/results.json`` and ``RUN/eval_unseen/results.json``, on the same episodes and label controls for every
seed. This script trains and scores nothing: it reads those files and gives, with
:mod:`emoslm.metrics.seeds`,

- every row's mean over seeds, the 95 % t-interval over seeds and the 95 % speaker-bootstrap interval;
- UA_spk vs k of the model, its random-permutation control and its derangement control;
- the issue's claims, paired within each seed: 7-shot − 0-shot, and the share of that gain the deranged labels
  remove, on both splits;
- with ``--baselines`` (the tiny-LM seed runs of ``benchmarks/personalization_seeds.py`` on the same corpus):
  7-shot − the eGeMAPS peer at 7 and − Personalized_A. Those are other training runs, so the difference is of
  the two means over seeds, its speaker interval paired by speaker (no interval over seeds).

Usage: python benchmarks/personalization_llm_seeds.py --runs runs/smollm2_heldout,runs/smollm2_heldout_seed1,...
           [--baselines runs/seeds_heldout --baseline-seeds 0,1,2]
Appends to benchmarks/results/personalization_llm.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, heading  # noqa: E402
from personalization_seeds import (  # noqa: E402
    CLAIM_SETTING,
    PERSONALIZED_A,
    TARGETS,
    UNSEEN,
    Claim,
    claims,
    claims_table,
    load_seed_results,
    model_of_kind,
    per_speaker,
    publish,
    rows_over_seeds,
    table2_over_seeds,
    ua_vs_k,
)

from emoslm.metrics.seeds import SeedEstimate, common_speakers, speaker_bootstrap, summarize  # noqa: E402

TITLE = "Paper 000's SmolLM2 MetaICL model over training seeds"
SPLIT_FOLDERS = {"test": "eval", UNSEEN: "eval_unseen"}


def load_runs(runs: list[Path], folder: str) -> list | None:
    """Each run's Results of one split (RUN/<folder>/results.json); None when a run has none."""
    from emoslm.personalization.report import Results

    paths = [r / folder / "results.json" for r in runs]
    if not all(p.is_file() for p in paths):
        return None
    return [Results.from_json(p) for p in paths]


def unpaired_difference(a: list, b: list) -> SeedEstimate:
    """Mean over ``a``'s seeds minus mean over ``b``'s (other training runs: no pairing by seed, no interval over
    seeds), with the speaker-bootstrap interval (the same drawn speakers for both)."""
    diff = summarize(a).mean - summarize(b).mean
    quantities = [a, b]
    ci = speaker_bootstrap(lambda x, y: x - y, quantities)
    return SeedEstimate(per_seed=(diff,), mean=diff, t_ci=None, speaker_ci=ci,
                        n_speakers=len(common_speakers(quantities)))


def baseline_claims(mine: list, theirs: list, split: str, k: int) -> list[Claim]:
    """7-shot of this model − the eGeMAPS peer at k and − Personalized_A, each averaged over its own seeds."""
    main = mine[0].main_model
    real = [per_speaker(r, (main, k, CLAIM_SETTING)) for r in mine]
    target = TARGETS.get(split, TARGETS["test"])
    out = []
    peer = model_of_kind(theirs[0], "peer")
    if peer:
        out.append(Claim(f"{k}-shot − eGeMAPS peer at {k} (its seeds)", split,
                         unpaired_difference(real, [per_speaker(r, (peer, k, CLAIM_SETTING)) for r in theirs]),
                         target["peer"]))
    if any(m.name == PERSONALIZED_A for m in theirs[0].models) and target["personalized_a"] is not None:
        out.append(Claim(f"{k}-shot − {PERSONALIZED_A} (its seeds)", split,
                         unpaired_difference(real, [per_speaker(r, (PERSONALIZED_A, None, None)) for r in theirs]),
                         target["personalized_a"]))
    return out


def rising_with_k(rows: dict, results: list) -> str:
    """Whether the main model's mean UA_spk rises at every k (the unseen split's claim), with the means."""
    main = results[0].main_model
    ks = sorted(k for (m, k, s) in rows if m == main and k is not None)
    means = [summarize(rows[(main, k, None if k == 0 else CLAIM_SETTING)]).mean for k in ks]
    rising = all(b > a for a, b in zip(means, means[1:]))
    return (f"UA_spk vs k ({', '.join(f'k={k}: {m:.3f}' for k, m in zip(ks, means))}): "
            + ("rises at every k." if rising else "does not rise at every k."))


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="comma-separated run folders of personalization_llm.py, one per "
                                                  "training seed")
    ap.add_argument("--seeds", default=None, help="the training seed of each run, for the tables (default 0, 1, ...)")
    ap.add_argument("--baselines", default=None, help="the tiny-LM seed runs (personalization_seeds.py) on the same "
                                                      "corpus, for the peer and Personalized_A claims")
    ap.add_argument("--baseline-seeds", default="0,1,2")
    ap.add_argument("--out", default="benchmarks/results/personalization_llm.md")
    add_title_option(ap)
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs.split(",") if r.strip()]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(len(runs)))
    if len(seeds) != len(runs):
        ap.error(f"--seeds names {len(seeds)} seeds for {len(runs)} runs")
    test = load_runs(runs, SPLIT_FOLDERS["test"])
    if test is None:
        missing = [str(r / "eval" / "results.json") for r in runs if not (r / "eval" / "results.json").is_file()]
        raise SystemExit(f"no test results in {', '.join(missing)}: score each run with "
                         "benchmarks/personalization_llm.py first")
    unseen = load_runs(runs, SPLIT_FOLDERS[UNSEEN])
    rows = rows_over_seeds(test)
    unseen_rows = rows_over_seeds(unseen) if unseen else None
    all_claims, k = claims(test, "test")
    if unseen:
        all_claims += claims(unseen, UNSEEN)[0]
    base_note = "No baseline seed runs given (--baselines): the peer and Personalized_A claims are left out."
    if args.baselines:
        bseeds = [int(s) for s in args.baseline_seeds.split(",")]
        base_test = load_seed_results(Path(args.baselines), bseeds, "eval")
        if base_test is None:
            base_note = (f"The baseline seed runs ({args.baselines}, seeds {args.baseline_seeds}) were not found "
                         "here: the peer and Personalized_A claims are left out.")
        else:
            all_claims += baseline_claims(test, base_test, "test", k)
            base_unseen = load_seed_results(Path(args.baselines), bseeds, f"eval_{UNSEEN}")
            if unseen and base_unseen:
                all_claims += baseline_claims(unseen, base_unseen, UNSEEN, k)
            base_note = f"Baselines: the tiny-LM seed runs `{args.baselines}` (seeds {args.baseline_seeds})."
    tables = [table2_over_seeds(rows, unseen_rows, seeds), ua_vs_k(rows, test),
              *([ua_vs_k(unseen_rows, unseen, UNSEEN)] if unseen else []), claims_table(all_claims)]
    made = [f"- seed {seed}: `{run}` (evaluated {res.metadata.date or '?'} by `{res.metadata.command or '?'}`)"
            for seed, run, res in zip(seeds, runs, test)]
    lines = [heading(TITLE, args.title), "",
             f"{len(runs)} training seeds of the SmolLM2 MetaICL model, each scored on the same test episodes and "
             f"label controls{' and the same unseen-split episodes' if unseen else ''}; claims at k = {k}. "
             + base_note, "", *made, ""]
    if unseen_rows:
        lines += [f"Unseen voice family and rendering: {rising_with_k(unseen_rows, unseen)}", ""]
    from rich.console import Console

    console = Console()
    if len(runs) < 3:
        console.print(f"[yellow]{len(runs)} seed(s): the issue asks for at least 3[/yellow]")
    return publish(lines, tables, args.out, __file__, argv, console)


if __name__ == "__main__":
    main()

"""Results over training seeds (emoslm.metrics.seeds) and the benchmark that trains paper 000 once per seed
(benchmarks/personalization_seeds.py)."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from emoslm.metrics.seeds import (
    common_speakers,
    fraction_removed,
    paired_difference,
    speaker_bootstrap,
    summarize,
    summarize_rows,
    t_interval,
)

ROOT = Path(__file__).resolve().parents[1]


def _speakers(values) -> dict[str, float]:
    return {f"spk{i}": float(v) for i, v in enumerate(values)}


# ------------------------------------------------------------------------------------------- t-interval


def test_t_interval_is_the_textbook_one_and_undefined_for_one_seed():
    values = [0.50, 0.60, 0.55]
    lo, hi = t_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert (lo, hi) == pytest.approx((0.55 - half, 0.55 + half))
    assert t_interval([0.4]) is None
    assert t_interval([0.4, 0.4]) == pytest.approx((0.4, 0.4))
    with pytest.raises(ValueError):
        t_interval([0.4, math.nan])


def test_t_interval_covers_a_known_mean_95_percent_of_the_time_and_shrinks_with_seeds():
    rng = np.random.default_rng(7)
    mu, sigma = 0.6, 0.05
    for n in (3, 10):
        draws = rng.normal(mu, sigma, size=(4000, n))
        cis = [t_interval(d) for d in draws]
        covered = np.mean([lo <= mu <= hi for lo, hi in cis])
        assert 0.935 <= covered <= 0.965, (n, covered)
        assert all(lo <= d.mean() <= hi for (lo, hi), d in zip(cis, draws))
    # the expected width: 2 t(n-1) sigma c4(n) / sqrt(n), smaller with more seeds
    width = {n: np.mean([np.diff(t_interval(d))[0] for d in rng.normal(mu, sigma, size=(2000, n))])
             for n in (3, 5, 20)}
    assert width[3] > width[5] > width[20]
    assert width[20] == pytest.approx(2 * stats.t.ppf(0.975, 19) * sigma / math.sqrt(20), rel=0.05)


# ------------------------------------------------------------------------------------- speaker bootstrap


def test_summarize_gives_the_mean_over_seeds_and_both_intervals():
    rng = np.random.default_rng(0)
    per_seed = [_speakers(rng.uniform(0.3, 0.9, size=12)) for _ in range(3)]
    est = summarize(per_seed)
    seed_means = [np.mean(list(p.values())) for p in per_seed]
    assert est.per_seed == pytest.approx(seed_means) and est.mean == pytest.approx(np.mean(seed_means))
    assert est.n_seeds == 3 and est.n_speakers == 12
    assert est.t_ci[0] <= est.mean <= est.t_ci[1]
    assert est.speaker_ci[0] <= est.mean <= est.speaker_ci[1]
    assert summarize(per_seed) == est  # seeded: the same interval every time

    one = summarize(per_seed[:1])
    assert one.t_ci is None and one.speaker_ci is not None and one.mean == pytest.approx(seed_means[0])


def test_the_speaker_interval_reflects_the_spread_of_speakers():
    rng = np.random.default_rng(1)
    same = summarize([_speakers([0.7] * 10)] * 3)
    assert same.speaker_ci == pytest.approx((0.7, 0.7)) and same.t_ci == pytest.approx((0.7, 0.7))

    def width(n_speakers: int, spread: float) -> float:
        lo, hi = summarize([_speakers(rng.normal(0.6, spread, size=n_speakers))]).speaker_ci
        return hi - lo

    # percentile bootstrap of a mean: about 2 * 1.96 * sd / sqrt(n)
    assert width(400, 0.1) == pytest.approx(2 * 1.96 * 0.1 / math.sqrt(400), rel=0.15)
    assert width(400, 0.1) < width(25, 0.1)
    assert width(100, 0.02) < width(100, 0.2)


def test_speakers_are_resampled_together_for_a_paired_difference():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.9, size=30)  # speakers differ a lot; the second model adds 0.1 to every one
    a = [_speakers(base + 0.1 + rng.normal(0, 0.005, size=30)) for _ in range(3)]
    b = [_speakers(base + rng.normal(0, 0.005, size=30)) for _ in range(3)]
    diff = paired_difference(a, b)
    assert diff.mean == pytest.approx(0.1, abs=0.01)
    lo, hi = diff.speaker_ci
    assert lo <= diff.mean <= hi and hi - lo < 0.01  # paired: the speakers' spread cancels
    alone_lo, alone_hi = summarize(a).speaker_ci
    assert alone_hi - alone_lo > 10 * (hi - lo)
    with pytest.raises(ValueError):
        paired_difference(a, b[:2])


def test_only_speakers_of_every_seed_and_model_enter_the_bootstrap():
    a = [{"x": 0.5, "y": 0.7, "z": 0.9}, {"x": 0.6, "y": 0.8}]
    b = [{"x": 0.1, "y": 0.1, "z": 0.1}, None]  # b was not evaluated in the second seed
    assert common_speakers([a, b]) == ["x", "y"]
    est = paired_difference(a, b)
    assert math.isnan(est.per_seed[1]) and est.n_seeds == 1 and est.n_speakers == 2
    assert est.mean == pytest.approx(0.7 - 0.1) and est.t_ci is None
    assert summarize([{"x": 0.5}]).speaker_ci is None  # one speaker: no interval
    assert speaker_bootstrap(lambda v: v, [[None, None]]) is None


def test_fraction_removed_by_a_control():
    # real: 0.3 at 0-shot, 0.7 with enrollment; the control falls back to 0.4: it removes 3/4 of the gain
    n = 20
    real_0 = [_speakers([0.3] * n)] * 3
    real_k = [_speakers([0.7] * n)] * 3
    control = [_speakers([0.4] * n)] * 3
    est = fraction_removed(real_k, control, real_0)
    assert est.mean == pytest.approx(0.75) and est.per_seed == pytest.approx((0.75,) * 3)
    assert est.speaker_ci == pytest.approx((0.75, 0.75))

    # a seed without a gain has no share: left out of the mean and the t-interval, and counted
    no_gain = [*real_k[:2], _speakers([0.3] * n)]
    partial = fraction_removed(no_gain, control, real_0)
    assert math.isnan(partial.per_seed[2]) and partial.n_seeds == 2 and partial.mean == pytest.approx(0.75)

    # noisy per-speaker values: both intervals hold the mean
    rng = np.random.default_rng(3)
    noisy = fraction_removed([_speakers(0.7 + rng.normal(0, 0.05, n)) for _ in range(3)],
                             [_speakers(0.4 + rng.normal(0, 0.05, n)) for _ in range(3)],
                             [_speakers(0.3 + rng.normal(0, 0.05, n)) for _ in range(3)])
    assert noisy.t_ci[0] <= noisy.mean <= noisy.t_ci[1]
    assert noisy.speaker_ci[0] < 0.75 < noisy.speaker_ci[1]

    # a gain that is often not there: no speaker interval rather than one made of the resamples that have it
    flat = [_speakers(0.3 + rng.normal(0, 0.05, n)) for _ in range(3)]
    assert fraction_removed(flat, control, real_0).speaker_ci is None


def test_summarize_rows_keeps_the_order_and_marks_missing_seeds():
    runs = [{("A", 0): _speakers([0.5, 0.7]), ("B", None): _speakers([0.2, 0.4])},
            {("A", 0): _speakers([0.6, 0.8])}]
    out = summarize_rows(runs)
    assert list(out) == [("A", 0), ("B", None)]
    assert out[("A", 0)].mean == pytest.approx(0.65) and out[("A", 0)].n_seeds == 2
    assert out[("B", None)].n_seeds == 1 and math.isnan(out[("B", None)].per_seed[1])


# ------------------------------------------------------------------------------------------- the benchmark


def _benchmark(monkeypatch):
    spec = importlib.util.spec_from_file_location("personalization_seeds", ROOT / "benchmarks" /
                                                  "personalization_seeds.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_benchmark_trains_each_seed_and_writes_tables_with_intervals(tmp_path, monkeypatch):
    bench = _benchmark(monkeypatch)
    out = tmp_path / "results.md"
    # the held-out tiny corpus: its unseen split (held-out voice family and rendering) gets its own columns
    text = bench.main(["--seeds", "0,1", "--preset", "heldout_tiny", "--profile", "tiny", "--data",
                       str(tmp_path / "data"), "--runs", str(tmp_path / "runs"), "--out", str(out)])
    written = out.read_text()
    assert text.rstrip() in written and written.startswith(f"# {bench.TITLE}")
    assert "Command: `python benchmarks/personalization_seeds.py --seeds 0,1 --preset heldout_tiny" in written
    for seed in (0, 1):  # every model trained per seed, with its seed
        assert (tmp_path / "runs" / f"seed{seed}" / "eval" / "results.json").is_file()
        assert f"Stages, seed {seed}: trained here: " in text
    settings = (tmp_path / "runs" / "seed1" / "stage2" / "settings.json").read_text()
    assert re.search(r'"style_seed": 1', settings) and re.search(r'"seed": 1', settings)

    def table(title: str) -> list[list[str]]:
        block = text.split(f"### {title}", 1)[1].split("\n\n", 2)[1]
        return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]

    t2 = table("Table II over seeds")
    header, rows = t2[0], t2[2:]
    assert header[3:7] == ["UA_spk (mean of 2 seeds)", "95% CI over seeds", "95% CI over speakers",
                           "per seed (0, 1)"]
    models = {r[0] for r in rows}
    assert {"Scratch", "Pretrained", "Personalized_N", "Personalized_A", "Speaker-relative (7 unlabeled)",
            "Proposed (MetaICL TU+LU_0:7)", "0-shot (stage 1)", "MetaICL TO+LD_7", "MetaICL Neutral_0:7",
            "eGeMAPS peer (enrollment-normalised LR)"} <= models
    interval = re.compile(r"\[-?\d\.\d{3}, -?\d\.\d{3}\]")
    for r in rows:
        mean, seeds_ci, speakers_ci = float(r[3]), r[4], r[5]
        assert interval.fullmatch(seeds_ci) and interval.fullmatch(speakers_ci), r
        lo, hi = map(float, seeds_ci.strip("[]").split(", "))
        assert lo - 1e-3 <= mean <= hi + 1e-3
        assert len(r[6].split(", ")) == 2

    k_rows = table("UA_spk vs k")
    assert [r[0] for r in k_rows[2:]] == ["0", "1", "2"]  # the tiny profile evaluates k up to 2
    assert any("shuffled" in c for c in k_rows[0]) and any("deranged" in c for c in k_rows[0])
    assert any("eGeMAPS peer" in c for c in k_rows[0])

    assert "unseen: UA_spk" in t2[0]
    assert "### UA_spk vs k, unseen speakers" in text

    claims = table("The issue's claims")
    by_split = {sp: [(r[0], r[-2]) for r in claims[2:] if r[1] == sp] for sp in ("test", "unseen")}
    assert by_split["test"] == [("2-shot − 0-shot (main model)", "≥ +20 pt"), ("2-shot − eGeMAPS peer at 2", "≥ +10 pt"),
                                ("2-shot − Personalized_A", "≥ +0 pt"),
                                ("share of the 2-shot gain removed by deranged labels", "≥ 0.667")]
    # on voices and a rendering never heard the issue asks for +15 pt over 0-shot and at least the peer
    assert by_split["unseen"][:2] == [("2-shot − 0-shot (main model)", "≥ +15 pt"),
                                      ("2-shot − eGeMAPS peer at 2", "≥ +0 pt")]
    for r in claims[2:]:
        assert r[-1].startswith(("met by", "missed by", "n/a")), r

    # the same tables again from the seeds' results.json, without training or evaluating
    again = bench.main(["--seeds", "0,1", "--preset", "heldout_tiny", "--profile", "tiny", "--data",
                        str(tmp_path / "data"), "--runs", str(tmp_path / "runs"), "--out", str(out),
                        "--aggregate-only"])
    assert again.split("### Table II over seeds", 1)[1] == text.split("### Table II over seeds", 1)[1]
    assert "aggregated here without training or evaluating" in again


# ------------------------------------------------- the SmolLM2 model's seeds (benchmarks/personalization_llm_seeds.py)


def _fake_run(folder: Path, seed: int, unseen: bool) -> None:
    """A run folder as personalization_llm.py leaves it: eval(/eval_unseen)/results.json with the model at k =
    0, 1, 7 and its two label controls, 4 speakers. Seed s: 7-shot 0.70 + s/100, deranged 0.10, 0-shot 0.30."""
    from emoslm.personalization.report import Results

    main, shuffled, deranged = "Proposed (SmolLM2)", "Proposed (SmolLM2), shuffled", "Proposed (SmolLM2), deranged"

    def result(acc: float) -> dict:
        per = {f"spk{i}": acc + (i - 1.5) / 100 for i in range(4)}
        v = list(per.values())
        ua_spk = {"mean": float(np.mean(v)), "std": float(np.std(v)), "median": float(np.median(v)),
                  "max": max(v), "min": min(v), "n_speakers": 4, "per_speaker": per}
        return {"ua_spk": ua_spk, "labels": ["a", "b"],
                "confusion": [[1, 0], [0, 1]], "wa": acc, "ua": acc, "macro_f1": acc}

    for split in ("eval", *(("eval_unseen",) if unseen else ())):
        r = Results()
        r.add_model(main, "icl", "TU+LU_{0:7}")
        r.add_model(shuffled, "control")
        r.add_model(deranged, "control")
        low = 0.1 if split == "eval" else 0.0
        for model, k1, k7 in ((main, 0.45, 0.70 + seed / 100 - low), (shuffled, 0.45, 0.2), (deranged, 0.25, 0.1)):
            r.add(model, None, result(0.30 - low), k=0)
            r.add(model, "TU+LD", result(k1 - low), k=1)
            r.add(model, "TU+LD", result(k7), k=7)
        r.to_json(folder / split / "results.json")


def test_the_smollm2_seeds_benchmark_aggregates_runs_with_intervals_and_claims(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("personalization_llm_seeds", ROOT / "benchmarks" /
                                                  "personalization_llm_seeds.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    runs = [tmp_path / f"seed{s}" for s in range(3)]
    for s, run in enumerate(runs):
        _fake_run(run, s, unseen=True)
    out = tmp_path / "results.md"
    text = bench.main(["--runs", ",".join(map(str, runs)), "--seeds", "0,1,2", "--out", str(out)])
    assert text.rstrip() in out.read_text() and "No baseline seed runs given" in text
    k_block = text.split("### UA_spk vs k, test speakers", 1)[1].split("\n\n", 2)[1]
    row7 = next(line for line in k_block.splitlines() if line.startswith("| 7 |"))
    assert row7.split("|")[2].strip().startswith("0.610 [")  # (0.60 + 0.61 + 0.62) / 3, with a t-interval
    claims = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line
              for line in text.split("### The issue's claims", 1)[1].splitlines() if line.startswith("| ")}
    gain = claims[("7-shot − 0-shot (main model)", "test", "+41.0 pt")]
    assert "met by 21.0 pt" in gain
    share = claims[("share of the 7-shot gain removed by deranged labels", "test", "1.244")]  # (r - 0.1) / (r - 0.2)
    assert "met by" in share
    assert "UA_spk vs k (k=0: 0.300, k=1: 0.450, k=7: 0.710): rises at every k." in text
    # a run without results is named
    with pytest.raises(SystemExit, match="nowhere"):
        bench.main(["--runs", f"{runs[0]},{tmp_path / 'nowhere'}", "--out", str(out)])

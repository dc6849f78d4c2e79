"""Results over training seeds: the mean, a t-interval over seeds and a speaker-bootstrap interval.

A run of one seed gives, for each model (and k), the accuracy of every test speaker (UA_spk is their mean).
Several seeds give a quantity per seed (a model's UA_spk, the difference of two models, the share of a gain a
control removes), summarised by :class:`SeedEstimate`:

- ``mean``: the mean over seeds of the per-seed quantity;
- ``t_ci``: the 95 % t-interval over seeds, ``mean ± t(n-1) · s / √n`` (``s`` with ddof 1): how far another set
  of training seeds could move the mean. None with one seed (no spread to measure);
- ``speaker_ci``: the 95 % percentile interval of a speaker bootstrap: the test speakers are a sample too, so
  speakers are drawn with replacement (2000 resamples, seeded), each drawn speaker's values averaged over the
  seeds, and the quantity computed from those averages. When a quantity involves several models (a
  difference, a ratio) every model gets the same drawn speakers: the comparison is paired. Only speakers that
  every seed of every model evaluated take part. None with fewer than 2 such speakers.

The two intervals answer different questions (other seeds; other speakers) and neither contains the other's
uncertainty, so both are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

#: per-speaker UA_spk of one model in one seed: {speaker: accuracy of that speaker}
PerSpeaker = Mapping[str, float]

#: resamples of the speaker bootstrap
N_BOOT = 2000


@dataclass(frozen=True)
class SeedEstimate:
    """One quantity over seeds (see the module docstring). ``per_seed`` is aligned with the seeds given;
    nan where the quantity is undefined in that seed (the model was not evaluated, or a ratio had no gain)."""

    per_seed: tuple[float, ...]
    mean: float
    t_ci: tuple[float, float] | None
    speaker_ci: tuple[float, float] | None
    n_speakers: int  # speakers in the bootstrap

    @property
    def n_seeds(self) -> int:
        """The seeds in which the quantity is defined."""
        return int(np.isfinite(np.asarray(self.per_seed, dtype=float)).sum())


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The t-interval of the mean of ``values`` (n - 1 degrees of freedom); None for fewer than 2 values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or not np.isfinite(v).all():
        raise ValueError(f"values must be a 1-D sequence of finite numbers, got {values!r}")
    if len(v) < 2:
        return None
    half = float(stats.t.ppf((1 + level) / 2, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()) - half, float(v.mean()) + half


def _seed_means(per_seed: Sequence[PerSpeaker | None]) -> np.ndarray:
    """Each seed's mean over its speakers (its UA_spk); nan for a seed without the quantity."""
    return np.array([float(np.mean(list(p.values()))) if p else math.nan for p in per_seed], dtype=float)


def common_speakers(quantities: Sequence[Sequence[PerSpeaker | None]]) -> list[str]:
    """The speakers present in every seed (that has it) of every quantity, sorted."""
    present = [set(p) for q in quantities for p in q if p]
    return sorted(set.intersection(*present)) if present else []


def speaker_bootstrap(statistic: Callable[..., np.ndarray], quantities: Sequence[Sequence[PerSpeaker | None]], *,
                      n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0,
                      max_undefined: float | None = None) -> tuple[float, float] | None:
    """Percentile interval of ``statistic`` over speaker resamples.

    ``quantities``: for each model, its per-speaker values in each seed (None: not evaluated in that seed).
    In each resample the same speakers (drawn with replacement from :func:`common_speakers`) are taken for
    every model; a model's value is the mean over the drawn speakers of their mean over seeds, and
    ``statistic(*values)`` is applied to arrays of the ``n_boot`` resampled values (one array per model), giving
    nan where it is undefined. Undefined resamples are left out; if more than ``max_undefined`` of them are
    (default: the interval's tail, (1 - level) / 2), None: the statistic is not defined often enough for its
    interval to mean anything. None too with fewer than 2 common speakers, or a model evaluated in no seed.
    """
    speakers = common_speakers(quantities)
    if len(speakers) < 2 or any(not any(q) for q in quantities):
        return None
    # [models, speakers]: each speaker's mean over the seeds that evaluated the model
    by_speaker = np.array([[np.mean([p[s] for p in q if p]) for s in speakers] for q in quantities], dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(speakers), size=(n_boot, len(speakers)))
    values = np.asarray(statistic(*(row[draws].mean(axis=1) for row in by_speaker)), dtype=float)
    defined = np.isfinite(values)
    tail = (1 - level) / 2
    if 1 - defined.mean() > (tail if max_undefined is None else max_undefined):
        return None
    return float(np.quantile(values[defined], tail)), float(np.quantile(values[defined], 1 - tail))


def _estimate(per_seed: np.ndarray, speaker_ci: tuple[float, float] | None, n_speakers: int,
              level: float) -> SeedEstimate:
    finite = per_seed[np.isfinite(per_seed)]
    return SeedEstimate(per_seed=tuple(float(x) for x in per_seed),
                        mean=float(finite.mean()) if len(finite) else math.nan,
                        t_ci=t_interval(finite, level), speaker_ci=speaker_ci, n_speakers=n_speakers)


def summarize(per_seed: Sequence[PerSpeaker | None], *, n_boot: int = N_BOOT, level: float = 0.95,
              seed: int = 0) -> SeedEstimate:
    """One model's UA_spk over seeds, from its per-speaker values in each seed (None: not evaluated there)."""
    quantities = [per_seed]
    ci = speaker_bootstrap(lambda x: x, quantities, n_boot=n_boot, level=level, seed=seed)
    return _estimate(_seed_means(per_seed), ci, len(common_speakers(quantities)), level)


def paired_difference(a: Sequence[PerSpeaker | None], b: Sequence[PerSpeaker | None], *, n_boot: int = N_BOOT,
                      level: float = 0.95, seed: int = 0) -> SeedEstimate:
    """UA_spk of ``a`` minus UA_spk of ``b``, seed by seed (the seeds aligned), with the paired intervals."""
    if len(a) != len(b):
        raise ValueError(f"the two models have {len(a)} and {len(b)} seeds: they must be the same seeds")
    quantities = [a, b]
    ci = speaker_bootstrap(lambda x, y: x - y, quantities, n_boot=n_boot, level=level, seed=seed)
    return _estimate(_seed_means(a) - _seed_means(b), ci, len(common_speakers(quantities)), level)


def _share(removed: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """removed / gain where there is a gain (> 0), else nan: a share of no gain is no number."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gain > 0, removed / np.where(gain > 0, gain, 1.0), math.nan)


def fraction_removed(real: Sequence[PerSpeaker | None], control: Sequence[PerSpeaker | None],
                     baseline: Sequence[PerSpeaker | None], *, n_boot: int = N_BOOT, level: float = 0.95,
                     seed: int = 0) -> SeedEstimate:
    """The share of a gain that a control removes: ``(real - control) / (real - baseline)`` per seed (e.g. the
    7-shot gain over 0-shot that deranged enrollment labels take away; 1: all of it). Undefined (nan) in a
    seed without a gain (``real <= baseline``); the mean and t-interval are over the other seeds. The speaker
    bootstrap takes the ratio of the resampled means (so its interval is around the ratio of the means)."""
    if not len(real) == len(control) == len(baseline):
        raise ValueError("real, control and baseline must be given for the same seeds")
    r, c, b = _seed_means(real), _seed_means(control), _seed_means(baseline)
    quantities = [real, control, baseline]
    ci = speaker_bootstrap(lambda x, y, z: _share(x - y, x - z), quantities, n_boot=n_boot, level=level, seed=seed)
    return _estimate(_share(r - c, r - b), ci, len(common_speakers(quantities)), level)


def summarize_rows(runs: Sequence[Mapping[Hashable, PerSpeaker]], *, n_boot: int = N_BOOT, level: float = 0.95,
                   seed: int = 0) -> dict[Hashable, SeedEstimate]:
    """:func:`summarize` for every row (e.g. (model, k, setting)) of per-seed results ``runs`` (one mapping per
    seed), in the order rows are first met; a row missing from a seed is nan there."""
    rows: dict[Hashable, None] = {}
    for run in runs:
        rows.update(dict.fromkeys(run))
    return {row: summarize([run.get(row) for run in runs], n_boot=n_boot, level=level, seed=seed) for row in rows}

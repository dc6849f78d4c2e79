"""80-dim log-mel features: the numbers (standard log-mel, same as lhotse's Fbank), the lhotse extractor, and the
on-disk cache (computed once, reused, resampled to 16 kHz, never silently dropping a cut)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, Fbank, FbankConfig
from lhotse.features.base import get_extractor_type
from lhotse.utils import compute_num_frames

import emoslm.features as features
from emoslm.audio import load_audio, resample
from emoslm.data.manifests import import_table, to_cuts
from emoslm.errors import AudioError, ManifestError
from emoslm.features import (
    CACHE_INFO,
    CUTS_MANIFEST,
    KaldiNativeFbank80,
    KaldiNativeFbankConfig,
    compute_fbank_cache,
    fbank,
    load_features,
)

SR = 16000


def speechlike(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A voiced-speech-like signal: a gliding 120-220 Hz harmonic series with syllable-rate envelope + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 25) if k * 220 < sr / 2)
    x = 0.1 * x * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)) + 0.003 * rng.standard_normal(t.size)
    return x.astype(np.float32)


# ----------------------------------------------------------------------------------------- the numbers


def test_fbank_shape_and_values() -> None:
    x = speechlike(1.5)
    f = fbank(x)
    assert f.shape == (150, 80) and f.dtype == np.float32
    assert np.all(np.isfinite(f))
    assert f.std(axis=0).min() > 0  # every band varies over time
    for n in (80, 159, 160, 401, 16000, 16079, 16080, 23999):  # snip_edges=False: round(n / 160) frames
        assert fbank(speechlike(n / SR)).shape[0] == compute_num_frames(n / SR, 0.01, SR) == int(n / 160 + 0.5)


def test_fbank_deterministic_no_dither() -> None:
    x = speechlike(1.0, seed=3)
    np.testing.assert_array_equal(fbank(x), fbank(x.copy()))
    assert KaldiNativeFbankConfig().dither == 0.0 and KaldiNativeFbankConfig().snip_edges is False


def test_extractor_and_fbank_agree() -> None:
    x = speechlike(2.0, seed=1)
    ext = KaldiNativeFbank80()
    np.testing.assert_array_equal(ext.extract(x[None, :], SR), fbank(x))  # lhotse passes (channels, samples)
    np.testing.assert_array_equal(ext.extract(x, SR), fbank(x))
    assert ext.frame_shift == 0.01 and ext.feature_dim(SR) == 80


def test_extractor_registered_and_serialisable() -> None:
    assert get_extractor_type("knf-fbank") is KaldiNativeFbank80
    d = KaldiNativeFbank80().to_dict()
    assert d["feature_type"] == "knf-fbank" and d["num_mel_bins"] == 80
    again = KaldiNativeFbank80.from_dict(dict(d))
    assert isinstance(again, KaldiNativeFbank80) and again.config == KaldiNativeFbankConfig()


def test_close_to_lhotse_fbank() -> None:
    """lhotse's own torch Kaldi-compatible Fbank gives the same log-mel values: the features are standard."""
    x = speechlike(3.0, seed=2)
    ours = fbank(x)
    ref = Fbank(FbankConfig(num_mel_bins=80)).extract(x, SR)
    assert ours.shape == ref.shape
    corr = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    assert corr > 0.99, corr
    assert np.abs(ours - ref).mean() < 0.05  # the same settings: identical up to float rounding in practice


def test_fbank_rejects_bad_input() -> None:
    with pytest.raises(AudioError, match="NaN or infinite"):
        fbank(np.array([0.1, np.nan] * 800, dtype=np.float32))
    with pytest.raises(AudioError, match="float samples"):
        fbank(np.ones(1600, dtype=np.int16))
    with pytest.raises(AudioError, match="22050"):
        KaldiNativeFbank80().extract(speechlike(0.5, 22050), 22050)


def test_fbank_resamples_other_rates() -> None:
    x = speechlike(1.0, 22050)
    f = fbank(x, sr=22050)
    assert f.shape == (100, 80)
    np.testing.assert_array_equal(f, fbank(resample(x, 22050, SR)))
    # the same content synthesised at 16 kHz (the noise and the > 8 kHz harmonics differ)
    corr = np.corrcoef(f.ravel(), fbank(speechlike(1.0, SR)).ravel())[0, 1]
    assert corr > 0.95, corr


# ------------------------------------------------------------------------------------------------- cache


def _corpus(root: Path, files: dict[str, tuple[float, int]]) -> CutSet:
    """Write audio files {name: (seconds, sr)} and a flat manifest; import it the way users do; return cuts."""
    rows = ["id,audio_path,speaker,emotion"]
    for i, (name, (seconds, sr)) in enumerate(files.items()):
        sf.write(root / name, speechlike(seconds, sr, seed=i), sr, subtype="FLOAT")
        rows.append(f"u{i},{name},spk{i % 2},{['neutral', 'anger', 'joy'][i % 3]}")
    (root / "table.csv").write_text("\n".join(rows) + "\n")
    return to_cuts(import_table(root / "table.csv"))


@pytest.fixture()
def corpus(tmp_path: Path) -> CutSet:
    return _corpus(tmp_path, {"a16.wav": (1.5, 16000), "b22.wav": (1.5, 22050), "c8.wav": (0.73, 8000),
                              "d44.wav": (1.2, 44100)})


def _tol() -> float:
    return 0.05 if features._default_storage_type().name.startswith("lilcom") else 1e-5  # lilcom is lossy


def test_compute_fbank_cache(tmp_path: Path, corpus: CutSet) -> None:
    out = compute_fbank_cache(corpus, tmp_path / "fbank", progress_bar=False)
    assert [c.id for c in out] == [c.id for c in corpus]
    assert (tmp_path / "fbank" / CUTS_MANIFEST).is_file() and (tmp_path / "fbank" / CACHE_INFO).is_file()
    for c in out:
        assert c.has_features and c.features.type == "knf-fbank" and c.sampling_rate == SR
        f = load_features(c)
        assert f.dtype == np.float32 and f.shape == (compute_num_frames(c.duration, 0.01, SR), 80)
        assert np.all(np.isfinite(f))
    # the 16 kHz file: the stored features are fbank() of the loaded audio
    a16 = next(c for c in out if c.id == "u0")
    expected = fbank(load_audio(a16.recording.sources[0].source))
    np.testing.assert_allclose(load_features(a16), expected, atol=_tol())
    # the manifest on disk is what was returned
    assert sorted(c.id for c in CutSet.from_file(tmp_path / "fbank" / CUTS_MANIFEST)) == sorted(c.id for c in out)


def test_resampled_input_same_frames_as_16k(tmp_path: Path) -> None:
    cuts = _corpus(tmp_path, {"x16.wav": (1.37, 16000), "x22.wav": (1.37, 22050), "x8.wav": (1.37, 8000)})
    assert sorted(c.sampling_rate for c in cuts) == [8000, 16000, 22050]
    out = {c.id: c for c in compute_fbank_cache(cuts, tmp_path / "fbank", progress_bar=False)}
    frames = {cid: load_features(c).shape[0] for cid, c in out.items()}
    assert frames["u0"] == frames["u1"] == frames["u2"] == 137, frames
    # the resampled 22.05 kHz signal (same content) gives nearly the same features as the 16 kHz one
    corr = np.corrcoef(load_features(out["u0"]).ravel(), load_features(out["u1"]).ravel())[0, 1]
    assert corr > 0.9, corr


def test_cache_hit_does_not_recompute(tmp_path: Path, corpus: CutSet, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = KaldiNativeFbank80.extract

    def counting(self: KaldiNativeFbank80, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        calls["n"] += 1
        return real(self, samples, sampling_rate)

    monkeypatch.setattr(KaldiNativeFbank80, "extract", counting)
    store = tmp_path / "fbank"
    first = compute_fbank_cache(corpus, store, progress_bar=False)
    assert calls["n"] == len(corpus)
    snapshot = {p: p.stat().st_mtime_ns for p in store.rglob("*")}

    second = compute_fbank_cache(corpus, store, progress_bar=False)  # cache hit
    assert calls["n"] == len(corpus)
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == snapshot
    assert [c.id for c in second] == [c.id for c in first]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(load_features(a), load_features(b))

    # a different cut order is still a hit (returned in the order asked for)
    rev = CutSet.from_cuts(list(corpus)[::-1])
    assert [c.id for c in compute_fbank_cache(rev, store, progress_bar=False)] == [c.id for c in rev]
    assert calls["n"] == len(corpus)

    # different cut ids: recomputed
    subset = corpus.subset(first=2)
    assert len(compute_fbank_cache(subset, store, progress_bar=False)) == 2
    assert calls["n"] == len(corpus) + 2

    # a changed extractor config: recomputed
    info = json.loads((store / CACHE_INFO).read_text())
    info["extractor"]["num_mel_bins"] = 40
    (store / CACHE_INFO).write_text(json.dumps(info))
    compute_fbank_cache(subset, store, progress_bar=False)
    assert calls["n"] == len(corpus) + 4

    # a manifest whose storage was deleted: recomputed, not a broken cache hit
    for p in sorted(store.rglob("*"), reverse=True):
        if p.name.startswith("feats"):
            p.unlink() if p.is_file() else p.rmdir()
    again = compute_fbank_cache(subset, store, progress_bar=False)
    assert calls["n"] == len(corpus) + 6
    assert load_features(next(iter(again))).shape[1] == 80


def test_broken_audio_is_an_error_not_a_dropped_cut(tmp_path: Path, corpus: CutSet) -> None:
    """lhotse drops cuts whose audio fails to load (with a warning); the cache must not."""
    victim = tmp_path / "b22.wav"
    x, sr = sf.read(victim, dtype="float32")
    sf.write(victim, x[: len(x) // 3], sr, subtype="FLOAT")  # shorter than its manifest says
    with pytest.raises(AudioError, match="b22.wav"):
        compute_fbank_cache(corpus, tmp_path / "fbank", progress_bar=False)
    assert not (tmp_path / "fbank" / CUTS_MANIFEST).exists()  # no half cache left behind

    victim.write_bytes(b"garbage" * 100)
    with pytest.raises(AudioError, match="b22.wav"):
        compute_fbank_cache(corpus, tmp_path / "fbank", progress_bar=False)


def test_nan_audio_names_the_file(tmp_path: Path, corpus: CutSet) -> None:
    victim = tmp_path / "a16.wav"
    x, sr = sf.read(victim, dtype="float32")
    x[100] = np.nan
    sf.write(victim, x, sr, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"a16.wav.*NaN"):
        compute_fbank_cache(corpus, tmp_path / "fbank", progress_bar=False)


def test_bad_cut_sets(tmp_path: Path, corpus: CutSet) -> None:
    with pytest.raises(ManifestError, match="no cuts"):
        compute_fbank_cache(CutSet.from_cuts([]), tmp_path / "f")
    c = next(iter(corpus))
    with pytest.raises(ManifestError, match="duplicate"):
        compute_fbank_cache(CutSet.from_cuts([c, c]), tmp_path / "f")
    with pytest.raises(ManifestError, match="no features"):
        load_features(c)


def test_parallel_jobs_match_serial(tmp_path: Path, corpus: CutSet) -> None:
    serial = compute_fbank_cache(corpus, tmp_path / "serial", progress_bar=False)
    parallel = compute_fbank_cache(corpus, tmp_path / "parallel", num_jobs=2, progress_bar=False)
    assert [c.id for c in parallel] == [c.id for c in serial]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(load_features(a), load_features(b))
    assert os.listdir(tmp_path / "parallel")

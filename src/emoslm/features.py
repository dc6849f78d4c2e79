"""80-dim log-mel filterbanks (25 ms window, 10 ms shift), computed once per cut and cached with lhotse storage.

The numbers come from ``kaldi_native_fbank`` (Kaldi's ``compute-fbank`` re-implemented in C++, the same code
sherpa/icefall use at inference time), wrapped as a lhotse :class:`~lhotse.features.base.FeatureExtractor`
(:class:`KaldiNativeFbank80`, registered as ``"knf-fbank"``) so that lhotse can compute, store and load them.
:func:`fbank` gives the same numbers for one waveform at inference time.

Settings (:class:`KaldiNativeFbankConfig`):

- 16 kHz input, 80 mel bins from 20 Hz to Nyquist - 400 Hz (7.6 kHz), povey window, pre-emphasis 0.97,
  DC offset removed, FFT size rounded up to a power of two: Kaldi's/lhotse's ``Fbank`` defaults, so the
  features are standard log-mel and match lhotse's own torch ``Fbank`` (tested: correlation > 0.99);
- samples are taken as floats in [-1, 1] (not rescaled to the int16 range), like lhotse's ``Fbank``;
- ``dither = 0``: deterministic, the same audio always gives the same features (Kaldi's default dithers);
- ``snip_edges = False``: frames are centred on multiples of the shift and the signal is reflected at the
  edges, so a signal of ``n`` samples gives ``round(n / 160)`` frames -- the frame count lhotse computes from a
  cut's duration (``compute_num_frames``). With ``snip_edges = True`` (Kaldi's default) only whole windows
  count, ``1 + (n - 400) // 160`` frames, and lhotse's duration-to-frames bookkeeping would be off by ~2 frames.

Storage: :func:`compute_fbank_cache` writes a lilcom-compressed chunky archive (``LilcomChunkyWriter``,
lossy, ~0.03 absolute error on log-mel values) when the ``lilcom`` package is installed, otherwise plain
``.npy`` files (``NumpyFilesWriter``); pass ``storage_type`` to choose.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from lhotse import CutSet
from lhotse.features.base import FeatureExtractor, register_extractor
from lhotse.features.io import FeaturesWriter, get_reader
from lhotse.utils import Seconds, is_module_available

from emoslm.audio import resample
from emoslm.errors import AudioError, ManifestError

log = logging.getLogger(__name__)

SAMPLING_RATE = 16000
NUM_MEL_BINS = 80

#: The cut manifest :func:`compute_fbank_cache` writes in its storage directory.
CUTS_MANIFEST = "cuts_fbank.jsonl.gz"
#: Beside it: the extractor config and storage type it was computed with (the cache key besides cut ids).
CACHE_INFO = "fbank_cache.json"
#: The index of :func:`compute_fbank_variant_cache`: what the audio went through, and each cut's storage key.
VARIANT_INDEX = "fbank_variant.json"


@dataclass
class KaldiNativeFbankConfig:
    """Options of :class:`KaldiNativeFbank80`; the names follow Kaldi's ``compute-fbank``."""

    sampling_rate: int = SAMPLING_RATE
    frame_length: Seconds = 0.025
    frame_shift: Seconds = 0.01
    num_mel_bins: int = NUM_MEL_BINS
    dither: float = 0.0
    snip_edges: bool = False
    low_freq: float = 20.0
    high_freq: float = -400.0  # <= 0: offset from Nyquist
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "KaldiNativeFbankConfig":
        return KaldiNativeFbankConfig(**data)

    def knf_options(self) -> Any:
        import kaldi_native_fbank as knf

        opts = knf.FbankOptions()
        fo = opts.frame_opts
        fo.samp_freq = float(self.sampling_rate)
        fo.frame_length_ms = self.frame_length * 1000.0
        fo.frame_shift_ms = self.frame_shift * 1000.0
        fo.dither = float(self.dither)
        fo.snip_edges = bool(self.snip_edges)
        fo.preemph_coeff = float(self.preemph_coeff)
        fo.remove_dc_offset = bool(self.remove_dc_offset)
        fo.window_type = self.window_type
        fo.round_to_power_of_two = bool(self.round_to_power_of_two)
        opts.mel_opts.num_bins = int(self.num_mel_bins)
        opts.mel_opts.low_freq = float(self.low_freq)
        opts.mel_opts.high_freq = float(self.high_freq)
        opts.use_energy = False
        return opts


def _knf_fbank(wave: np.ndarray, config: KaldiNativeFbankConfig) -> np.ndarray:
    import kaldi_native_fbank as knf

    extractor = knf.OnlineFbank(config.knf_options())
    extractor.accept_waveform(float(config.sampling_rate), np.ascontiguousarray(wave, dtype=np.float32))
    extractor.input_finished()
    n = extractor.num_frames_ready
    out = np.empty((n, config.num_mel_bins), dtype=np.float32)
    for i in range(n):
        out[i] = extractor.get_frame(i)  # the returned buffer belongs to the extractor: copy it
    return out


def _as_mono(samples: Any, name: str) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim == 2:  # lhotse passes (channels, samples)
        x = x.mean(axis=0) if x.shape[0] > 1 else x[0]
    if x.ndim != 1:
        raise AudioError(name, f"expected a mono waveform, got shape {np.shape(samples)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(name, f"expected float samples in [-1, 1], got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise AudioError(name, "contains NaN or infinite samples")
    return x.astype(np.float32, copy=False)


@register_extractor
class KaldiNativeFbank80(FeatureExtractor):
    """lhotse feature extractor: 80-dim log-mel filterbank from ``kaldi_native_fbank`` (see module docs)."""

    name = "knf-fbank"
    config_type = KaldiNativeFbankConfig

    def __init__(self, config: Optional[KaldiNativeFbankConfig] = None):
        super().__init__(config=config)

    @property
    def frame_shift(self) -> Seconds:
        return self.config.frame_shift

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_mel_bins

    def extract(self, samples: np.ndarray, sampling_rate: int) -> np.ndarray:
        if int(sampling_rate) != self.config.sampling_rate:
            raise AudioError(
                "<samples>",
                f"sampling rate {sampling_rate} Hz, the extractor needs {self.config.sampling_rate} Hz "
                "(resample first, e.g. cut.resample())",
            )
        return _knf_fbank(_as_mono(samples, "<samples>"), self.config)


def fbank(wave: np.ndarray, sr: int = SAMPLING_RATE) -> np.ndarray:
    """Log-mel features ``[frames, 80]`` float32 of one mono waveform (floats in [-1, 1]).

    The same numbers as :class:`KaldiNativeFbank80` (and so as the cache) for 16 kHz input. Other rates are
    resampled with :func:`emoslm.audio.resample` (scipy polyphase) first, which differs slightly from lhotse's
    resampler used by :func:`compute_fbank_cache`. A signal shorter than half a frame shift gives 0 frames.
    """
    x = _as_mono(wave, "<array>")
    if sr != SAMPLING_RATE:
        x = resample(x, sr, SAMPLING_RATE)
    return _knf_fbank(x, KaldiNativeFbankConfig())


# ------------------------------------------------------------------------------------------------- cache


def _default_storage_type() -> type[FeaturesWriter]:
    if is_module_available("lilcom"):
        from lhotse import LilcomChunkyWriter

        return LilcomChunkyWriter
    from lhotse import NumpyFilesWriter

    log.warning("lilcom is not installed: storing features uncompressed (NumpyFilesWriter)")
    return NumpyFilesWriter


def _cache_info(extractor: FeatureExtractor, storage_type: type[FeaturesWriter]) -> dict[str, Any]:
    return {"extractor": extractor.to_dict(), "storage_type": storage_type.name}


def _storage_exists(path: str) -> bool:
    return Path(path).exists() or Path(path).with_suffix(Path(path).suffix + ".lca").exists()


def _load_cached(manifest: Path, info_path: Path, info: dict[str, Any], cut_ids: Sequence[str]) -> Optional[CutSet]:
    """The cached CutSet in the order of ``cut_ids``, or None when the cache is missing, stale or broken."""
    if not (manifest.is_file() and info_path.is_file()):
        return None
    try:
        if json.loads(info_path.read_text()) != json.loads(json.dumps(info)):
            log.info("fbank cache %s: extractor config changed, recomputing", manifest)
            return None
        cached = CutSet.from_file(manifest).to_eager()
        by_id = {c.id: c for c in cached}
    except Exception as e:  # a truncated or hand-edited manifest: recompute rather than fail
        log.warning("fbank cache %s unreadable (%s), recomputing", manifest, e)
        return None
    if len(by_id) != len(cut_ids) or set(by_id) != set(cut_ids):
        log.info("fbank cache %s: different cuts, recomputing", manifest)
        return None
    storages = {c.features.storage_path for c in by_id.values() if c.has_features}
    if len(storages) == 0 or not all(c.has_features for c in by_id.values()):
        return None
    if not all(_storage_exists(p) for p in storages):
        log.info("fbank cache %s: feature storage missing, recomputing", manifest)
        return None
    return CutSet.from_cuts(by_id[i] for i in cut_ids)


def _source_of(cut: Any) -> str:
    try:
        return str(cut.recording.sources[0].source)
    except Exception:
        return f"cut {cut.id}"


def _diagnose(cuts: CutSet, missing: set[str]) -> AudioError:
    """An AudioError naming the audio file of the first cut whose features could not be computed."""
    for cut in cuts:
        if missing and cut.id not in missing:
            continue
        try:
            samples = cut.load_audio()
        except Exception as e:
            return AudioError(_source_of(cut), f"cut {cut.id}: cannot load audio for features ({e})")
        if not np.all(np.isfinite(samples)):
            return AudioError(_source_of(cut), f"cut {cut.id}: contains NaN or infinite samples")
        if missing:
            return AudioError(_source_of(cut), f"cut {cut.id}: lhotse skipped it during feature extraction")
    return AudioError("<cuts>", f"features of {len(missing)} cut(s) could not be computed")


def compute_fbank_cache(
    cuts: CutSet,
    storage_dir: Path | str,
    num_jobs: int = 1,
    *,
    storage_type: Optional[type[FeaturesWriter]] = None,
    progress_bar: bool = True,
) -> CutSet:
    """Cuts with 80-dim log-mel features attached, computed once and stored under ``storage_dir``.

    Writes ``storage_dir/cuts_fbank.jsonl.gz`` (the cut manifest) and ``fbank_cache.json`` (the extractor
    config and storage type). When both exist and the manifest holds exactly the ids of ``cuts``, computed with
    the same config, and its storage is present, it is loaded instead (cache hit); otherwise everything is
    recomputed. Cuts at other rates than 16 kHz are resampled (``cut.resample(16000)``). A cut whose audio
    cannot be read raises AudioError naming the file (lhotse itself would silently drop it).
    """
    storage_dir = Path(storage_dir).resolve()  # the manifest records storage paths: keep them cwd-independent
    cuts = cuts.to_eager()
    cut_ids = [c.id for c in cuts]
    if len(set(cut_ids)) != len(cut_ids):
        raise ManifestError("<cuts>", "duplicate cut ids")
    if not cut_ids:
        raise ManifestError("<cuts>", "no cuts to compute features for")
    extractor = KaldiNativeFbank80()
    storage_type = storage_type or _default_storage_type()
    info = _cache_info(extractor, storage_type)
    manifest = storage_dir / CUTS_MANIFEST
    info_path = storage_dir / CACHE_INFO

    cached = _load_cached(manifest, info_path, info, cut_ids)
    if cached is not None:
        log.info("fbank cache hit: %s (%d cuts)", manifest, len(cut_ids))
        return cached

    storage_dir.mkdir(parents=True, exist_ok=True)
    for stale in (manifest, info_path):
        stale.unlink(missing_ok=True)
    resampled = CutSet.from_cuts(
        c if c.sampling_rate == SAMPLING_RATE else c.resample(SAMPLING_RATE) for c in cuts
    )
    try:
        with_feats = resampled.compute_and_store_features(
            extractor=extractor,
            storage_path=storage_dir / "feats",
            num_jobs=num_jobs,
            storage_type=storage_type,
            progress_bar=progress_bar,
        ).to_eager()
    except Exception as e:  # name the file behind the failure when we can find it
        err = _diagnose(resampled, set())
        if err.path == "<cuts>":
            raise
        raise err from e
    got = {c.id for c in with_feats}
    missing = set(cut_ids) - got
    if missing:
        raise _diagnose(resampled, missing)
    by_id = {c.id: c for c in with_feats}
    out = CutSet.from_cuts(by_id[i] for i in cut_ids)
    # Write the manifest atomically and last: its presence means the storage is complete.
    tmp = storage_dir / (CUTS_MANIFEST + ".tmp.jsonl.gz")
    out.to_file(tmp)
    os.replace(tmp, manifest)
    info_path.write_text(json.dumps(info, indent=1, sort_keys=True))
    return out


def compute_fbank_variant_cache(
    cuts: CutSet,
    storage_dir: Path | str,
    transform: Callable[[str, np.ndarray], np.ndarray],
    key: Any,
    num_jobs: int = 1,
    *,
    storage_type: Optional[type[FeaturesWriter]] = None,
    progress_bar: bool = True,
    desc: str = "fbank",
) -> dict[str, np.ndarray]:
    """``{cut id: [frames, 80] float32}``: the features of each cut's 16 kHz audio after ``transform(cut id,
    samples)`` (a degraded copy: a transmission channel), computed once and stored under ``storage_dir``.

    ``key`` (JSON) says what ``transform`` does: the stored features are loaded instead of recomputed when it,
    the extractor config, the storage type and the cut ids all match the index ``fbank_variant.json``, written
    last. ``num_jobs`` threads load and transform audio (a codec's subprocess and numpy release the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    storage_dir = Path(storage_dir).resolve()
    cuts = cuts.to_eager()
    cut_ids = [c.id for c in cuts]
    config = KaldiNativeFbankConfig()
    storage_type = storage_type or _default_storage_type()
    info = json.loads(json.dumps({**_cache_info(KaldiNativeFbank80(config), storage_type), "transform": key}))
    index_path = storage_dir / VARIANT_INDEX
    index = None
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except ValueError as e:
            log.warning("fbank cache %s unreadable (%s), recomputing", index_path, e)
    if (not isinstance(index, dict) or index.get("info") != info or set(index.get("keys", {})) != set(cut_ids)
            or not _storage_exists(str(storage_dir / index.get("storage", "?")))):
        storage_dir.mkdir(parents=True, exist_ok=True)
        index_path.unlink(missing_ok=True)

        def features(cut: Any) -> np.ndarray:
            c = cut if cut.sampling_rate == SAMPLING_RATE else cut.resample(SAMPLING_RATE)
            try:
                samples = c.load_audio()
            except Exception as e:
                raise AudioError(_source_of(cut), f"cut {cut.id}: cannot load audio for features ({e})") from e
            wave = _as_mono(samples, _source_of(cut))
            return _knf_fbank(np.asarray(transform(cut.id, wave), dtype=np.float32), config)

        keys = {}
        with storage_type(storage_dir / "feats") as writer, ThreadPoolExecutor(max(1, num_jobs)) as pool:
            for cut, feats in tqdm(zip(cuts, pool.map(features, cuts)), total=len(cut_ids), desc=desc,
                                   unit="utt", disable=not progress_bar):
                keys[cut.id] = writer.write(cut.id, feats)
            storage = Path(writer.storage_path).name
        index = {"info": info, "storage": storage, "keys": keys}
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, index_path)
    reader = get_reader(storage_type.name)(str(storage_dir / index["storage"]))
    return {i: np.asarray(reader.read(index["keys"][i]), dtype=np.float32) for i in cut_ids}


def load_features(cut: Any) -> np.ndarray:
    """The stored features ``[frames, 80]`` float32 of a cut from :func:`compute_fbank_cache`."""
    if not getattr(cut, "has_features", False):
        raise ManifestError(getattr(cut, "id", "<cut>"), "cut has no features: run compute_fbank_cache first")
    try:
        feats = cut.load_features()
    except Exception as e:
        raise ManifestError(cut.features.storage_path, f"cut {cut.id}: cannot read features ({e})") from e
    return np.asarray(feats, dtype=np.float32)

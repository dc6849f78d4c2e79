"""eGeMAPS v02 functionals (88 per utterance) through openSMILE: the classic SER front end.

Used by the speaker-dependence measurement of the synthetic corpus and by the eGeMAPS peer of the
personalised-SER evaluation. Features are computed once per utterance and cached in a ``.npz`` file keyed by
utterance id, so later runs only compute what is new.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Sequence

import numpy as np

from emoslm.audio import load_audio

N_FEATURES = 88
_SMILE = None


def _smile():
    global _SMILE
    if _SMILE is None:
        import opensmile

        _SMILE = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                 feature_level=opensmile.FeatureLevel.Functionals)
    return _SMILE


def feature_names() -> list[str]:
    return list(_smile().feature_names)


def egemaps(wave: np.ndarray, sr: int = 16000) -> np.ndarray:
    """The 88 eGeMAPS functionals of one waveform (float32)."""
    return _smile().process_signal(np.asarray(wave, dtype=np.float32), sr).to_numpy()[0].astype(np.float32)


def _one(item: tuple[str, str, float, float | None]) -> tuple[str, np.ndarray]:
    uid, path, offset, duration = item
    return uid, egemaps(load_audio(path, offset=offset, duration=duration))


def egemaps_for(
    items: Sequence[tuple[str, str, float, float | None]],
    cache: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """eGeMAPS for (utterance id, audio path, offset, duration) items, reusing and extending ``cache``."""
    import os

    from tqdm import tqdm

    def key(it) -> str:  # the file's identity too: a re-synthesised file must not hit a stale entry
        st = os.stat(it[1])
        return f"{it[0]}|{it[1]}|{st.st_size}|{st.st_mtime_ns}|{it[2]}|{it[3]}"

    keys = {it[0]: key(it) for it in items}
    have: dict[str, np.ndarray] = {}
    if cache is not None and Path(cache).is_file():
        with np.load(cache) as z:
            have = dict(zip(z["ids"].tolist(), z["x"]))
    todo = [it for it in items if keys[it[0]] not in have]
    if todo:
        bar = tqdm(total=len(todo), desc="eGeMAPS", unit="utt", disable=not progress)
        if workers > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                for uid, x in pool.imap_unordered(_one, todo, chunksize=32):
                    have[keys[uid]] = x
                    bar.update()
        else:
            for it in todo:
                uid, x = _one(it)
                have[keys[uid]] = x
                bar.update()
        bar.close()
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            ids = sorted(have)
            np.savez(cache, ids=np.array(ids), x=np.stack([have[i] for i in ids]))
    return {it[0]: have[keys[it[0]]] for it in items}


"""The LLM-written utterances spoken by TTS over several speakers, as a lhotse corpus.

Paper 001 renders the generated text to *neutral* speech with several TTS speakers. Here the speakers are
espeak-ng voices drawn as the synthetic corpus draws them (:func:`emoslm.synth.prosody.sample_speaker`), each
line is spoken with the speaker's neutral rendering, and ``prosody=True`` renders the line's emotion instead
(the synthetic corpus's emotional prosody, :mod:`emoslm.synth.prosody`). Rendering reuses the synthetic
corpus's worker (:func:`emoslm.synth.corpus.render_tasks`); finished files are kept, so a stopped run resumes.

Output (``out_dir``): ``wav/<speaker>/<id>.wav``, ``<corpus>_{recordings,supervisions}_{train,dev}.jsonl.gz``
(every 10th line of each class is dev, for model selection) and ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emoslm.audio import TARGET_SR
from emoslm.data.manifests import make_supervision, save_prepared, validate_prepared
from emoslm.errors import EmoslmError
from emoslm.labels import EKMAN7
from emoslm.synth.corpus import (
    UtterancePlan,
    pending_speakers,
    render_tasks,
    voice_pools,
)
from emoslm.synth.prosody import render_params, sample_speaker

DEV_EVERY = 10


@dataclass(frozen=True)
class RenderConfig:
    n_speakers: int = 12
    prosody: bool = False
    seed: int = 0
    workers: int | None = None
    exclude_voices: tuple[str, ...] = ()


def plan_speech(utterances: Sequence[dict[str, Any]], cfg: RenderConfig):
    """Speaker profiles and one :class:`~emoslm.synth.corpus.UtterancePlan` per line (no audio yet)."""
    if cfg.n_speakers < 1:
        raise EmoslmError(f"the TTS needs at least one speaker, got {cfg.n_speakers}")
    rng = np.random.default_rng([cfg.seed, 1001])
    excluded = set(cfg.exclude_voices)
    pools = {g: [v for v, _ in pool if v not in excluded] for g, pool in voice_pools(rng).items()}
    profiles = []
    for i in range(cfg.n_speakers):
        gender = "F" if i % 2 else "M"
        voice = pools[gender][(i // 2) % len(pools[gender])]
        profiles.append(sample_speaker(f"tts_spk{i + 1:02d}", voice, "espeak", gender, rng, EKMAN7))
    plans = []
    per_class: dict[str, int] = {}
    for n, u in enumerate(utterances):
        k = per_class.get(u["emotion"], 0)
        per_class[u["emotion"]] = k + 1
        prof = profiles[(k + sorted(per_class).index(u["emotion"])) % len(profiles)]  # classes spread over speakers
        style = u["emotion"] if cfg.prosody and u["emotion"] in EKMAN7 else "neutral"
        split = "dev" if k % DEV_EVERY == DEV_EVERY - 1 else "train"
        plans.append(UtterancePlan(u["id"], prof.id, split, u["emotion"], u["text"], prof.voice,
                                   render_params(prof, style, rng), (cfg.seed, n)))
    return profiles, plans


def render_speech(utterances: Sequence[dict[str, Any]], out_dir: str | Path, corpus: str,
                  cfg: RenderConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Speak ``utterances`` (``id``, ``emotion``, ``text``) into a lhotse corpus named ``corpus``; return its
    summary (also ``summary.json``)."""
    from lhotse import Recording, RecordingSet, SupervisionSet
    from lhotse.audio import AudioSource

    cfg = cfg or RenderConfig()
    if not utterances:
        raise EmoslmError("nothing to render: the utterance list is empty")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    profiles, plans = plan_speech(utterances, cfg)
    key = hashlib.sha256(json.dumps([asdict(cfg) | {"workers": None}, [asdict(p) for p in plans]],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    key_path = out / "plan_key"
    stale = key_path.is_file() and key_path.read_text().strip() != key
    key_path.write_text(key + "\n")
    paths = {p.id: out / "wav" / p.speaker / f"{p.id}.wav" for p in plans}
    by_speaker: dict[str, list] = {}
    for p in plans:
        by_speaker.setdefault(p.speaker, []).append((p, str(paths[p.id])))
    n_samples: dict[str, int] = {}
    tasks = pending_speakers(by_speaker, stale, n_samples)
    n_todo = sum(len(t) for t in tasks)
    if tasks:
        n_samples.update(render_tasks(tasks, out, cfg.workers or min(2, os.cpu_count() or 1), progress,
                                      total=len(plans), desc="speaking (TTS)"))
    gender = {s.id: s.gender for s in profiles}
    recs: dict[str, list] = {}
    sups: dict[str, list] = {}
    src = {u["id"]: u for u in utterances}
    for p in plans:
        n = n_samples[p.id]
        recs.setdefault(p.split, []).append(Recording(
            id=p.id, sources=[AudioSource(type="file", channels=[0], source=str(paths[p.id]))],
            sampling_rate=TARGET_SR, num_samples=n, duration=n / TARGET_SR))
        sups.setdefault(p.split, []).append(make_supervision(
            p.id, p.id, n / TARGET_SR, speaker=p.speaker, emotion=p.emotion, corpus=corpus, gender=gender[p.speaker],
            text=p.text, language="en", voice=p.voice, tts="espeak-ng",
            rendering="emotional prosody" if cfg.prosody else "neutral", llm_call=src[p.id].get("call")))
    prepared = {sp: {"recordings": RecordingSet.from_recordings(recs[sp]),
                     "supervisions": SupervisionSet.from_segments(sups[sp])} for sp in recs}
    validate_prepared(prepared)
    save_prepared(prepared, out, corpus)
    summary = {"corpus": corpus, "key": key, "config": asdict(cfg), "speakers": [asdict(s) for s in profiles],
               "splits": {sp: len(v) for sp, v in sups.items()}, "utterances": len(plans),
               "audio_minutes": round(sum(n_samples.values()) / TARGET_SR / 60, 2), "rendered_now": n_todo,
               "seconds": round(time.perf_counter() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary

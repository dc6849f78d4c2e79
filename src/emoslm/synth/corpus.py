"""The synthetic emotional speech corpus: emoslm's embedded default data.

Many espeak-ng (and mbrola) speakers, each reading the same few emotion-free sentences in the seven emotions
of paper 000, with emotion rendered relative to the speaker's own baseline (:mod:`emoslm.synth.prosody`).
Deterministic for a seed: the whole plan (speakers, texts, every rendering parameter) is drawn in the parent
process, and each utterance's noise comes from its own seed, so the number of workers does not change a sample.

Output (``out_dir``)::

    wav/<speaker>/<utterance>.wav             16 kHz mono 16-bit
    synth_{recordings,supervisions}_{train,dev,test}.jsonl.gz   lhotse manifests (speaker-disjoint splits)
    speakers.jsonl                            each speaker's voice, baseline, expressivity, idiosyncrasies
    summary.json                              config, sizes, timing; also the cache key

A second call with the same configuration finds ``summary.json`` and returns at once; an interrupted run
resumes (finished files are kept: each is written to a temporary name and renamed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSet
from lhotse.audio import AudioSource

from emoslm.audio import TARGET_SR, resample
from emoslm.data.manifests import (
    LEVELS,
    PreparedCorpus,
    make_supervision,
    save_prepared,
    validate_prepared,
)
from emoslm.labels import EKMAN7
from emoslm.synth.effects import (  # noqa: F401
    apply_voice_quality,  # imported before workers fork (scipy.signal is slow to import)
)
from emoslm.synth.prosody import (
    RENDER_METHODS,
    CueVariation,
    RenderParams,
    SpeakerProfile,
    render_params,
    sample_speaker,
)
from emoslm.synth.rendering import engine_settings, render_cues
from emoslm.synth.sentences import sentence_bank
from emoslm.synth.tts import Espeak, english_voices

log = logging.getLogger(__name__)

#: Bump when a change to the synthesis would change the audio for the same configuration (invalidates caches).
SYNTH_VERSION = 3
CORPUS_NAME = "synth"
ENGINE_VOLUME = 70  # espeak-ng amplitude; leaves headroom for loud emotions before the soft limiter


@dataclass(frozen=True)
class CorpusConfig:
    n_speakers: int
    sentences_per_speaker: int
    dev_speakers: int
    test_speakers: int
    emotions: tuple[str, ...] = EKMAN7
    seed: int = 0
    mbrola_fraction: float = 0.12
    p_alike: float = 0.25
    p_reversed: float = 0.25
    sentence_bank_size: int = 400
    #: first sentence of the bank used (a second corpus with disjoint texts starts after the first's bank)
    sentence_offset: int = 0
    #: voices no speaker may use (a second corpus whose speakers must differ from another's)
    exclude_voices: tuple[str, ...] = ()
    #: splits share no sentence and no TTS voice: espeak-ng base voices, espeak-ng variants and mbrola voices
    #: are each given to one split only
    disjoint: bool = False
    #: per-speaker differences in which cues are used, their direction and strength (None: SYNTH_VERSION 3's)
    variation: CueVariation | None = None
    #: rendering methods (emoslm.synth.prosody.RENDER_METHODS) the train/dev/test speakers draw from, one each
    methods: tuple[str, ...] = ("engine",)
    #: speakers of an extra ``unseen`` split, whose voice family and rendering method no other split uses
    unseen_speakers: int = 0
    unseen_family: str = "mbrola"
    unseen_method: str = "sox"


#: Fields whose default leaves the plan unchanged; left out of the cache key then, so existing corpora keep it.
_KEY_OPTIONAL = {"sentence_offset": 0, "exclude_voices": (), "disjoint": False, "variation": None,
                 "methods": ("engine",), "unseen_speakers": 0, "unseen_family": "mbrola", "unseen_method": "sox"}


PRESETS: dict[str, CorpusConfig] = {
    # tests: seconds
    "tiny": CorpusConfig(n_speakers=12, sentences_per_speaker=2, dev_speakers=2, test_speakers=2),
    # the README's main job: >= 100 training speakers, within about a minute on 2 cores
    "demo": CorpusConfig(n_speakers=130, sentences_per_speaker=6, dev_speakers=10, test_speakers=20),
    # paper-000-sized speaker count (800) with 10 sentences x 7 emotions each
    "full": CorpusConfig(n_speakers=800, sentences_per_speaker=10, dev_speakers=75, test_speakers=75),
    # the demo's size with nothing shared between splits (sentences, base voices, variants), speakers who differ
    # in how they express emotion and by which method it is rendered, and an `unseen` split of mbrola speakers
    # whose emotions sox renders (neither is used by any other split)
    "heldout": CorpusConfig(n_speakers=130, sentences_per_speaker=6, dev_speakers=10, test_speakers=20,
                            disjoint=True, variation=CueVariation(), methods=("engine", "tape"),
                            unseen_speakers=16),
    "heldout_tiny": CorpusConfig(n_speakers=12, sentences_per_speaker=2, dev_speakers=2, test_speakers=2,
                                 disjoint=True, variation=CueVariation(), methods=("engine", "tape"),
                                 unseen_speakers=2),
}

#: Split names, in the order they are written; ``unseen`` only when the configuration asks for it.
SPLITS = ("train", "dev", "test", "unseen")


@dataclass(frozen=True)
class UtterancePlan:
    id: str
    speaker: str
    split: str
    emotion: str
    text: str
    voice: str
    params: RenderParams
    seed: tuple[int, int]


def config_key(cfg: CorpusConfig, voices: Sequence[str]) -> str:
    d = {k: v for k, v in asdict(cfg).items() if k not in _KEY_OPTIONAL or v != _KEY_OPTIONAL[k]}
    blob = json.dumps({"cfg": d, "voices": list(voices), "version": SYNTH_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def voice_pools(rng: np.random.Generator) -> dict[str, list[tuple[str, str]]]:
    """Shuffled (voice name, kind) lists per gender: every espeak English base voice x human variant."""
    bases, variants, _ = english_voices()
    pools: dict[str, list[tuple[str, str]]] = {"M": [], "F": []}
    for b in bases:
        for v in variants:
            pools[v.gender].append((f"{b}+{v.name}", "espeak"))
    for g in pools:
        order = rng.permutation(len(pools[g]))
        pools[g] = [pools[g][i] for i in order]
    return pools


def _varied(cfg: CorpusConfig) -> bool:
    return any(getattr(cfg, k) != v for k, v in _KEY_OPTIONAL.items() if k not in ("sentence_offset", "exclude_voices"))


def plan_corpus(cfg: CorpusConfig) -> tuple[list[SpeakerProfile], list[UtterancePlan]]:
    """Draw every speaker and every utterance's rendering; no audio yet."""
    if cfg.dev_speakers + cfg.test_speakers >= cfg.n_speakers:
        raise ValueError("dev + test speakers must leave at least one training speaker")
    if _varied(cfg):
        return _plan_heldout(cfg)
    rng = np.random.default_rng(cfg.seed)
    pools = voice_pools(rng)
    mbrola = list(english_voices()[2])
    if cfg.exclude_voices:
        excluded = set(cfg.exclude_voices)
        pools = {g: [v for v in pool if v[0] not in excluded] for g, pool in pools.items()}
        mbrola = [v for v in mbrola if v.name not in excluded]
        if not pools["M"] or not pools["F"]:
            raise ValueError("exclude_voices leaves no espeak-ng voice of one gender")
    if not mbrola and cfg.mbrola_fraction > 0:
        log.warning("no English mbrola voice installed: all speakers use espeak-ng voices "
                    "(install mbrola-us1/us2/us3/en1 from Debian non-free for more timbre variety)")
    bank = sentence_bank(cfg.sentence_offset + cfg.sentence_bank_size)[cfg.sentence_offset:]
    if len(bank) < cfg.sentences_per_speaker:
        raise ValueError(f"the sentence bank has {len(bank)} sentences from offset {cfg.sentence_offset}; "
                         f"{cfg.sentences_per_speaker} per speaker are needed")
    speakers: list[SpeakerProfile] = []
    used = {"M": 0, "F": 0}
    genders = ["F" if i % 2 else "M" for i in range(cfg.n_speakers)]
    rng.shuffle(genders)
    for i, gender in enumerate(genders):
        sid = f"{CORPUS_NAME}_spk{i + 1:04d}"
        mb = [v for v in mbrola if v.gender == gender]
        if mb and rng.random() < cfg.mbrola_fraction:
            voice, kind = mb[int(rng.integers(len(mb)))].name, "mbrola"
        else:
            pool = pools[gender]
            voice, kind = pool[used[gender] % len(pool)]  # distinct voices until the pool is used up
            used[gender] += 1
        speakers.append(sample_speaker(sid, voice, kind, gender, rng, cfg.emotions,
                                       p_alike=cfg.p_alike, p_reversed=cfg.p_reversed))
    splits = _speaker_splits([p.gender for p in speakers], cfg, rng)
    utts = _plan_utterances(speakers, splits, {sp: bank for sp in set(splits)}, cfg, rng)
    return speakers, utts


def _speaker_splits(genders: Sequence[str], cfg: CorpusConfig, rng: np.random.Generator) -> list[str]:
    """Each speaker's split, speaker-disjoint: test, then dev, then train, alternating genders so that every
    split is balanced."""
    fem = [i for i in rng.permutation(len(genders)) if genders[i] == "F"]
    mal = [i for i in rng.permutation(len(genders)) if genders[i] == "M"]
    order = [i for pair in zip(fem, mal) for i in pair] + fem[len(mal):] + mal[len(fem):]
    splits = ["train"] * len(genders)
    for rank, i in enumerate(order):
        if rank < cfg.test_speakers + cfg.dev_speakers:
            splits[i] = "test" if rank < cfg.test_speakers else "dev"
    return splits


def _plan_utterances(speakers: Sequence[SpeakerProfile], splits: Sequence[str], texts_of: dict[str, Sequence[str]],
                     cfg: CorpusConfig, rng: np.random.Generator) -> list[UtterancePlan]:
    """Every speaker reads ``sentences_per_speaker`` sentences of its split's pool, in every emotion."""
    utts: list[UtterancePlan] = []
    for prof, split in zip(speakers, splits):
        pool = texts_of[split]
        for j, t in enumerate(rng.choice(len(pool), size=cfg.sentences_per_speaker, replace=False)):
            for e in cfg.emotions:
                utts.append(UtterancePlan(f"{prof.id}_{e}_{j:02d}", prof.id, split, e, pool[int(t)], prof.voice,
                                          render_params(prof, e, rng), (cfg.seed, len(utts))))
    return utts


def _shares(n: int, sizes: dict[str, int], minimum: int = 1) -> dict[str, int]:
    """``n`` items shared out between splits in proportion to ``sizes``; every split with a size gets at least
    ``minimum`` and train what is left."""
    total = sum(sizes.values())
    out = {sp: max(minimum, round(n * k / total)) for sp, k in sizes.items() if sp != "train" and k}
    out["train"] = n - sum(out.values())
    if out["train"] < minimum:
        raise ValueError(f"{n} items cannot be shared out between the splits {sorted(sizes)} (at least {minimum} "
                         "each): fewer dev/test speakers, or a larger bank")
    return out


def _deal(items: Sequence, shares: dict[str, int]) -> dict[str, list]:
    out, i = {}, 0
    for sp in SPLITS:
        if sp in shares:
            out[sp] = list(items[i: i + shares[sp]])
            i += shares[sp]
    return out


def _plan_heldout(cfg: CorpusConfig) -> tuple[list[SpeakerProfile], list[UtterancePlan]]:
    """The plan of a corpus whose splits share nothing (``disjoint``), whose speakers differ in how they express
    emotion (``variation``) and by which method it is rendered (``methods``), with an ``unseen`` split."""
    for m in (*cfg.methods, cfg.unseen_method):
        if m not in RENDER_METHODS:
            raise ValueError(f"unknown rendering method {m!r}; expected one of {RENDER_METHODS}")
    rng = np.random.default_rng(cfg.seed)
    bases, variants, mbrola = english_voices()
    bases = [b for b in bases if not any(b == x.split("+")[0] for x in cfg.exclude_voices)]
    mbrola = [v for v in mbrola if v.name not in set(cfg.exclude_voices)]
    unseen_voices: list = []
    if cfg.unseen_speakers:
        if cfg.unseen_family != "mbrola":
            raise ValueError(f"unseen_family {cfg.unseen_family!r}: only 'mbrola' (held out of every other split)")
        if cfg.unseen_method in cfg.methods:
            raise ValueError(f"the unseen split's rendering method {cfg.unseen_method!r} is also used by the other "
                             f"splits ({', '.join(cfg.methods)}): it must be held out")
        if not mbrola:
            raise ValueError("the unseen split's voice family is mbrola, and no English mbrola voice is installed "
                             "(Debian packages mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1)")
        unseen_voices, mbrola = mbrola, []  # the whole family is held out
    sizes = {"train": cfg.n_speakers - cfg.dev_speakers - cfg.test_speakers, "dev": cfg.dev_speakers,
             "test": cfg.test_speakers, "unseen": cfg.unseen_speakers}
    # splits first, so each speaker's voice comes from its own split's pool
    genders = ["F" if i % 2 else "M" for i in range(cfg.n_speakers)]
    rng.shuffle(genders)
    split_of = _speaker_splits(genders, cfg, rng)
    seen_sizes = {sp: k for sp, k in sizes.items() if sp != "unseen"}
    if cfg.disjoint:
        base_shares = _shares(len(bases), seen_sizes)
        if base_shares.get("test", 0) == 1 and base_shares["train"] > 3:  # two test accents, not one
            base_shares["test"], base_shares["train"] = 2, base_shares["train"] - 1
        base_pool = _deal([bases[i] for i in rng.permutation(len(bases))], base_shares)
        var_pool = {}
        for g in ("M", "F"):
            vs = [v for v in variants if v.gender == g]
            var_pool[g] = _deal([vs[i] for i in rng.permutation(len(vs))], _shares(len(vs), seen_sizes))
        mb_pool: dict[str, list] = {sp: [] for sp in seen_sizes}
        for j, i in enumerate(rng.permutation(len(mbrola))):  # a few voices: one split each, test first
            mb_pool[("test", "dev", "train")[j % 3]].append(mbrola[i])
    else:
        base_pool = {sp: list(bases) for sp in seen_sizes}
        var_pool = {g: {sp: [v for v in variants if v.gender == g] for sp in seen_sizes} for g in ("M", "F")}
        mb_pool = {sp: list(mbrola) for sp in seen_sizes}
    combos: dict[tuple[str, str], list[str]] = {}
    for sp in seen_sizes:
        for g in ("M", "F"):
            vs = var_pool[g][sp] or [v for v in variants if v.gender == g]  # a split without variants of g
            names = [f"{b}+{v.name}" for b in base_pool[sp] for v in vs]
            combos[(sp, g)] = [names[i] for i in rng.permutation(len(names))]
    used: dict[tuple[str, str], int] = {}
    speakers: list[SpeakerProfile] = []
    for i, gender in enumerate(genders):
        sp = split_of[i]
        mb = [v for v in mb_pool[sp] if v.gender == gender]
        if mb and rng.random() < cfg.mbrola_fraction:
            voice, kind = mb[int(rng.integers(len(mb)))].name, "mbrola"
        else:
            pool = combos[(sp, gender)]
            n = used.get((sp, gender), 0)
            voice, kind = pool[n % len(pool)], "espeak"  # distinct voices until the pool is used up
            used[(sp, gender)] = n + 1
        method = str(cfg.methods[int(rng.integers(len(cfg.methods)))])
        speakers.append(sample_speaker(f"{CORPUS_NAME}_spk{i + 1:04d}", voice, kind, gender, rng, cfg.emotions,
                                       p_alike=cfg.p_alike, p_reversed=cfg.p_reversed, variation=cfg.variation,
                                       render_method=method))
    for j in range(cfg.unseen_speakers):
        v = unseen_voices[j % len(unseen_voices)]
        speakers.append(sample_speaker(f"{CORPUS_NAME}_spk{cfg.n_speakers + j + 1:04d}", v.name, "mbrola", v.gender,
                                       rng, cfg.emotions, p_alike=cfg.p_alike, p_reversed=cfg.p_reversed,
                                       variation=cfg.variation, render_method=cfg.unseen_method))
    bank = sentence_bank(cfg.sentence_offset + cfg.sentence_bank_size)[cfg.sentence_offset:]
    if cfg.disjoint:
        order_b = [bank[i] for i in rng.permutation(len(bank))]
        texts_of = _deal(order_b, _shares(len(bank), sizes, minimum=cfg.sentences_per_speaker))
    else:
        texts_of = {sp: bank for sp in sizes}
    for sp, texts in texts_of.items():
        if sizes.get(sp) and len(texts) < cfg.sentences_per_speaker:
            raise ValueError(f"split {sp} has {len(texts)} sentences; {cfg.sentences_per_speaker} per speaker needed")
    utts = _plan_utterances(speakers, [*split_of, *["unseen"] * cfg.unseen_speakers], texts_of, cfg, rng)
    return speakers, utts


# ------------------------------------------------------------------------------------------- rendering

_ENGINE = None


def init_worker(stderr_log: str | None = None) -> None:
    if stderr_log:
        # mbrola prints a warning per phoneme it lacks; keep them in a log file, not on the user's terminal
        fd = os.open(stderr_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)


def _engine():
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    return _ENGINE


def render_utterance(u: UtterancePlan, path: Path) -> int:
    """Synthesise one planned utterance to ``path`` (16 kHz mono PCM16); return its number of samples."""
    p = u.params
    wave, sr = _engine().synth(u.voice, u.text, volume=ENGINE_VOLUME, **engine_settings(p))
    x = resample(wave.astype(np.float32) / 32768.0, sr, TARGET_SR)
    y = render_cues(x, TARGET_SR, p, np.random.default_rng(list(u.seed)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(str(tmp), y, TARGET_SR, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)  # atomic: a file under its final name is always complete
    return int(y.size)


def render_speaker(task: list[tuple[UtterancePlan, str]]) -> list[tuple[str, int, str | None]]:
    """Render one speaker's utterances in plan order, in a fresh process.

    libespeak-ng keeps waveform state (e.g. its flutter phase) from one call to the next and cannot be reset
    (``espeak_Terminate`` hangs), so the same utterance sounds slightly different after a different history.
    Running each speaker's fixed sequence in a new process (``maxtasksperchild=1``) makes the audio a function
    of the seed alone, whatever the number of workers or the order in which speakers finish.
    """
    out = []
    for u, path in task:
        try:
            out.append((u.id, render_utterance(u, Path(path)), None))
        except Exception as e:  # reported by the parent with the utterance id, never dropped
            out.append((u.id, 0, f"{type(e).__name__}: {e}"))
    return out


def render_tasks(tasks: list[list[tuple[UtterancePlan, str]]], out: Path, workers: int, progress: bool = True,
                 total: int | None = None, desc: str = "synthesising") -> dict[str, int]:
    """Render speaker task lists (see :func:`render_speaker`) in ``workers`` fresh processes; return the number
    of samples by utterance id. mbrola's messages go to ``out/synth_stderr.log``; any failure raises."""
    from tqdm import tqdm

    n_todo = sum(len(t) for t in tasks)
    total = n_todo if total is None else total
    n_samples: dict[str, int] = {}
    errors: list[str] = []
    bar = tqdm(total=total, initial=total - n_todo, desc=desc, unit="utt", disable=not progress)
    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=init_worker, initargs=(str(out / "synth_stderr.log"),),
                  maxtasksperchild=1) as pool:
        for results in pool.imap_unordered(render_speaker, tasks):
            for uid, n, err in results:
                if err:
                    errors.append(f"{uid}: {err}")
                else:
                    n_samples[uid] = n
            bar.update(len(results))
    bar.close()
    if errors:
        raise RuntimeError(f"{len(errors)} utterances failed to synthesise; first: {errors[0]}")
    return n_samples


def pending_speakers(by_speaker: dict[str, list[tuple[UtterancePlan, str]]], force: bool,
                     n_samples: dict[str, int]) -> list[list[tuple[UtterancePlan, str]]]:
    """The speakers' task lists still to render: a speaker whose files all exist is kept (its sample counts go
    to ``n_samples``) unless ``force``; any other is rendered again from its start (see :func:`render_speaker`)."""
    tasks = []
    for items in by_speaker.values():
        have = [None if force else existing_samples(Path(p)) for _, p in items]
        if all(have):
            n_samples.update({u.id: n for (u, _), n in zip(items, have)})
        else:
            tasks.append(items)
    return tasks


def existing_samples(path: Path) -> int | None:
    try:
        return int(sf.info(str(path)).frames) if path.is_file() else None
    except Exception:
        return None


def _levels(values: np.ndarray) -> list[str]:
    lo, hi = np.quantile(values, [1 / 3, 2 / 3])
    return [LEVELS[0] if v < lo else LEVELS[2] if v > hi else LEVELS[1] for v in values]


def synthesize_corpus(
    out_dir: str | Path,
    preset: str | CorpusConfig = "demo",
    *,
    seed: int | None = None,
    n_speakers: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    splits: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Synthesise (or find already synthesised) a corpus; return its summary (also in ``summary.json``).

    ``splits``: only the utterances of these splits are rendered and written (e.g. ``("test",)``, to score a model
    trained elsewhere on them): the same audio and metadata as in the whole corpus (each speaker is rendered on
    its own, its levels are the whole plan's), in a folder that then holds that subset (its own cache key)."""
    if splits is not None and (not splits or set(splits) - set(SPLITS)):
        raise ValueError(f"splits {list(splits)}: expected some of {', '.join(SPLITS)}")
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if n_speakers is not None:
        scale = n_speakers / cfg.n_speakers
        cfg = replace(cfg, n_speakers=n_speakers, dev_speakers=max(1, round(cfg.dev_speakers * scale)),
                      test_speakers=max(1, round(cfg.test_speakers * scale)))
    out = Path(out_dir).resolve()
    bases, variants, mbrola = english_voices()
    voices = [*bases, *(v.name for v in variants), *(v.name for v in mbrola)]
    key = config_key(cfg, voices)
    if splits is not None:
        key += "-" + "+".join(sp for sp in SPLITS if sp in splits)
    summary_path = out / "summary.json"
    if not force and summary_path.is_file():
        old = json.loads(summary_path.read_text())
        if old.get("key") == key and all((out / f).is_file() for f in old.get("files", [])):
            old["cached"] = True
            return old

    t0 = time.perf_counter()
    speakers, planned = plan_corpus(cfg)
    utts = planned if splits is None else [u for u in planned if u.split in splits]
    if not utts:
        raise ValueError(f"the {cfg} plan has no utterance in splits {list(splits or [])}")
    kept = {u.speaker for u in utts}
    speakers = [sp for sp in speakers if sp.id in kept]
    # files left by a run of another configuration are not reused (resume applies to the same plan only)
    key_path = out / "plan_key"
    if key_path.is_file() and key_path.read_text().strip() != key:
        force = True
    out.mkdir(parents=True, exist_ok=True)
    key_path.write_text(key + "\n")
    paths = {u.id: out / "wav" / u.speaker / f"{u.id}.wav" for u in utts}
    n_samples: dict[str, int] = {}
    by_speaker: dict[str, list[tuple[UtterancePlan, str]]] = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, []).append((u, str(paths[u.id])))
    # resume: a speaker whose files are all there is kept; any other speaker is rendered again from its start
    # (the engine's state depends on the speaker's whole sequence, see render_speaker)
    tasks = pending_speakers(by_speaker, force, n_samples)
    n_todo = sum(len(t) for t in tasks)
    workers = workers or min(2, os.cpu_count() or 1)
    out.mkdir(parents=True, exist_ok=True)
    n_samples.update(render_tasks(tasks, out, workers, progress, total=len(utts)))
    render_seconds = time.perf_counter() - t0

    # levels relative to the whole plan, so that a subset of splits has the whole corpus's metadata
    levels = dict(zip((u.id for u in planned), zip(
        _levels(np.array([u.params.pitch for u in planned], dtype=float)),
        _levels(np.array([u.params.rate for u in planned], dtype=float)),
        _levels(np.array([u.params.loudness_db for u in planned], dtype=float)))))
    gender_of = {s.id: s.gender for s in speakers}
    recs: dict[str, list] = {}
    sups: dict[str, list] = {}
    for u in utts:
        pl, tl, el = levels[u.id]
        n = n_samples[u.id]
        recs.setdefault(u.split, []).append(Recording(
            id=u.id, sources=[AudioSource(type="file", channels=[0], source=str(paths[u.id]))],
            sampling_rate=TARGET_SR, num_samples=n, duration=n / TARGET_SR))
        sups.setdefault(u.split, []).append(make_supervision(
            u.id, u.id, n / TARGET_SR, speaker=u.speaker, emotion=u.emotion, corpus=CORPUS_NAME,
            gender=gender_of[u.speaker], text=u.text, language="en", pitch_level=pl, tempo_level=tl,
            energy_level=el, voice=u.voice, pitch_param=u.params.pitch, rate_wpm=u.params.rate,
            loudness_db=round(u.params.loudness_db, 2),
            **({"render_method": u.params.method} if _varied(cfg) else {})))
    written = [sp for sp in SPLITS if sp in recs]
    prepared: PreparedCorpus = {
        split: {"recordings": RecordingSet.from_recordings(recs[split]),
                "supervisions": SupervisionSet.from_segments(sups[split])}
        for split in written
    }
    validate_prepared(prepared)
    save_prepared(prepared, out, CORPUS_NAME)
    with (out / "speakers.jsonl").open("w") as f:
        for s in speakers:
            f.write(json.dumps({**s.to_dict(), "split": next(u.split for u in utts if u.speaker == s.id)}) + "\n")
    total_sec = sum(n_samples.values()) / TARGET_SR
    summary = {
        "corpus": CORPUS_NAME, "key": key, "config": asdict(cfg), "synth_version": SYNTH_VERSION,
        "backend": Espeak().backend, "workers": workers,
        "splits": {sp: {"speakers": len({s.speaker for s in sups[sp]}), "utterances": len(sups[sp]),
                        "hours": round(sum(s.duration for s in sups[sp]) / 3600, 3),
                        "female": sum(1 for s in {(x.speaker, x.gender) for x in sups[sp]} if s[1] == "F")}
                   for sp in written},
        "speakers": len(speakers), "utterances": len(utts), "audio_hours": round(total_sec / 3600, 3),
        "mbrola_speakers": sum(1 for s in speakers if s.voice_kind == "mbrola"),
        "idiosyncratic_speakers": sum(1 for s in speakers if s.idiosyncrasies),
        "synthesised_now": n_todo, "seconds": round(render_seconds, 2),
        "realtime_factor": round(render_seconds / total_sec, 5) if n_todo else None,
        "files": [f"{CORPUS_NAME}_{k}_{sp}.jsonl.gz" for sp in written
                  for k in ("recordings", "supervisions")] + ["speakers.jsonl"],
        "cached": False,
    }
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict[str, Any], console=None) -> None:
    """A readable table of a corpus summary on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"synthetic corpus ({'cached' if summary.get('cached') else 'synthesised'}, "
                    f"seed {summary['config']['seed']})")
    for col in ("split", "speakers", "female", "utterances", "hours"):
        t.add_column(col, justify="right")
    for sp, row in summary["splits"].items():
        t.add_row(sp, str(row["speakers"]), str(row["female"]), str(row["utterances"]), f"{row['hours']:.2f}")
    t.add_row("all", str(summary["speakers"]), "", str(summary["utterances"]), f"{summary['audio_hours']:.2f}")
    console.print(t)
    console.print(f"emotions: {', '.join(summary['config']['emotions'])}; mbrola speakers: "
                  f"{summary['mbrola_speakers']}; speakers with idiosyncrasies: {summary['idiosyncratic_speakers']}")
    if not summary.get("cached"):
        console.print(f"synthesised {summary['synthesised_now']} utterances in {summary['seconds']:.1f} s "
                      f"with {summary['workers']} workers ({summary['backend']} backend)")

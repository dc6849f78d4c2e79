"""Paper 001 end to end: description -> LLM text -> TTS speech -> SER models -> zero-shot evaluation -> report.

    emoslm run zeroshot                                  # the embedded default (config synth)
    emoslm run zeroshot --config iemocap --set target.path=data/iemocap --set source.path=data/meld

Training sources, each used alone to train every model:

- ``llm``: the LLM-written corpus spoken by TTS with neutral prosody (the paper's corpus);
- ``llm_prosody`` (when ``tts.prosody_variant``): the same text spoken with the synthetic-corpus module's
  emotional prosody;
- ``source``: a real source corpus (MELD, MSP-IMPROV, ... prepared by ``emoslm prepare``), or on the embedded
  default a second synthetic corpus of other speakers (voices) and other sentences than the target's.

The target is read through its prepared manifests (``emoslm prepare iemocap ...``) or, on the embedded default,
is the synthetic corpus (``emoslm synth corpus``). No target audio, text or label is used before the final
evaluation; the disjointness of the synthetic source and target (voices, sentences) is checked and reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoslm.config import load_config
from emoslm.data.manifests import load_prepared
from emoslm.data.utterances import Utterance, from_supervision
from emoslm.errors import EmoslmError
from emoslm.metrics import evaluate
from emoslm.models.text_llm import load_backend
from emoslm.reporting import figure_png, img, plot_confusion
from emoslm.synth.corpus import CorpusConfig, synthesize_corpus
from emoslm.synth.prosody import EMOTION_CUES
from emoslm.synth.sentences import sentence_bank
from emoslm.threads import set_torch_threads
from emoslm.zeroshot.description import load_description
from emoslm.zeroshot.generate import GenerationConfig, generate_utterances
from emoslm.zeroshot.models import (
    UPSTREAMS,
    HeadConfig,
    features,
    save_head,
    train_head,
)
from emoslm.zeroshot.render import RenderConfig, render_speech

#: Packaged recipe configs of this pipeline live here (not in configs/ itself, whose files are the trainers').
RECIPE_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class LLMConfig:
    backend: str = "smollm2"  # smollm2 | tiny-llama | a local HF dir | openai
    base_url: str | None = None
    model: str | None = None
    threads: int = 2


@dataclass
class TTSConfig:
    speakers: int = 12
    prosody_variant: bool = True  # also train on the same text spoken with emotional prosody
    seed: int = 0
    workers: int | None = None


@dataclass
class CorpusRef:
    """A corpus to evaluate on or train from.

    ``kind``: ``synth`` (the embedded synthetic corpus at ``path``, made with ``preset`` if missing),
    ``synth_source`` (a second synthetic corpus disjoint from the target: ``speakers`` x ``sentences`` x
    classes, seed ``seed``), or ``manifests`` (lhotse manifests written by ``emoslm prepare``).
    ``splits``: the splits used (``all`` for every one); a training corpus uses its ``dev`` split, when listed,
    for model selection.
    """

    kind: str = "synth"
    path: str = "data/synth_demo"
    corpus: str | None = None
    preset: str = "demo"
    splits: list[str] = field(default_factory=lambda: ["test"])
    name: str = ""
    speakers: int = 40
    sentences: int = 3
    seed: int = 1


@dataclass
class ZeroShotConfig:
    description: str = "synth_target"
    data_dir: str = "data/zeroshot"
    out_dir: str = "runs/zeroshot"
    llm: LLMConfig = field(default_factory=LLMConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    target: CorpusRef = field(default_factory=CorpusRef)
    source: CorpusRef = field(default_factory=lambda: CorpusRef(kind="synth_source", path="data/zeroshot/source",
                                                                splits=["train", "dev"]))
    upstreams: list[str] = field(default_factory=lambda: ["minilm", "whisper", "egemaps"])
    whisper_pad_to_30s: bool = False
    head: HeadConfig = field(default_factory=HeadConfig)
    threads: int = 1
    progress: bool = True


def load_zeroshot_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> ZeroShotConfig:
    """A config file, or a packaged recipe by name (``synth``, ``iemocap``; ``zeroshot/synth`` also works)."""
    path = None
    if name_or_path is not None:
        p = Path(name_or_path)
        if p.is_file():
            path = p
        else:
            path = RECIPE_DIR / f"{p.name.removesuffix('.yaml')}.yaml"
            if not path.is_file():
                known = ", ".join(sorted(x.stem for x in RECIPE_DIR.glob("*.yaml")))
                raise EmoslmError(f"config {name_or_path} does not exist (packaged: {known})")
    return check_config(load_config(ZeroShotConfig, path, overrides))


def check_config(cfg: ZeroShotConfig) -> ZeroShotConfig:
    """``cfg``, after checking what its schema cannot: the upstream names."""
    for name in cfg.upstreams:
        if name not in UPSTREAMS:
            raise EmoslmError(f"unknown upstream {name!r} in upstreams; known: {', '.join(UPSTREAMS)}")
    return cfg


def run(cfg: ZeroShotConfig) -> dict[str, Any]:
    """``emoslm run zeroshot``: :func:`run_zeroshot` with the config's own progress setting."""
    return run_zeroshot(check_config(cfg), progress=cfg.progress)


# ------------------------------------------------------------------------------------------------ corpora


def _utts(prepared: dict, splits: list[str], label_set) -> dict[str, list[Utterance]]:
    """Utterances per split with labels mapped into the task's classes (others dropped)."""
    use = list(prepared) if splits == ["all"] else splits
    missing = [s for s in use if s not in prepared]
    if missing:
        raise EmoslmError(f"split(s) {', '.join(missing)} not in the manifests (have: {', '.join(prepared)})")
    out: dict[str, list[Utterance]] = {}
    for sp in use:
        recs = prepared[sp]["recordings"]
        rows = []
        for s in prepared[sp]["supervisions"]:
            whole = abs(s.start) < 1e-6 and abs(s.duration - recs[s.recording_id].duration) < 1e-3
            u = from_supervision(s, recs, sp, label_set, whole_file=whole)
            if u.label is not None:
                rows.append(u)
        out[sp] = rows
    return out


def _speaker_voices(path: Path) -> dict[str, str]:
    f = path / "speakers.jsonl"
    return {json.loads(x)["id"]: json.loads(x)["voice"] for x in f.read_text().splitlines()} if f.is_file() else {}


def prepare_target(ref: CorpusRef, label_set, workers: int | None, progress: bool) -> tuple[list[Utterance], dict]:
    info: dict[str, Any] = {"kind": ref.kind, "path": ref.path, "splits": ref.splits}
    if ref.kind == "synth":
        summary = synthesize_corpus(ref.path, ref.preset, workers=workers, progress=progress)
        info["synth_config"] = summary["config"]
        prepared = load_prepared(ref.path, "synth")
    elif ref.kind == "manifests":
        prepared = load_prepared(ref.path, ref.corpus)
    else:
        raise EmoslmError(f"target.kind must be synth or manifests, got {ref.kind!r}")
    utts = [u for rows in _utts(prepared, ref.splits, label_set).values() for u in rows]
    if not utts:
        raise EmoslmError(f"the target {ref.path} ({', '.join(ref.splits)}) has no utterance of the classes "
                          f"{', '.join(label_set.labels)}")
    return utts, info


def prepare_source(ref: CorpusRef, target: CorpusRef, label_set, workers: int | None, progress: bool
                   ) -> tuple[dict[str, list[Utterance]], dict]:
    info: dict[str, Any] = {"kind": ref.kind, "path": ref.path}
    if ref.kind == "manifests":
        return _utts(load_prepared(ref.path, ref.corpus), ref.splits, label_set), info
    if ref.kind != "synth_source":
        raise EmoslmError(f"source.kind must be synth_source or manifests, got {ref.kind!r}")
    if target.kind != "synth":
        raise EmoslmError("source.kind synth_source is the stand-in for a real source beside the synthetic "
                          "target; with a real target give a real source (kind: manifests)")

    bad = [lab for lab in label_set.labels if lab not in EMOTION_CUES]
    if bad:
        raise EmoslmError(f"the synthetic source cannot render {', '.join(bad)}")
    t_summary = json.loads((Path(target.path) / "summary.json").read_text())
    t_bank = int(t_summary["config"]["sentence_bank_size"]) + int(t_summary["config"].get("sentence_offset", 0))
    n_rest = len(sentence_bank(t_bank + 1000)) - t_bank
    target_voices = sorted(set(_speaker_voices(Path(target.path)).values()))
    cfg = CorpusConfig(n_speakers=ref.speakers, sentences_per_speaker=ref.sentences,
                       dev_speakers=max(1, ref.speakers // 10), test_speakers=1, emotions=tuple(label_set.labels),
                       seed=ref.seed, sentence_offset=t_bank, sentence_bank_size=n_rest,
                       exclude_voices=tuple(target_voices))
    summary = synthesize_corpus(ref.path, cfg, workers=workers, progress=progress)
    prepared = load_prepared(ref.path, "synth")
    rows = _utts(prepared, ref.splits, label_set)
    # the claim of the comparison: no target speaker (voice) and no target sentence in the source
    t_prep = load_prepared(target.path, "synth")
    t_texts = {s.text for sp in t_prep.values() for s in sp["supervisions"]}
    s_texts = {u.text for r in rows.values() for u in r}
    s_voices = set(_speaker_voices(Path(ref.path)).values())
    info.update(synth_config=summary["config"] | {"exclude_voices": f"{len(target_voices)} target voices"},
                shared_texts_with_target=len(t_texts & s_texts), shared_voices_with_target=len(s_voices & set(target_voices)),
                speakers=len(s_voices), sentences=len(s_texts))
    if info["shared_texts_with_target"] or info["shared_voices_with_target"]:
        raise EmoslmError(f"the synthetic source shares {info['shared_texts_with_target']} sentences and "
                          f"{info['shared_voices_with_target']} voices with the target")
    return rows, info


def build_llm_corpus(cfg: ZeroShotConfig, desc, progress: bool, exclude_voices: tuple[str, ...] = ()
                     ) -> tuple[dict[str, dict[str, list[Utterance]]], dict]:
    """Generate (or resume) the text, render it (neutral, and with prosody if asked); Utts per variant/split."""
    data = Path(cfg.data_dir)
    set_torch_threads(cfg.llm.threads)
    t0 = time.perf_counter()
    backend = _LazyBackend(lambda: load_backend(cfg.llm.backend, cfg.llm.base_url, cfg.llm.model),
                           _backend_name(cfg.llm))
    gen = generate_utterances(desc, backend, data / "text", cfg.generation, progress)
    t_text = time.perf_counter() - t0
    set_torch_threads(cfg.threads)
    variants = {"llm": False, **({"llm_prosody": True} if cfg.tts.prosody_variant else {})}
    out, info = {}, {"generation": gen.stats, "text_seconds": round(t_text, 1)}
    for name, prosody in variants.items():
        corpus = f"{name}_speech"
        rc = RenderConfig(cfg.tts.speakers, prosody, cfg.tts.seed, cfg.tts.workers, exclude_voices)
        summ = render_speech(gen.utterances, data / corpus, corpus, rc, progress)
        info[name] = {k: summ[k] for k in ("splits", "utterances", "audio_minutes", "rendered_now", "seconds")}
        prepared = load_prepared(data / corpus, corpus)
        out[name] = _utts(prepared, [sp for sp in ("train", "dev") if sp in prepared], desc.label_set)
    return out, info


def _backend_name(llm: LLMConfig) -> str:
    return f"openai:{llm.model}" if llm.backend == "openai" else \
        f"emoslm-{llm.backend.rstrip('/').split('/')[-1]}"


class _LazyBackend:
    """Loads the LLM only when a call is not in the cache (a resumed or finished run needs no model)."""

    def __init__(self, load, name: str):
        self._load, self._backend, self.name = load, None, name

    def reply(self, *args, **kw):
        if self._backend is None:
            self._backend = self._load()
            self.name = self._backend.name
        return self._backend.reply(*args, **kw)


# ------------------------------------------------------------------------------------------------ run


SOURCE_TITLES = {"llm": "LLM-synthetic (neutral TTS)", "llm_prosody": "LLM-synthetic (TTS + emotional prosody)",
                 "source": "real source"}


def run_zeroshot(cfg: ZeroShotConfig, progress: bool = True) -> dict[str, Any]:
    """The whole pipeline; writes ``out_dir/results.json``, ``report.md``, ``report.html``; returns the results."""
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    desc = load_description(cfg.description)
    labels = desc.label_set
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    target, target_info = prepare_target(cfg.target, labels, cfg.tts.workers, progress)
    exclude = tuple(sorted(set(_speaker_voices(Path(cfg.target.path)).values()))) if cfg.target.kind == "synth" else ()
    timing["target corpus"] = time.perf_counter() - t
    t = time.perf_counter()
    llm, llm_info = build_llm_corpus(cfg, desc, progress, exclude)
    timing["LLM text"] = llm_info["text_seconds"]
    timing["TTS"] = time.perf_counter() - t - llm_info["text_seconds"]
    t = time.perf_counter()
    source, source_info = prepare_source(cfg.source, cfg.target, labels, cfg.tts.workers, progress)
    timing["source corpus"] = time.perf_counter() - t

    set_torch_threads(cfg.threads)
    sources = {**llm, "source": source}
    cache = Path(cfg.data_dir) / "features"
    loaded: dict = {}
    rows, results = [], {}
    t_feat = t_train = 0.0
    for up in cfg.upstreams:
        modality = UPSTREAMS[up][0]
        t = time.perf_counter()
        x_target = features(up, target, cache, cfg.threads, progress, cfg.whisper_pad_to_30s, loaded)
        t_feat += time.perf_counter() - t
        for src, splits in sources.items():
            if modality == "text" and src == "llm_prosody":
                continue  # the same text as "llm"
            if modality == "text" and not all(u.text for r in splits.values() for u in r):
                continue
            t = time.perf_counter()
            train, dev = splits.get("train", []), splits.get("dev", [])
            x_tr = features(up, train, cache, cfg.threads, progress, cfg.whisper_pad_to_30s, loaded)
            x_dev = features(up, dev, cache, cfg.threads, progress, cfg.whisper_pad_to_30s, loaded) if dev \
                else np.zeros((0, x_tr.shape[1]), np.float32)
            t_feat += time.perf_counter() - t
            t = time.perf_counter()
            head, log = train_head(x_tr, [u.label for u in train], x_dev, [u.label for u in dev], labels.labels,
                                   cfg.head)
            save_head(head, out / "models" / f"{src}_{up}", {"upstream": up, "source": src, **log})
            preds = head.predict(x_target)
            t_train += time.perf_counter() - t
            res = evaluate([u.label for u in target], preds, [u.speaker for u in target], labels,
                           protocol={"zero_shot": True, "train": src, "target": cfg.target.path,
                                     "target_splits": cfg.target.splits})
            key = f"{src}/{up}"
            results[key] = res.to_dict() | {"train": log}
            rows.append({"model": UPSTREAMS[up][1], "upstream": up, "modality": modality, "source": src,
                         "n_train": len(train), "wa": res.wa, "ua": res.ua, "dev_ua": log["dev_ua"]})
    timing["features"] = t_feat
    timing["training + prediction"] = t_train
    timing["total"] = time.perf_counter() - t_start
    summary = {"description": desc.to_dict(), "labels": list(labels.labels), "target": target_info,
               "n_target": len(target), "target_speakers": len({u.speaker for u in target}),
               "llm": llm_info, "source": source_info, "rows": rows, "results": results,
               "timing": {k: round(v, 1) for k, v in timing.items()}, "config": asdict(cfg)}
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "report.md").write_text(to_markdown(summary) + "\n")
    write_html(summary, out / "report.html")
    return summary


# ------------------------------------------------------------------------------------------------ report


def results_table(summary: dict[str, Any]) -> str:
    lines = ["| Model | Modality | Trained on | n train | WA | UA |", "|---|---|---|---:|---:|---:|"]
    order = {"llm": 0, "llm_prosody": 1, "source": 2}
    for r in sorted(summary["rows"], key=lambda r: (r["modality"] != "text", r["upstream"], order[r["source"]])):
        lines.append(f"| {r['model']} | {r['modality']} | {SOURCE_TITLES[r['source']]} | {r['n_train']} | "
                     f"{r['wa']:.3f} | {r['ua']:.3f} |")
    return "\n".join(lines)


def to_markdown(summary: dict[str, Any]) -> str:
    d, g, src = summary["description"], summary["llm"]["generation"], summary["source"]
    n_cls = len(summary["labels"])
    target = summary["target"]
    synth_target = target["kind"] == "synth"
    lines = [
        f"# Zero-shot SER from an LLM-written, TTS-rendered corpus (paper 001): target {d['name']}", "",
        (f"Classes ({n_cls}): {', '.join(summary['labels'])}; chance UA = {1 / n_cls:.3f}. Target: "
         f"{summary['n_target']} utterances of {summary['target_speakers']} speakers ({target['path']}, splits "
         f"{', '.join(target['splits'])}), never seen before the evaluation."), "",
        results_table(summary), "",
        (f"LLM-synthetic corpus: described by `{Path(d['path']).name}`, written by {g['backend']} "
         f"({g['calls']} calls of {g['config']['per_call']} lines, {g['rejected']} lines rejected: "
         f"{', '.join(f'{k} {v}' for k, v in list(g['rejection_reasons'].items())[:5])}), balanced to "
         f"{g['balanced_size']} utterances ({', '.join(f'{k} {v}' for k, v in g['per_class'].items())}), "
         f"spoken by {summary['config']['tts']['speakers']} espeak-ng voices"
         + (" none of which is a target voice." if synth_target else ".")),
    ]
    if synth_target:
        lines += ["", (
                  f"The \"real source\" here is not real: it is a second synthetic corpus ({src.get('speakers')} "
                  f"speakers with voices outside the target's, {src.get('sentences')} sentences from the part of "
                  f"the sentence bank the target does not use; shared voices {src.get('shared_voices_with_target')}, "
                  f"shared sentences {src.get('shared_texts_with_target')}), rendered by the same prosody model as "
                  "the target. The target's sentences carry no emotion (the emotion is in the voice only; each "
                  "speaker reads every sentence in every class), so every text model is at chance on it by "
                  "construction; neutral TTS speech carries no "
                  "emotion in its prosody either, so the paper's neutral-TTS speech model has nothing to "
                  "transfer on this target. The emotional-prosody variant shares the target's prosody model "
                  "(other voices, other texts): it measures what that prior is worth, not a zero-shot result "
                  "on real speech.")]
    t = summary["timing"]
    lines += ["", "Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) + "."]
    return "\n".join(lines)


def write_html(summary: dict[str, Any], path: Path) -> Path:
    """The Markdown report's text and table, plus a confusion matrix per model (via :mod:`emoslm.reporting`)."""
    import html

    md = to_markdown(summary).splitlines()
    table = [x for x in md if x.startswith("|")]
    text = [x for x in md if x and not x.startswith("|") and not x.startswith("#")]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r.strip("|").split("|")) + "</tr>"
                   for r in table[2:])
    figs = []
    for key, res in summary["results"].items():
        src, up = key.split("/")
        figs.append(img(figure_png(plot_confusion(res, f"{up} <- {SOURCE_TITLES[src]}")), key))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(md[0][2:])}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:.2em .6em;"
            "border-bottom:1px solid #ddd}img{max-width:48%}</style></head><body>"
            f"<h1>{html.escape(md[0][2:])}</h1><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>"
            f"{body}</table>" + "".join(f"<p>{html.escape(x)}</p>" for x in text)
            + "<h2>Confusion matrices (target)</h2>" + "".join(figs) + "</body></html>")
    path.write_text(page, encoding="utf-8")
    return path

"""The ``emoslm`` command line. Each sub-command is a thin wrapper over a function of the Python API.

    emoslm demo                                   the main job on the embedded default data (= run personalization)
    emoslm run PAPER [--profile tiny|demo|long]   a paper end to end: personalization, zeroshot, dual_info, echat
    emoslm train RECIPE --config NAME             one training recipe (the registry: emoslm.registry)
    emoslm synth corpus --preset demo --out DIR   synthesise the emotional speech corpus
    emoslm synth dialogue --preset demo --out DIR E-chat dialogue data (question, response, emotion, speech)
    emoslm synth conversations --corpus DIR       dual-information conversations (paper 002)
    emoslm chat AUDIO.wav                         E-chat: the recognised emotion and the reply
    emoslm prepare CORPUS CORPUS_DIR OUT_DIR      lhotse manifests from a corpus on disk
    emoslm manifest export|import ...             flat CSV/JSONL <-> lhotse manifests
    emoslm features fbank MANIFEST_DIR STORAGE    80-dim log-mel filterbanks, cached
    emoslm info                                   what this installation has (voices, backends)
    emoslm calibrate --bundle DIR --corpus DIR    fit a bundle's temperature on a dev split (calibration.json)
    emoslm serve --host H --port P                the emotion-aware voice service (API keys: emoslm apikey)
    emoslm synth from-description DESC.yaml       paper 001: an LLM-written, TTS-spoken corpus from a description
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from emoslm.errors import EmoslmError


def _set_pairs(items: list[str] | None) -> dict[str, object]:
    """``--set key=value`` pairs as keyword arguments; values parsed as YAML scalars (numbers, booleans, lists)."""
    from emoslm.config import parse_value

    out: dict[str, object] = {}
    for item in items or []:
        if "=" not in item:
            raise EmoslmError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        key = k.strip().replace("-", "_")
        if not key.isidentifier():
            raise EmoslmError(f"--set {item!r}: {k!r} is not an option name (letters, digits and _)")
        out[key] = parse_value(v, item)
    return out


# ------------------------------------------------------------------------------------------ option groups
# Options that several commands share are defined once here.


def add_progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_set_option(p: argparse.ArgumentParser, what: str = "a config value") -> None:
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override {what} (repeatable)")


def add_threads_option(p: argparse.ArgumentParser, default: int | None, what: str = "torch threads") -> None:
    p.add_argument("--threads", type=int, default=default, help=f"{what} (default: {default or 'auto'})")


def add_min_confidence_option(p: argparse.ArgumentParser, what: str) -> None:
    # parsed by the command (check_min_confidence), so that a bad value is a one-line emoslm error
    p.add_argument("--min-confidence", default=None, metavar="P",
                   help=f"abstain (no label) {what} whose confidence is below P (0..1); default: never")


def add_backend_options(p: argparse.ArgumentParser, role: str, prefix: str = "") -> None:
    """``--backend/--base-url/--model`` (``--judge``, ``--judge-base-url``, ``--judge-model`` with a prefix): the
    text LLM that writes (or judges), :func:`emoslm.models.text_llm.load_backend`."""
    flag = f"--{prefix}" if prefix else "--backend"
    p.add_argument(flag, default="smollm2",
                   help=f"{role}: smollm2 (packaged, offline), tiny-llama, a local HF dir, or openai")
    p.add_argument(f"--{prefix + '-' if prefix else ''}base-url", default=None,
                   help="openai backend: endpoint, e.g. http://host:8080/v1")
    p.add_argument(f"--{prefix + '-' if prefix else ''}model", default=None,
                   help="openai backend: model name (key from $OPENAI_API_KEY)")


# ------------------------------------------------------------------------------------------ commands


def cmd_synth_corpus(a: argparse.Namespace) -> int:
    from emoslm.synth.corpus import print_summary, synthesize_corpus

    out = a.out or f"data/synth_{a.preset}"
    summary = synthesize_corpus(out, a.preset, seed=a.seed, n_speakers=a.speakers, workers=a.workers,
                                progress=not a.quiet, force=a.force)
    print_summary(summary)
    print(f"manifests in {Path(out).resolve()}")
    return 0


def cmd_synth_dialogue(a: argparse.Namespace) -> int:
    from emoslm.echat.dialogue import build_dialogue_dataset
    from emoslm.models.text_llm import load_backend

    out = a.out or f"data/echat_{a.preset}"
    stats = build_dialogue_dataset(out, a.preset, backend=load_backend(a.backend, a.base_url, a.model),
                                   n_questions=a.questions, n_speakers=a.speakers, seed=a.seed, workers=a.workers,
                                   progress=not a.quiet)
    print((Path(out) / "table1.md").read_text().rstrip())
    print(f"{stats['entries']} entries ({stats['splits']}), {stats['questions']} questions, {stats['speakers']} "
          f"speakers; manifest {Path(out).resolve() / 'manifest.jsonl'}")
    return 0


def cmd_synth_conversations(a: argparse.Namespace) -> int:
    from emoslm.threads import set_torch_threads
    from emoslm.dual_info.conversations import build_conversations
    from emoslm.models.text_llm import load_backend

    set_torch_threads(a.threads, a.backend)
    backend = load_backend(a.backend, a.base_url, a.model)
    out = a.out or f"data/conversations_{a.preset}"
    summary = build_conversations(a.corpus, out, backend, preset=a.preset, seed=a.seed, max_tokens=a.max_tokens,
                                  context_style=a.context_style, progress=not a.quiet)
    for split, st in summary["splits"].items():
        print(f"{split}: {st['conversations']} conversations, {st['examples']} examples, {st['speakers']} speakers")
    per = summary["seconds_per_generated_reply"]
    print(f"{summary['replies_generated_now']} replies written now ({per} s each), {summary['replies']} in the cache; "
          f"examples in {Path(out).resolve()}")
    return 0


def cmd_chat(a: argparse.Namespace) -> int:
    from emoslm.audio import probe
    from emoslm.echat import EChat

    probe(a.audio)  # an unreadable utterance fails before the model is loaded
    turn = EChat.load(a.model).chat(a.audio)
    print(f"emotion: {turn.emotion}")
    print(turn.reply)
    return 0


def cmd_prepare(a: argparse.Namespace) -> int:
    from emoslm.corpora import prepare

    opts = _set_pairs(a.set)
    if a.label_map is not None:
        if "label_map" in opts:
            raise EmoslmError("give the label map once: --label-map FILE or --set label_map=..., not both")
        opts["label_map"] = a.label_map
    prepared = prepare(a.corpus, a.corpus_dir, a.out_dir, **opts)
    for split, parts in prepared.items():
        sups = parts["supervisions"]
        print(f"{split}: {len(sups)} utterances, {len({s.speaker for s in sups})} speakers")
    print(f"manifests in {Path(a.out_dir).resolve()}")
    return 0


def cmd_manifest_export(a: argparse.Namespace) -> int:
    from emoslm.data.manifests import export_table, load_prepared

    path = export_table(load_prepared(a.manifest_dir, a.corpus), a.table)
    print(f"wrote {path}")
    return 0


def cmd_manifest_import(a: argparse.Namespace) -> int:
    from emoslm.data.manifests import import_table, save_prepared, validate_prepared

    prepared = import_table(a.table, corpus=a.corpus, audio_root=a.audio_root, label_map=a.label_map)
    validate_prepared(prepared)
    save_prepared(prepared, a.out_dir, a.corpus)
    for split, parts in prepared.items():
        print(f"{split}: {len(parts['supervisions'])} utterances")
    return 0


def cmd_features_fbank(a: argparse.Namespace) -> int:
    from emoslm.data.manifests import load_prepared, to_cuts
    from emoslm.features import compute_fbank_cache

    prepared = load_prepared(a.manifest_dir, a.corpus)
    unknown = sorted(set(a.split or ()) - set(prepared))
    if unknown:
        raise EmoslmError(f"{a.manifest_dir} has no split(s) {', '.join(unknown)}; its splits: {', '.join(prepared)}")
    for split in (a.split or list(prepared)):
        cuts = compute_fbank_cache(to_cuts(prepared, split), Path(a.storage) / split, num_jobs=a.workers)
        print(f"{split}: {len(cuts)} cuts with features in {Path(a.storage) / split}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """The main job on the embedded default: synthesise, train paper 000's models, evaluate, report."""
    from emoslm.personalization.pipeline import PersonalizationRun, run
    from emoslm.synth.corpus import print_summary, synthesize_corpus

    if a.synth_only:
        print_summary(synthesize_corpus(Path(a.out) / f"synth_{a.preset}", a.preset, workers=a.workers,
                                        progress=not a.quiet))
        return 0
    run(PersonalizationRun(out=a.out, runs=a.runs, preset=a.preset, profile=a.profile, workers=a.workers,
                           checkpoints=a.checkpoints, train_all=a.train_all, seed=a.seed, progress=not a.quiet,
                           shipped_llm=False if a.skip_llm else None))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    """A paper end to end, from the recipe registry: the config, then the profile, then ``--set`` overrides."""
    from emoslm import registry

    recipe = registry.PAPERS[a.paper]
    overrides = list(a.set or [])
    if a.quiet:
        overrides.append("progress=false")
    cfg = recipe.config(a.profile, a.config, overrides)
    if a.paper == "echat":  # the cascade's SER model: paper 000's bundle, when one has been made
        from emoslm.echat.pipeline import run, summary_markdown
        from emoslm.personalization.inference import EmotionRecognizer

        bundle = Path(cfg.ser_bundle) if cfg.ser_bundle else None
        recognizer = EmotionRecognizer.load(bundle, threads=cfg.threads) if bundle and bundle.is_dir() else None
        if bundle and recognizer is None:
            print(f"no SER bundle at {bundle} (make demo writes one): the cascade is not run")
        print(summary_markdown(run(cfg, recognizer), cfg))
    elif a.paper == "dual_info":
        from emoslm.dual_info.evaluation import to_markdown

        print(to_markdown(recipe.run(cfg)))
        print(f"report: {(Path(cfg.runs) / 'report.html').resolve()}")
    elif a.paper == "zeroshot":
        from emoslm.zeroshot.pipeline import results_table

        summary = recipe.run(cfg)
        print(results_table(summary))
        print(f"total {summary['timing']['total']:.0f} s; report {Path(cfg.out_dir).resolve() / 'report.md'} "
              "(and .html)")
    else:  # personalization prints its own tables
        recipe.run(cfg)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """Evaluate trained (or the shipped) models of paper 000 on any prepared corpus and write the report."""
    from emoslm.data.manifests import load_prepared
    from emoslm.personalization.evaluation import EvalPlan, run_eval, write_report
    from emoslm.personalization.pipeline import SHIPPED_CHECKPOINTS, demo_models

    root = SHIPPED_CHECKPOINTS if a.runs == "shipped" else Path(a.runs)
    if not root.is_dir():
        raise EmoslmError(f"no runs folder {root} (train models with `emoslm demo`, or evaluate the shipped ones "
                          "with --runs shipped)")
    if not Path(a.corpus).is_dir():
        raise EmoslmError(f"no prepared corpus at {a.corpus} (make one with `emoslm prepare ...`)")
    load_prepared(a.corpus)  # a clear error for a folder that holds no manifests, before any model is loaded
    classifiers, icl, _ = demo_models(root, existing_only=True)
    if not icl and not classifiers:
        raise EmoslmError(f"{root} holds no trained models (expected e.g. {root / 'stage2' / 'checkpoints'})")
    out = a.out or str(Path("runs/shipped_eval") / Path(a.corpus).name if a.runs == "shipped" else root / "eval")
    plan = EvalPlan(corpus=a.corpus, out_dir=out, icl=icl, classifiers=classifiers, decode=a.decode,
                    peer=not a.no_peer, split=a.split, peer_train=a.peer_train)
    paths = write_report(run_eval(plan, progress=not a.quiet), plan.out_dir)
    print(f"report: {paths['html'].resolve()} (and {paths['markdown'].name}, {paths['json'].name})")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    """One file: the label and a bar per emotion. Several (files, folders, @lists, a manifest): batched, rows to
    --out (JSONL/CSV), a progress bar, the throughput and a summary table."""
    import time

    from rich.console import Console

    from emoslm.personalization import batch
    from emoslm.personalization.inference import (
        EmotionRecognizer,
        bundle_threads,
        check_min_confidence,
        resolve_bundle,
    )

    min_confidence = check_min_confidence(a.min_confidence)
    targets = batch.resolve_targets(a.target, a.list, a.manifest, a.split)
    single = (len(a.target) == 1 and not a.target[0].startswith("@") and not Path(a.target[0]).is_dir()
              and not a.list and not a.manifest)
    if a.decode == "beam" and (not single or a.segment or a.out):
        raise EmoslmError("--decode beam predicts one file at a time: give one target, without --segment/--out")
    bundle, which = resolve_bundle(a.bundle)
    rec = EmotionRecognizer.load(bundle, threads=bundle_threads(bundle, a.threads), min_confidence=min_confidence)
    pairs = [batch.parse_enroll_pair(item) for item in a.enroll or []]
    table = batch.read_enroll_table(a.enroll_table) if a.enroll_table else None
    targets, speakers = batch.enroll_for_targets(rec, targets, pairs=pairs, table=table, speaker=a.speaker)
    console = Console()
    if single and not a.out and not a.segment:
        pred = rec.predict(targets[0].path, speaker=speakers[0], decode=a.decode, embeddings=a.embeddings)
        label = f"{batch.ABSTAIN} (confidence {pred.confidence:.0%} < {min_confidence:.0%})" if pred.abstained \
            else pred.label
        console.print(f"[bold]{label}[/bold]  ({pred.n_enroll}-shot, {pred.latency_ms:.0f} ms"
                      + (", calibrated" if pred.calibrated else "") + f"; {which})")
        for lab, p in sorted(pred.probs.items(), key=lambda kv: -kv[1]):
            console.print(f"  {lab:>9} {p:6.1%} " + "#" * int(round(p * 40)))
        return 0
    t0 = time.perf_counter()
    rows = batch.predict_rows(rec, targets, speakers, batch_size=a.batch_size, embeddings=a.embeddings,
                              progress=not a.quiet and not single, segment=a.segment, window_s=a.window,
                              hop_s=a.hop, max_seconds=a.max_seconds)
    seconds = time.perf_counter() - t0
    if a.out:
        console.print(f"wrote {len(rows)} rows to {batch.write_rows(rows, a.out, rec.label_set.labels)}")
    if single and a.segment:  # one long file: its segments
        batch.print_rows(console, rows, segments=True)
        return 0
    s = batch.summary(rows, seconds, len(targets), "files" if a.segment else "utterances", rec.label_set.labels)
    if not a.out:  # no file to look at: the rows on the terminal
        batch.print_rows(console, rows)
    console.print(batch.summary_table(s))
    console.print(batch.throughput_line(s) + f" (batch size {a.batch_size}, {a.threads} torch threads)")
    if "accuracy" in s:
        acc, n = s["accuracy"]
        console.print(f"accuracy against the manifest's emotions: {acc:.1%} of {n}"
                      + (" (abstentions count as wrong)" if "answered_accuracy" in s else ""))
    if "answered_accuracy" in s:
        acc, n = s["answered_accuracy"]
        console.print(f"accuracy of the {n} answered (not abstained): {acc:.1%}")
    if s["errors"]:
        console.print(f"[yellow]{s['errors']} of {s['n']} rows failed (see the error column)[/yellow]")
    return 0


def cmd_calibrate(a: argparse.Namespace) -> int:
    """Fit a bundle's temperature on a split of a prepared corpus and write its calibration.json."""
    from emoslm.personalization.evaluation import calibrate_bundle
    from emoslm.personalization.inference import CALIBRATION_FILE

    try:
        ks = [int(k) for k in a.k.split(",")]
    except ValueError:
        raise EmoslmError(f"--k expects whole numbers joined by commas, e.g. 0,1,4,7; got {a.k!r}") from None
    if not Path(a.corpus).is_dir():
        raise EmoslmError(f"no prepared corpus at {a.corpus} (make one with `emoslm prepare ...`)")
    info = calibrate_bundle(a.bundle, a.corpus, a.split, ks, per_k=a.episodes_per_k, seed=a.seed,
                            progress=not a.quiet)
    print(f"temperature {info['temperature']:.3f}, fitted on {info['n']} episodes of {info['fitted_on']}")
    print(f"ECE on those episodes ({info['n_bins']} bins): {info['ece_before']:.3f} before, "
          f"{info['ece_after']:.3f} after")
    print(f"wrote {Path(a.bundle) / CALIBRATION_FILE} (predict and serve now use it)")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    """The voice service (FastAPI on uvicorn): API, OpenAI-compatible chat, web page at /."""
    import uvicorn

    from emoslm.personalization.inference import check_min_confidence, resolve_bundle
    from emoslm.service import Settings, create_app
    from emoslm.service.http import JSONErrorH11Protocol, configure_logging

    if not a.repetition_penalty > 0:
        raise EmoslmError(f"--repetition-penalty must be positive (1: none), not {a.repetition_penalty}")
    bundle, which = resolve_bundle(a.bundle)
    settings = Settings(bundle=str(bundle), data_dir=a.data_dir, llm=a.llm, max_upload_mb=a.max_upload_mb,
                        max_seconds=a.max_seconds, window_seconds=a.window_seconds, segment_mode=a.segment_mode,
                        torch_threads=a.threads, echat=a.echat, reply_prompt=a.reply_prompt,
                        repetition_penalty=a.repetition_penalty, asr=a.asr, public_read=a.public_read,
                        rate_limit=a.rate_limit, cors_origins=tuple(a.cors_origin or ()),
                        max_prompt_chars=a.max_prompt_chars, min_confidence=check_min_confidence(a.min_confidence))
    configure_logging(quiet=a.quiet)
    app = create_app(settings)  # loads the bundle: a bad one is a one-line error before anything is printed
    if not a.quiet:
        print(f"emotion model: {which}", file=sys.stderr)
    # the service logs each request with its id (emoslm.service.access), so uvicorn's own access log is off
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning" if a.quiet else "info",
                access_log=False, http=JSONErrorH11Protocol)
    return 0


def cmd_apikey(a: argparse.Namespace) -> int:
    """Create, list or revoke the service's API keys (stored as sha256; a new key is printed once; an admin key
    sees every speaker, an ordinary one the speakers it created)."""
    import datetime

    from emoslm.service.store import Store

    if a.action != "list" and not a.name:
        raise EmoslmError(f"emoslm apikey {a.action} needs a key name")
    store = Store(a.data_dir)
    if a.admin and a.action != "create":
        raise EmoslmError("--admin goes with emoslm apikey create")
    if a.action == "create":
        print(store.create_api_key(a.name, admin=a.admin))
    elif a.action == "revoke":
        store.revoke_api_key(a.name)
        print(f"revoked {a.name}")
    else:
        for k in store.list_api_keys():
            created = datetime.datetime.fromtimestamp(k.created).isoformat(timespec='seconds')
            print(f"{k.name}\t{created}" + ("\tadmin" if k.admin else ""))
    return 0


def cmd_synth_from_description(a: argparse.Namespace) -> int:
    """Paper 001's corpus: an LLM writes labelled lines from a corpus description, TTS speaks them."""
    from emoslm.threads import set_torch_threads
    from emoslm.models.text_llm import load_backend
    from emoslm.zeroshot.description import load_description
    from emoslm.zeroshot.generate import GenerationConfig, generate_utterances
    from emoslm.zeroshot.render import RenderConfig, render_speech

    desc = load_description(a.description)
    out = Path(a.out or f"data/llm_{Path(desc.path).stem}")
    cfg = GenerationConfig(n_utterances=a.n, per_call=a.per_call, temperature=a.temperature, max_tokens=a.max_tokens,
                           seed=a.seed, max_minutes=a.max_minutes)
    set_torch_threads(a.threads, a.backend)
    gen = generate_utterances(desc, load_backend(a.backend, a.base_url, a.model), out / "text", cfg,
                              progress=not a.quiet)
    st = gen.stats
    print(f"{len(gen.utterances)} utterances ({', '.join(f'{k} {v}' for k, v in st['per_class'].items())}) from "
          f"{st['calls']} calls ({st['new_calls']} new, {st['tokens_per_second']} tokens/s); {st['rejected']} lines "
          f"rejected: {st['rejection_reasons']}")
    if not a.text_only:
        corpus = "llm_prosody" if a.prosody else "llm"
        summ = render_speech(gen.utterances, out / "speech", corpus,
                             RenderConfig(a.speakers, a.prosody, a.seed, a.workers), progress=not a.quiet)
        print(f"speech: {summ['utterances']} utterances, {summ['audio_minutes']} min, {a.speakers} TTS speakers "
              f"({'emotional prosody' if a.prosody else 'neutral'}); manifests in {(out / 'speech').resolve()}")
    print(f"text in {(out / 'text' / 'utterances.jsonl').resolve()}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    """One training recipe of the registry, with a packaged config (or a YAML file) and ``--set`` overrides."""
    import os

    from emoslm import registry

    recipe = registry.TRAINING[a.recipe]
    summary = recipe.run(recipe.config(a.profile, a.config, a.set))
    if summary.get("world", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(f"{a.recipe}: {summary['steps']} steps in {summary['seconds']} s, best dev score {summary['best_score']:.4f}")
    return 0


def cmd_levels(a: argparse.Namespace) -> int:
    from emoslm.data.levels import derive_levels
    from emoslm.data.manifests import load_prepared, save_prepared

    prepared = load_prepared(a.corpus)
    corpus = next(Path(a.corpus).glob("*_supervisions_*.jsonl.gz")).name.split("_supervisions_")[0]
    out = Path(a.out or a.corpus)
    stats = derive_levels(prepared, reference=a.reference, overwrite=a.overwrite,
                          cache=out / "levels_egemaps.npz" if a.out else Path(a.corpus) / "levels_egemaps.npz",
                          workers=a.workers)
    save_prepared(prepared, out, corpus)
    for k, c in stats["counts"].items():
        print(f"{k}: " + ", ".join(f"{lv} {n}" for lv, n in c.items()))
    print(f"levels of {stats['utterances']} utterances written to {out.resolve()}")
    return 0


def cmd_bundle(a: argparse.Namespace) -> int:
    """A model bundle (for emoslm predict and serve) from a demo-style runs folder, or from the shipped models."""
    from emoslm.personalization.pipeline import SHIPPED_CHECKPOINTS, bundle_from_runs

    root = SHIPPED_CHECKPOINTS if a.runs == "shipped" else Path(a.runs)
    if not root.is_dir():
        raise EmoslmError(f"no runs folder {root}")
    print(f"bundle: {bundle_from_runs(root, a.out).resolve()}")
    return 0


def cmd_split(a: argparse.Namespace) -> int:
    """Cut a prepared corpus into train/dev/test by a named protocol (for corpora prepared as one split)."""
    import json

    from emoslm.data.manifests import load_prepared, save_prepared
    from emoslm.data.splits import get_protocol, leakage_line, resplit, speaker_overlap, split_overlap

    if not Path(a.corpus).is_dir():
        raise EmoslmError(f"no prepared corpus at {a.corpus} (make one with `emoslm prepare ...`)")
    prepared = load_prepared(a.corpus)
    corpus = next(Path(a.corpus).glob("*_supervisions_*.jsonl.gz")).name.split("_supervisions_")[0]
    if Path(a.out).resolve() == Path(a.corpus).resolve():
        raise EmoslmError("emoslm split writes a new folder: OUT must differ from CORPUS")
    try:
        protocol = get_protocol(a.protocol, **_set_pairs(a.set))
        parts = resplit(prepared, protocol, a.fold)
    except ValueError as e:
        raise EmoslmError(str(e)) from None
    save_prepared(parts, a.out, corpus)
    overlap = speaker_overlap({k: list(v["supervisions"]) for k, v in parts.items()})
    leakage = {role: split_overlap(parts, "train", role) for role in ("dev", "test")
               if role in parts and "train" in parts}
    (Path(a.out) / "split.json").write_text(json.dumps({"source": str(Path(a.corpus).resolve()),
                                                        "protocol": protocol.describe(), "leakage_check": leakage},
                                                       indent=1, default=str))
    for role, p in parts.items():
        sups = p["supervisions"]
        print(f"{role}: {len(sups)} utterances, {len({s.speaker for s in sups})} speakers")
    if any(overlap.values()):
        print(f"speakers in two splits: {({f'{x}/{y}': sorted(v) for (x, y), v in overlap.items() if v})}")
    for audit in leakage.values():
        print(leakage_line(audit))
    print(f"manifests in {Path(a.out).resolve()}")
    return 0


def cmd_dual_info(a: argparse.Namespace) -> int:
    import json

    from emoslm.dual_info.evaluation import to_markdown, write_report
    from emoslm.dual_info.pipeline import DualInfoRun, evaluate

    try:
        steps = tuple(int(x) for x in a.steps.split(","))
    except ValueError:
        raise EmoslmError(f"--steps expects whole numbers joined by commas (steps of stages 1, 2, 3), got "
                          f"{a.steps!r}") from None
    run = DualInfoRun(data=a.data, conversations=a.conversations, runs=a.runs, steps=steps, minutes=a.minutes,
                      test_utterances=a.test_utterances, test_conversations=a.test_conversations,
                      judge=a.judge, judge_base_url=a.judge_base_url, judge_model=a.judge_model,
                      judge_check_pairs=a.judge_check_pairs, threads=a.threads,
                      extra=a.set or [])
    models = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in a.models)
    if not models:
        raise EmoslmError("emoslm dual-info eval needs --models NAME=DIR ... (to train and evaluate: "
                          "emoslm run dual_info)")
    res = evaluate(run, models)
    Path(a.runs).mkdir(parents=True, exist_ok=True)
    (Path(a.runs) / "results.json").write_text(json.dumps(res, indent=1, default=str))
    write_report(res, Path(a.runs) / "report.html")
    print(to_markdown(res))
    print(f"report: {(Path(a.runs) / 'report.html').resolve()}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    import emoslm
    from emoslm.synth.tts import Espeak, english_voices

    bases, variants, mbrola = english_voices()
    print(f"emoslm {emoslm.__version__}")
    print(f"espeak-ng backend: {Espeak().backend}; English base voices: {len(bases)}, variants: {len(variants)}, "
          f"mbrola voices: {', '.join(v.name for v in mbrola) or 'none'}")
    return 0


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from emoslm import registry
    from emoslm.corpora import CORPORA

    p = argparse.ArgumentParser(prog="emoslm", description="Emotion-aware speech language models.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the main job on the embedded default data")
    d.add_argument("--out", default="data", help="folder for the corpus and results (default: data)")
    d.add_argument("--preset", default="demo", choices=["tiny", "demo", "full", "heldout", "heldout_tiny"],
                   help="the synthetic corpus (default: demo; heldout: splits that share no sentence or voice, and an "
                        "unseen split of a held-out voice family and emotion rendering, evaluated too)")
    d.add_argument("--workers", type=int, default=None)
    d.add_argument("--profile", default=None, choices=["tiny", "demo", "long"],
                   help="training schedule (default: tiny for the tiny preset, else demo)")
    d.add_argument("--runs", default=None, help="folder for models and the report (default: runs/<preset>)")
    d.add_argument("--checkpoints", default=None,
                   help="evaluate pre-trained models from this folder instead of training them (default for the demo "
                        "preset and profile: the shipped speaker-relative encoder and MetaICL model)")
    d.add_argument("--train-all", action="store_true", help="train every model, the shipped ones included")
    d.add_argument("--seed", type=int, default=0,
                   help="training replicate: every model trained with this seed (other than 0: all trained)")
    d.add_argument("--synth-only", action="store_true", help="only synthesise the corpus and summarise it")
    d.add_argument("--skip-llm", action="store_true",
                   help="do not score the shipped SmolLM2 model (paper 000's main model; by default the demo scores "
                        "it on the test split of the heldout corpus, about 3 minutes)")
    add_progress_option(d)
    d.set_defaults(fn=cmd_demo)

    r = sub.add_parser("run", help="a paper end to end (the recipe registry's pipelines)")
    r.add_argument("paper", choices=list(registry.PAPERS),
                   help="personalization (000), zeroshot (001), dual_info (002), echat (003)")
    r.add_argument("--config", default=None, help="packaged config name or YAML file (default: the paper's own)")
    r.add_argument("--profile", default="demo", choices=list(registry.PROFILES),
                   help="tiny: seconds on tiny data (smoke test); demo: the README's budget; long: the benchmark's")
    add_set_option(r)
    add_progress_option(r)
    r.set_defaults(fn=cmd_run)

    ev = sub.add_parser("eval", help="evaluate trained models (Tables II-IV) on any prepared corpus; write the report")
    ev.add_argument("--runs", default="runs/demo", help="a demo-style runs folder, or 'shipped' for the packaged models")
    ev.add_argument("--corpus", default="data/synth_demo", help="a prepared corpus (emoslm prepare); no training "
                                                               "split needed")
    ev.add_argument("--split", default=None, help="split to evaluate (default: test, or the corpus's only split)")
    ev.add_argument("--peer-train", default=None, metavar="DIR",
                    help="corpus whose train split fits the eGeMAPS peer (default: the evaluated corpus's own, else "
                         "the embedded data/synth_demo)")
    ev.add_argument("--out", default=None, help="report folder (default: RUNS/eval; runs/shipped_eval/CORPUS)")
    ev.add_argument("--decode", default="score", choices=["score", "beam"])
    ev.add_argument("--no-peer", action="store_true", help="skip the eGeMAPS peer")
    add_progress_option(ev)
    ev.set_defaults(fn=cmd_eval)

    s = sub.add_parser("synth", help="synthesise data").add_subparsers(dest="what", required=True)
    sc = s.add_parser("corpus", help="the synthetic emotional speech corpus")
    sc.add_argument("--preset", default="demo", choices=["tiny", "demo", "full", "heldout", "heldout_tiny"],
                    help="corpus (heldout: splits share no sentence or voice, plus an unseen split of a held-out voice "
                         "family and emotion rendering)")
    sc.add_argument("--out", default=None, help="output folder (default: data/synth_<preset>)")
    sc.add_argument("--seed", type=int, default=None)
    sc.add_argument("--speakers", type=int, default=None, help="override the preset's number of speakers")
    sc.add_argument("--workers", type=int, default=None, help="parallel processes (default: min(2, cores))")
    sc.add_argument("--force", action="store_true", help="synthesise again even if the output is there")
    add_progress_option(sc)
    sc.set_defaults(fn=cmd_synth_corpus)

    sd = s.add_parser("dialogue", help="E-chat200-style emotional dialogue data (paper 003)")
    sd.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"])
    sd.add_argument("--out", default=None, help="output folder (default: data/echat_<preset>)")
    add_backend_options(sd, "response writer")
    sd.add_argument("--questions", type=int, default=None, help="override the preset's number of questions")
    sd.add_argument("--speakers", type=int, default=None, help="override the preset's number of speakers")
    sd.add_argument("--seed", type=int, default=None)
    sd.add_argument("--workers", type=int, default=None, help="TTS processes (default: min(2, cores))")
    add_progress_option(sd)
    sd.set_defaults(fn=cmd_synth_dialogue)

    scv = s.add_parser("conversations", help="dual-information conversation data (paper 002)")
    scv.add_argument("--corpus", default="data/synth_demo", help="prepared corpus (lhotse manifests)")
    scv.add_argument("--out", default=None, help="output folder (default: data/conversations_<preset>)")
    scv.add_argument("--preset", default="demo", choices=["tiny", "demo"])
    add_backend_options(scv, "reply writer")
    scv.add_argument("--seed", type=int, default=None)
    scv.add_argument("--max-tokens", type=int, default=None, help="override the preset's reply length limit")
    scv.add_argument("--context-style", default=None, choices=["styled", "plain"],
                     help="earlier user turns in the context: with their captions (default) or words only")
    add_threads_option(scv, None, "torch threads (auto: 2 for smollm2, 1 otherwise; 1 when the cores are shared)")
    add_progress_option(scv)
    scv.set_defaults(fn=cmd_synth_conversations)

    pr = sub.add_parser("prepare", help="lhotse manifests from a corpus on disk")
    pr.add_argument("corpus", choices=sorted(CORPORA))
    pr.add_argument("corpus_dir")
    pr.add_argument("out_dir")
    pr.add_argument("--label-map", default=None, metavar="FILE",
                    help="csv: the table's labels -> canonical ones (.yaml/.json mapping, or a two-column .csv)")
    add_set_option(pr, "a corpus-specific option")
    pr.set_defaults(fn=cmd_prepare)

    m = sub.add_parser("manifest", help="flat CSV/JSONL tables").add_subparsers(dest="what", required=True)
    me = m.add_parser("export", help="lhotse manifests -> one CSV/JSONL table")
    me.add_argument("manifest_dir")
    me.add_argument("table", help="output .csv or .jsonl")
    me.add_argument("--corpus", default=None)
    me.set_defaults(fn=cmd_manifest_export)
    mi = m.add_parser("import", help="a CSV/TSV/JSONL table -> lhotse manifests")
    mi.add_argument("table")
    mi.add_argument("out_dir")
    mi.add_argument("--corpus", default="custom")
    mi.add_argument("--audio-root", default=None)
    mi.add_argument("--label-map", default=None, metavar="FILE",
                    help="the table's labels -> canonical ones (.yaml/.json mapping, or a two-column .csv)")
    mi.set_defaults(fn=cmd_manifest_import)

    f = sub.add_parser("features", help="feature extraction").add_subparsers(dest="what", required=True)
    ff = f.add_parser("fbank", help="80-dim log-mel filterbanks, cached with lhotse storage")
    ff.add_argument("manifest_dir")
    ff.add_argument("storage")
    ff.add_argument("--corpus", default=None)
    ff.add_argument("--split", action="append")
    ff.add_argument("--workers", type=int, default=1)
    ff.set_defaults(fn=cmd_features_fbank)

    pp = sub.add_parser("predict", help="personalised emotion of utterances (files, folders, lists, manifests)")
    pp.add_argument("target", nargs="*", default=[],
                    help="audio files, folders (wav/flac/ogg/mp3 found recursively) or @list.txt (one per line)")
    pp.add_argument("--list", metavar="FILE", help="a list file of audio files (relative to its folder)")
    pp.add_argument("--manifest", metavar="DIR", help="a prepared corpus (emoslm prepare): every supervision")
    pp.add_argument("--split", action="append", help="with --manifest: only these splits (repeatable)")
    pp.add_argument("--enroll", action="append", metavar="FILE:LABEL", help="an enrollment pair (repeatable)")
    pp.add_argument("--enroll-table", metavar="TABLE.csv",
                    help="enrollment of several speakers: columns speaker, file (or path), label")
    pp.add_argument("--speaker", help="whose enrollment the files use (with --manifest: only this speaker)")
    pp.add_argument("--bundle", default="auto", help="model bundle (default 'auto': the shipped SmolLM2 model when "
                    "it and the packaged SmolLM2 are installed, else the demo's runs/demo/bundle)")
    pp.add_argument("--decode", default="score", choices=["score", "beam"],
                    help="score every label (probabilities) or beam search (beam 4, exact match; one file)")
    pp.add_argument("--out", metavar="FILE.jsonl|FILE.csv", help="write a row per file (per segment) here")
    pp.add_argument("--embeddings", action="store_true", help="add each utterance's embedding to the rows")
    pp.add_argument("--segment", choices=["fixed", "energy"],
                    help="long audio: a row per fixed window or per speech region (energy-based)")
    pp.add_argument("--window", type=float, default=4.0, help="segment length in seconds (at most, for energy)")
    pp.add_argument("--hop", type=float, default=None, help="fixed windows: start every HOP s (default: --window)")
    pp.add_argument("--max-seconds", type=float, default=600.0, help="with --segment: the longest file")
    pp.add_argument("--batch-size", type=int, default=16, help="utterances per forward pass")
    add_min_confidence_option(pp, "for a file (or segment)")
    add_threads_option(pp, None, "torch threads (auto: 2 for a pretrained LLM's bundle, else 1)")
    add_progress_option(pp)
    pp.set_defaults(fn=cmd_predict)

    ch = sub.add_parser("chat", help="E-chat: the emotion recognised in an utterance and the reply to it")
    ch.add_argument("audio", help="the user's utterance (audio file)")
    ch.add_argument("--model", default="runs/echat/stage2", help="an E-chat run or checkpoint (default: the demo's)")
    ch.set_defaults(fn=cmd_chat)

    t = sub.add_parser("train", help="run a training recipe")
    t.add_argument("recipe", choices=sorted(registry.TRAINING))
    t.add_argument("--config", default=None, help="packaged config name or YAML file (the recipe's dataclass is the "
                                                  "schema; default: the recipe's first config)")
    t.add_argument("--profile", default="demo", choices=list(registry.PROFILES),
                   help="tiny: a few steps on data/tiny (smoke test); demo: the config as it is")
    add_set_option(t)
    t.set_defaults(fn=cmd_train)

    sv = sub.add_parser("serve", help="the emotion-aware voice service (HTTP API, chat, web page)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--bundle", default="auto", help="model bundle (default 'auto': the shipped SmolLM2 model when "
                    "it and the packaged SmolLM2 are installed, else the demo's runs/demo/bundle)")
    sv.add_argument("--data-dir", default="data/service", help="speakers, enrollments and API keys")
    sv.add_argument("--llm", default="smollm2", help="chat LLM: smollm2 (packaged), tiny-llama (random) or a local dir")
    sv.add_argument("--reply-prompt", choices=["system", "voice-note"], default="system",
                    help="how the chat LLM is told the recognised emotion (benchmarks/chat_replies.py)")
    sv.add_argument("--repetition-penalty", type=float, default=1.2, help="of the chat LLM's decoding (1: none)")
    sv.add_argument("--echat", default=None, metavar="DIR",
                    help="E-chat checkpoint: answers chat turns that carry audio (text turns keep --llm)")
    sv.add_argument("--asr", default=None, metavar="none|whisper-tiny.en|DIR",
                    help="speech recognition of audio turns (default: the packaged Whisper tiny.en when installed)")
    sv.add_argument("--public-read", action="store_true",
                    help="GET requests need no API key (they then see every speaker); default: keys for reads too")
    sv.add_argument("--rate-limit", default=None, metavar="N/min", help="requests per API key (token bucket; 429)")
    sv.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                    help="allow browser pages from this origin (repeatable; * for any)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body")
    sv.add_argument("--max-seconds", type=float, default=300.0, help="longest audio (longer than a window: "
                    "per-segment emotions)")
    sv.add_argument("--window-seconds", type=float, default=4.0, help="segment length for long audio")
    sv.add_argument("--segment-mode", choices=["fixed", "energy"], default="fixed",
                    help="long audio: fixed windows or energy-detected speech regions")
    sv.add_argument("--max-prompt-chars", type=int, default=32000, help="longest chat text (checked before "
                    "tokenising)")
    add_min_confidence_option(sv, "by default for an upload (a request's min_confidence overrides it)")
    add_threads_option(sv, 2)
    sv.add_argument("--quiet", action="store_true", help="log warnings only")
    sv.set_defaults(fn=cmd_serve)

    ak = sub.add_parser("apikey", help="API keys of the service")
    ak.add_argument("action", choices=["create", "list", "revoke"])
    ak.add_argument("name", nargs="?", default=None, help="key name (create, revoke)")
    ak.add_argument("--data-dir", default="data/service")
    ak.add_argument("--admin", action="store_true",
                    help="create: the key sees and changes every speaker (an ordinary key only its own)")
    ak.set_defaults(fn=cmd_apikey)

    sfd = s.add_parser("from-description", help="paper 001: an LLM-written, TTS-spoken corpus from a description")
    sfd.add_argument("description", help="description YAML, or a packaged one: iemocap, msp_podcast, synth_target")
    sfd.add_argument("--out", default=None, help="output folder (default: data/llm_<description>)")
    sfd.add_argument("--n", type=int, default=200, help="utterances of the balanced corpus (default: 200)")
    sfd.add_argument("--per-call", type=int, default=5, help="lines asked for in one LLM call")
    sfd.add_argument("--temperature", type=float, default=0.8)
    sfd.add_argument("--max-tokens", type=int, default=200)
    sfd.add_argument("--max-minutes", type=float, default=None, help="time budget for new LLM calls")
    add_backend_options(sfd, "writer")
    sfd.add_argument("--speakers", type=int, default=12, help="TTS speakers (espeak-ng voices)")
    sfd.add_argument("--prosody", action="store_true", help="speak each line with its emotion's prosody, not neutral")
    sfd.add_argument("--text-only", action="store_true", help="stop after the text")
    sfd.add_argument("--seed", type=int, default=0)
    sfd.add_argument("--workers", type=int, default=None, help="TTS processes (default: min(2, cores))")
    add_threads_option(sfd, None, "torch threads for the LLM (auto: 2 for smollm2)")
    add_progress_option(sfd)
    sfd.set_defaults(fn=cmd_synth_from_description)

    lv = sub.add_parser("levels", help="pitch/energy/tempo levels of a prepared corpus, measured from its audio")
    lv.add_argument("corpus", help="a prepared corpus (emoslm prepare)")
    lv.add_argument("--out", default=None, help="write the manifests here (default: in place)")
    lv.add_argument("--reference", default="train", help="the split whose terciles set the thresholds")
    lv.add_argument("--overwrite", action="store_true", help="replace levels the corpus already has")
    lv.add_argument("--workers", type=int, default=1)
    lv.set_defaults(fn=cmd_levels)

    ca = sub.add_parser("calibrate", help="fit a bundle's temperature on a dev split; writes its calibration.json")
    ca.add_argument("--bundle", default="runs/demo/bundle", help="model bundle (default: the demo's)")
    ca.add_argument("--corpus", required=True, help="a prepared corpus (emoslm prepare) with the split to fit on")
    ca.add_argument("--split", default="dev",
                    help="the split of speakers to fit on (default: dev; not the test speakers, whose evaluation "
                         "it would bias)")
    ca.add_argument("--k", default="0,1,4,7", help="enrollment sizes of the episodes, pooled (default: 0,1,4,7)")
    ca.add_argument("--episodes-per-k", type=int, default=500, help="at most this many episodes per k")
    ca.add_argument("--seed", type=int, default=0)
    add_progress_option(ca)
    ca.set_defaults(fn=cmd_calibrate)

    bu = sub.add_parser("bundle", help="a model bundle for predict/serve from a runs folder (or the shipped models)")
    bu.add_argument("runs", help="a demo-style runs folder (relative/encoder + stage2/), or 'shipped'")
    bu.add_argument("out", help="the bundle folder to write")
    bu.set_defaults(fn=cmd_bundle)

    spl = sub.add_parser("split", help="cut a prepared corpus into train/dev/test (speaker-disjoint by default)")
    spl.add_argument("corpus", help="a prepared corpus (emoslm prepare)")
    spl.add_argument("out", help="folder for the new manifests")
    spl.add_argument("--protocol", default="speaker_disjoint",
                     help="speaker_disjoint (default), leave_one_speaker_out, leave_one_session_out, predefined")
    spl.add_argument("--fold", default=None, help="the fold of a many-fold protocol (default: the first)")
    add_set_option(spl, "a protocol parameter, e.g. train=0.6 dev=0.2 test=0.2 seed=1")
    spl.set_defaults(fn=cmd_split)

    di = sub.add_parser("dual-info", help="paper 002: the dual-information speech LM (train + Tables I, III, IV)")
    di.add_argument("what", choices=["eval"], help="eval: Tables I, III, IV of --models (training: emoslm run "
                                                   "dual_info)")
    di.add_argument("--models", nargs="*", default=[], metavar="NAME=DIR", help="checkpoints to evaluate (eval)")
    di.add_argument("--data", default="data/synth_demo")
    di.add_argument("--conversations", default="data/conversations_demo")
    di.add_argument("--runs", default="runs/dual_info")
    di.add_argument("--steps", default="150,100,100", help="steps of stages 1, 2, 3")
    di.add_argument("--minutes", type=float, default=12.0, help="time cap per stage")
    di.add_argument("--test-utterances", type=int, default=40)
    di.add_argument("--test-conversations", type=int, default=20)
    add_backend_options(di, "judge", prefix="judge")
    di.add_argument("--judge-check-pairs", type=int, default=20, metavar="N",
                    help="relevant/irrelevant reply pairs the judge must rank (>= 80 %% right) before Table IV "
                         "prints its scores; there is no way to skip the check")
    add_threads_option(di, 2)
    add_set_option(di, "a recipe value of every stage")
    di.set_defaults(fn=cmd_dual_info)

    i = sub.add_parser("info", help="what this installation has")
    i.set_defaults(fn=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    if not sys.stderr.isatty():  # progress bars into a log file: one line every few seconds, not hundreds
        os.environ.setdefault("TQDM_MININTERVAL", "10")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.fn(args) or 0)
    except EmoslmError as e:
        _print_error(str(e))
        return 2
    except KeyboardInterrupt:
        print("emoslm: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the last line of defence: one line, never a traceback (unless asked for with -v)
        if args.verbose:
            logging.getLogger("emoslm").exception("unexpected error in emoslm %s", args.command)
        _print_error(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
                     "" if args.verbose else " (unexpected; rerun with -v for the traceback)")
        return 2


def _print_error(message: str, suffix: str = "") -> None:
    """``emoslm: error: MESSAGE`` on one line of stderr, whatever characters the message holds."""
    line = "emoslm: error: " + " ".join(part.strip() for part in message.splitlines() if part.strip()) + suffix
    enc = getattr(sys.stderr, "encoding", None) or "utf-8"
    try:
        line.encode(enc)
    except UnicodeEncodeError:  # e.g. a surrogate from a non-UTF-8 file name
        line = line.encode(enc, "backslashreplace").decode(enc)
    except LookupError:
        line = line.encode("ascii", "backslashreplace").decode("ascii")
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

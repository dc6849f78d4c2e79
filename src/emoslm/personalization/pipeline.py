"""The main job: synthesise the demo corpus, train paper 000's models, evaluate them, write the report.

Each step is a recipe run with a packaged config (``src/emoslm/configs``) whose paths and step counts are set
here; a step whose finished output was trained with the same settings is skipped, so an interrupted demo
continues where it stopped, and a step of other settings is trained again
(:func:`emoslm.training.reuse.check_run`). Profiles:

- ``demo``: the README's main job on the demo corpus, within about 15 minutes on 2 cores;
- ``long``: longer schedules on the same corpus (the benchmark's numbers);
- ``tiny``: the same steps with a handful of updates on the tiny corpus (tests, smoke runs).

``checkpoints=DIR`` evaluates the models found there (one folder per step) instead of training them; ``emoslm
demo`` uses the shipped ones (``assets/paper000``) unless ``--train-all``.

``seed=N`` makes one training replicate: every step's training (:data:`SEED_FIELDS`: the initialisation and
batches, the augmentation styles and channels) and the eGeMAPS peer's training draws use seed N, while the test
episodes and the label controls stay those of seed 0, so that every replicate is scored on the same episodes and
the spread over seeds is the training's (``benchmarks/personalization_seeds.py`` runs several). Seed 0 is
today's run, setting for setting.

``extra_splits`` evaluates other splits of the corpus with the same models, each into ``RUNS/eval_<split>``
(e.g. ``unseen``: speakers of a held-out voice family, see :data:`EXTRA_EVAL_SPLITS`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Sequence

from emoslm.assets import SHIPPED_ROOT, smollm2_gguf
from emoslm.config import load_config
from emoslm.data.manifests import load_prepared
from emoslm.errors import EmoslmError
from emoslm.personalization import classifier, speech_lm
from emoslm.personalization.evaluation import (
    EvalPlan,
    ICLModelSpec,
    run_eval,
    write_report,
)
from emoslm.personalization.inference import (
    SHIPPED_LLM_BUNDLE,
    bundle_threads,
    save_bundle,
    write_calibration,
)
from emoslm.personalization.model import SpeechICLModel
from emoslm.reporting import DASH, TableData, rich_table
from emoslm.synth.corpus import print_summary, synthesize_corpus
from emoslm.training.reuse import check_run, clear_run, same_weights

#: models shipped with the package (made by the ``long`` profile; ``assets/paper000/README.md`` has the command)
SHIPPED_CHECKPOINTS = SHIPPED_ROOT / "paper000"

#: Splits evaluated besides the test split when the corpus has them (``extra_splits=None``): ``unseen`` holds
#: speakers of a voice family and an emotion rendering that no training split has.
EXTRA_EVAL_SPLITS = ("unseen",)

#: The fields of a step's config that seed its training (those it has are set to the run's seed when that is
#: not 0): initialisation and batches, the augmentation styles, the transmission channels.
SEED_FIELDS = ("train.seed", "style_seed", "channel_seed")

#: steps per training run, per profile
PROFILES: dict[str, dict[str, int]] = {
    # the main job: 13m41s on 2 cores from a fresh clone (after a 1-minute install), with the shipped relative
    # encoder and stage 2 (their steps here are used by --train-all only) and the shipped SmolLM2 model scored
    # at the end
    "demo": {"scratch": 250, "relative": 300, "classifier": 120, "personalized_a": 60, "stage1": 200, "stage2": 300, "table4": 80,
             "styles": 4, "lo_k_max": 2},
    # the schedule of benchmarks/results/personalization.md (about 45 minutes on 2 cores)
    "long": {"scratch": 400, "relative": 800, "classifier": 200, "stage1": 300, "stage2": 800, "table4": 300, "styles": 8},
    "tiny": {"scratch": 12, "relative": 12, "classifier": 6, "stage1": 6, "stage2": 10, "table4": 6, "styles": 2},
}


@dataclass
class Step:
    name: str
    recipe: str  # "classifier" | "speech_lm"
    config: str
    steps_key: str
    overrides: tuple[str, ...] = ()


def _steps(root: Path) -> list[Step]:
    enc = f"encoder={root}/relative/encoder"
    init = f"init_from={root}/stage1/checkpoints/best/model"
    return [
        Step("scratch", "classifier", "classifier_scratch", "scratch"),
        Step("relative", "classifier", "classifier_relative", "relative"),
        Step("pretrained", "classifier", "classifier_pretrained", "classifier", (enc,)),
        Step("personalized_n", "classifier", "classifier_personalized_n", "classifier", (enc,)),
        Step("personalized_a", "classifier", "classifier_personalized_a", "personalized_a", (enc,)),
        Step("stage1", "speech_lm", "speech_lm_stage1", "stage1", (enc,)),
        Step("stage2", "speech_lm", "speech_lm_stage2", "stage2", (enc, init)),
        Step("to_ld7", "speech_lm", "speech_lm_to_ld7", "table4", (enc, init)),
        Step("neutral", "speech_lm", "speech_lm_neutral", "table4", (enc, init)),
    ]


def _best(root: Path, name: str) -> str:
    return str(root / name / "checkpoints" / "best" / "model")


def demo_models(root: str | Path, existing_only: bool = False):
    """The models of a demo-style runs folder: ({name: classifier checkpoint}, [ICLModelSpec], frozen encoder)."""
    root = Path(root)
    enc = str(root / "relative" / "encoder")
    classifiers = {name: _best(root, d) for name, d in (
        ("Scratch", "scratch"), ("Pretrained", "pretrained"), ("Personalized_N", "personalized_n"),
        ("Personalized_A", "personalized_a"), ("Speaker-relative (7 unlabeled)", "relative"))}
    icl = [ICLModelSpec(name, _best(root, d), enc, ts, role) for name, d, ts, role in (
        ("Proposed (MetaICL TU+LU_0:7)", "stage2", "TU+LU_{0:7}", "main"),
        ("0-shot (stage 1)", "stage1", "0-shot", "stage1"),
        ("MetaICL TO+LD_7", "to_ld7", "TO+LD_7", "table4"),
        ("MetaICL Neutral_0:7", "neutral", "Neutral_{0:7}", "table4"))]
    if existing_only:
        classifiers = {n: p for n, p in classifiers.items() if Path(p).is_dir()}
        icl = [m for m in icl if Path(m.path).is_dir()]
    return classifiers, icl, enc


def bundle_from_runs(root: str | Path, out: str | Path, meta: dict | None = None) -> Path:
    """The service's and ``emoslm predict``'s bundle from a demo-style runs folder: its frozen encoder
    (``relative/encoder``) and its MetaICL speech LM (``stage2``'s best checkpoint)."""
    root = Path(root)
    enc, model = root / "relative" / "encoder", Path(_best(root, "stage2"))
    for need, made_by in ((enc, "emoslm train classifier --config classifier_relative"),
                          (model, "emoslm train speech_lm --config speech_lm_stage2")):
        if not need.is_dir():
            raise EmoslmError(f"{root} has no {need.relative_to(root)} (made by `{made_by} --set out_dir=...`)")
    return save_bundle(out, enc, SpeechICLModel.from_pretrained(model), {"runs": str(root.resolve()), **(meta or {})})


def _done(out: Path) -> bool:
    return (out / "train_summary.json").is_file() and (out / "checkpoints" / "best" / "model").is_dir()


@dataclass
class PersonalizationRun:
    """``emoslm run personalization`` (= ``emoslm demo``): the corpus, paper 000's models, Tables II-IV, the report."""

    out: str = "data"  # the corpus goes to OUT/synth_<preset>
    runs: str | None = None  # models and the report (default: runs/<profile or preset>)
    preset: str = "demo"  # corpus size: tiny | demo | full
    profile: str | None = None  # training schedule: tiny | demo | long (default: tiny for the tiny preset, else demo)
    workers: int | None = None
    checkpoints: str | None = None  # evaluate the models found here instead of training them
    train_all: bool = False  # train every model, the shipped ones included
    seed: int = 0  # the training replicate (every model, the peer's draws); other than 0 trains every model
    progress: bool = True
    #: also score the shipped SmolLM2 model (paper 000's main model) on its own corpus's test split
    #: (:func:`evaluate_shipped_llm`); None: on for the default job (demo preset and profile, seed 0)
    shipped_llm: bool | None = None


def run(cfg: PersonalizationRun) -> dict:
    """The demo pipeline; on the demo corpus and schedule it evaluates the shipped encoder and MetaICL model
    (``assets/paper000``) unless ``train_all``, ``checkpoints`` or a ``seed`` other than 0 says otherwise, then
    the shipped SmolLM2 model (``assets/paper000/smollm2``) on the test split of the corpus it was made for."""
    checkpoints = cfg.checkpoints
    default_job = cfg.seed == 0 and cfg.preset == "demo" and cfg.profile in (None, "demo")
    if checkpoints is None and not cfg.train_all and default_job:
        checkpoints = str(SHIPPED_CHECKPOINTS)  # the long-trained encoder and MetaICL model (see its README)
    runs = cfg.runs or f"runs/{cfg.profile or cfg.preset}"
    out = run_personalization_demo(cfg.out, runs, preset=cfg.preset, workers=cfg.workers, profile=cfg.profile,
                                   checkpoints=checkpoints, seed=cfg.seed, extra_splits=None, progress=cfg.progress)
    if cfg.shipped_llm or (cfg.shipped_llm is None and default_job):
        out["shipped_llm"] = evaluate_shipped_llm(cfg.out, runs, workers=cfg.workers, progress=cfg.progress)
    return out


#: The shipped SmolLM2 model's corpus: the heldout preset (no sentence, base voice or variant shared between
#: splits), whose test speakers it never heard; the demo corpus shares voices and sentences with its training
#: split and renders emotion otherwise, so it would measure neither.
SHIPPED_LLM_PRESET = "heldout"
#: The demo's view of the shipped SmolLM2 model: 0 and 7 shots (TU+LD) with the deranged-label control at 7, on
#: every test utterance (the full table, k = 0,1,4,7 and the unseen split: benchmarks/personalization_llm.py)
SHIPPED_LLM_KS = (0, 7)
SHIPPED_LLM_NAME = "Proposed (SmolLM2 MetaICL, shipped)"


def evaluate_shipped_llm(data_root: str | Path = "data", runs_root: str | Path = "runs/demo", *,
                         preset: str = SHIPPED_LLM_PRESET, bundle: str | Path | None = None,
                         workers: int | None = None, progress: bool = True, console=None) -> dict | None:
    """Score the shipped pretrained-LLM model of paper 000 (SmolLM2-135M-Instruct LoRA MetaICL, a bundle of
    ``assets/paper000/smollm2``) on the test split of ``preset``'s corpus (``DATA/synth_<preset>`` when it is
    there, else that split alone synthesised into ``DATA/synth_<preset>_test``) at
    :data:`SHIPPED_LLM_KS`, with its deranged-label control, into ``RUNS/eval_smollm2``. Its torch threads: 2
    (the SmolLM2 setting on 2 cores), restored afterwards. Returns {"report": paths, "seconds", "ua_spk": {row:
    value}}; None, with a line saying why, when the bundle or the packaged SmolLM2 weights are missing."""
    import torch
    from rich.console import Console

    console = console or Console()
    bundle = Path(bundle) if bundle is not None else SHIPPED_LLM_BUNDLE
    if not ((bundle / "speech_lm").is_dir() and (bundle / "encoder").is_dir()):
        console.print(f"[yellow]no SmolLM2 bundle at {bundle}: the shipped main model is not evaluated[/yellow]")
        return None
    try:
        smollm2_gguf()
    except EmoslmError as e:
        console.print(f"[yellow]the shipped SmolLM2 model is not evaluated: {e}[/yellow]")
        return None
    t0 = time.perf_counter()
    corpus = Path(data_root) / f"synth_{preset}"
    if (corpus / "summary.json").is_file():  # the whole corpus (a benchmark's): its test split
        summary = synthesize_corpus(corpus, preset, workers=workers, progress=progress)
    else:  # the test split alone: the same audio, a ninth of the synthesis
        corpus = Path(data_root) / f"synth_{preset}_test"
        summary = synthesize_corpus(corpus, preset, workers=workers, progress=progress, splits=("test",))
    print_summary(summary, console)
    plan = EvalPlan(corpus=str(corpus), out_dir=str(Path(runs_root) / "eval_smollm2"), split="test", peer=False,
                    k_max=max(SHIPPED_LLM_KS), lo_k_max=0, ks=SHIPPED_LLM_KS, settings=("TU+LD",),
                    label_controls=("deranged",), calibrate=False,
                    icl=[ICLModelSpec(SHIPPED_LLM_NAME, str(bundle / "speech_lm"), str(bundle / "encoder"),
                                      "TU+LU_{0:7}", "main")])
    threads = torch.get_num_threads()
    torch.set_num_threads(bundle_threads(bundle, None))
    try:
        console.print(f"[bold]evaluating the shipped SmolLM2 model[/bold] ({bundle}) on the test split of {corpus}")
        results = run_eval(plan, progress=progress)
    finally:
        torch.set_num_threads(threads)
    paths = write_report(results, plan.out_dir, render=False)  # the terminal gets the short table below
    seconds = time.perf_counter() - t0
    ua = {}
    for name, row in ((SHIPPED_LLM_NAME, "enrollment labels as given"),
                      (f"{SHIPPED_LLM_NAME}, deranged enrollment labels", "every enrollment label wrong")):
        ua[row] = {k: (e.ua_spk["mean"] if (e := results.get(name, "TU+LD", k)) else None) for k in SHIPPED_LLM_KS}
    console.print(shipped_llm_table(ua, corpus, results.metadata.split_protocol.get("test_speakers")))
    console.print(f"SmolLM2 report: {paths['html']} ({seconds:.0f} s)")
    return {"report": paths, "seconds": seconds, "ua_spk": ua}


def shipped_llm_table(ua: dict[str, dict[int, float | None]], corpus: Path, n_speakers: int | None):
    """The terminal table of :func:`evaluate_shipped_llm`: UA_spk per k, with the labels as given and deranged."""
    rows = [[name, *[DASH if v is None else f"{v:.3f}" for v in by_k.values()]] for name, by_k in ua.items()]
    return rich_table(TableData(
        title=f"Shipped SmolLM2 MetaICL model: UA_spk on the test split of {corpus} ({n_speakers} speakers, TU+LD)",
        columns=["enrollment", *[f"{k}-shot" for k in SHIPPED_LLM_KS]], rows=rows))


def run_personalization_demo(data_root: str | Path = "data", runs_root: str | Path = "runs/demo", *,
                             preset: str = "demo", profile: str | None = None, workers: int | None = None,
                             checkpoints: str | Path | None = None, seed: int = 0,
                             extra_splits: Sequence[str] | None = (), progress: bool = True, console=None) -> dict:
    """Run every step; return {"summary": corpus summary, "timings": {...}, "report": paths, "extra_reports":
    {split: paths}}.

    ``seed``: the replicate (see the module docstring). With ``checkpoints`` the models found there are copied
    into the runs folder, not trained, so they are the same model whatever the seed: a run of another seed than 0
    must train everything (``checkpoints=None``) and is refused otherwise.
    ``extra_splits``: splits evaluated after the test split, each into ``RUNS/eval_<split>``; None: those of
    :data:`EXTRA_EVAL_SPLITS` that the corpus has.
    """
    from rich.console import Console

    if seed != 0 and checkpoints is not None:
        raise EmoslmError(f"seed {seed}: the models of {checkpoints} were trained once, with seed 0; a run of "
                          "another seed trains every model (no checkpoints; `emoslm demo --train-all`)")

    console = console or Console()
    profile = profile or ("tiny" if preset in ("tiny", "heldout_tiny") else "demo")
    steps = {"personalized_a": PROFILES[profile]["classifier"], "lo_k_max": 4, **PROFILES[profile]}
    corpus = Path(data_root) / f"synth_{preset}"
    root = Path(runs_root)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    summary = synthesize_corpus(corpus, preset, workers=workers, progress=progress)
    timings["synthesis"] = time.perf_counter() - t0
    print_summary(summary, console)

    recipes = {"classifier": (classifier, "ClassifierConfig"), "speech_lm": (speech_lm, "SpeechLMConfig")}
    shipped = Path(checkpoints) if checkpoints else None
    for step in _steps(root):
        out = root / step.name
        if shipped is not None and (step.recipe == "speech_lm" or step.name in ("scratch", "relative")):
            src = shipped / step.name
            if src.is_dir():  # evaluate the given model (not trained here): copy it into the run folder
                if not (_done(out) and same_weights(src, out)):
                    clear_run(out)
                    shutil.copytree(src, out, dirs_exist_ok=True)
                console.print(f"[dim]{step.name}: the model of {src}, not trained here[/dim]")
                continue
        module, cfg_name = recipes[step.recipe]
        overrides = [f"corpus={corpus}", f"out_dir={out}", f"train.max_steps={steps[step.steps_key]}",
                     f"train.progress={progress}", *step.overrides]
        if step.recipe == "speech_lm":
            overrides.append(f"augment_styles={steps['styles']}")
        if profile == "tiny":
            overrides += ["train.eval_every=5", "train.save_every=5", "train.warmup_steps=2"]
        if seed != 0:  # seed 0 is every config's default: its runs keep their settings (and stay reusable)
            have = {f.name for f in fields(getattr(module, cfg_name))}
            overrides += [f"{name}={seed}" for name in SEED_FIELDS if name.split(".")[0] in have]
        cfg = load_config(getattr(module, cfg_name), step.config, overrides)
        check = check_run(out, cfg, step.name)  # reused only when trained with these settings
        if check.reuse:
            console.print(f"[dim]{step.name}: found {out}, trained with the same settings; not retrained[/dim]")
            continue
        console.print(f"[bold]training {step.name}[/bold] ({step.recipe}, {cfg.train.max_steps} steps)")
        t = time.perf_counter()
        module.run(cfg)
        timings[step.name] = time.perf_counter() - t

    t = time.perf_counter()
    classifiers, icl, enc = demo_models(root)
    plan = EvalPlan(corpus=str(corpus), out_dir=str(root / "eval"), classifiers=classifiers, icl=icl,
                    k_max=7 if profile != "tiny" else 2, lo_k_max=steps["lo_k_max"] if profile != "tiny" else 1,
                    peer_seed=seed)
    training = {"profile": profile, "steps": steps, "seed": seed,
                "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    results = run_eval(plan, progress=progress)
    results.metadata.training = training
    paths = write_report(results, plan.out_dir, console)
    timings["evaluation"] = time.perf_counter() - t

    if extra_splits is None:
        extra_splits = [s for s in EXTRA_EVAL_SPLITS if s in load_prepared(corpus)]
    extra_reports = {}
    for split in extra_splits:
        if split == plan.split:
            continue
        t = time.perf_counter()
        # as `emoslm eval --split SPLIT`: the same models and seed; its own folder, so its own episode sets
        extra = replace(plan, split=split, out_dir=str(root / f"eval_{split}"))
        split_results = run_eval(extra, progress=progress)
        split_results.metadata.training = training
        extra_reports[split] = write_report(split_results, extra.out_dir, console)
        timings[f"evaluation ({split})"] = time.perf_counter() - t

    bundle = bundle_from_runs(root, root / "bundle", {"corpus": str(corpus), "profile": profile})
    fit = results.calibration.get("models", {}).get(icl[0].name) if icl else None
    if fit is not None and icl[0].path == _best(root, "stage2"):  # the bundle's model: its dev-split temperature
        cal = results.calibration
        write_calibration(bundle, {
            "temperature": fit["temperature"], "fitted_on": f"the {cal['split']} split of {corpus} (emoslm eval: "
            f"{cal['settings']}, at most {cal['episodes_per_k']} episodes per k)", "corpus": str(corpus),
            "split": cal["split"], "n": fit["n_dev"], "n_bins": cal["n_bins"], "ece_before": fit["dev_ece_before"],
            "ece_after": fit["dev_ece_after"], "test_ece_before": fit["test"]["ece_before"],
            "test_ece_after": fit["test"]["ece_after"]})
    (root / "demo_timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=2))
    console.print(f"report: {paths['html']}  (markdown: {paths['markdown']}); model bundle: {root / 'bundle'}")
    return {"summary": summary, "timings": timings, "report": paths, "extra_reports": extra_reports}

"""The recipe registry: one table of every recipe of the four papers (SpeechBrain's ``tests/recipes/*.csv``,
torchtune's ``_recipe_registry.py``).

Each row names its paper, its entry point and config schema (dotted ``module:name`` strings, resolved only when
the recipe runs, so this table imports no paper), the packaged configs it reads, the data it needs, the overrides
of each profile (``tiny`` runs in seconds-to-a-minute on tiny data and is what the tests run), the files a run
leaves behind, and the reference numbers with the results file they come from.

Two kinds of rows:

- ``pipeline``: a paper end to end, ``emoslm run <name> [--profile tiny|demo|long] [--set key=value ...]``;
- ``train``: one training recipe, ``emoslm train <name> --config <config> [--set key=value ...]``.

Paths in the profiles are relative to the working directory: the ``tiny`` profile keeps its data under
``data/tiny`` and its runs under ``runs/tiny``, so tiny runs of different recipes share one tiny corpus.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from emoslm.config import load_config
from emoslm.errors import EmoslmError

PROFILES = ("tiny", "demo", "long")


@dataclass(frozen=True)
class Recipe:
    name: str
    paper: str  # "000" | "001" | "002" | "003"
    kind: str  # "pipeline" | "train"
    entry: str  # "module:function", called with the config
    schema: str  # "module:Dataclass", the config's schema
    configs: tuple[str, ...] = ()  # the packaged configs it reads (the first is the default)
    data: str = ""  # what data it needs, in words
    profiles: dict[str, tuple[str, ...]] = field(default_factory=dict)  # profile -> overrides
    outputs: tuple[str, ...] = ()  # files a tiny run leaves (relative to the working directory)
    reference: str = ""  # the numbers it reproduces
    results_file: str = ""  # where those numbers are (benchmarks/results/...)

    def resolve(self, what: str) -> Any:
        module, _, name = (self.entry if what == "entry" else self.schema).partition(":")
        return getattr(importlib.import_module(module), name)

    def config(self, profile: str = "demo", config: str | None = None, overrides: list[str] | None = None) -> Any:
        """The config object: the schema's defaults <- the packaged config <- the profile <- ``overrides``."""
        if profile not in PROFILES:
            raise EmoslmError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
        name = config or (self.configs[0] if self.configs else None)
        return load_config(self.resolve("schema"), name, [*self.profiles.get(profile, ()), *(overrides or [])])

    def run(self, cfg: Any) -> Any:
        fn: Callable[[Any], Any] = self.resolve("entry")
        return fn(cfg)


_TINY_TRAIN = ("train.max_steps=3", "train.eval_every=3", "train.save_every=3", "train.warmup_steps=1",
               "train.progress=false", "batch_size=4")

RECIPES: tuple[Recipe, ...] = (
    # ---------------------------------------------------------------------------------------- papers end to end
    Recipe(
        "personalization", "000", "pipeline", "emoslm.personalization.pipeline:run",
        "emoslm.personalization.pipeline:PersonalizationRun",
        data="the synthetic corpus (made by the run) or shipped checkpoints (assets/paper000)",
        profiles={"tiny": ("preset=tiny", "profile=tiny", "out=data/tiny", "runs=runs/tiny/personalization",
                           "progress=false"),
                  "demo": (),
                  "long": ("profile=long", "train_all=true")},
        outputs=("runs/tiny/personalization/eval/report.html", "runs/tiny/personalization/eval/results.json",
                 "runs/tiny/personalization/bundle/speech_lm/model.safetensors"),
        reference="UA_spk 0.600 (0-shot) -> 0.790 (7 shots), TU+LD, 20 held-out speakers, long profile",
        results_file="benchmarks/results/personalization.md"),
    Recipe(
        "zeroshot", "001", "pipeline", "emoslm.zeroshot.pipeline:run", "emoslm.zeroshot.pipeline:ZeroShotConfig",
        configs=("synth", "iemocap", "msp_podcast"),
        data="a corpus description; the target and source corpora (synthesised for `synth`, prepared for the others)",
        profiles={"tiny": ("description=tiny_target", "data_dir=data/tiny/zeroshot", "out_dir=runs/tiny/zeroshot",
                           "llm.threads=1", "generation.n_utterances=4", "generation.per_call=2",
                           "generation.max_tokens=60", "generation.max_calls_factor=8", "tts.speakers=2",
                           "tts.workers=1", "target.path=data/tiny/zeroshot/target", "target.preset=tiny",
                           "target.splits=[test]", "source.path=data/tiny/zeroshot/source", "source.speakers=6",
                           "source.sentences=1", "head.epochs=5", "upstreams=[minilm, egemaps]", "progress=false"),
                  "demo": (), "long": ("generation.n_utterances=800", "generation.max_minutes=90")},
        outputs=("runs/tiny/zeroshot/results.json", "runs/tiny/zeroshot/report.md", "runs/tiny/zeroshot/report.html"),
        reference="UA on the synthetic target: neutral-TTS LLM corpus 0.267-0.279, with prosody 0.498-0.510, "
                  "second corpus 0.615-0.638 (chance 0.250)",
        results_file="benchmarks/results/zero_shot.md"),
    Recipe(
        "dual_info", "002", "pipeline", "emoslm.dual_info.pipeline:run_all", "emoslm.dual_info.pipeline:DualInfoRun",
        data="the synthetic corpus and the dual-information conversations (both made by the run)",
        profiles={"tiny": ("data=data/tiny/synth_tiny", "corpus_preset=tiny",
                           "conversations=data/tiny/conversations_tiny", "conversation_preset=tiny",
                           "features=data/tiny/features", "runs=runs/tiny/dual_info", "llm=tiny-llama",
                           "steps=[3, 3, 3]", "minutes=null", "batch_size=4", "threads=1", "test_utterances=5",
                           "test_conversations=2", "judge=tiny-llama", "progress=false",
                           "extra=[dev_examples=4, model.p_ff=64, model.l_hidden=64]"),
                  "demo": (), "long": ("steps=[696, 300, 300]", "minutes=16", "test_utterances=60")},
        outputs=("runs/tiny/dual_info/report.html", "runs/tiny/dual_info/results.json",
                 "runs/tiny/dual_info/stage3/train_summary.json"),
        reference="ASR WER with L-Embs only 133.8 % (stage 1) -> 68.8 % (after ERR and stage 3); P&L 13.1 %",
        results_file="benchmarks/results/dual_info.md"),
    Recipe(
        "echat", "003", "pipeline", "emoslm.echat.pipeline:run", "emoslm.echat.pipeline:EChatRun",
        data="the dialogue data (made by the run); for the cascade, an SER bundle (`make demo`)",
        profiles={"tiny": ("data=data/tiny/echat_tiny", "dialogue_preset=tiny", "runs=runs/tiny/echat",
                           "asr_corpus=null", "encoder_init=null", "ser_bundle=null", "backend=tiny-llama",
                           "llm=tiny-llama", "steps=3", "minutes=null", "progress=false",
                           "extra=[model.d_connector=32, model.connector_heads=4, model.connector_ff=64, "
                           "batch_size=4, train.warmup_steps=1]"),
                  "demo": (), "long": ("steps=600", "minutes=30")},
        outputs=("runs/tiny/echat/report.html", "runs/tiny/echat/results.json",
                 "runs/tiny/echat/stage2/train_summary.json"),
        reference="BLEU-1 24.85 (E-chat) vs 39.26 (cascade), SIM 42.58 vs 46.44, 18 test entries",
        results_file="benchmarks/results/echat.md"),
    # ---------------------------------------------------------------------------------------- training recipes
    Recipe(
        "classifier", "000", "train", "emoslm.personalization.classifier:run",
        "emoslm.personalization.classifier:ClassifierConfig",
        configs=("classifier_scratch", "classifier_relative", "classifier_pretrained", "classifier_personalized_n",
                 "classifier_personalized_a"),
        data="a prepared corpus with emotion labels (emoslm prepare / synth corpus)",
        profiles={"tiny": ("corpus=data/tiny/synth_tiny", "out_dir=runs/tiny/classifier", *_TINY_TRAIN)},
        outputs=("runs/tiny/classifier/encoder/model.safetensors", "runs/tiny/classifier/train_summary.json"),
        reference="UA_spk: Scratch and the classifier baselines of Table II",
        results_file="benchmarks/results/personalization.md"),
    Recipe(
        "speech_lm", "000", "train", "emoslm.personalization.speech_lm:run",
        "emoslm.personalization.speech_lm:SpeechLMConfig",
        configs=("speech_lm_stage1", "speech_lm_stage2", "speech_lm_to_ld7", "speech_lm_neutral", "speech_lm_smollm2"),
        data="a prepared corpus and a frozen encoder (the classifier recipe's `encoder/`)",
        profiles={"tiny": ("corpus=data/tiny/synth_tiny", "encoder=runs/tiny/classifier/encoder",
                           "out_dir=runs/tiny/speech_lm", *_TINY_TRAIN)},
        outputs=("runs/tiny/speech_lm/checkpoints/best/model/model.safetensors",
                 "runs/tiny/speech_lm/train_summary.json"),
        reference="UA_spk at k = 0..7 (Tables II-IV)",
        results_file="benchmarks/results/personalization.md"),
    Recipe(
        "dual_info", "002", "train", "emoslm.dual_info.recipe:run", "emoslm.dual_info.recipe:DualInfoRecipeConfig",
        configs=("dual_info_stage1", "dual_info_stage2", "dual_info_stage3"),
        data="a prepared corpus with transcripts and levels; stage 3 also the conversations",
        profiles={"tiny": ("data=data/tiny/synth_tiny", "features=data/tiny/features",
                           "out_dir=runs/tiny/dual_info_stage", "model.llm.name=tiny-llama", "model.p_ff=64",
                           "model.l_hidden=64", "threads=1", "dev_examples=4", "progress=false", *_TINY_TRAIN)},
        outputs=("runs/tiny/dual_info_stage/train_summary.json",),
        reference="Tables I and III", results_file="benchmarks/results/dual_info.md"),
    Recipe(
        "echat", "003", "train", "emoslm.echat.recipe:run", "emoslm.echat.recipe:EChatRecipeConfig",
        configs=("echat_stage1", "echat_stage2"),
        data="the dialogue data (emoslm synth dialogue); stage 2 also stage 1's checkpoint",
        profiles={"tiny": ("data=data/tiny/echat_tiny", "out_dir=runs/tiny/echat_stage", "model.llm.name=tiny-llama",
                           "model.d_connector=32", "model.connector_heads=4", "model.connector_ff=64",
                           "asr_corpus=null", *_TINY_TRAIN)},
        outputs=("runs/tiny/echat_stage/train_summary.json",),
        reference="Tables 2 and 3", results_file="benchmarks/results/echat.md"),
)

#: ``emoslm run <name>``: the papers end to end
PAPERS: dict[str, Recipe] = {r.name: r for r in RECIPES if r.kind == "pipeline"}
#: ``emoslm train <name>``: the training recipes
TRAINING: dict[str, Recipe] = {r.name: r for r in RECIPES if r.kind == "train"}

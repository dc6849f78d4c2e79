"""E-chat (paper 003) against the ParalinGPT-style cascade on the embedded dialogue data, in a bounded CPU budget.

1. the dialogue dataset (``emoslm synth dialogue --preset demo``; responses by the packaged SmolLM2, cached);
2. stage 1 (ASR on the dataset's training questions + the synthetic corpus's transcripts) and stage 2
   (emotional-response SFT), each capped at ``--steps`` steps and ``--minutes`` minutes on ``--threads`` threads;
   the fbank encoder starts from the demo's SER encoder (``runs/demo/bundle/encoder``, made by ``make demo``);
3. Tables 2 and 3 on the test split: E-chat and the cascade (packaged Whisper tiny.en + the demo's SER bundle +
   SmolLM2 prompted like the dataset builder), BLEU-1/4 and SIM against the topline responses.

Writes ``runs/echat/report.html`` and ``benchmarks/results/echat.md``.

    .venv/bin/python benchmarks/echat.py [--steps 150] [--minutes 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/echat_demo")
    p.add_argument("--runs", default="runs/echat")
    p.add_argument("--asr-corpus", default="data/synth_demo")
    p.add_argument("--bundle", default="runs/demo/bundle", help="SER bundle: the cascade's emotion recogniser, "
                                                                "and its encoder initialises E-chat's")
    p.add_argument("--steps", type=int, default=150, help="training steps per stage")
    p.add_argument("--minutes", type=float, default=6.0, help="time cap per stage")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test entries only")
    a = p.parse_args()

    import torch

    from emoslm.config import load_config
    from emoslm.echat import (
        Cascade,
        EChat,
        WhisperASR,
        evaluate_echat,
        to_markdown,
        write_report,
    )
    from emoslm.inference import EmotionRecognizer
    from emoslm.recipes import echat as recipe
    from emoslm.synth.dialogue import build_dialogue_dataset, load_backend

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    stats = build_dialogue_dataset(a.data, "demo", workers=1)
    t_data = time.perf_counter() - t0
    runs = Path(a.runs)
    common = [f"data={a.data}", f"train.max_steps={a.steps}", f"train.max_minutes={a.minutes}", "train.eval_every=50",
              "train.save_every=50", f"threads={a.threads}", "model.stack=4",
              f"model.encoder={json.dumps({'kind': 'fbank', 'init': str(Path(a.bundle) / 'encoder')})}"]
    summaries = {}
    for stage in (1, 2):
        extra = ([f"asr_corpus={a.asr_corpus}"] if stage == 1
                 else [f"init_from={recipe.best_checkpoint(runs / 'stage1')}"])
        cfg = load_config(recipe.EChatRecipeConfig, f"echat_stage{stage}",
                          [*common, f"out_dir={runs / f'stage{stage}'}", *extra])
        summaries[stage] = recipe.run(cfg)
    t_train = time.perf_counter() - t0 - t_data

    backend = load_backend("smollm2")
    cascade = Cascade(WhisperASR(threads=a.threads), EmotionRecognizer.load(a.bundle, threads=a.threads), backend,
                      stats["config"]["max_tokens"])
    res = evaluate_echat(a.data, EChat.load(runs / "stage2", threads=a.threads), cascade,
                         stage1=EChat.load(runs / "stage1", threads=a.threads), limit=a.limit)
    t_eval = time.perf_counter() - t0 - t_data - t_train
    table1 = (Path(a.data) / "table1.md").read_text()
    write_report(res, runs / "report.html", table1)
    (runs / "results.json").write_text(json.dumps({"results": res, "dataset": stats, "train": {
        s: {k: v for k, v in summ.items() if k != "history"} for s, summ in summaries.items()}}, indent=2))

    def stage_line(s: int) -> str:
        summ = summaries[s]
        last = summ["history"][-1] if summ["history"] else {}
        extra = f", valid emotion acc {100 * last['valid_emotion_acc']:.1f} %" if "valid_emotion_acc" in last else ""
        return (f"stage {s}: {summ['steps']} steps in {summ['seconds']:.0f} s, valid decoder loss "
                f"{last.get('valid_decoder_loss', float('nan')):.3f}{extra}")

    ex = res["examples"][0]
    text = "\n".join([
        "# E-chat (paper 003) vs the ParalinGPT-style cascade, embedded dialogue data", "",
        f"Dataset (`emoslm synth dialogue --preset demo`, responses by SmolLM2-135M-Instruct told the true emotion; "
        f"{stats['entries']} entries, {stats['questions']} questions, {stats['speakers']} espeak-ng speakers, "
        f"splits {stats['splits']}):", "", table1.rstrip(), "",
        f"E-chat: demo SER fbank encoder (init) -> 2 softmax layer weightings -> 4-layer transformer connector -> "
        f"frozen SmolLM2-135M. CPU budget: {a.threads} torch thread(s), each stage capped at {a.steps} steps "
        f"(batch 8) and {a.minutes:g} min.", "",
        "- " + stage_line(1), "- " + stage_line(2),
        f"- time: dataset {t_data:.0f} s (cached after the first run), training {t_train:.0f} s, "
        f"evaluation {t_eval:.0f} s", "",
        to_markdown(res), "",
        f"Example: question \"{ex['question']}\" said <{ex['emotion']}>; topline: \"{ex['topline']}\"; "
        f"E-chat: \"{ex['echat']}\"; cascade: \"{ex.get('cascade', '-')}\"", "",
        "Report with more examples: `runs/echat/report.html`."])
    out = write_result(ROOT / "benchmarks" / "results" / "echat.md", text,
                       "python benchmarks/echat.py " + " ".join(sys.argv[1:]))
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Synthesis throughput of the corpus pipeline against raw espeak-ng, and feature extraction speed.

Three ways to make the same utterances (same voices, texts, rate and pitch), each with the same number of
worker processes, in one run:

- ``espeak-ng program``: the ``espeak-ng`` command line writing a WAV file per utterance (what a shell
  script around espeak-ng does) -- the reference the issue names;
- ``libespeak-ng only``: the library in process, raw 22.05 kHz samples written as they come, no prosody
  post-processing -- the floor of emoslm's own engine;
- ``emoslm pipeline``: everything the corpus does per utterance (library synthesis, resampling to 16 kHz,
  voice-quality effects, atomic 16-bit WAV write).

Then feature extraction over the same files: 80-dim fbank (kaldi-native-fbank) and eGeMAPS (openSMILE), as a
multiple of real time on one process.

Usage: python benchmarks/synth_throughput.py [--n 1500] [--workers 2]
Writes benchmarks/results/synth_throughput.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

TITLE = "Synthesis throughput and feature speed"

from emoslm.synth import corpus as C  # noqa: E402
from emoslm.synth.tts import espeak_program  # noqa: E402

def _program(item: tuple[C.UtterancePlan, str]) -> float:
    u, path = item
    subprocess.run([espeak_program(), "-v", u.voice, "-s", str(u.params.rate), "-p", str(u.params.pitch),
                    "-a", str(C.ENGINE_VOLUME), "-g", str(u.params.word_gap), "-w", path, u.text],
                   check=True, capture_output=True)
    return sf.info(path).duration


def _library_speaker(task: list[tuple[C.UtterancePlan, str]]) -> float:
    total = 0.0
    for u, path in task:
        p = u.params
        wave, sr = C._engine().synth(u.voice, u.text, rate=p.rate, pitch=p.pitch, pitch_range=p.pitch_range,
                                     volume=C.ENGINE_VOLUME, word_gap=p.word_gap)
        sf.write(path, wave, sr, subtype="PCM_16")
        total += wave.size / sr
    return total


def _pipeline_speaker(task: list[tuple[C.UtterancePlan, str]]) -> float:
    return sum(n for _, n, _ in C.render_speaker(task)) / 16000


def _run(name: str, by_speaker: dict[str, list[C.UtterancePlan]], workers: int, out: Path) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)
    tasks = [[(u, str(out / f"{u.id}.wav")) for u in us] for us in by_speaker.values()]
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    if name == "espeak-ng program":  # a plain pool of workers running the program once per utterance
        with ctx.Pool(workers) as pool:
            audio = sum(pool.map(_program, [it for t in tasks for it in t], chunksize=16))
    else:  # the corpus's own scheme: one fresh process per speaker (see emoslm.synth.corpus.render_speaker)
        fn = _pipeline_speaker if name == "emoslm pipeline" else _library_speaker
        with ctx.Pool(workers, initializer=C.init_worker, initargs=(str(out / "stderr.log"),),
                      maxtasksperchild=1) as pool:
            audio = sum(pool.imap_unordered(fn, tasks))
    return time.perf_counter() - t0, audio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1500, help="utterances per method")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--features-n", type=int, default=300, help="utterances for the feature timing")
    ap.add_argument("--out", default="benchmarks/results/synth_throughput.md")
    add_title_option(ap)
    args = ap.parse_args()

    _, utts = C.plan_corpus(C.PRESETS["demo"])
    by_speaker: dict[str, list[C.UtterancePlan]] = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, []).append(u)
    per = len(next(iter(by_speaker.values())))
    keep = sorted(by_speaker)[: max(1, args.n // per)]
    by_speaker = {k: by_speaker[k] for k in keep}
    utts = [u for k in keep for u in by_speaker[k]]
    tmp = Path(tempfile.mkdtemp(prefix="emoslm_bench_"))
    try:
        rows = {}
        _run("espeak-ng program", {keep[0]: by_speaker[keep[0]]}, args.workers, tmp / "warmup")  # page cache
        for name in ("espeak-ng program", "emoslm pipeline", "libespeak-ng only"):
            dt, audio = _run(name, by_speaker, args.workers, tmp / name.split()[0])
            rows[name] = (dt, audio)
            print(f"{name}: {len(utts) / dt:.1f} utt/s", flush=True)

        # feature extraction, one process, over pipeline outputs
        from emoslm.audio import load_audio
        from emoslm.egemaps import egemaps
        from emoslm.features import fbank

        files = sorted((tmp / "emoslm").glob("*.wav"))[: args.features_n]
        waves = [load_audio(f) for f in files]
        secs = sum(w.size for w in waves) / 16000
        t0 = time.perf_counter()
        for w in waves:
            fbank(w)
        t_fb = time.perf_counter() - t0
        t0 = time.perf_counter()
        for w in waves:
            egemaps(w)
        t_eg = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ref = rows["espeak-ng program"][0]
    lib = rows["libespeak-ng only"][0]
    lines = [
        heading(TITLE, args.title),
        "",
        f"{len(utts)} utterances ({len(by_speaker)} speakers) of the demo corpus plan (same voices, texts, rate, pitch), "
        f"{args.workers} worker processes each.",
        "",
        "| method | seconds | utterances/s | audio s / wall s | throughput vs espeak-ng program | vs libespeak-ng only |",
        "|---|---|---|---|---|---|",
    ]
    for name, (dt, audio) in rows.items():
        lines.append(f"| {name} | {dt:.2f} | {len(utts) / dt:.1f} | {audio / dt:.0f} | {ref / dt:.2f} | {lib / dt:.2f} |")
    lines += [
        "",
        f"Feature extraction, one process, {len(files)} utterances ({secs:.0f} s of audio):",
        "",
        "| features | seconds | x real time |",
        "|---|---|---|",
        f"| fbank 80 (kaldi-native-fbank, 25/10 ms) | {t_fb:.2f} | {secs / t_fb:.0f} |",
        f"| eGeMAPS v02 functionals (openSMILE) | {t_eg:.2f} | {secs / t_eg:.0f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_result(args.out, text, command_line())


if __name__ == "__main__":
    main()

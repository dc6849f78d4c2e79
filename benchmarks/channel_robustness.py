"""Channel robustness of paper 000's recogniser: does the same utterance get the same answer over a phone line?

Test utterances of a prepared corpus go through each fixed channel of ``emoslm.data.channel.EVAL_CHANNELS`` (the
8 kHz telephone band, a G.711 mu-law landline, an AMR-NB mobile call, mp3 at 16 kbps, pink noise at 10 dB SNR, a
-20 dB level) and are predicted with their speaker's enrollment (one utterance of each emotion), enrolled on the
clean audio and through the same channel (``emoslm.personalization.channel_eval``). Per channel: UA_spk, UA,
and the agreement with the clean prediction (the fraction of queries whose label the channel leaves unchanged).

Model: ``--bundle``, else the shipped paper-000 checkpoints (``relative`` encoder + ``stage2`` speech LM, what
``emoslm demo`` evaluates by default). Data: ``--corpus`` (default ``data/synth_demo``, written by ``emoslm demo``
or ``emoslm synth corpus --preset demo``).

Usage: python benchmarks/channel_robustness.py [--bundle DIR] [--corpus data/synth_demo] [--split test]
       [--speakers 20] [--queries-per-speaker 10]
Appends to benchmarks/results/channel_robustness.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

TITLE = "Channel robustness of the personalised recogniser (paper 000)"


def shipped_bundle(tmp: Path) -> Path:
    """The shipped models as a bundle (what `emoslm bundle shipped DIR` writes)."""
    from emoslm.personalization.pipeline import SHIPPED_CHECKPOINTS, bundle_from_runs

    return bundle_from_runs(SHIPPED_CHECKPOINTS, tmp / "shipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None, help="a recogniser bundle (default: the shipped paper-000 models)")
    ap.add_argument("--corpus", default="data/synth_demo", help="a prepared corpus")
    ap.add_argument("--split", default="test")
    ap.add_argument("--speakers", type=int, default=None, help="the first N speakers of the split (default: all)")
    ap.add_argument("--queries-per-speaker", type=int, default=None, help="default: every utterance not enrolled")
    ap.add_argument("--seed", type=int, default=0, help="enrollment choice and the channels' noise")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/channel_robustness.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    add_title_option(ap)
    args = ap.parse_args()
    if not Path(args.corpus).is_dir():
        sys.exit(f"{args.corpus} does not exist: prepare it first (emoslm synth corpus --preset demo --out "
                 f"{args.corpus}), or pass --corpus DIR")

    from emoslm.personalization.channel_eval import channel_robustness, format_table
    from emoslm.personalization.inference import EmotionRecognizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_channel_"))
    bundle = Path(args.bundle) if args.bundle else shipped_bundle(tmp)
    model_name = f"`{args.bundle}`" if args.bundle else "the shipped paper-000 models (relative encoder + stage2)"
    rec = EmotionRecognizer.load(bundle, threads=args.threads)
    t0 = time.perf_counter()
    scores = channel_robustness(rec, args.corpus, split=args.split, n_speakers=args.speakers,
                                queries_per_speaker=args.queries_per_speaker, seed=args.seed, progress=True)
    seconds = time.perf_counter() - t0
    text = "\n".join([
        heading(TITLE, args.title), "",
        f"Model: {model_name}. Corpus: `{args.corpus}`, split `{args.split}`, "
        f"{scores[0].speakers} speakers, {scores[0].n} queries (each speaker enrolled "
        f"with one utterance of each emotion, not among the queries). Agreement: the fraction of queries whose "
        f"label equals the clean query's with clean enrollment. {seconds:.0f} s.", "",
        format_table(scores), ""])
    print(text)
    if not args.no_write:
        write_result(args.out, text, command_line())


if __name__ == "__main__":
    main()

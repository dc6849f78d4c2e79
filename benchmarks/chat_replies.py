"""Does the reply model answer what was said? The voice service's text LLM on questions with a known answer.

The service gives its reply model the transcript of a spoken turn and the emotion recognised in it. A small LLM
(the packaged SmolLM2-135M-Instruct) can be thrown off the question by the emotion cue: it answers the cue ("I'm
sorry for your loss") or loops. This benchmark asks questions whose answer is one word (the capital of a country,
the number of legs of a spider, ...) under a rotating emotion cue (neutral, joy, sadness, anger) and counts:

- answered: the reply contains the answer word (or one of its spellings);
- condolence: the reply offers sympathy ("sorry for your loss", "sorry to hear") although the cue is not sadness;
- loop: a word 3-gram occurs three times or more.

Prompt styles (:data:`emoslm.models.text_llm.PROMPT_STYLES`) x repetition penalties are compared on the ``dev``
questions; the ``test`` questions (other facts) are scored once for each configuration reported. Greedy decoding,
``--max-tokens`` new tokens.

    .venv/bin/python benchmarks/chat_replies.py [--split dev|test] [--configs voice-note:1.0,system:1.2]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_title_option, command_line, heading, write_result

TITLE = "Replies that answer what was said"

#: question -> answer spellings. dev: for choosing the prompt; test: other facts, scored once per configuration.
QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "dev": {
        "What is the capital of France?": ("paris",),
        "How many legs does a spider have?": ("eight", "8"),
        "What colour is the sky on a clear day?": ("blue",),
        "What do bees make?": ("honey",),
        "What is the largest planet in our solar system?": ("jupiter",),
        "What is frozen water called?": ("ice",),
        "Who wrote Romeo and Juliet?": ("shakespeare",),
        "What gas do plants take in from the air?": ("carbon dioxide", "co2"),
    },
    "test": {
        "What is the capital of Japan?": ("tokyo",),
        "How many days are there in a week?": ("seven", "7"),
        "Which animal says moo?": ("cow",),
        "What is the opposite of hot?": ("cold",),
        "At what temperature in Celsius does water boil?": ("100", "hundred"),
        "Which planet is called the red planet?": ("mars",),
        "What do you call a baby cat?": ("kitten",),
        "How many minutes are there in an hour?": ("sixty", "60"),
        "What is the capital of Italy?": ("rome",),
        "What colour is a ripe banana?": ("yellow",),
        "What is the largest ocean on Earth?": ("pacific",),
        "What language do people speak in Spain?": ("spanish",),
    },
}
CUES = ("neutral", "joy", "sadness", "anger")
CONDOLENCE = re.compile(r"sorry for your loss|sorry to hear|my condolences", re.I)


def answered(reply: str, answers: tuple[str, ...]) -> bool:
    text = reply.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(a)}(?![a-z0-9])", text) for a in answers)


def loops(reply: str) -> bool:
    words = re.findall(r"\w+", reply.lower())
    grams = [tuple(words[i: i + 3]) for i in range(len(words) - 2)]
    return any(grams.count(g) >= 3 for g in set(grams))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=sorted(QUESTIONS), default="dev")
    ap.add_argument("--configs", default="voice-note:1.0,voice-note:1.2,system:1.0,system:1.2",
                    help="prompt-style:repetition-penalty, comma-separated")
    ap.add_argument("--llm", default="smollm2")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", type=int, default=2, help="example replies per configuration in the file")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "chat_replies.md"))
    add_title_option(ap)
    a = ap.parse_args()

    from tqdm import tqdm

    from emoslm.models.text_llm import EmotionCue, clean_response, load_chat_backend
    from emoslm.threads import set_torch_threads

    set_torch_threads(a.threads)
    configs = [(c.split(":")[0], float(c.split(":")[1])) for c in a.configs.split(",")]
    backend = load_chat_backend(a.llm, a.max_tokens)
    questions = list(QUESTIONS[a.split].items())
    rows, examples = [], []
    for style, penalty in configs:
        backend.prompt_style, backend.repetition_penalty = style, penalty
        n_ans = n_cond = n_non_sad = n_loop = 0
        started = time.perf_counter()
        for i, (question, answers) in enumerate(tqdm(questions, desc=f"{style}, penalty {penalty}")):
            cue = CUES[i % len(CUES)]
            reply = clean_response(backend.reply([{"role": "user", "content": question}],
                                                 EmotionCue(cue, {cue: 0.7}), a.max_tokens).text)
            n_ans += answered(reply, answers)
            n_loop += loops(reply)
            if cue != "sadness":
                n_non_sad += 1
                n_cond += bool(CONDOLENCE.search(reply))
            if i < a.show:
                examples.append(f"- `{style}`, penalty {penalty}, cue {cue}: *{question}* -> "
                                f"{reply.replace(chr(10), ' ')[:200]}")
        seconds = (time.perf_counter() - started) / len(questions)
        rows.append(f"| {style} | {penalty:g} | {n_ans}/{len(questions)} | {n_cond}/{n_non_sad} | "
                    f"{n_loop}/{len(questions)} | {seconds:.2f} |")
    table = "\n".join([
        heading(f"{TITLE}: {a.split} questions", a.title), "",
        f"Reply model `{a.llm}` (greedy, at most {a.max_tokens} new tokens, {a.threads} torch threads); "
        f"{len(questions)} {a.split} questions with a one-word answer, the emotion cue rotating over "
        f"{', '.join(CUES)} (probability 0.7). answered: the reply holds the answer; condolence: sympathy offered "
        "although the cue is not sadness; loop: a word 3-gram three times or more.", "",
        "| prompt style | repetition penalty | answered | condolence (cue not sadness) | loop | s/reply |",
        "|---|---:|---:|---:|---:|---:|", *rows, "", "Examples (the first questions of each configuration):", "",
        *examples])
    print(table)
    print(f"wrote {write_result(a.out, table, command_line())}")


if __name__ == "__main__":
    main()

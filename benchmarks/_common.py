"""What every benchmark writes: a section (its heading, its table and notes made from the run's own data), then
the command, the date and the machine. Sections are appended; earlier runs stay above (results files are never
edited by hand: ``tests/test_results_files.py`` checks their structure).

A section's heading is the script's title (``# TITLE``) unless ``--title`` gives another (:func:`add_title_option`):
``--title "Longer run"`` writes ``## Longer run``, a later run below the file's title; a title that starts with
``#`` is written as it is.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def add_title_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--title", default=None,
                        help="this section's heading: TEXT is written as '## TEXT' (a later run below the file's "
                             "title), '# TEXT' as it is; default: the script's own title")


def heading(default: str, title: str | None = None) -> str:
    """The heading line of a section: ``# default``, or the one ``--title`` asks for."""
    if not title:
        return f"# {default}"
    return title if title.startswith("#") else f"## {title}"


def retitle(text: str, default: str, title: str | None) -> str:
    """``text`` (which starts with its own ``# ...`` heading) under the heading ``--title`` asks for."""
    if not title:
        return text
    first, _, rest = text.partition("\n")
    if not first.startswith("#"):
        return heading(default, title) + "\n\n" + text
    return heading(default, title) + "\n" + rest


def command_line(argv: list[str] | None = None) -> str:
    """How this script was run, to be run again from the repository root: ``python benchmarks/<script>.py ARGS``
    (arguments quoted for the shell)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        name = str(script.relative_to(ROOT))
    except ValueError:
        name = argv[0]
    return shlex.join(["python", name, *argv[1:]])


def machine_line() -> str:
    try:
        import torch

        torch_v = torch.__version__
    except Exception:  # torch is optional for some benchmarks
        torch_v = "n/a"
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except OSError:
        pass
    load = ""
    try:  # how busy the machine was: the 15-minute average spans most of a long benchmark
        load = ", load average {:.2f}/{:.2f}/{:.2f} (1/5/15 min)".format(*os.getloadavg())
    except OSError:
        pass
    return (f"{platform.machine()}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch_v}{load}")


def write_result(path: str | Path, table: str, command: str) -> Path:
    """Append a section to a result file: the table (starting with its heading), then how it was made: the
    command (:func:`command_line`), the date and the machine. Earlier sections stay above it."""
    if not table.lstrip().startswith("#"):
        raise ValueError("a results section starts with its heading (# TITLE or ## TITLE)")
    if "`" in command or "\n" in command or not command.startswith(("python benchmarks/", "emoslm ")):
        raise ValueError(f"not a command to run again: {command!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    before = path.read_text().rstrip() + "\n\n" if path.is_file() else ""
    path.write_text(f"{before}{table.rstrip()}\n\n---\nCommand: `{command}`  \nDate: {stamp}  \n"
                    f"Machine: {machine_line()}\n")
    return path


def init_origin(checkpoint: str) -> str:
    """What trained a checkpoint (``<run>/checkpoints/best/model``), from its run folder's record."""
    from emoslm.training.reuse import read_record

    run = Path(checkpoint).parents[2] if len(Path(checkpoint).parents) > 2 else Path(checkpoint)
    rec = read_record(run)
    if rec is None or not rec.get("command"):
        return " (its run folder records no command)"
    return f" (trained by `{rec['command']}` at {rec.get('started')})"

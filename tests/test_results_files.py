"""Results files (benchmarks/results/*.md) are written only by the benchmark scripts: every section starts with
its heading and ends with the footer ``benchmarks/_common.py: write_result`` appends (the command, which names a
benchmark script and only that script's options, or an ``emoslm`` command; the date; the machine). A later run is
appended below the earlier ones, which stay.

Sections that no script wrote as they stand (they predate this check) are accepted only through ``ALLOW``, which
names the file and the section's heading and says what was written by hand.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"

#: (results file, section heading) -> what in it no script wrote, and where it came from
ALLOW: dict[tuple[str, str], str] = {
    ("judge_sanity.md", "# Earlier run: generate method (free-form JSON answers)"):
        "written by benchmarks/judge_sanity.py on 2026-11-22 07:01 without a heading (commit 8fbc524); in commit "
        "ba25163 the probability run was put above it by hand, this heading was added and the note '(run while "
        "two other jobs shared the 2 cores)' was appended to its Command line. Its numbers are the script's.",
    ("personalization_smollm2.md", "## Longer run (15 minutes)"):
        "the 15-minute run wrote its own file (the script overwrote then) and was pasted below the first run by "
        "hand in commit 83dfbe5: the heading and the '(appended)' after --out in its Command are hand-written. "
        "Its numbers are the script's; the heading now comes from --title.",
    ("dual_info.md", "# Dual-information speech LM (paper 002)"):
        "no 'Stages:' line: its stage 1 (120 steps, 1922.8 s of training) was trained by an earlier, unrecorded "
        "invocation and reused because its train_summary.json existed; the recorded command caps each stage at "
        "15 min and ran 1844 s in all (stages 2 and 3 and the evaluation). Written before stages recorded their "
        "settings and command (emoslm.training.reuse).",
    ("dual_info.md", "## Longer run"):
        "no 'Stages:' line: its stage 1 continued (--init-stage1) from the unrecorded stage-1 checkpoint of the "
        "section above; its heading came from --append (commit 55cc232), an option removed in commit 7bb1029 when "
        "write_result began to append (the same heading now comes from --title 'Longer run').",
}

#: results files whose sections must say where each trained stage comes from (trained by the section's own
#: command, or reused with the command and date that trained it): scripts whose pipelines reuse finished stages
STAGE_PROVENANCE = {"dual_info.md": "Stages: "}

FOOTER = re.compile(r"^Command: `(?P<cmd>[^`]+)`  \nDate: (?P<date>\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC)  \n"
                    r"Machine: (?P<machine>\S[^\n]*)$")


@dataclass
class Section:
    file: str
    heading: str
    body: str
    footer: str  # the three lines after "---", as written


def sections(path: Path) -> tuple[list[Section], str]:
    """The sections of a results file (each closed by '---' and a Command line) and the text after the last."""
    lines = path.read_text().split("\n")
    out, start, i = [], 0, 0
    while i < len(lines):
        if lines[i] == "---" and i + 1 < len(lines) and lines[i + 1].startswith("Command:"):
            body = "\n".join(lines[start:i]).strip("\n")
            head = next((x for x in body.split("\n") if x.strip()), "")
            out.append(Section(path.name, head, body, "\n".join(lines[i + 1:i + 4])))
            start = i = i + 4
            continue
        i += 1
    return out, "\n".join(lines[start:]).strip()


def script_options(script: Path) -> dict[str, bool]:
    """The options a benchmark script's parser defines: {option: takes a value}."""
    opts: dict[str, bool] = {"-h": False, "--help": False}
    tree = ast.parse(script.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            action = next((k.value.value for k in node.keywords if k.arg == "action" and isinstance(k.value,
                                                                                                  ast.Constant)), None)
            assert all(n.startswith("-") for n in names), f"{script.name}: positional argument {names}"
            for n in names:
                opts[n] = action not in ("store_true", "store_false", "count")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "add_title_option":
            opts["--title"] = True
    return opts


def command_problem(cmd: str) -> str | None:
    """Why ``cmd`` is not a command a script or the CLI would have written (None: it is)."""
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        return f"not a shell command ({e})"
    if argv and argv[0] == "emoslm":
        return None
    if len(argv) < 2 or argv[0] != "python" or not re.fullmatch(r"benchmarks/\w+\.py", argv[1]):
        return "neither `python benchmarks/<script>.py ...` nor `emoslm ...`"
    script = ROOT / argv[1]
    if not script.is_file():
        return f"{argv[1]} does not exist"
    opts = script_options(script)
    rest = argv[2:]
    while rest:
        tok = rest.pop(0)
        name = tok.split("=", 1)[0]
        if name not in opts:
            return f"{tok!r} is not an option of {argv[1]}"
        if opts[name] and "=" not in tok:
            if not rest:
                return f"{tok} needs a value"
            rest.pop(0)
            while rest and not rest[0].startswith("-") and name in NARGS.get(argv[1], ()):
                rest.pop(0)  # nargs="+"
    return None


#: options that take several values
NARGS = {"benchmarks/service_load.py": ("--concurrency",)}

FILES = sorted(RESULTS.glob("*.md"))
ALL = [s for f in FILES for s in sections(f)[0]]


def test_there_are_results_files():
    assert len(FILES) >= 8 and ALL


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_section_ends_with_its_footer(path):
    secs, tail = sections(path)
    assert secs, f"{path.name} has no section with a Command/Date/Machine footer"
    assert tail == "", f"{path.name}: text after the last footer (a section without one):\n{tail[:300]}"
    for s in secs:
        assert s.heading.startswith(("# ", "## ")), f"{path.name}: a section starts with {s.heading[:80]!r}"


def section_problems(sec: Section) -> list[str]:
    """What in a section no script would have written: its footer, its command, its heading, a missing line."""
    m = FOOTER.match(sec.footer)
    if not m:
        return [f"the footer is not write_result's:\n{sec.footer}"]
    problems = []
    problem = command_problem(m["cmd"])
    if problem:
        problems.append(f"Command {m['cmd']!r}: {problem}")
    title = _title_of(m["cmd"])
    if title and sec.heading != (title if title.startswith("#") else f"## {title}"):
        problems.append(f"heading {sec.heading!r} is not the one --title {title!r} writes")
    if not title and not sec.heading.startswith("# "):
        problems.append(f"heading {sec.heading!r} without --title in its command")
    need = STAGE_PROVENANCE.get(sec.file)
    if need and not any(line.startswith(need) for line in sec.body.split("\n")):
        problems.append(f"no {need.strip()!r} line saying where each stage comes from")
    return problems


@pytest.mark.parametrize("sec", ALL, ids=lambda s: f"{s.file}:{s.heading[:40]}")
def test_footer_and_command(sec):
    if (sec.file, sec.heading) in ALLOW:
        pytest.skip(ALLOW[(sec.file, sec.heading)])
    assert section_problems(sec) == [], f"{sec.file} / {sec.heading}"


def _title_of(cmd: str) -> str | None:
    argv = shlex.split(cmd)
    for i, tok in enumerate(argv):
        if tok == "--title" and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith("--title="):
            return tok.split("=", 1)[1]
    return None


def test_the_allow_list_names_existing_sections_that_need_it():
    have = {(s.file, s.heading): s for s in ALL}
    assert set(ALLOW) <= set(have), set(ALLOW) - set(have)
    assert [key for key in ALLOW if not section_problems(have[key])] == []  # an entry no longer needed goes


def test_command_check_catches_hand_edits():
    assert command_problem("python benchmarks/dual_info.py --steps 150,100,100 --minutes 15") is None
    assert command_problem("python benchmarks/dual_info.py --title 'Longer run' --init-stage1 x") is None
    assert command_problem("emoslm run dual_info --profile long") is None
    assert "not an option" in command_problem("python benchmarks/dual_info.py --append")
    assert "not an option" in command_problem(
        "python benchmarks/personalization_smollm2.py --out benchmarks/results/x.md (appended) --minutes 15")
    assert "does not exist" in command_problem("python benchmarks/nothing.py")


# ------------------------------------------------------------------------------------------------ write_result


def _common():
    spec = importlib.util.spec_from_file_location("emoslm_bench_common", BENCH / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_write_result_appends_sections_with_their_footers(tmp_path):
    common = _common()
    out = tmp_path / "results" / "topic.md"
    common.write_result(out, "# Topic\n\n| a | b |\n|---|---|\n| 1 | 0.5 |", "python benchmarks/dual_info.py --steps 1,1,1")
    first = out.read_text()
    cmd = common.command_line([str(BENCH / "dual_info.py"), "--title", "Longer run", "--minutes", "16"])
    assert cmd == "python benchmarks/dual_info.py --title 'Longer run' --minutes 16"
    common.write_result(out, common.heading("Topic", "Longer run") + "\n\n| a |\n|---|\n| 2 |", cmd)
    text = out.read_text()
    assert text.startswith(first.rstrip())  # the earlier section is kept as it was
    secs, tail = sections(out)
    assert [s.heading for s in secs] == ["# Topic", "## Longer run"] and tail == ""
    for s in secs:
        assert FOOTER.match(s.footer), s.footer
    assert _title_of(FOOTER.match(secs[1].footer)["cmd"]) == "Longer run"
    assert command_problem(FOOTER.match(secs[1].footer)["cmd"]) is None


def test_write_result_refuses_what_the_check_would_reject(tmp_path):
    common = _common()
    with pytest.raises(ValueError, match="heading"):
        common.write_result(tmp_path / "x.md", "no heading", "python benchmarks/dual_info.py")
    with pytest.raises(ValueError, match="command"):
        common.write_result(tmp_path / "x.md", "# T", "python benchmarks/dual_info.py` (a note)")
    assert not (tmp_path / "x.md").exists()
    assert common.heading("T") == "# T" and common.heading("T", "# Other") == "# Other"
    assert common.retitle("# T\n\nbody", "T", "Again") == "## Again\n\nbody"

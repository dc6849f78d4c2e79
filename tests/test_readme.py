"""The README's set-up commands are the ones that work (litgpt's tests/test_readme.py, in spirit)."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from emoslm.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one():
    cmds = _setup_commands()
    assert cmds == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert cmds[1] in [line.strip() for line in ci]


def test_main_command_runs_on_the_embedded_default(tmp_path):
    # the README's main command, on the tiny preset so that it fits in the test suite
    main = _setup_commands()[0]
    env = {**os.environ, "DEMO_ARGS": f"--preset tiny --out {tmp_path} --runs {tmp_path}/runs --quiet"}
    proc = subprocess.run(main.split() + [f"DEMO_ARGS={env['DEMO_ARGS']}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "synthetic corpus" in proc.stdout and "train" in proc.stdout
    assert (tmp_path / "synth_tiny" / "synth_supervisions_train.jsonl.gz").is_file()
    # trained, evaluated, reported: the tables and the HTML report with its plots, and a usable model bundle
    assert "UA_spk" in proc.stdout
    html = (tmp_path / "runs" / "eval" / "report.html").read_text()
    assert "data:image/png;base64" in html
    assert (tmp_path / "runs" / "bundle" / "speech_lm" / "model.safetensors").is_file()


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def readme_emoslm_commands() -> list[str]:
    """Every ``emoslm ...`` command in the README's bash blocks (continuations joined, ``&&`` chains split,
    comments dropped)."""
    out = []
    for block in _bash_blocks((ROOT / "README.md").read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                words = part.split()
                if words[:1] == ["emoslm"]:
                    out.append(" ".join(words))
    return out


def test_readme_shows_the_commands_of_each_paper():
    cmds = readme_emoslm_commands()
    for paper in ("personalization", "zeroshot", "dual_info", "echat"):
        assert any(c.startswith(f"emoslm run {paper}") for c in cmds), paper


@pytest.mark.parametrize("cmd", readme_emoslm_commands())
def test_every_readme_command_is_accepted_by_the_cli(cmd, capsys):
    """argparse must accept each README command as written: with ``--help`` appended it prints the sub-command's
    help and exits 0 (a misspelt option, a wrong choice or a missing argument exits 2 before reaching it)."""
    argv = shlex.split(cmd)[1:] + ["--help"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0, capsys.readouterr().err[-500:]


def _python_imports() -> list[tuple[str, str | None]]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom):
                out += [(node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                out += [(a.name, None) for a in node.names]
    return out


def test_readme_python_snippets_import():
    imports = _python_imports()
    assert ("emoslm.inference", "EmotionRecognizer") in imports and ("emoslm.echat", "EChat") in imports
    for module, name in imports:
        mod = importlib.import_module(module)
        if name is not None:
            assert hasattr(mod, name), f"{module}.{name}"

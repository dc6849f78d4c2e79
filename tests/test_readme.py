"""The README's set-up commands are the ones that work (litgpt's tests/test_readme.py, in spirit)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

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

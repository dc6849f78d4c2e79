"""No tracebacks: every failure of the ``emoslm`` command prints one line ``emoslm: error: ...`` on stderr and
exits with 2 (issue 16).

Three parts: the known cases, each with the words its message must hold (in process, and a few as a real
subprocess to show what a user sees); ``main()``'s last line of defence for errors nobody foresaw; and a
hypothesis fuzz test that builds argument lists from the real parser (missing paths, garbage files, odd
unicode, bad ``--set`` overrides) and checks that every run ends with 0 or 2 and no traceback. Commands that
would do real work (demo, serve, synth, training) are left out or only given inputs that fail at once, and each
run is cut off by a hard alarm. Every test runs in a fresh folder, so the defaults (data/synth_demo, runs/demo)
do not exist there.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import typing
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from emoslm import cli, registry
from emoslm.cli import build_parser, main

#: hard limit of one in-process run of the command (the alarm interrupts it; a run that long is a failure)
RUN_LIMIT_S = 20


class Hung(BaseException):
    """Raised by the alarm; a BaseException, so that main()'s last line of defence does not swallow it."""


@contextmanager
def hard_deadline(seconds: float):
    def on_alarm(signum, frame):
        raise Hung(f"the command ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` in process: (exit code, stdout, stderr); argparse's SystemExit gives its code."""
    with hard_deadline(RUN_LIMIT_S):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(rc: int, out: str, err: str, *words: str) -> str:
    assert "Traceback" not in out + err, err
    assert rc == 2, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emoslm: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh working directory: no data/ or runs/, so no default path leads to real data or models."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_dir").mkdir()
    return tmp_path


def write_wav(path: Path, seconds: float = 0.5, sr: int = 16000) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, 0.1 * np.sin(2 * np.pi * 220 * t), sr, subtype="PCM_16")
    return path


# ------------------------------------------------------------------------------------------- known cases

KNOWN_CASES = {
    # a checkpoint folder that holds no checkpoint (the audio exists: the model is the problem)
    "chat-folder-without-checkpoint": (["chat", "{wav}", "--model", "empty_dir"],
                                       ["no E-chat checkpoint", "emoslm run echat"]),
    "chat-missing-model": (["chat", "{wav}", "--model", "nowhere"], ["nowhere does not exist", "train E-chat"]),
    "chat-missing-audio": (["chat", "missing.wav"], ["missing.wav", "no such file"]),
    # classifier_pretrained before classifier_relative: its encoder is missing
    "train-pretrained-before-relative": (["train", "classifier", "--config", "classifier_pretrained"],
                                         ["runs/demo/relative/encoder", "does not exist",
                                          "--config classifier_relative"]),
    "train-bad-variant": (["train", "classifier", "--set", "variant=foo"], ["variant must be one of", "'foo'"]),
    "run-unknown-key": (["run", "personalization", "--set", "variant=foo"], ["unknown keys ['variant']", "known:"]),
    "train-subkey-of-a-value": (["train", "classifier", "--set", "corpus.x=1"],
                                ["corpus is a value", "not a section", "corpus=VALUE"]),
    "train-value-for-a-section": (["train", "classifier", "--set", "train=3"], ["train is a section", "train.KEY"]),
    "train-wrong-type": (["train", "classifier", "--set", "batch_size=abc"], ["batch_size: expected int", "'abc'"]),
    "train-bad-yaml": (["train", "classifier", "--set", "a=[1,"], ["'a=[1,'", "not valid YAML"]),
    "run-bad-yaml": (["run", "echat", "--set", "a=[1,"], ["not valid YAML"]),
    "run-no-equals": (["run", "zeroshot", "--set", "progress"], ["key=value"]),
    "train-missing-config": (["train", "speech_lm", "--config", "nope.yaml"], ["does not exist", "packaged configs"]),
    "prepare-bad-yaml": (["prepare", "csv", "t.csv", "out", "--set", "label_map={a"], ["not valid YAML"]),
    "dual-info-missing-model": (["dual-info", "eval", "--models", "x=missing"],
                                ["model 'x'", "missing does not exist", "emoslm run dual_info"]),
    "dual-info-bad-steps": (["dual-info", "eval", "--models", "x=missing", "--steps", "1,a"], ["--steps"]),
    # a missing path in the common commands
    "prepare-csv-missing": (["prepare", "csv", "missing.csv", "out"], ["missing.csv does not exist"]),
    "prepare-csv-missing-label-map": (["prepare", "csv", "{table}", "out", "--label-map", "nope.yaml"],
                                      ["nope.yaml", "label map: no such file"]),
    "prepare-corpus-missing": (["prepare", "ravdess", "missing", "out"], ["missing"]),
    "manifest-import-missing": (["manifest", "import", "missing.csv", "out"], ["missing.csv", "no such file"]),
    "manifest-export-missing": (["manifest", "export", "missing", "t.csv"], ["missing: no such folder",
                                                                             "emoslm prepare"]),
    "features-fbank-missing": (["features", "fbank", "missing", "storage"], ["missing: no such folder"]),
    "levels-missing": (["levels", "missing"], ["missing: no such folder"]),
    "levels-empty-folder": (["levels", "empty_dir"], ["no lhotse manifests here"]),
    "eval-runs-missing": (["eval", "--runs", "missing"], ["missing"]),
    "eval-corpus-missing": (["eval", "--runs", "empty_dir", "--corpus", "missing"], ["missing"]),
    "predict-bundle-missing": (["predict", "{wav}", "--bundle", "missing"], ["missing"]),
    "serve-bundle-missing": (["serve", "--bundle", "missing", "--port", "1"], ["missing"]),
}


@pytest.mark.parametrize("case", list(KNOWN_CASES))
def test_known_case_is_one_clear_line(case, workdir, capsys):
    argv, words = KNOWN_CASES[case]
    wav = write_wav(workdir / "q.wav")
    table = workdir / "t.csv"
    table.write_text(f"audio_path,speaker,emotion\n{wav.name},s1,angry\n")
    argv = [a.replace("{wav}", str(wav)).replace("{table}", str(table)) for a in argv]
    line = assert_one_error_line(*run_cli(argv, capsys), *words)
    print(line)


def test_non_utf8_and_odd_unicode_are_escaped(workdir, capsys):
    # what sys.argv holds for a non-UTF-8 byte (surrogateescape), and characters YAML refuses
    for argv, word in [(["prepare", "csv", "\udcff.csv", "out"], "\\udcff.csv"),
                       (["train", "classifier", "--set", "a=\udcff\udcfe"], "not valid YAML"),
                       (["train", "classifier", "--set", "a=\x01"], "not valid YAML"),
                       (["train", "classifier", "--set", "😀=1"], "unknown keys")]:
        assert_one_error_line(*run_cli(argv, capsys), word)


def test_an_unreadable_table_is_one_clear_line(workdir, capsys, monkeypatch):
    # the tests may run as root, who reads every file: a PermissionError stands in for chmod 000
    table = workdir / "locked.csv"
    table.write_text("audio_path,speaker,emotion\n")
    open_ = Path.open

    def locked(self, *args, **kw):
        if self.name == "locked.csv":
            raise PermissionError(13, "Permission denied", str(self))
        return open_(self, *args, **kw)

    monkeypatch.setattr(Path, "open", locked)
    for argv in (["prepare", "csv", str(table), "out"], ["manifest", "import", str(table), "out"]):
        assert_one_error_line(*run_cli(argv, capsys), "locked.csv: cannot read it: Permission denied")


def test_config_values_are_checked_against_the_schema():
    from emoslm.config import load_config
    from emoslm.errors import ConfigError
    from emoslm.personalization.speech_lm import SpeechLMConfig

    cfg = load_config(SpeechLMConfig, None, ["out_dir=2024-05-01", "corpus=12", "train.lr=1", "dev_k=[0, 2]",
                                            "train.max_minutes=null"])
    assert (cfg.out_dir, cfg.corpus, cfg.train.lr, cfg.dev_k, cfg.train.max_minutes) == \
        ("2024-05-01", "12", 1.0, (0, 2), None)
    for override, words in [("dev_k=[a]", "dev_k[0]: expected int, got str 'a'"),
                            ("train.progress=3", "train.progress: expected bool"),
                            ("train.lr=[1]", "train.lr: expected float, got list"),
                            ("train..lr=1", "is not a key"), ("corpus.sub.x=1", "corpus: expected str, got dict")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            load_config(SpeechLMConfig, None, [override])


# ------------------------------------------------------------------------------------ last line of defence


def test_an_unforeseen_error_is_one_line_with_a_hint(workdir, capsys, caplog, monkeypatch):
    def boom(a):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(cli, "cmd_info", boom)
    line = assert_one_error_line(*run_cli(["info"], capsys))
    assert line == "emoslm: error: RuntimeError: first line second line (unexpected; rerun with -v for the traceback)"
    # with -v the traceback is logged (and still one error line)
    rc, _, err = run_cli(["-v", "info"], capsys)
    assert rc == 2 and err.splitlines()[-1] == "emoslm: error: RuntimeError: first line second line"
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_an_error_without_message_and_interrupts(workdir, capsys, monkeypatch):
    def key_error(a):
        raise KeyError("x")

    def empty(a):
        raise ValueError()

    def interrupt(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", key_error)
    assert_one_error_line(*run_cli(["info"], capsys), "KeyError: 'x'")
    monkeypatch.setattr(cli, "cmd_info", empty)
    assert_one_error_line(*run_cli(["info"], capsys), "error: ValueError (unexpected")
    monkeypatch.setattr(cli, "cmd_info", interrupt)
    rc, _, err = run_cli(["info"], capsys)
    assert rc == 130 and err == "emoslm: interrupted\n"


def test_argparse_usage_errors_stay_as_they_are(workdir, capsys):
    rc, _, err = run_cli(["train", "no_such_recipe"], capsys)
    assert rc == 2 and "Traceback" not in err and "invalid choice" in err


# ----------------------------------------------------------------------------------- what a user sees


def emoslm(args: list[str | bytes], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "emoslm.cli", *args], cwd=cwd, capture_output=True, timeout=120,
                          env=env, check=False)


def test_real_subprocess(tmp_path):
    wav = write_wav(tmp_path / "q.wav")
    (tmp_path / "run").mkdir()
    cases = [
        (["train", "classifier", "--config", "classifier_pretrained"], b"--config classifier_relative"),
        (["chat", str(wav), "--model", "run"], b"no E-chat checkpoint"),
        ([b"prepare", b"csv", b"\xff\xfe.csv", b"out"], b"\\udcff\\udcfe.csv does not exist"),
    ]
    for args, word in cases:
        p = emoslm(args, tmp_path)
        assert p.returncode == 2, p.stderr
        assert b"Traceback" not in p.stderr + p.stdout
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(b"emoslm: error: ") and word in lines[0], p.stderr


# ------------------------------------------------------------------------------------------------- fuzz

#: sub-commands that would do real, long work (train, synthesise, serve): not fuzzed with free arguments
HEAVY = {("demo",), ("serve",), ("synth",), ("run",), ("train",), ("dual-info",)}


def leaf_parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                key = (*prefix, name)
                if any(key[: len(h)] == h for h in HEAVY):
                    continue
                out.update(leaf_parsers(sub, key) or {key: sub})
    return out


PARSER = build_parser()
LEAVES = leaf_parsers(PARSER)
SURROGATES = [chr(c) for c in (0xDC80, 0xDCFF, 0xDCE9)]
odd_text = st.text(st.one_of(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                             st.sampled_from(SURROGATES)), min_size=0, max_size=12)


def path_values(root: Path) -> st.SearchStrategy[str]:
    missing = odd_text.map(lambda s: str(root / "missing" / (s.replace("/", "_") or "x")))
    existing = st.sampled_from([str(root / "empty_dir"), str(root / "garbage.csv"), str(root / "garbage.jsonl"),
                                str(root / "garbage.wav"), str(root / "table.csv"), "missing", "."])
    return st.one_of(missing, existing, missing, existing, odd_text)


def option_values(action: argparse.Action, root: Path) -> st.SearchStrategy[list[str]]:
    if action.nargs == 0:  # a flag
        return st.just([])
    values: st.SearchStrategy[str]
    if action.choices:  # mostly a valid choice (else argparse stops it before any emoslm code runs)
        choice = st.sampled_from([str(c) for c in action.choices])
        values = st.one_of(choice, choice, choice, odd_text)
    elif action.type in (int, float):
        number = st.integers(-3, 50).map(str)
        values = st.one_of(number, number, st.floats(allow_nan=True).map(str), odd_text)
    elif action.dest == "set":
        values = set_values()
    else:
        values = path_values(root)
    if action.nargs in ("*", "+"):
        return st.lists(values, min_size=0 if action.nargs == "*" else 1, max_size=3)
    return values.map(lambda v: [v])


def set_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(odd_text, odd_text).map(lambda kv: f"{kv[0]}={kv[1]}"),
        st.sampled_from(["a=[1,", "label_map={a", "x=*y", "corpus=1", "label_map=3", "audio_root=[1]",
                         "num_jobs=abc", "label_map=nope.yaml", "=1", "novalue", "a.b=1", "k=\udcff",
                         "a=" + "9" * 5000, "a=" + "[" * 3000]),
    )


@st.composite
def generic_argv(draw, root: Path) -> list[str]:
    key = draw(st.sampled_from(sorted(LEAVES)))
    parser = LEAVES[key]
    argv = list(key)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:  # positional: always given (sometimes left out: argparse's error)
            if draw(st.sampled_from(range(20))) == 19:  # (hypothesis favours small integers: not 0)
                continue
            argv += draw(option_values(action, root))
        elif draw(st.booleans()):
            for _ in range(draw(st.integers(1, 2)) if action.dest == "set" else 1):
                argv += [draw(st.sampled_from(action.option_strings)), *draw(option_values(action, root))]
    if draw(st.sampled_from(range(10))) == 9:
        argv.append(draw(st.sampled_from(["--no-such-option", "extra"])))
    return [a for a in argv if a != "shipped"]  # `--runs shipped` evaluates the packaged models for real


def schema_fields(recipe: registry.Recipe) -> dict[str, typing.Any]:
    cls = recipe.resolve("schema")
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


#: each recipe's config keys and their types (resolved once, here: importing a paper inside a strategy would
#: touch the random module while hypothesis generates)
SCHEMAS = {(r.kind, r.name): schema_fields(r) for r in registry.RECIPES}


def wrong_value(hint: typing.Any) -> list[str]:
    """Values YAML reads as something ``hint`` does not accept."""
    if dataclasses.is_dataclass(hint):
        return ["3", "abc", "[1]"]
    if hint is bool:
        return ["3", "abc", "[true]", "{a: 1}"]
    if hint in (int, float):
        return ["abc", "[1, 2]", "{a: 1}", "true", "null"]
    if hint is dict or typing.get_origin(hint) is dict:
        return ["3", "abc", "[1]"]
    if typing.get_origin(hint) in (list, tuple):
        return ["abc", "3", "{a: 1}", "[[1], {b: 2}]"]
    return ["[1]", "{a: 1}", "[]"]  # str, str | None, int | None, ...


@st.composite
def invalid_override(draw, recipe: registry.Recipe) -> str:
    fields = SCHEMAS[(recipe.kind, recipe.name)]
    name = draw(st.sampled_from(sorted(fields)))
    hint = fields[name]
    how = draw(st.sampled_from(["unknown", "yaml", "type", "subkey"]))
    if how == "unknown":
        return f"zz_{draw(odd_text)}={draw(odd_text)}"
    if how == "yaml":
        return f"{name}={draw(st.sampled_from(['[1,', '{a', '*x', '!!python/object:os.system x', 'a: b: c']))}"
    if how == "subkey" and not dataclasses.is_dataclass(hint) and hint is not dict:
        return f"{name}.{draw(odd_text) or 'x'}=1"
    return f"{name}={draw(st.sampled_from(wrong_value(hint)))}"


@st.composite
def recipe_argv(draw, root: Path) -> list[str]:
    """train/run with free options, whose last ``--set`` is always invalid: the run fails before any work."""
    kind = draw(st.sampled_from(["train", "run"]))
    table = registry.TRAINING if kind == "train" else registry.PAPERS
    name = draw(st.sampled_from(sorted(table)))
    recipe = table[name]
    argv = [kind, name]
    if draw(st.booleans()):
        argv += ["--config", draw(st.one_of(st.sampled_from([*recipe.configs, "no_such_config"]),
                                            path_values(root)))]
    if draw(st.booleans()):
        argv += ["--profile", draw(st.sampled_from(registry.PROFILES))]
    for _ in range(draw(st.integers(0, 2))):
        argv += ["--set", draw(set_values())]
    return [*argv, "--set", draw(invalid_override(recipe))]


@st.composite
def dual_info_argv(draw, root: Path) -> list[str]:
    """dual-info eval with at least one model that is not a checkpoint, and free other options."""
    models = draw(st.lists(st.tuples(odd_text, path_values(root)), min_size=1, max_size=3))
    argv = ["dual-info", "eval", "--models", *[f"{n.replace('=', '')}={p}" for n, p in models]]
    for opt in ("--data", "--conversations", "--runs"):
        if draw(st.booleans()):
            argv += [opt, draw(path_values(root))]
    if draw(st.booleans()):
        argv += ["--steps", draw(st.one_of(st.just("3,3,3"), odd_text))]
    if draw(st.booleans()):
        argv += ["--set", draw(set_values())]
    return argv


FUZZ_ROOT: dict[str, Path] = {}


def fuzz_root(tmp_path_factory) -> Path:
    if "root" not in FUZZ_ROOT:
        root = tmp_path_factory.mktemp("cli_fuzz")
        (root / "empty_dir").mkdir()
        (root / "garbage.csv").write_bytes(b"\xff\xfeid,\x00path\n\x80,\n")
        (root / "garbage.jsonl").write_text('{"id": 1}\n[1, 2]\n')
        (root / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
        write_wav(root / "a.wav")
        (root / "table.csv").write_text("File,Speaker_ID,Label\na.wav,s1,calme\na.wav,s1,angry\n")
        FUZZ_ROOT["root"] = root
    return FUZZ_ROOT["root"]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return fuzz_root(tmp_path_factory)


def test_fuzz_leaf_commands_cover_the_parser():
    assert {("prepare",), ("manifest", "import"), ("manifest", "export"), ("features", "fbank"), ("levels",),
            ("eval",), ("predict",), ("chat",), ("info",), ("apikey",)} <= set(LEAVES)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(data=st.data())
def test_fuzz_cli_never_shows_a_traceback(data, fuzz_dir, capsys):
    cwd = os.getcwd()
    os.chdir(fuzz_dir)  # defaults such as runs/demo and data/synth_demo do not exist here
    try:
        kind = data.draw(st.sampled_from(["generic"] * 6 + ["recipe"] * 3 + ["dual-info"]), label="kind")
        make = {"generic": generic_argv, "recipe": recipe_argv, "dual-info": dual_info_argv}[kind]
        argv = data.draw(make(fuzz_dir), label="argv")
        rc, out, err = run_cli(argv, capsys)
    finally:
        os.chdir(cwd)
    event(f"{argv[0]}: " + ("ok" if rc == 0 else "emoslm error" if err.startswith("emoslm: error:") else "usage"))
    assert "Traceback" not in out + err, (argv, err)
    assert rc in (0, 2), (argv, rc, err)
    if rc == 2 and err.startswith("emoslm: error:"):
        assert len(err.splitlines()) == 1, (argv, err)
    if argv[0] in ("run", "train") or argv[:2] == ["dual-info", "eval"]:
        assert rc == 2, (argv, out)  # always an invalid input: must not have run

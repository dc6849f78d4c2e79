"""The recipe registry: every row resolves, every packaged config belongs to a row and instantiates, and every row
runs on its tiny profile through the CLI (``emoslm run`` / ``emoslm train``) and leaves its expected files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from emoslm import registry
from emoslm.cli import main
from emoslm.config import packaged_configs
from emoslm.errors import EmoslmError

ROOT = Path(__file__).resolve().parents[1]
#: pipelines first: they make the tiny data that the training recipes read
ORDER = ["personalization", "dual_info", "echat", "zeroshot"]
ROWS = ([registry.PAPERS[n] for n in ORDER]
        + [registry.TRAINING[n] for n in ("classifier", "speech_lm", "dual_info", "echat")])


def test_registry_lists_each_paper_and_each_training_recipe_once():
    assert sorted(registry.PAPERS) == sorted(ORDER)
    assert {r.paper for r in registry.RECIPES} == {"000", "001", "002", "003"}
    assert len(ROWS) == len(registry.RECIPES)


@pytest.mark.parametrize("recipe", registry.RECIPES, ids=lambda r: f"{r.kind}-{r.name}")
def test_every_row_resolves(recipe):
    assert callable(recipe.resolve("entry"))
    assert dataclasses.is_dataclass(recipe.resolve("schema"))
    for profile in registry.PROFILES:
        assert dataclasses.is_dataclass(recipe.config(profile))
    assert recipe.outputs and recipe.reference and recipe.data
    assert (ROOT / recipe.results_file).is_file(), recipe.results_file


def test_every_packaged_config_belongs_to_a_row_and_instantiates():
    claimed = {name: r for r in registry.RECIPES for name in r.configs}
    assert set(claimed) == set(packaged_configs())
    for name, recipe in claimed.items():
        cfg = recipe.config("demo", name)
        assert isinstance(cfg, recipe.resolve("schema")), name


def test_an_unknown_profile_or_config_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["run", "dual_info", "--profile", "huge"])
    with pytest.raises(EmoslmError, match="unknown profile"):
        registry.PAPERS["dual_info"].config("huge")
    assert main(["train", "classifier", "--config", "no_such_config"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ROWS, ids=lambda r: f"{r.kind}-{r.name}")
def test_every_row_runs_on_the_tiny_profile(recipe, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    if recipe.kind == "pipeline":
        argv = ["run", recipe.name, "--profile", "tiny", "--quiet"]
    else:
        argv = ["train", recipe.name, "--profile", "tiny"]
    assert main(argv) == 0
    missing = [f for f in recipe.outputs if not (workdir / f).is_file()]
    assert missing == []
    for f in recipe.outputs:
        if f.endswith(".json"):
            assert json.loads((workdir / f).read_text())

"""A finished stage is reused only when its recorded settings match (emoslm.training.reuse), in the helper and in
the pipelines of papers 000, 002 and 003 (their recipes replaced by a fake that writes a finished run)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from emoslm.training.reuse import NON_RESULT_KEYS, check_run, read_record, run_settings, settings_diff
from emoslm.training.trainer import TrainArgs, write_run_config


@dataclass
class _Cfg:
    out_dir: str
    corpus: str = "data/x"
    init_from: str | None = None
    threads: int = 1
    progress: bool = True
    train: TrainArgs = field(default_factory=lambda: TrainArgs(max_steps=10))


def _finish(cfg) -> dict:
    """What a recipe leaves behind: its settings, a best checkpoint (fresh bytes every time) and the summary."""
    out = Path(cfg.out_dir)
    write_run_config(cfg, out)
    model = out / "checkpoints" / "best" / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.safetensors").write_bytes(os.urandom(32))
    if getattr(cfg, "variant", None) == "relative":  # the classifier recipe exports its encoder
        (out / "encoder").mkdir(exist_ok=True)
        (out / "encoder" / "model.safetensors").write_bytes(os.urandom(32))
    summary = {"steps": cfg.train.max_steps, "seconds": 0.5, "history": [{"step": cfg.train.max_steps}]}
    (out / "train_summary.json").write_text(json.dumps(summary))
    return summary


@pytest.fixture
def fake_recipe():
    calls: list[str] = []

    def run(cfg):
        calls.append(Path(cfg.out_dir).name)
        return _finish(cfg)

    run.calls = calls
    return run


# ------------------------------------------------------------------------------------------------ the helper


def test_same_settings_reuse_a_changed_setting_retrains(tmp_path, caplog):
    cfg = _Cfg(out_dir=str(tmp_path / "run"))
    assert not check_run(cfg.out_dir, cfg).reuse  # nothing there yet
    _finish(cfg)
    rec = read_record(cfg.out_dir)
    assert rec["settings"]["train"]["max_steps"] == 10 and rec["command"] and rec["started"]

    check = check_run(cfg.out_dir, cfg)
    assert check.reuse and check.summary(cfg.out_dir)["reused"] is True
    assert check.summary(cfg.out_dir)["trained_by"] == rec["command"]
    # keys that cannot change the result are not compared, wherever they are
    assert check_run(cfg.out_dir, replace(cfg, threads=4, progress=False,
                                          train=replace(cfg.train, progress=False, log_every=1))).reuse
    assert {"progress", "threads", "out_dir"} <= NON_RESULT_KEYS

    changed = replace(cfg, train=replace(cfg.train, max_steps=20))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emoslm.training.reuse"):
        check = check_run(cfg.out_dir, changed, "stage 1")
    assert not check.reuse and "train.max_steps: 10 -> 20" in check.reason
    assert "train.max_steps: 10 -> 20" in caplog.text and len(caplog.records) == 1
    # the other run is removed, so that the trainer cannot resume it
    assert not (Path(cfg.out_dir) / "checkpoints").exists()
    assert not (Path(cfg.out_dir) / "train_summary.json").exists()


def test_unfinished_run_of_the_same_settings_is_resumed_not_cleared(tmp_path):
    cfg = _Cfg(out_dir=str(tmp_path / "run"))
    write_run_config(cfg, cfg.out_dir)
    (Path(cfg.out_dir) / "checkpoints" / "last").mkdir(parents=True)
    check = check_run(cfg.out_dir, cfg)
    assert not check.reuse and (Path(cfg.out_dir) / "checkpoints" / "last").is_dir()


def test_a_new_time_budget_continues_a_run_that_ran_out_of_time_and_reuses_one_that_did_not(tmp_path):
    # a long CPU run resumed with a larger --minutes must keep its checkpoints (once, they were removed)
    cfg = _Cfg(out_dir=str(tmp_path / "run"), train=TrainArgs(max_steps=10, max_minutes=85.0))
    out = Path(cfg.out_dir)
    _finish(cfg)
    summary = json.loads((out / "train_summary.json").read_text())
    (out / "train_summary.json").write_text(json.dumps({**summary, "stopped_early": True}))
    longer = replace(cfg, train=replace(cfg.train, max_minutes=120.0))
    check = check_run(cfg.out_dir, longer)
    assert not check.reuse and "stopped on its time budget" in check.reason
    assert (out / "checkpoints" / "best" / "model" / "model.safetensors").is_file()
    assert not (out / "train_summary.json").exists()  # a killed continuation is not taken for a finished run
    check = check_run(cfg.out_dir, replace(cfg, train=replace(cfg.train, max_minutes=150.0)))  # and it was killed
    assert not check.reuse and "did not finish" in check.reason and (out / "checkpoints").is_dir()

    _finish(longer)  # this time it ran all its steps: another budget changes nothing
    check = check_run(cfg.out_dir, replace(cfg, train=replace(cfg.train, max_minutes=None)))
    assert check.reuse and "ran all its steps" in check.reason
    # the budget with another result key is another run
    assert not check_run(cfg.out_dir, replace(longer, corpus="data/y")).reuse
    assert not (out / "checkpoints").exists()


def test_a_run_without_recorded_settings_is_trained_again(tmp_path):
    cfg = _Cfg(out_dir=str(tmp_path / "run"))
    _finish(cfg)
    for name in ("settings.json", "config.yaml"):
        (Path(cfg.out_dir) / name).unlink()
    check = check_run(cfg.out_dir, cfg)
    assert not check.reuse and "without recorded settings" in check.reason


def test_a_run_recorded_only_in_config_yaml_is_reused_when_it_matches(tmp_path):
    cfg = _Cfg(out_dir=str(tmp_path / "run"))
    _finish(cfg)
    (Path(cfg.out_dir) / "settings.json").unlink()  # a run made before settings.json existed
    assert check_run(cfg.out_dir, cfg).reuse
    assert not check_run(cfg.out_dir, replace(cfg, corpus="data/y")).reuse


def test_a_retrained_input_checkpoint_changes_the_settings(tmp_path):
    first = _Cfg(out_dir=str(tmp_path / "stage1"))
    _finish(first)
    init = str(Path(first.out_dir) / "checkpoints" / "best" / "model")
    second = _Cfg(out_dir=str(tmp_path / "stage2"), init_from=init)
    _finish(second)
    assert "init_from" in run_settings(second)["input_weights"]
    assert check_run(second.out_dir, second).reuse
    _finish(first)  # stage 1 trained again: new weights under the same path
    check = check_run(second.out_dir, second)
    assert not check.reuse and "input_weights.init_from" in check.reason


@dataclass
class _NewerCfg:
    """_Cfg's settings a release later: one more setting, whose default does what the older runs did."""

    out_dir: str = ""
    corpus: str = "data/x"
    init_from: str | None = None
    threads: int = 1
    progress: bool = True
    train: TrainArgs = field(default_factory=lambda: TrainArgs(max_steps=10))
    channel_augment: int = 0


def test_a_setting_added_later_at_its_default_keeps_an_older_run():
    cfg = _Cfg(out_dir="unused")
    old = run_settings(cfg)
    same = _NewerCfg(out_dir=cfg.out_dir)
    defaults = run_settings(_NewerCfg())
    assert settings_diff(old, run_settings(same), defaults=defaults) == {}
    changed = replace(same, channel_augment=2)
    assert settings_diff(old, run_settings(changed), defaults=defaults) == {"channel_augment": ("(not recorded)", 2)}
    assert settings_diff(old, run_settings(same)) == {"channel_augment": ("(not recorded)", 0)}  # no defaults given


def test_settings_diff_names_dotted_keys_and_ignores_non_result_keys():
    old = {"a": 1, "train": {"lr": 0.001, "progress": True}, "threads": 2, "tasks": ["x", "y"]}
    new = {"a": 1.0, "train": {"lr": 0.002, "progress": False}, "threads": 1, "tasks": ("x", "y"), "b": None}
    assert settings_diff(old, run_settings(new)) == {"train.lr": (0.001, 0.002), "b": ("(not recorded)", None)}


# ------------------------------------------------------------------------------------------------ the pipelines


def test_dual_info_stages_reused_only_with_the_same_settings(tmp_path, monkeypatch, fake_recipe):
    from emoslm.dual_info import pipeline, recipe

    monkeypatch.setattr(recipe, "run", fake_recipe)
    run = pipeline.DualInfoRun(runs=str(tmp_path / "runs"), steps=(3, 3, 3), progress=False)
    first = pipeline.train_stages(run)
    assert fake_recipe.calls == ["stage1", "stage2", "stage3"] and not any(s["reused"] for s in first.values())

    fake_recipe.calls.clear()
    again = pipeline.train_stages(replace(run, threads=1, progress=True))  # only non-result keys differ
    assert fake_recipe.calls == [] and all(s["reused"] for s in again.values())
    assert again[1]["trained_by"] and again[1]["trained_at"] and again[1]["steps"] == 3

    fake_recipe.calls.clear()
    pipeline.train_stages(replace(run, steps=(3, 4, 3)))  # stage 2 changes; stage 3 starts from the new stage 2
    assert fake_recipe.calls == ["stage2", "stage3"]

    fake_recipe.calls.clear()
    pipeline.train_stages(replace(run, steps=(3, 4, 3), extra=["asr_share=0.5"]))
    assert fake_recipe.calls == ["stage1", "stage2", "stage3"]


def test_echat_stages_reused_only_with_the_same_settings(tmp_path, monkeypatch, fake_recipe):
    from emoslm.echat import pipeline, recipe

    monkeypatch.setattr(recipe, "run", fake_recipe)
    run = pipeline.EChatRun(runs=str(tmp_path / "runs"), asr_corpus=None, encoder_init=None, steps=4, progress=False)
    pipeline.train_stages(run)
    assert fake_recipe.calls == ["stage1", "stage2"]
    fake_recipe.calls.clear()
    summaries = pipeline.train_stages(run)
    assert fake_recipe.calls == [] and summaries[2]["reused"] and summaries[2]["steps"] == 4
    pipeline.train_stages(replace(run, minutes=3.0))  # stages that ran all their steps: a time cap changes nothing
    assert fake_recipe.calls == []
    stage2 = tmp_path / "runs" / "stage2" / "train_summary.json"
    stage2.write_text(json.dumps({**json.loads(stage2.read_text()), "stopped_early": True}))
    pipeline.train_stages(replace(run, minutes=3.0))  # one that stopped on its cap goes on under the new one
    assert fake_recipe.calls == ["stage2"]
    fake_recipe.calls.clear()
    pipeline.train_stages(replace(run, steps=5))  # the schedule's length is a result key
    assert fake_recipe.calls == ["stage1", "stage2"]

    # the same settings on rebuilt data (other splits, other responses): both stages are trained again
    data = tmp_path / "echat_data"
    data.mkdir()
    (data / "manifest.jsonl").write_text('{"question": "q1", "speaker": "s1", "split": "train"}\n')
    on_data = replace(run, data=str(data))
    pipeline.train_stages(on_data)
    fake_recipe.calls.clear()
    pipeline.train_stages(on_data)
    assert fake_recipe.calls == []
    (data / "manifest.jsonl").write_text('{"question": "q2", "speaker": "s1", "split": "train"}\n')
    pipeline.train_stages(on_data)
    assert fake_recipe.calls == ["stage1", "stage2"]


class _Stop(Exception):
    pass


def test_personalization_steps_reused_only_with_the_same_settings(tmp_path, monkeypatch, fake_recipe):
    from emoslm.personalization import classifier, pipeline, speech_lm

    monkeypatch.setattr(classifier, "run", fake_recipe)
    monkeypatch.setattr(speech_lm, "run", fake_recipe)
    monkeypatch.setattr(pipeline, "synthesize_corpus", lambda *a, **k: {})
    monkeypatch.setattr(pipeline, "print_summary", lambda *a, **k: None)

    def stop(*a, **k):  # the evaluation is not what this test is about
        raise _Stop

    monkeypatch.setattr(pipeline, "run_eval", stop)

    def demo(profile="tiny", checkpoints=None):
        with pytest.raises(_Stop):
            pipeline.run_personalization_demo(tmp_path / "data", tmp_path / "runs", preset="tiny", profile=profile,
                                              checkpoints=checkpoints, progress=False)

    demo()
    steps = [s.name for s in pipeline._steps(tmp_path / "runs")]
    assert fake_recipe.calls == steps
    fake_recipe.calls.clear()
    demo()
    assert fake_recipe.calls == []
    demo(profile="demo")  # other step counts: everything is trained again
    assert fake_recipe.calls == steps

    # given checkpoints are evaluated, not trained, whatever settings they were made with; the steps that
    # start from them are trained again when the copied model differs from the one they started from
    shipped = tmp_path / "shipped"
    _finish(replace(_Cfg(out_dir=str(shipped / "stage2")), corpus="elsewhere"))
    fake_recipe.calls.clear()
    demo(profile="demo", checkpoints=shipped)
    assert "stage2" not in fake_recipe.calls and fake_recipe.calls == []
    assert (tmp_path / "runs" / "stage2" / "settings.json").read_text() == (shipped / "stage2" / "settings.json").read_text()


def test_a_run_is_not_removed_while_the_new_one_starts_from_it(tmp_path):
    from emoslm.errors import EmoslmError

    old = _Cfg(out_dir=str(tmp_path / "stage1"))
    _finish(old)
    init = str(Path(old.out_dir) / "checkpoints" / "best" / "model")
    with pytest.raises(EmoslmError, match="lies inside"):
        check_run(old.out_dir, replace(old, init_from=init))
    assert (Path(init) / "model.safetensors").is_file()

"""Trainer: exact resume after SIGKILL, atomic checkpoints, DDP on 2 CPU processes, best/time budget/schedule.

The toy recipe (a small MLP with dropout on synthetic regression data) lives in ``_train_toy.py``, which the
subprocess tests run by path, as a module and under torchrun.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from emoslm.training.trainer import Trainer, TrainArgs

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOY = HERE / "_train_toy.py"

_spec = importlib.util.spec_from_file_location("emoslm_tests_train_toy", TOY)
toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    return env


def _run_toy(out: Path, *extra: str, module: bool = False, **popen) -> subprocess.Popen:
    cmd = [sys.executable, *(["-m", "tests.training._train_toy"] if module else [str(TOY)]), str(out), *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: torchrun and its workers, nothing else
        out, _ = proc.communicate()
        pytest.fail(f"{proc.args} timed out:\n{out[-3000:]}")
    assert proc.returncode == 0, f"{proc.args} exited with {proc.returncode}:\n{out[-3000:]}"
    return out


def _load_state(ckpt: Path) -> dict:
    return torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=False)


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _args(**kw) -> TrainArgs:
    base = dict(max_steps=6, lr=0.05, warmup_steps=2, save_every=3, eval_every=0, log_every=0, seed=0,
                progress=False)
    return TrainArgs(**{**base, **kw})


class _Crash(Exception):
    pass


# ---------------------------------------------------------------------------------------- exact resume


def test_exact_resume_after_sigkill(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    common = ["--max-steps", "40", "--save-every", "10", "--eval-every", "10"]
    run_a = _run_toy(a_dir, *common)  # uninterrupted, alongside B
    run_b = _run_toy(b_dir, *common, "--sleep-after-step", "0.1")
    state_file = b_dir / "checkpoints" / "last" / "trainer_state.pt"
    deadline = time.monotonic() + 90
    step = -1
    while step < 20:
        assert run_b.poll() is None, f"run B ended before it was killed:\n{run_b.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "run B never wrote its step-20 checkpoint"
        time.sleep(0.03)
        try:
            step = torch.load(state_file, map_location="cpu", weights_only=False)["step"]
        except Exception:  # not there yet, or renamed away while being read
            pass
    time.sleep(0.15)  # land between two checkpoints (steps 21-29)
    os.kill(run_b.pid, signal.SIGKILL)
    run_b.communicate(timeout=30)
    assert run_b.returncode == -signal.SIGKILL
    assert not (b_dir / "train_summary.json").exists()

    # the kill left a complete `last` (a `.last.tmp` could be lying around; it must not be in the way)
    killed_state = _load_state(b_dir / "checkpoints" / "last")
    assert killed_state["step"] in (20, 30)  # 30 only if the machine is very slow: still between saves
    assert (b_dir / "checkpoints" / "last" / "rng_rank0.pt").is_file()
    assert (b_dir / "checkpoints" / "last" / "model" / "config.json").is_file()

    _finish(_run_toy(b_dir, *common, module=True))  # restart (as `python -m`), no sleep
    _finish(run_a)

    sum_a = json.loads((a_dir / "train_summary.json").read_text())
    sum_b = json.loads((b_dir / "train_summary.json").read_text())
    assert (sum_a["steps"], sum_a["resumed"]) == (40, False)
    assert (sum_b["steps"], sum_b["resumed"]) == (40, True)
    assert sum_a["history"] == sum_b["history"]  # identical eval scores, bit for bit
    assert sum_a["best_score"] == sum_b["best_score"]

    # bitwise identical parameters (dropout included: the RNG state was restored) and optimiser state
    _assert_same_tensors(torch.load(a_dir / "rank0.pt"), torch.load(b_dir / "rank0.pt"))
    st_a, st_b = _load_state(a_dir / "checkpoints" / "last"), _load_state(b_dir / "checkpoints" / "last")
    _assert_same_tensors(st_a["model_trainable"], st_b["model_trainable"])
    for (ka, va), (kb, vb) in zip(st_a["optimizer"]["state"].items(), st_b["optimizer"]["state"].items()):
        assert ka == kb
        _assert_same_tensors(va, vb)
    assert st_a["scheduler"]["last_epoch"] == st_b["scheduler"]["last_epoch"] == 40


def _uninterrupted_params(out: Path, **kw) -> dict[str, torch.Tensor]:
    t = toy.make_trainer(out, _args(**kw), eval_fn=None)
    t.fit()
    return _params(t.model)


def _crash_at(trainer: Trainer, step: int) -> Trainer:
    inner = trainer.batch_fn

    def batch_fn(s, rng):
        if s == step:
            raise _Crash(f"crash at step {s}")
        return inner(s, rng)

    trainer.batch_fn = batch_fn
    return trainer


def test_resume_needs_the_rng_state(tmp_path, monkeypatch):
    """In-process control: the model has dropout, so resuming without the saved RNG state would diverge."""
    ref = _uninterrupted_params(tmp_path / "ref")

    with pytest.raises(_Crash):
        _crash_at(toy.make_trainer(tmp_path / "run", _args(), eval_fn=None), 4).fit()
    t = toy.make_trainer(tmp_path / "run", _args(), eval_fn=None)
    assert t.fit()["resumed"]
    _assert_same_tensors(ref, _params(t.model))

    with pytest.raises(_Crash):
        _crash_at(toy.make_trainer(tmp_path / "norng", _args(), eval_fn=None), 4).fit()
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    t = toy.make_trainer(tmp_path / "norng", _args(), eval_fn=None)
    t.fit()
    assert any(not torch.equal(ref[k], v) for k, v in _params(t.model).items())


# ---------------------------------------------------------------------------------------- atomic checkpoints


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fail_at", [1, 2, 3])  # model/model.pt, trainer_state.pt, rng_rank0.pt
def test_crash_while_saving_keeps_previous_last(tmp_path, monkeypatch, fail_at):
    ref = _uninterrupted_params(tmp_path / "ref")
    out = tmp_path / "run"
    last = out / "checkpoints" / "last"
    real_save = torch.save
    calls: list[str] = []
    before: dict[str, bytes] = {}

    def flaky_save(obj, f, *a, **k):
        calls.append(str(f))
        if len(calls) == 4:  # first file of the second checkpoint (step 6): `last` holds step 3
            before.update(_snapshot(last))
        if len(calls) == 3 + fail_at:
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="simulated"):
        toy.make_trainer(out, _args(), eval_fn=None).fit()
    monkeypatch.undo()
    assert Path(calls[3]).parent.parent.name == ".last.tmp"  # it was writing to the temporary folder

    assert _snapshot(last) == before  # untouched, and loadable
    assert _load_state(last)["step"] == 3
    t = toy.make_trainer(out, _args(), eval_fn=None)
    assert t.resume() and t.step == 3
    t = toy.make_trainer(out, _args(), eval_fn=None)
    t.fit()
    _assert_same_tensors(ref, _params(t.model))
    assert _load_state(last)["step"] == 6
    assert not (out / "checkpoints" / ".last.tmp").exists()


def test_crash_between_the_two_renames_resumes_from_old(tmp_path, monkeypatch):
    """Killed after `last` was moved to `.last.old` but before `.last.tmp` became `last`."""
    ref = _uninterrupted_params(tmp_path / "ref")
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    real_rename = Path.rename

    def rename(self, target):
        if self.name == ".last.tmp" and (ckpts / ".last.old").exists():
            raise _Crash("killed between the renames")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(_Crash):
        toy.make_trainer(out, _args(), eval_fn=None).fit()
    monkeypatch.undo()
    assert not (ckpts / "last").exists() and (ckpts / ".last.old").is_dir()

    t = toy.make_trainer(out, _args(), eval_fn=None)
    summary = t.fit()
    assert summary["resumed"] and summary["steps"] == 6
    _assert_same_tensors(ref, _params(t.model))
    assert _load_state(ckpts / "last")["step"] == 6
    assert not (ckpts / ".last.old").exists()


# ---------------------------------------------------------------------------------------- DDP


def test_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(TOY), str(out), "--max-steps", "20", "--save-every", "10", "--eval-every", "10"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    _finish(proc, timeout=120)  # a collective mismatch would hang: fail instead

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world"] == 2 and summary["steps"] == 20 and not summary["resumed"]
    last = out / "checkpoints" / "last"
    state = _load_state(last)
    assert state["world"] == 2 and state["step"] == 20
    assert (last / "rng_rank0.pt").is_file() and (last / "rng_rank1.pt").is_file()
    assert (last / "model" / "config.json").is_file()
    assert not list((out / "checkpoints").glob(".*"))  # no temporary folders left

    # identical parameters on both ranks, equal to the checkpoint's
    p0, p1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    _assert_same_tensors(p0, p1)
    for k, v in p0.items():
        if k in state["model_trainable"]:
            assert torch.equal(state["model_trainable"][k], v)

    # each rank drew its own data, and the loss went down
    l0 = json.loads((out / "losses_rank0.json").read_text())
    l1 = json.loads((out / "losses_rank1.json").read_text())
    assert len(l0) == len(l1) == 20 and l0 != l1
    for losses in (l0, l1):
        assert sum(losses[-5:]) < sum(losses[:5])
    scores = [h["score"] for h in summary["history"]]
    assert [h["step"] for h in summary["history"]] == [10, 20] and scores[-1] > scores[0]
    # the best checkpoint (saved by both ranks together) holds the best score
    assert _load_state(out / "checkpoints" / "best")["best"] == summary["best_score"] == max(scores)

    # a world-2 checkpoint cannot be resumed by one process
    t = toy.make_trainer(out, TrainArgs(max_steps=30, progress=False))
    with pytest.raises(RuntimeError, match=r"2 process.*this run has 1"):
        t.fit()
    assert t.step == 0


# ---------------------------------------------------------------------------------------- best, time budget, schedule


def test_best_checkpoint_tracks_the_highest_score(tmp_path):
    scores = iter([0.1, 0.5, 0.3, 0.7, 0.2, 0.6])
    at_best: dict[str, torch.Tensor] = {}

    def eval_fn(model):
        s = next(scores)
        if s == 0.7:
            at_best.update({k: v.clone() for k, v in model.state_dict().items()})
        return {"score": s, "note": "scripted"}

    t = toy.make_trainer(tmp_path, _args(eval_every=1), eval_fn=eval_fn)
    summary = t.fit()
    assert [h["score"] for h in summary["history"]] == [0.1, 0.5, 0.3, 0.7, 0.2, 0.6]
    assert summary["best_score"] == 0.7
    best = _load_state(tmp_path / "checkpoints" / "best")
    assert best["best"] == 0.7 and best["step"] == 4
    for k, v in best["model_trainable"].items():
        assert torch.equal(v, at_best[k]), k
    assert (tmp_path / "checkpoints" / "best" / "model" / "model.pt").is_file()
    assert _load_state(tmp_path / "checkpoints" / "last")["step"] == 6


def test_max_minutes_stops_early_and_saves_last(tmp_path):
    t = toy.make_trainer(tmp_path, _args(max_steps=10_000, save_every=0, max_minutes=0.1 / 60), sleep=0.02)
    t0 = time.perf_counter()
    summary = t.fit()
    assert time.perf_counter() - t0 < 20
    assert summary["stopped_early"] and 1 <= summary["steps"] < 10_000
    assert _load_state(tmp_path / "checkpoints" / "last")["step"] == summary["steps"]
    assert summary["history"][-1]["step"] == summary["steps"]  # evaluated at the end
    assert json.loads((tmp_path / "train_summary.json").read_text())["stopped_early"]


def test_lr_schedule_warms_up_and_decays(tmp_path):
    args = _args(max_steps=20, warmup_steps=4, min_lr_ratio=0.1, lr=0.01, save_every=0)
    t = toy.make_trainer(tmp_path, args, eval_fn=None)
    f = t.sched.lr_lambdas[0]
    assert [f(s) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert f(12) == pytest.approx(0.55)  # half-way through the cosine
    assert f(20) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    decay = [f(s) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))

    used: list[float] = []
    inner = t.batch_fn

    def batch_fn(step, rng):
        used.append(t.opt.param_groups[0]["lr"])  # the learning rate of this step's update
        return inner(step, rng)

    t.batch_fn = batch_fn
    t.fit()
    assert used == pytest.approx([0.01 * f(s) for s in range(20)])
    assert t.sched.get_last_lr()[0] == pytest.approx(0.001)

    t0 = toy.make_trainer(tmp_path / "nowarm", _args(max_steps=10, warmup_steps=0), eval_fn=None)
    assert t0.sched.lr_lambdas[0](0) == pytest.approx(1.0)
    assert t0.sched.lr_lambdas[0](10) == pytest.approx(args.min_lr_ratio)
    assert not math.isnan(t0.sched.lr_lambdas[0](5))


def test_lr_scales_give_a_module_its_own_learning_rate(tmp_path):
    args = _args(max_steps=8, warmup_steps=2, lr=0.02, save_every=0, lr_scales={"net.0": 0.25, "net.4": 2})
    t = toy.make_trainer(tmp_path, args, eval_fn=None)
    model = t.model
    by_param = {id(p): g["lr"] for g in t.opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            want = 0.005 if name.startswith("net.0.") else 0.04 if name.startswith("net.4.") else 0.02
            assert by_param[id(p)] == pytest.approx(want * t.sched.lr_lambdas[0](0)), name  # warmup applies to all
    t.fit()
    factor = t.sched.lr_lambdas[0](8)
    assert sorted(g["lr"] for g in t.opt.param_groups) == pytest.approx(sorted(x * factor for x in (0.005, 0.02, 0.04)))
    for bad, match in (({"nett": 0.5}, "name no trainable"), ({"net.0": 0}, "positive"),
                       ({"net.0": "fast"}, "positive")):
        with pytest.raises(ValueError, match=match):
            toy.make_trainer(tmp_path / "bad", _args(lr_scales=bad), eval_fn=None)

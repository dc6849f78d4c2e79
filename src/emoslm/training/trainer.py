"""One training loop for every recipe: optimiser, schedule, evaluation, checkpoints, exact resume, DDP.

A recipe supplies three functions:

- ``batch_fn(step, rng) -> batch``: the data of one step. ``rng`` is a numpy Generator seeded from
  (seed, step, rank), so the data of step n is the same whether or not the run was interrupted before it;
- ``loss_fn(model, batch) -> (loss, info)``;
- ``eval_fn(model) -> {"score": float, ...}`` (higher is better; the best checkpoint is kept).

Checkpoints (``out_dir/checkpoints/last`` and ``best``) hold the model (``save_pretrained``: safetensors +
config) and ``trainer_state.pt`` (optimiser, scheduler, step, best score, RNG states). They are written to a
temporary folder and renamed, so a run killed at any moment resumes from the last complete checkpoint and
continues exactly as if it had not stopped (tested by killing a run with SIGKILL).

Under ``torchrun --nproc_per_node N`` (CPU: gloo) the loss module is wrapped in DistributedDataParallel; each
rank draws its own batch (its rank is part of the data seed) and rank 0 evaluates and writes checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from emoslm.errors import CheckpointError
from emoslm.training.reuse import record_settings

log = logging.getLogger(__name__)


@dataclass
class TrainArgs:
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.0
    optimizer: str = "radam"  # paper 000 V-C; "adamw" for paper 002
    schedule: str = "cosine"  # after warmup: cosine or linear decay to min_lr_ratio (paper 002: linear)
    grad_clip: float = 1.0
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 25
    seed: int = 0
    max_minutes: float | None = None  # stop (and save) when the time budget is spent
    progress: bool = True
    # a multiple of ``lr`` per module (a parameter-name prefix, e.g. {"ling": 0.2}); other parameters at ``lr``
    lr_scales: dict = field(default_factory=dict)


class _LossModule(nn.Module):
    """Wraps model + loss so that DDP sees a forward() that returns the loss."""

    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun (gloo on CPU); a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist_info()


def start_run(threads: int, seed: int) -> tuple[int, int]:
    """What every recipe does first: explicit torch threads, join the process group, seed. (rank, world)."""
    torch.set_num_threads(threads)
    rank, world = init_distributed()
    torch.manual_seed(seed)
    return rank, world


def write_run_config(cfg: Any, out_dir: str | Path) -> None:
    """The config that produced a run, beside its checkpoints (rank 0 only): ``config.yaml`` to read, and
    ``settings.json`` (:func:`emoslm.training.reuse.record_settings`: the settings, the command, the start time),
    which decides whether a pipeline may reuse the run."""
    import dataclasses

    import yaml

    if dist_info()[0] == 0:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        record_settings(cfg, out_dir)


def rank_zero_first(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 first, then on the other ranks: caches (features, encoder outputs) are written
    once and read by the others, never written by two processes at the same time."""
    rank, world = dist_info()
    if world > 1 and rank != 0:
        dist.barrier()
    out = fn()
    if world > 1 and rank == 0:
        dist.barrier()
    return out


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters and buffers: what changes during training (frozen weights are rebuilt). Tied
    weights appear under every name (a frozen LLM's tied output layer is frozen, not a buffer)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    return {n: t.detach().clone() for n, t in model.state_dict().items()
            if n not in params or params[n].requires_grad}


def param_groups(model: nn.Module, args: TrainArgs) -> list[dict[str, Any]]:
    """The trainable parameters as optimiser groups, each at its learning rate: ``args.lr`` times the scale of
    the first ``lr_scales`` prefix that names the parameter's module (one group at ``lr`` without scales, the
    optimiser state of every earlier run)."""
    scales = {str(k): v for k, v in (args.lr_scales or {}).items()}
    for prefix, scale in scales.items():
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"lr_scales.{prefix} must be a positive number, got {scale!r}")
    groups: dict[float, list[nn.Parameter]] = {}
    used = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((k for k in scales if name == k or name.startswith(k + ".")), None)
        used.add(prefix)
        groups.setdefault(float(scales[prefix]) if prefix else 1.0, []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    unused = sorted(set(scales) - used)
    if unused:  # a typo would silently train everything at one rate
        modules = sorted({n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad})
        raise ValueError(f"lr_scales: {unused} name no trainable parameters (trainable modules: {modules})")
    return [{"params": ps, "lr": args.lr * scale} for scale, ps in groups.items()]


class Trainer:
    def __init__(self, model: nn.Module, batch_fn: Callable, loss_fn: Callable, out_dir: str | Path,
                 args: TrainArgs, eval_fn: Callable | None = None):
        self.model = model
        self.batch_fn = batch_fn
        self.loss_fn = loss_fn
        self.eval_fn = eval_fn
        self.args = args
        self.out = Path(out_dir)
        self.rank, self.world = dist_info()
        params = param_groups(model, args)
        if args.optimizer == "radam":
            self.opt = torch.optim.RAdam(params, lr=args.lr, weight_decay=args.weight_decay)
        elif args.optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {args.optimizer!r}")
        if args.schedule not in ("cosine", "linear"):
            raise ValueError(f"unknown learning-rate schedule {args.schedule!r} (cosine or linear)")
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.step = 0
        self.best = -math.inf
        self.history: list[dict[str, Any]] = []
        module = _LossModule(model, loss_fn)
        if self.world > 1:
            module = nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
        self.module = module

    def _lr_factor(self, step: int) -> float:
        a = self.args
        if step < a.warmup_steps:
            return (step + 1) / a.warmup_steps
        frac = (step - a.warmup_steps) / max(1, a.max_steps - a.warmup_steps)
        if a.schedule == "linear":
            return a.min_lr_ratio + (1 - a.min_lr_ratio) * (1 - min(1.0, frac))
        return a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    # ------------------------------------------------------------------------------------ checkpoints

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def save(self, name: str) -> Path:
        """Write checkpoint ``name`` atomically (rank 0 writes the model; every rank its RNG state)."""
        final = self.ckpt_dir / name
        tmp = self.ckpt_dir / f".{name}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if hasattr(self.model, "save_pretrained"):
                self.model.save_pretrained(tmp / "model")
            torch.save({
                "model_trainable": _trainable_state(self.model),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "step": self.step, "best": self.best, "history": self.history, "args": asdict(self.args),
                "world": self.world,
            }, tmp / "trainer_state.pt")
        if self.world > 1:
            dist.barrier()
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.rank == 0:
            torch.save(rng, tmp / "rng_rank0.pt")
        if self.world > 1:
            for r in range(1, self.world):
                if self.rank == r:
                    torch.save(rng, tmp / f"rng_rank{r}.pt")
                dist.barrier()
        if self.rank == 0:
            # ``final`` and ``.old`` are both complete checkpoints; at every moment one of them exists (between the
            # two renames only ``.old``, which resume() falls back to), and ``.old`` is only deleted while
            # ``final`` exists.
            old = self.ckpt_dir / f".{name}.old"
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        if self.world > 1:
            dist.barrier()
        return final

    def resume(self) -> bool:
        """Continue from ``checkpoints/last`` if it exists; return whether it did.

        If the previous run was killed between the two renames of save(), ``last`` is missing and the complete
        previous checkpoint is still in ``.last.old``: resume from there.
        """
        last = resumable_checkpoint(self.out)
        if last is None:
            return False
        state = torch.load(last / "trainer_state.pt", map_location="cpu", weights_only=False)
        if state.get("world", 1) != self.world:
            raise RuntimeError(
                f"cannot resume from {last}: it was written by a run with {state.get('world', 1)} process(es) "
                f"(world size) and this run has {self.world}; the data and RNG streams depend on the world size, "
                f"so relaunch with the same number of processes (torchrun --nproc_per_node "
                f"{state.get('world', 1)}) or train in a fresh out_dir")
        res = self.model.load_state_dict(state["model_trainable"], strict=False)
        if res.unexpected_keys:
            raise RuntimeError(f"{last} does not match the model: unexpected keys {res.unexpected_keys[:5]}")
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.best, self.history = state["step"], state["best"], state["history"]
        rng = torch.load(last / f"rng_rank{self.rank}.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        log.info("resumed from %s at step %d", last, self.step)
        return True

    # ------------------------------------------------------------------------------------ loop

    def _evaluate(self) -> dict[str, Any] | None:
        if self.eval_fn is None:
            return None
        # rank 0 evaluates; every rank then gets the result (so that histories, and the decision to evaluate once
        # more at the end, agree) and takes part in save("best"), which has collective barriers
        result, improved = None, False
        if self.rank == 0:
            self.model.eval()
            with torch.no_grad():
                result = self.eval_fn(self.model)
            self.model.train()
            result = {"step": self.step, **result}
            improved = bool(result["score"] > self.best)
        if self.world > 1:
            obj = [result, improved]
            dist.broadcast_object_list(obj, src=0)
            result, improved = obj
        self.history.append(result)
        if improved:
            self.best = result["score"]
            self.save("best")
        return result

    def fit(self) -> dict[str, Any]:
        from tqdm import tqdm

        a = self.args
        resumed = self.resume()
        self.model.train()
        t0 = time.perf_counter()
        bar = tqdm(total=a.max_steps, initial=self.step, desc="training", unit="step",
                   disable=not a.progress or self.rank != 0)
        running: dict[str, float] = {}
        stopped_early = False
        while self.step < a.max_steps:
            rng = np.random.default_rng([a.seed, self.step, self.rank])
            batch = self.batch_fn(self.step, rng)
            loss, info = self.module(batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], a.grad_clip)
            self.opt.step()
            self.sched.step()
            self.step += 1
            for k, v in {"loss": float(loss.detach()), **{k: v for k, v in info.items() if isinstance(v, float)}}.items():
                running[k] = 0.9 * running.get(k, v) + 0.1 * v
            bar.update()
            if a.log_every and self.step % a.log_every == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
            if a.eval_every and self.step % a.eval_every == 0:
                res = self._evaluate()
                if res and self.rank == 0:
                    bar.write(f"step {self.step}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                              for k, v in res.items() if k != "step"))
            out_of_time = a.max_minutes is not None and (time.perf_counter() - t0) / 60 > a.max_minutes
            if self.world > 1:
                flag = torch.tensor([int(out_of_time)])
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if (a.save_every and self.step % a.save_every == 0) or self.step == a.max_steps or out_of_time:
                self.save("last")
            if out_of_time:
                stopped_early = True
                break
        bar.close()
        if self.eval_fn is not None and (not self.history or self.history[-1]["step"] != self.step):
            self._evaluate()
        summary = {"steps": self.step, "best_score": self.best, "resumed": resumed, "stopped_early": stopped_early,
                   "seconds": round(time.perf_counter() - t0, 1), "history": self.history, "world": self.world}
        if self.rank == 0:
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary


def resumable_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint a :class:`Trainer` writing to ``out_dir`` resumes from: ``checkpoints/last``, or
    ``checkpoints/.last.old`` when a run was killed between the two renames of ``save()``; None when neither is
    complete (the run starts from step 0)."""
    ckpt = Path(out_dir) / "checkpoints"
    for cand in (ckpt / "last", ckpt / ".last.old"):
        if (cand / "trainer_state.pt").is_file() and (cand / "rng_rank0.pt").is_file():
            return cand
    return None


def best_checkpoint(out_dir: str | Path, kind: str = "model", make: str = "") -> Path:
    """The best (else the last) model checkpoint of a run: ``out_dir/checkpoints/{best,last}/model``. None there:
    a CheckpointError (a FileNotFoundError) naming both places and, with ``make``, the command that makes one."""
    for name in ("best", "last"):
        p = Path(out_dir) / "checkpoints" / name / "model"
        if (p / "model.safetensors").is_file():
            return p
    raise CheckpointError(f"{out_dir} has no {kind} checkpoint (looked for checkpoints/best/model/model.safetensors "
                          f"and checkpoints/last/model/model.safetensors)" + (f"; {make}" if make else ""))

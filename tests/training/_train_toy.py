"""Train a toy model with :class:`emoslm.training.trainer.Trainer` (helper of ``test_trainer.py``).

Runnable by path (``python tests/training/_train_toy.py OUT``, ``torchrun ... tests/training/_train_toy.py OUT``)
or as a module (``python -m tests.training._train_toy OUT``). The model is a small MLP with dropout and
LayerNorm (plus a frozen parameter and a buffer) fitted to a synthetic regression task whose data are drawn from
the trainer's per-step rng. At the end every rank writes its final parameters to ``OUT/rank{r}.pt`` and the
losses of the steps it ran to ``OUT/losses_rank{r}.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from emoslm.training.trainer import Trainer, TrainArgs, init_distributed

DIM = 8


class ToyMLP(nn.Module):
    def __init__(self, dim: int = DIM, hidden: int = 32, dropout: float = 0.2):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden, "dropout": dropout}
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.frozen_offset = nn.Parameter(torch.randn(1), requires_grad=False)
        self.register_buffer("scale", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1) * self.scale + self.frozen_offset

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config))
        torch.save(self.state_dict(), path / "model.pt")


def _true_weights() -> np.ndarray:
    return np.random.default_rng(1234).normal(size=DIM)


def make_batch_fn(batch_size: int = 32, sleep: float = 0.0):
    w = _true_weights()

    def batch_fn(step: int, rng: np.random.Generator):
        if sleep and step > 0:
            time.sleep(sleep)  # "after" the previous step: the run is slow between two checkpoints
        x = rng.normal(size=(batch_size, DIM))
        y = x @ w / np.sqrt(DIM) + 0.05 * rng.normal(size=batch_size)
        return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    return batch_fn


def make_eval_fn():
    x = np.random.default_rng(99).normal(size=(128, DIM))
    y = x @ _true_weights() / np.sqrt(DIM)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    def eval_fn(model):
        return {"score": -float(((model(xt) - yt) ** 2).mean())}

    return eval_fn


def make_trainer(out_dir, args: TrainArgs, *, sleep: float = 0.0, eval_fn="default", losses: list | None = None):
    """A Trainer on the toy task (the model is initialised from ``args.seed``)."""
    torch.manual_seed(args.seed)
    model = ToyMLP()

    def loss_fn(m, batch):
        x, y = batch
        loss = ((m(x) - y) ** 2).mean()
        if losses is not None:
            losses.append(float(loss.detach()))
        return loss, {"mse": float(loss.detach())}

    if eval_fn == "default":
        eval_fn = make_eval_fn()
    return Trainer(model, make_batch_fn(sleep=sleep), loss_fn, out_dir, args, eval_fn)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--sleep-after-step", type=float, default=0.0, help="seconds to sleep after each step")
    a = p.parse_args(argv)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same arithmetic in every process; the machine is small anyway
    try:
        rank, world = init_distributed()
        args = TrainArgs(max_steps=a.max_steps, lr=a.lr, warmup_steps=a.warmup_steps, save_every=a.save_every,
                         eval_every=a.eval_every, log_every=5, seed=a.seed, max_minutes=a.max_minutes,
                         progress=False)
        losses: list[float] = []
        trainer = make_trainer(a.out_dir, args, sleep=a.sleep_after_step, losses=losses)
        summary = trainer.fit()
        out = Path(a.out_dir)
        params = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        torch.save(params, out / f"rank{rank}.pt")
        (out / f"losses_rank{rank}.json").write_text(json.dumps(losses))
        if world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return summary
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main(sys.argv[1:])

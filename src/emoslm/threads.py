"""Explicit torch thread counts, so runs on small CPUs are fast and reproducible in speed.

Defaults (:func:`default_threads`): one thread for the tiny presets -- their d-128 matrices are too small for
a second thread to pay for its synchronisation, and two one-thread processes can share two cores -- and two
threads for SmolLM2-135M, which ran fastest with both cores of an otherwise idle 2-core machine (an earlier
project measurement; the machine was busy when this module was written, see below).

When other processes compete for the cores, one thread wins for every model: torch's worker threads then
spin while waiting for a descheduled sibling. Measured with :func:`benchmark_threads` on the 2-core machine
at load average ~6 (best of 3, seconds):

=====================================================  ========  =========
                                                       1 thread  2 threads
=====================================================  ========  =========
tiny encoder + tiny Q-Former, fwd+bwd, B 8 x 400 fr      0.060      0.60
tiny-llama fwd+bwd, B 8 x 128 tokens                     0.077      0.30
paper encoder fwd, B 8 x 400 frames                      0.79       1.99
SmolLM2 (LoRA) fwd+bwd, B 4 x 128 tokens                 5.3       18.6
SmolLM2 fwd, B 4 x 128 tokens                            2.3        9.8
=====================================================  ========  =========

So pass ``n=1`` when the machine is shared (parallel jobs, tests running beside training).
"""

from __future__ import annotations

import os

import torch

#: Backbone names that are large enough to use two threads; everything else defaults to one.
_LARGE_BACKBONES = ("smollm2",)


def default_threads(backbone: object = None) -> int:
    """1 for tiny models (or when unknown), 2 for SmolLM2 and local model directories; at most the CPU count."""
    name = getattr(backbone, "name", backbone)
    large = isinstance(name, str) and (name in _LARGE_BACKBONES or os.path.isdir(os.path.expanduser(name)))
    return max(1, min(2 if large else 1, os.cpu_count() or 1))


def set_torch_threads(n: int | None = None, backbone: object = None) -> int:
    """Set ``torch.set_num_threads`` to ``n`` (default: :func:`default_threads` of ``backbone``, a name or
    :class:`~emoslm.models.llm.LLMSpec`) and return the number set."""
    n = default_threads(backbone) if n is None else int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def benchmark_threads(fn, threads=(1, 2), repeats: int = 3) -> dict[int, float]:
    """Best-of-``repeats`` seconds of ``fn()`` for each thread count (restores the current setting)."""
    import time

    before = torch.get_num_threads()
    result = {}
    try:
        for n in threads:
            torch.set_num_threads(n)
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            result[n] = min(times)
    finally:
        torch.set_num_threads(before)
    return result

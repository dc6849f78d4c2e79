"""Shared set-up of the model tests: seeded RNG and one torch thread (fastest for tiny models on 2 cores)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

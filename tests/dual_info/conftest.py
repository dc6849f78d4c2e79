"""A tiny synthetic corpus shared by the dual-information tests (session scope: synthesised once)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    from emoslm.synth.corpus import PRESETS, synthesize_corpus

    out = tmp_path_factory.mktemp("dual") / "synth"
    synthesize_corpus(out, replace(PRESETS["tiny"], n_speakers=6, dev_speakers=1, test_speakers=1), workers=2,
                      progress=False)
    return out

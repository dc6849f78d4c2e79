"""Suite-wide hygiene: a test that runs ``emoslm serve`` in-process (for its error path) configures the service's
logging on the ``emoslm`` logger; the next test must not inherit its level, handlers or propagation."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _restore_emoslm_logger():
    logger = logging.getLogger("emoslm")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved

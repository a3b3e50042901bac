"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher import models

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The verified U²-Net-p model in the user's model cache.

    Fetched into the default path on purpose: after ``make setup`` it is already there and this
    costs one checksum; on a fresh machine the first test run downloads it once.
    """
    return models.fetch(models.default_model_path())


@pytest.fixture
def data_dir() -> Path:
    """``tests/data``: real files, each listed with its source and licence in SOURCES.md."""
    return DATA_DIR

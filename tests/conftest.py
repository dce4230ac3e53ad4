"""Shared fixtures: where the reference data lives, and cached model runs.

Reference data (Darknet oracle outputs, weights, images, datasets) is found through
``DARKNET_PY_REFDATA``, defaulting to ``<repo>/../shared``.
"""
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REFDATA = Path(os.environ.get("DARKNET_PY_REFDATA", REPO.parent / "shared")).resolve()
# shared test helpers (cached model runs, training fixtures) live in tests/fixtures/
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
# on-the-fly ONNX exports of the session go to one temporary cache (reused by every test and
# subprocess, removed at exit), not into the user's ~/.cache
if "DARKNET_PY_CACHE" not in os.environ:
    os.environ["DARKNET_PY_CACHE"] = tempfile.mkdtemp(prefix="darknet_py_cache_")
    atexit.register(shutil.rmtree, os.environ["DARKNET_PY_CACHE"], True)


def refpath(*parts) -> Path:
    return REFDATA.joinpath(*parts)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference file missing: {path} (set DARKNET_PY_REFDATA)")
    return path


@pytest.fixture(scope="session")
def refdata() -> Path:
    if not REFDATA.is_dir():
        pytest.skip(f"reference data folder not found: {REFDATA} (set DARKNET_PY_REFDATA)")
    return REFDATA


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO

"""Fixtures shared by every test package: a real local Ray, started once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray workers import the stages a test module defines by the module's name, as
# pytest's rootdir-relative import put it on the driver's sys.path. Workers of a
# local Ray inherit this environment, so give them the same test folders.
_TESTS = Path(__file__).resolve().parent
_dirs = [str(_TESTS.parent)] + sorted(str(p) for p in _TESTS.rglob("*") if p.is_dir() and p.name != "__pycache__")
os.environ["PYTHONPATH"] = os.pathsep.join(_dirs + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


@pytest.fixture(scope="session")
def local_ray():
    from curation.runner import init_ray

    init_ray(num_cpus=2)
    import ray

    yield ray


@pytest.fixture(scope="session")
def assert_known_reasons():
    """check(DATASET_DIR or reject rows): every reject reason is one of curation/reasons.py; returns the rows."""
    from curation.storage.dataset import Dataset
    from curation.reasons import REASONS

    def check(rejects):
        if isinstance(rejects, (str, Path)):
            rejects = Dataset(rejects).read("rejects").to_pylist()
        unknown = sorted({r["reason"] for r in rejects} - set(REASONS))
        assert not unknown, f"reject reasons not defined in curation/reasons.py: {unknown}"
        return rejects

    return check

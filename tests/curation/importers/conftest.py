"""Fixtures of the importer tests: the real annotation excerpts, placeholder images.

The real local Ray is the session fixture `local_ray` of tests/conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Committed with the tests (see its README.md for sources and licences).
REAL = Path(__file__).resolve().parents[2] / "data" / "real-annotations"


def write_images(folder: Path, sizes: dict[str, tuple[int, int]], fmt: str | None = None) -> Path:
    """Placeholder images of the given sizes: {file name: (width, height)}; PNG for .png names, else JPEG."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in sizes.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (int(w), int(h)), (90, 120, 150)).save(path, format=fmt or ("PNG" if path.suffix == ".png" else "JPEG"), quality=30)
    return folder


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="session")
def real() -> Path:
    assert REAL.is_dir(), f"the real annotation excerpts are missing: {REAL}"
    return REAL


@pytest.fixture
def make_images():
    return write_images


@pytest.fixture
def run_ingest(tmp_path, assert_known_reasons):
    """ingest(...) in this process (no Ray), returning (manifest, records as dicts, rejects as dicts).

    Every reject reason is checked against curation/reasons.py.
    """
    from curation.commands.ingest import ingest
    from curation.storage.dataset import Dataset

    def run(groups, images=None, out=None, **kw):
        out = out or tmp_path / "out"
        manifest = ingest({k: [Path(p) for p in v] for k, v in groups.items()}, out, images=str(images) if images else None, use_ray=False, **kw)
        ds = Dataset(out)
        return manifest, ds.read("records").to_pylist(), assert_known_reasons(ds.read("rejects").to_pylist())

    return run

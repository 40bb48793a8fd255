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


class S3Server:
    """A real S3 API on loopback: moto's server mode in a thread of the test process, on a free port.

    `env` is what a process needs to reach it (endpoint, dummy credentials, region, and no instance
    metadata lookups); `fs()` an s3fs filesystem on it; `put(url, data)` / `mkbucket(name)` to arrange.
    """

    def __init__(self):
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key="testing", secret="testing", skip_instance_cache=True)

    def mkbucket(self, name: str) -> None:
        self.fs().mkdir(name)

    def put(self, url: str, data: bytes) -> str:
        with self.fs().open(url, "wb") as f:
            f.write(data)
        return url

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def s3_server():
    """The loopback S3 for the session; its environment is set in this process while it runs (so the
    fsspec URLs `s3://...` of a test reach it) and handed to the subprocesses a test starts."""
    from curation.runtime import scoped_env

    server = S3Server()
    try:
        with scoped_env(server.env):
            yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server):
    """The loopback S3 with no bucket left by another test."""
    fs = s3_server.fs()
    for bucket in fs.ls(""):
        fs.rm(bucket, recursive=True)
    yield s3_server

"""The demo job on a real 2-node Ray cluster (ray.cluster_utils.Cluster), against a local run.

The cluster is started by the test itself: a head node and a second node,
two CPUs each, as separate raylets on this machine. `curate demo` runs as a
child process joined to it with `--ray-address`; its output must equal a run
on a local Ray as a set, and its input shards (each a task that downloads,
filters, builds and writes its own shards) must have run on both nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curation.storage.dataset import Dataset

ROOT = Path(__file__).resolve().parents[2]


def _demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "curation.cli", "demo", "--out", str(out), "--images", "64", "--shard-rows", "16", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


def _contents(path: Path) -> dict:
    ds = Dataset(path, verify=True)
    records = ds.read("records", columns=["record_id", "sha256", "clip_score"]).to_pylist()
    samples = ds.read("samples", columns=["sample_id", "num_tokens"]).to_pylist()
    rejects = ds.read("rejects", columns=["record_id", "stage", "reason"]).to_pylist()
    assert len({r["record_id"] for r in records}) == len(records)  # no duplicates
    return {
        "records": {(r["record_id"], r["sha256"], round(r["clip_score"], 4)) for r in records},
        "samples": {(s["sample_id"], s["num_tokens"]) for s in samples},
        "rejects": {(r["record_id"], r["stage"], r["reason"]) for r in rejects},
    }


@pytest.fixture(scope="module")
def cluster(s3_server):
    """Two nodes; the head started as init_ray starts one, so its API server sends nothing off the machine.
    Started once the loopback S3's environment is set, which every node's workers then inherit (as a real
    cluster's nodes have their credentials)."""
    from ray.cluster_utils import Cluster

    from curation.runner import api_server_offline

    with api_server_offline():
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=2)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()


def test_the_demo_on_two_nodes_equals_a_local_run(cluster, tmp_path):
    local = _demo(tmp_path / "local")
    assert local.returncode == 0, local.stderr[-3000:]
    run = _demo(tmp_path / "cluster", "--ray-address", cluster.address)
    assert run.returncode == 0, run.stderr[-3000:]

    assert _contents(tmp_path / "cluster") == _contents(tmp_path / "local")
    manifest = json.loads((tmp_path / "cluster" / "manifest.json").read_text())
    nodes = {n.node_id for n in cluster.list_all_nodes()}
    by_node = manifest["run"]["shards_by_node"]
    assert manifest["run"]["input_shards"] == 4 == sum(by_node.values())
    assert set(by_node) == nodes, by_node  # download, filters and build (one task per shard) on both nodes


def test_a_download_from_and_into_s3_on_two_nodes_equals_a_local_run(cluster, s3, tmp_path):
    """No shared filesystem: the list is read from S3 and the dataset written to S3 by tasks on both nodes."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from netfixtures import FaultServer

    s3.mkbucket("corpus")
    env = {**os.environ, **s3.env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    flags = ["--allow-private-network", "--retries", "0", "--shard-rows", "4"]

    def curate(*argv):
        return subprocess.run([sys.executable, "-m", "curation.cli", *map(str, argv)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)

    with FaultServer() as server:
        urls = [f"{server.base}/img/{i}.jpg" if i % 6 else f"{server.base}/404.jpg?{i}" for i in range(24)]
        buf = io.BytesIO()
        pq.write_table(pa.table({"url": urls, "caption": [f"picture {i}" for i in range(24)]}), buf)
        s3.put("corpus/urls.parquet", buf.getvalue())
        local = curate("download", "s3://corpus/urls.parquet", "--out", tmp_path / "local", *flags)
        assert local.returncode == 0, local.stderr[-3000:]
        run = curate("download", "s3://corpus/urls.parquet", "--out", "s3://corpus/raw", *flags,
                     "--ray-address", cluster.address)
        assert run.returncode == 0, run.stderr[-3000:]

    def contents(url):
        ds = Dataset(url, verify=True)
        return ({(r["record_id"], r["sha256"]) for r in ds.read("records", ["record_id", "sha256"]).to_pylist()},
                {(r["record_id"], r["reason"]) for r in ds.read("rejects", ["record_id", "reason"]).to_pylist()})

    assert contents("s3://corpus/raw") == contents(tmp_path / "local")
    manifest = Dataset("s3://corpus/raw").manifest
    by_node = manifest["run"]["shards_by_node"]
    assert sum(by_node.values()) == 6 and set(by_node) == {n.node_id for n in cluster.list_all_nodes()}, by_node

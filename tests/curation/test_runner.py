"""The pipeline runner on a real local Ray: shard tasks, actor pools, sinks on the workers, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.storage.dataset import Dataset, DatasetWriter
from curation.runner import (
    ParquetReader, Pipeline, Sink, fit_cpus, parquet_shards, run_pipeline,
)
from curation.runtime import Resources, Stage
from test_runtime import EvenOnly, Upper, make_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "requested,total,expected",
    [(1, 2, 1), (2, 2, 1), (4, 16, 4), (16, 16, 15), (1, 1, 0.5), (0.5, 8, 0.5), (0, 4, 0.0)],
)
def test_fit_cpus_leaves_room_for_the_feeding_tasks(requested, total, expected):
    assert fit_cpus(requested, total) == expected


def _records_file(path: Path, n: int, row_group: int = 10) -> Path:
    pq.write_table(make_records(n), path, row_group_size=row_group)
    return path


def test_input_shards_depend_on_the_input_only(tmp_path):
    a = _records_file(tmp_path / "a.parquet", 45)
    b = _records_file(tmp_path / "b.parquet", 12)
    shards = parquet_shards([(a, 45), (b, 12)], rows_per_shard=20)
    assert [(Path(s.path).name, s.row_groups, s.rows, s.first_row) for s in shards] == [
        ("a.parquet", (0, 1), 20, 0), ("a.parquet", (2, 3), 20, 20), ("a.parquet", (4,), 5, 40),
        ("b.parquet", (0, 1), 12, 45),
    ]
    assert [s.shard_id for s in shards] == [0, 1, 2, 3]
    again = parquet_shards([(a, 45), (b, 12)], rows_per_shard=20)
    assert again == shards
    rows = [r for s in shards for batch in ParquetReader(batch_size=7)(s) for r in batch.column("record_id").to_pylist()]
    assert rows == [f"t:{i}" for i in range(45)] + [f"t:{i}" for i in range(12)]


def test_shard_tasks_and_an_actor_pool_on_a_real_local_ray(local_ray, tmp_path):
    src = _records_file(tmp_path / "in.parquet", 40)
    pipeline = Pipeline(ParquetReader(batch_size=8), [Upper(), EvenOnly(), Sink("records")])
    with DatasetWriter(tmp_path / "out") as writer:
        run_pipeline(pipeline, parquet_shards([(src, 40)], rows_per_shard=10), writer)
        manifest = writer.close()
    assert manifest["tables"]["records"]["rows"] == 20 and manifest["tables"]["rejects"]["rows"] == 20
    assert [s["path"] for s in manifest["tables"]["records"]["shards"]] == [f"records/part-{k:05d}.parquet" for k in range(4)]
    upper, even = manifest["stages"]["upper"], manifest["stages"]["even"]
    assert {k: upper[k] for k in ("in", "out", "dropped")} == {"in": 40, "out": 40, "dropped": {}}
    assert {k: even[k] for k in ("in", "out", "dropped")} == {"in": 40, "out": 20, "dropped": {"odd": 20}}
    # summed batch wall time across workers: at least the 10 ms a row Upper slept; the actor stage's own
    # time is measured too (not compared with Upper's: on a loaded machine an actor call can take longer)
    assert 0.4 <= upper["seconds"] < 20 and 0 < even["seconds"] < 20
    data = Dataset(tmp_path / "out", verify=True)
    assert sorted(data.read("records").column("phash").to_pylist()) == list(range(0, 400, 20))
    assert {r["reason"] for r in data.read("rejects").to_pylist()} == {"odd"}


def test_a_stage_that_wants_more_gpus_than_exist_is_refused(local_ray, tmp_path):
    class Greedy(Stage):
        name = "greedy"
        resources = Resources(gpus=8)

        def __call__(self, batch):
            return batch

    src = _records_file(tmp_path / "in.parquet", 2)
    with DatasetWriter(tmp_path / "out") as writer:
        with pytest.raises(ValueError, match="greedy"):
            run_pipeline(Pipeline(ParquetReader(), [Greedy(), Sink("records")]), parquet_shards([(src, 2)]), writer)


def test_the_local_executor_gives_the_same_dataset(local_ray, tmp_path):
    src = _records_file(tmp_path / "in.parquet", 30)
    out = {}
    for executor in ("ray", "local"):
        with DatasetWriter(tmp_path / executor) as writer:
            run_pipeline(Pipeline(ParquetReader(), [Upper(), EvenOnly(), Sink("records")]),
                         parquet_shards([(src, 30)], 8), writer, executor=executor)
            out[executor] = writer.close()
    assert out["ray"]["tables"]["records"]["shards"] == out["local"]["tables"]["records"]["shards"]


class Slow(Stage):
    """Takes its time, so that a test can kill the run in the middle."""

    name = "slow"

    def __call__(self, batch):
        time.sleep(0.15)
        return batch


RUN_AND_MAYBE_DIE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from curation.storage.dataset import DatasetWriter
    from curation.runner import ParquetReader, Pipeline, Sink, init_ray, parquet_shards, run_pipeline
    from test_runtime import EvenOnly
    from test_runner import Slow

    src, out, resume = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "resume"
    init_ray(num_cpus=2)
    with DatasetWriter(out, resume=resume, config={"job": "test"}) as writer:
        run_pipeline(Pipeline(ParquetReader(batch_size=10), [Slow(), EvenOnly(), Sink("records")]),
                     parquet_shards([(src, 200)], 10), writer)
        writer.close(config={"job": "test"})
    """
)


def _run(src, out, mode, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "curation"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", RUN_AND_MAYBE_DIE, str(src), str(out), mode], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _as_set(path: Path) -> tuple[set, set, list]:
    data = Dataset(path, verify=True)
    records = data.read("records").column("record_id").to_pylist()
    rejects = data.read("rejects").column("record_id").to_pylist()
    assert len(records) == len(set(records)) and len(rejects) == len(set(rejects))  # 0 duplicates
    return set(records), set(rejects), sorted(s["path"] for s in data.manifest["tables"]["records"]["shards"])


def test_a_driver_killed_mid_job_resumes_to_the_same_output(tmp_path):
    src = _records_file(tmp_path / "in.parquet", 200)
    whole = _run(src, tmp_path / "whole", "fresh")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    out = tmp_path / "killed"
    proc = _run(src, out, "fresh")
    done = out / ".curate" / "staging" / "done"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(done.glob("*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
    proc.wait(timeout=60)
    finished = len(list(done.glob("*.json")))
    assert 3 <= finished < 20, finished
    assert not (out / "manifest.json").exists()

    resumed = _run(src, out, "resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["slow"]["in"] == 200  # every row counted once: skipped shards from their markers
    assert _as_set(out) == _as_set(tmp_path / "whole")
    records, rejects, _ = _as_set(out)
    assert records | rejects == {f"t:{i}" for i in range(200)} and not records & rejects  # 0 missing


def test_resume_refuses_a_different_config(tmp_path):
    with DatasetWriter(tmp_path / "out", config={"format": "qwen-vl", "tasks": ["caption"]}) as w:
        w.add_shard({"shard_id": 0, "rows_in": 1, "files": [], "stages": {}})
    from curation.storage.dataset import OutputError

    with pytest.raises(OutputError, match="different config .*keys: format"):
        DatasetWriter(tmp_path / "out", resume=True, config={"format": "qwen2-vl", "tasks": ["caption"]})
    w = DatasetWriter(tmp_path / "out", resume=True, config={"format": "qwen-vl", "tasks": ["caption"]})
    assert w.done_shards() == {0}
    w.abort()


class Sleepy(EvenOnly):
    """EvenOnly, slowly, writing its process id when set up: a test kills its actor in the middle."""

    name = "even"

    def __init__(self, pid_file: str):
        self.pid_file = pid_file

    def setup(self):
        super().setup()
        with open(self.pid_file, "a") as f:
            f.write(f"{os.getpid()}\n")

    def measure(self, batch):
        time.sleep(0.1)
        return super().measure(batch)


def test_a_killed_actor_is_restarted_and_every_row_accounted(local_ray, tmp_path):
    import threading

    src = _records_file(tmp_path / "in.parquet", 120)
    pid_file = tmp_path / "actor.pids"
    killed = []

    def kill_the_actor():
        deadline = time.time() + 120
        while time.time() < deadline and not pid_file.exists():
            time.sleep(0.05)
        time.sleep(1.0)  # let it work a while first
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_actor)
    killer.start()
    with DatasetWriter(tmp_path / "out") as writer:
        run_pipeline(Pipeline(ParquetReader(batch_size=10), [Sleepy(str(pid_file)), Sink("records")]),
                     parquet_shards([(src, 120)], 20), writer)
        manifest = writer.close()
    killer.join()
    pids = pid_file.read_text().split()
    assert killed and len(pids) >= 2 and pids[0] == str(killed[0])  # killed mid-job, and set up again
    assert manifest["stages"]["even"]["in"] == 120
    assert manifest["tables"]["records"]["rows"] + manifest["tables"]["rejects"]["rows"] == 120
    records, rejects, _ = _as_set(tmp_path / "out")
    assert records | rejects == {f"t:{i}" for i in range(120)}
    assert len(records) == 60


def test_shards_are_written_in_row_groups_of_the_set_size_whatever_the_batches(tmp_path):
    """A shard read in batches of 7 rows: its records and rejects come out in row groups of ROW_GROUP_ROWS rows
    (the last one shorter), not one row group per batch; every row once, in order."""
    from curation.schema import ROW_GROUP_ROWS

    n = 2 * ROW_GROUP_ROWS + 600
    src = _records_file(tmp_path / "in.parquet", n, row_group=500)
    with DatasetWriter(tmp_path / "out") as writer:
        run_pipeline(Pipeline(ParquetReader(batch_size=7), [EvenOnly(), Sink("records")]),
                     parquet_shards([(src, n)], rows_per_shard=n), writer, executor="local")
        manifest = writer.close()
    half = n // 2
    for table in ("records", "rejects"):
        (shard,) = manifest["tables"][table]["shards"]
        meta = pq.ParquetFile(tmp_path / "out" / shard["path"]).metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        assert sizes == [ROW_GROUP_ROWS] * (half // ROW_GROUP_ROWS) + [half % ROW_GROUP_ROWS], (table, sizes)
    ids = Dataset(tmp_path / "out", verify=True).read("records").column("record_id").to_pylist()
    assert ids == [f"t:{i}" for i in range(0, n, 2)]


def test_resume_refuses_an_input_that_changed(tmp_path):
    """An input shard's identity is its file and row range: a resumed run over other files is refused."""
    from curation.errors import InputError

    a = _records_file(tmp_path / "a.parquet", 30)
    b = _records_file(tmp_path / "b.parquet", 30)
    pipeline = Pipeline(ParquetReader(batch_size=8), [Sink("records")])
    writer = DatasetWriter(tmp_path / "out", config={"k": 1})
    run_pipeline(pipeline, parquet_shards([(a, 30)], rows_per_shard=10)[:2], writer, executor="local")
    writer.abort()  # as a killed run leaves it: two shards done
    writer = DatasetWriter(tmp_path / "out", resume=True, config={"k": 1})
    with pytest.raises(InputError, match=r"input shard 0 was .*a\.parquet rows 0\+10 in the interrupted run, now .*b\.parquet"):
        run_pipeline(pipeline, parquet_shards([(b, 30)], rows_per_shard=10), writer, executor="local")
    writer.abort()
    writer = DatasetWriter(tmp_path / "out", resume=True, config={"k": 1})  # the same input: resumes
    run_pipeline(pipeline, parquet_shards([(a, 30)], rows_per_shard=10), writer, executor="local")
    assert writer.close()["tables"]["records"]["rows"] == 30


def test_local_gpus_counts_the_drivers_gpus_within_cuda_visible_devices(monkeypatch):
    import os

    from curation.runner import local_gpus

    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        found = 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert local_gpus() == found
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpus() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert local_gpus() == 0


def test_the_reader_runs_ahead_in_its_thread_and_hands_on_its_end_value_and_errors():
    import threading

    import pyarrow as pa

    from curation.runner import _Prefetch

    made, closed = [], threading.Event()

    def reader(n, fail_at=None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise ValueError(f"bad batch {i}")
                made.append(i)
                yield pa.table({"x": [i]})
            return {"fetched": n}
        finally:
            closed.set()

    p = _Prefetch(reader(3))
    got = []
    while True:
        kind, value = p.get()
        if kind == "end":
            break
        got.append(value.column("x")[0].as_py())
    assert got == [0, 1, 2] and value == {"fetched": 3}

    p = _Prefetch(reader(5, fail_at=2))
    assert p.get()[0] == "batch" and p.get()[0] == "batch"
    with pytest.raises(ValueError, match="bad batch 2"):
        p.get()

    made.clear()
    closed.clear()
    p = _Prefetch(reader(1000), depth=1)
    p.get()
    p.close()
    assert closed.wait(5)  # the generator's own clean-up ran, in its thread
    assert len(made) < 10  # stopped a batch or two ahead, not read to the end

import time

import pyarrow as pa
import pytest

from curation.runtime import Resources, Stage, run_local, split_rejects, stage_seconds, timed_call
from curation.schema import records_from_pylist
from filters.base import Drop, Filter


class Upper(Stage):
    """Runs inside each shard's task."""

    name = "upper"
    batch_size = 7

    def __call__(self, batch):
        time.sleep(0.01 * batch.num_rows)  # measurable work: 10 ms a row
        caps = [[c.upper() for c in cs] for cs in batch.column("captions").to_pylist()]
        return batch.set_column(batch.column_names.index("captions"), "captions", pa.array(caps, pa.list_(pa.string())))


class EvenOnly(Filter):
    """A model-like stage: set up once, runs in an actor pool; drops odd ids, measures phash."""

    name = "even"
    batch_size = 5
    pooled = True
    resources = Resources(cpus=2)  # more than fits beside the shard tasks on 2 CPUs
    measures = (pa.field("phash", pa.int64()),)

    def setup(self):
        self.loaded = True

    def measure(self, batch):
        assert self.loaded
        return {"phash": pa.array([int(r.split(":")[1]) * 10 for r in batch.column("record_id").to_pylist()])}

    def decide(self, batch):
        return [None if int(r.split(":")[1]) % 2 == 0 else Drop("odd", r) for r in batch.column("record_id").to_pylist()]


def make_records(n):
    return records_from_pylist(
        [{"record_id": f"t:{i}", "source": "t", "captions": [f"cap {i}"], "meta": {"i": i}} for i in range(n)]
    )


def test_stage_seconds_survive_rebatching_and_new_rows():
    out = run_local(make_records(10), [Upper()])  # batches of 7: two calls
    seconds = stage_seconds(out)
    assert set(seconds) == {"upper"} and seconds["upper"] >= 0.1
    halves = [out.slice(0, 3), out.slice(3)]  # split the way another stage's batch size would
    assert sum(stage_seconds(h)["upper"] for h in halves) == pytest.approx(seconds["upper"])

    class Explode(Stage):  # makes new rows (as build does): earlier timings travel on
        name = "explode"

        def __call__(self, batch):
            return pa.table({"record_id": pa.array(batch.column("record_id").to_pylist() * 2)})

    exploded = timed_call(Explode(), out)
    assert exploded.num_rows == 20
    assert stage_seconds(exploded)["upper"] == pytest.approx(seconds["upper"])
    assert stage_seconds(exploded)["explode"] > 0


def test_filter_marks_and_routes_rejects_in_process():
    out = run_local(make_records(10), [Upper(), EvenOnly()])
    kept, rejects = split_rejects(out)
    assert sorted(kept.column("record_id").to_pylist()) == [f"t:{i}" for i in range(0, 10, 2)]
    assert set(kept.column("phash").to_pylist()) == {0, 20, 40, 60, 80}
    assert kept.column("captions").to_pylist()[0][0].startswith("CAP")
    assert sorted(rejects.column("reason").to_pylist()) == ["odd"] * 5
    assert set(rejects.column("stage").to_pylist()) == {"even"}
    assert all(m is not None for m in rejects.column("meta").to_pylist())

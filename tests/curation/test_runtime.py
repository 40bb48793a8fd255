import time

import pyarrow as pa
import pytest

from curation.dataset import Dataset, DatasetWriter
from curation.runtime import (
    Resources, Stage, apply_stages, collect, fit_cpus, run_local, split_rejects, stage_seconds, timed_call,
)
from curation.schema import records_from_pylist
from filters.base import Drop, Filter


class Upper(Stage):
    """Stateless: runs as Ray tasks."""

    name = "upper"
    batch_size = 7

    def __call__(self, batch):
        time.sleep(0.01 * batch.num_rows)  # measurable work: 10 ms a row
        caps = [[c.upper() for c in cs] for cs in batch.column("captions").to_pylist()]
        return batch.set_column(batch.column_names.index("captions"), "captions", pa.array(caps, pa.list_(pa.string())))


class EvenOnly(Filter):
    """Stateful (has setup): runs as an actor pool; drops odd ids, measures phash."""

    name = "even"
    batch_size = 5
    resources = Resources(cpus=2)  # more than fits beside the read tasks on 2 CPUs
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


@pytest.mark.parametrize(
    "requested,total,expected",
    [(1, 2, 1), (2, 2, 1), (4, 16, 4), (16, 16, 15), (1, 1, 0.5), (0.5, 8, 0.5), (0, 4, 0.0)],
)
def test_fit_cpus_leaves_room_for_the_feeding_stages(requested, total, expected):
    assert fit_cpus(requested, total) == expected


def test_stateful_means_setup_or_gpus():
    assert not Upper().stateful
    assert EvenOnly().stateful

    class Gpu(Stage):
        resources = Resources(gpus=1)

    assert Gpu().stateful


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


def test_adapter_on_a_real_local_ray(local_ray, tmp_path):
    import ray.data

    ds = ray.data.from_arrow(make_records(40))
    ds = apply_stages(ds, [Upper(), EvenOnly()])
    writer = DatasetWriter(tmp_path / "out")
    kept, dropped = collect(ds.iter_batches(batch_format="pyarrow", batch_size=8), writer, ["upper", "even"])
    manifest = writer.close()
    assert kept == 20
    assert dropped == {("even", "odd"): 20}
    upper = manifest["stages"]["upper"]
    assert {k: upper[k] for k in ("in", "out", "dropped")} == {"in": 40, "out": 40, "dropped": {}}
    # summed batch wall time across the workers: at least the 10 ms a row it slept, and not wildly more
    assert 0.4 <= upper["seconds"] < 20
    assert 0 < manifest["stages"]["even"]["seconds"] < upper["seconds"]
    assert manifest["stages"]["even"]["in"] == 40 and manifest["stages"]["even"]["out"] == 20
    assert manifest["stages"]["even"]["dropped"] == {"odd": 20}
    data = Dataset(tmp_path / "out")
    assert data.read("rejects").num_rows == 20
    assert sorted(data.read("records").column("phash").to_pylist()) == list(range(0, 400, 20))


def test_adapter_refuses_a_stage_that_wants_more_gpus_than_exist(local_ray):
    import ray.data

    class Greedy(Stage):
        name = "greedy"
        resources = Resources(gpus=8)

        def __call__(self, batch):
            return batch

    with pytest.raises(ValueError, match="greedy"):
        apply_stages(ray.data.from_arrow(make_records(2)), [Greedy()])

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import dataset as dataset_mod
from curation.dataset import Dataset, DatasetWriter, ManifestError, ShardWriter
from curation.schema import records_from_pylist


def records(n, start=0, image_bytes=1000):
    return records_from_pylist(
        [{"record_id": f"t:{i}", "source": "t", "image": bytes(image_bytes), "width": 10, "height": 10,
          "captions": [f"caption {i}"]} for i in range(start, start + n)]
    )


def test_shards_have_deterministic_names_and_target_size(tmp_path):
    w = ShardWriter(tmp_path, "records", target_bytes=20_000)
    for k in range(5):
        w.write(records(10, start=10 * k))
    shards = w.close()
    assert [s.path for s in shards] == [f"records/part-{i:05d}.parquet" for i in range(len(shards))]
    assert len(shards) >= 2
    assert sum(s.rows for s in shards) == 50
    ids = pa.concat_tables([pq.read_table(tmp_path / s.path) for s in shards]).column("record_id").to_pylist()
    assert ids == [f"t:{i}" for i in range(50)]
    assert not list((tmp_path / "records").glob("*.tmp"))


def test_crash_in_the_middle_of_a_shard_exposes_nothing(tmp_path, monkeypatch):
    writer = DatasetWriter(tmp_path / "out", target_shard_bytes=20_000)
    writer.write("records", records(30))  # first shard lands

    real_write = pq.write_table

    def crash_half_way(table, where, **kw):
        real_write(table.slice(0, 3), where, **kw)  # a partial file under the temporary name
        raise OSError("disk gone")

    monkeypatch.setattr(dataset_mod.pq, "write_table", crash_half_way)
    with pytest.raises(OSError):
        writer.write("records", records(30, start=30))
    monkeypatch.setattr(dataset_mod.pq, "write_table", real_write)

    out = tmp_path / "out"
    visible = sorted(p.name for p in (out / "records").glob("part-*.parquet"))
    assert visible == ["part-00000.parquet"]  # the crashed shard never got its final name
    assert list((out / "records").glob(".part-00001.parquet.tmp"))
    with pytest.raises(ManifestError):  # no manifest: no reader trusts this directory
        Dataset(out)


def test_readers_trust_only_manifest_listed_shards(tmp_path):
    out = tmp_path / "out"
    writer = DatasetWriter(out)
    writer.write("records", records(5))
    writer.count_stage("basic", 5, 5)
    manifest = writer.close(config={"k": 1})
    # a stray shard appears later (e.g. a crashed re-run): readers must not see it
    pq.write_table(records(7, start=100), out / "records" / "part-00001.parquet")
    ds = Dataset(out)
    assert ds.read("records").num_rows == 5 == manifest["tables"]["records"]["rows"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["stages"]["basic"] == {"in": 5, "out": 5, "dropped": {}, "seconds": 0.0}
    assert on_disk["config"] == {"k": 1}
    assert on_disk["tables"]["records"]["shards"][0]["sha256"]
    assert not (out / ".manifest.json.tmp").exists()


def test_writer_clears_a_previous_run(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out, target_shard_bytes=5_000)
    for k in range(4):
        w.write("records", records(5, start=5 * k))
    w.close()
    assert len(list((out / "records").glob("part-*"))) > 1
    w2 = DatasetWriter(out)
    w2.write("records", records(2))
    w2.close()
    assert sorted(p.name for p in (out / "records").glob("part-*")) == ["part-00000.parquet"]
    assert Dataset(out).read("records").num_rows == 2


def test_missing_dataset_directory_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="no such dataset directory"):
        Dataset(tmp_path / "nope")

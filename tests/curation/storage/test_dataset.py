import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.storage import dataset as dataset_mod
from curation.storage.dataset import Dataset, DatasetWriter, ManifestError, OutputError, ShardError, ShardWriter
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
    writer.write("records", records(30))  # first shard lands (in the staging directory)

    real_write = pq.write_table

    def crash_half_way(table, where, **kw):
        real_write(table.slice(0, 3), where, **kw)  # a partial file under the temporary name
        raise OSError("disk gone")

    monkeypatch.setattr(dataset_mod.pq, "write_table", crash_half_way)
    with pytest.raises(OSError):
        writer.write("records", records(30, start=30))
    monkeypatch.setattr(dataset_mod.pq, "write_table", real_write)

    out = tmp_path / "out"
    staged = sorted(p.name for p in (writer.staging / "records").iterdir())
    assert staged == [".part-d00001.parquet.tmp", "part-d00000.parquet"]  # the crashed shard never got its final name
    assert not (out / "records").exists()  # nothing outside the staging directory
    with pytest.raises(ManifestError):  # no manifest: no reader trusts this directory
        Dataset(out)
    writer.abort()


def test_readers_trust_only_manifest_listed_shards(tmp_path):
    out = tmp_path / "out"
    writer = DatasetWriter(out)
    writer.write("records", records(5))
    writer.count_stage("basic", 5, 5, seconds=0.25)
    manifest = writer.close(config={"k": 1})
    # a stray shard appears later (e.g. a crashed re-run): readers must not see it
    pq.write_table(records(7, start=100), out / "records" / "part-00001.parquet")
    ds = Dataset(out)
    assert ds.read("records").num_rows == 5 == manifest["tables"]["records"]["rows"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["stages"]["basic"] == {"in": 5, "out": 5, "dropped": {}, "seconds": 0.25}
    assert on_disk["config"] == {"k": 1}
    assert on_disk["tables"]["records"]["shards"][0]["sha256"]
    assert not (out / ".manifest.json.tmp").exists()
    assert not (out / ".curate" / "staging").exists()


def _fingerprint(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file() and ".curate" not in p.parts}


def test_a_non_empty_output_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out)
    w.write("records", records(3))
    w.close()
    before = _fingerprint(out)
    with pytest.raises(OutputError, match="not empty .*--overwrite"):
        DatasetWriter(out)
    assert _fingerprint(out) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="notes.txt"):
        DatasetWriter(tmp_path / "mine")


def test_overwrite_replaces_only_what_the_tool_wrote_once_complete(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out, target_shard_bytes=5_000)
    for k in range(4):
        w.write("records", records(5, start=5 * k))
    w.close()
    assert len(list((out / "records").glob("part-*"))) > 1
    (out / "notes.txt").write_text("the user's own file")
    before = _fingerprint(out)
    w2 = DatasetWriter(out, overwrite=True)
    w2.write("records", records(2))
    for shard in w2.writer("records").close():
        assert w2.staged(shard).is_file()
    assert _fingerprint(out) == before  # the old dataset is untouched until close()
    w2.close()
    assert sorted(p.name for p in (out / "records").glob("part-*")) == ["part-d00000.parquet"]
    assert Dataset(out).read("records").num_rows == 2
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_an_aborted_overwrite_leaves_the_old_dataset(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out)
    w.write("records", records(4))
    w.close()
    before = _fingerprint(out)
    with pytest.raises(RuntimeError, match="bad input half-way"):
        with DatasetWriter(out, overwrite=True) as w2:
            w2.write("records", records(9))
            w2.writer("records").flush()
            raise RuntimeError("bad input half-way")
    assert _fingerprint(out) == before
    assert Dataset(out).read("records").num_rows == 4
    # the lock went with the failed run: the next one proceeds and cleans its staging
    w3 = DatasetWriter(out, overwrite=True)
    assert not list(w3.staging.rglob("*.parquet"))
    w3.abort()


def test_a_second_writer_is_locked_out_naming_the_holder(tmp_path):
    import os

    first = DatasetWriter(tmp_path / "out")
    with pytest.raises(OutputError, match=rf"in use by another curate run \(pid {os.getpid()}\)"):
        DatasetWriter(tmp_path / "out", overwrite=True)
    first.abort()
    DatasetWriter(tmp_path / "out").abort()  # free again


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_output_may_not_be_inside_or_hold_the_input(tmp_path, where):
    src = tmp_path / "data"
    w = DatasetWriter(src)
    w.write("records", records(2))
    w.close()
    out = {"same": src, "inside": src / "sub", "holds": tmp_path}[where]
    with pytest.raises(OutputError, match="input"):
        DatasetWriter(out, overwrite=True, inputs=(src,))
    assert Dataset(src).read("records").num_rows == 2
    assert not (src / "sub").exists()


def test_every_read_checks_row_counts_and_verify_checks_sha256(tmp_path):
    out = tmp_path / "out"
    w = DatasetWriter(out)
    w.write("records", records(20))
    w.close()
    shard = out / "records" / "part-d00000.parquet"
    good = shard.read_bytes()
    assert Dataset(out, verify=True).read("records").num_rows == 20
    pq.write_table(records(10), shard)  # replaced by a shard with 10 fewer rows
    with pytest.raises(ShardError, match=r"part-d00000.parquet: shard has \d+ bytes, the manifest says \d+"):
        Dataset(out).read("records")
    with pytest.raises(ShardError, match="truncated or replaced"):
        list(Dataset(out).iter_batches("records"))
    # the same size but other rows (a doctored manifest): the row count is checked too
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tables"]["records"]["shards"][0]["bytes"] = shard.stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"part-d00000.parquet: shard has 10 rows, the manifest says 20"):
        Dataset(out).read("records")
    shard.unlink()
    with pytest.raises(ShardError, match="part-d00000.parquet: shard listed in the manifest is missing"):
        Dataset(out).shard_paths("records")
    flipped = bytearray(good)
    middle = len(flipped) // 2
    flipped[middle:middle + 64] = bytes(b ^ 0xFF for b in flipped[middle:middle + 64])
    shard.write_bytes(bytes(flipped))
    manifest["tables"]["records"]["shards"][0]["bytes"] = len(good)  # same size, same rows: only sha256 tells
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert Dataset(out).shard_paths("records")  # rows and size pass
    with pytest.raises(ShardError, match="sha256"):
        Dataset(out, verify=True)


def test_missing_dataset_directory_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="no such dataset directory"):
        Dataset(tmp_path / "nope")


def test_adopted_shards_are_linked_once_and_listed_with_their_checksums(tmp_path):
    """A first pass written in the staging hands its shards to the output without a row passing through."""
    from curation.storage.dataset import Dataset, DatasetWriter
    from curation.schema import rejects_from_pylist

    out = DatasetWriter(tmp_path / "out")
    first_dir = out.staging / "first-pass"
    with DatasetWriter(first_dir) as first:
        first.write("rejects", rejects_from_pylist([{"record_id": f"r{i}", "source": "t", "stage": "s", "reason": "empty_text",
                                                     "detail": "x"} for i in range(5)]))
        first.close()
    src = Dataset(first_dir)
    out.adopt(src, "rejects")
    out.adopt(src, "rejects")  # a resumed run: already done, nothing twice
    linked = out.staging / "rejects" / "part-a00000.parquet"
    assert linked.stat().st_ino == src.shard_paths("rejects")[0].stat().st_ino  # a hard link, not a copy
    m = out.close()
    assert [f["path"] for f in m["tables"]["rejects"]["shards"]] == ["rejects/part-a00000.parquet"]
    assert m["tables"]["rejects"]["rows"] == 5
    assert Dataset(tmp_path / "out", verify=True).rows("rejects") == 5  # sha256 and row count still hold


def test_task_figures_sum_the_spans_and_list_them_for_small_runs(monkeypatch):
    import curation.storage.dataset as dataset
    from curation.storage.dataset import task_figures

    spans = [{"shard_id": 1, "node": "n1", "pid": 7, "start": 100.5, "wall": 4.0, "cpu": 3.0, "setup": 1.0, "reader_wait": 0.5},
             {"shard_id": 0, "node": "n1", "pid": 8, "start": 100.0, "wall": 2.0, "cpu": 2.5, "setup": 0.0, "reader_wait": 0.25},
             {"shard_id": 2, "node": "n2", "pid": 7, "start": 102.0, "wall": 1.0, "cpu": 0.5, "setup": 0.0, "reader_wait": 0.0}]
    t = task_figures(spans)
    assert {k: v for k, v in t.items() if k != "spans"} == {
        "tasks": 3, "processes": 3, "span_seconds": 4.5, "wall_seconds": 7.0, "cpu_seconds": 6.0,
        "setup_seconds": 1.0, "reader_wait_seconds": 0.75}
    assert [(s["shard_id"], s["start"]) for s in t["spans"]] == [(0, 0.0), (1, 0.5), (2, 2.0)]
    monkeypatch.setattr(dataset, "TASK_SPANS_LISTED", 2)
    assert "spans" not in task_figures(spans)

"""Exact dedup keys, pairs and the keep/drop decisions (leader rule, first record id keeps)."""

import pyarrow as pa
import pytest

from curation.runner import InputShard, group_by_key
from curation.runtime import run_local, split_rejects
from curation.schema import records_from_pylist
from filters.dedup_exact import DedupDecide, decide_duplicates, exact_pairs, exact_rows
from filters.phash import band_rows, candidate_pairs


def _records():
    return pa.table({
        "record_id": ["w:3", "w:1", "w:2", "w:4", "w:5", "w:6"],
        "sha256": ["aa", "aa", "bb", "aa", "cc", None],
        "url": ["http://x/1.jpg", "http://x/0.jpg", "HTTP://X:80/1.jpg#top", None, "http://y/5.jpg", "http://y/6.jpg"],
        "phash": pa.array([0, 0, 1 << 60, 0, 0b111, None], pa.int64()),
    })


def test_exact_duplicates_keep_the_first_record_id_and_name_it():
    decisions = decide_duplicates([exact_pairs(exact_rows(_records()))]).to_pylist()
    got = {d["record_id"]: (d["reason"], d["kept"], d["detail"]) for d in decisions}
    # w:2 shares only the URL of w:3, which is dropped: the leader rule names kept records only, so w:2 stays
    assert got == {
        "w:3": ("duplicate_image", "w:1", "duplicate of w:1 (same sha256)"),
        "w:4": ("duplicate_image", "w:1", "duplicate of w:1 (same sha256)"),
    }


def test_same_url_other_bytes_is_duplicate_url():
    t = pa.table({"record_id": ["a:1", "a:2"], "sha256": ["s1", "s2"], "url": ["http://h/x.jpg", "http://H/x.jpg#f"],
                  "phash": pa.array([None, None], pa.int64())})
    (d,) = decide_duplicates([exact_pairs(exact_rows(t))]).to_pylist()
    assert (d["record_id"], d["reason"], d["kept"]) == ("a:2", "duplicate_url", "a:1")


def test_by_image_only_ignores_urls():
    t = pa.table({"record_id": ["a:1", "a:2"], "sha256": ["s1", "s2"], "url": ["http://h/x.jpg", "http://h/x.jpg"]})
    assert exact_pairs(exact_rows(t, by_url=False)).num_rows == 0


def test_near_duplicates_follow_the_leader_rule_without_chains():
    """a ~ b and b ~ c but not a ~ c: b goes (naming a), c stays, since the record it pairs with (b) is dropped."""
    t = pa.table({"record_id": ["p:a", "p:b", "p:c", "p:d"], "sha256": ["1", "2", "3", "4"], "url": [None] * 4,
                  "phash": pa.array([0b0000, 0b0011, 0b1111, -1], pa.int64())})
    pairs = candidate_pairs(band_rows(t, 2), 2)
    got = {d["record_id"]: d for d in decide_duplicates([pairs]).to_pylist()}
    assert set(got) == {"p:b"}
    assert got["p:b"]["reason"] == "near_duplicate" and got["p:b"]["detail"] == "near duplicate of p:a at hamming distance 2 (phash)"


def test_the_decide_stage_drops_what_the_decisions_name(tmp_path):
    import pyarrow.parquet as pq

    decisions = decide_duplicates([exact_pairs(exact_rows(_records()))])
    path = tmp_path / "decisions.parquet"
    pq.write_table(decisions, path)
    rows = records_from_pylist([{"record_id": r, "source": "w", "image": b"x"} for r in ("w:1", "w:3", "w:9")])
    kept, rejects = split_rejects(run_local(rows, [DedupDecide(str(path))]))
    assert kept.column("record_id").to_pylist() == ["w:1", "w:9"]
    (rej,) = rejects.to_pylist()
    assert (rej["record_id"], rej["stage"], rej["reason"], rej["detail"]) == (
        "w:3", "dedup", "duplicate_image", "duplicate of w:1 (same sha256)")


def _shards(tmp_path, table: pa.Table, parts: int):
    import pyarrow.parquet as pq

    from curation.runner import parquet_shards

    files = []
    for k in range(parts):
        piece = table.slice(k * table.num_rows // parts, (k + 1) * table.num_rows // parts - k * table.num_rows // parts)
        path = tmp_path / f"in-{k}.parquet"
        pq.write_table(piece, path, row_group_size=50)
        files.append((path, piece.num_rows))
    return parquet_shards(files, 100)


def _hash_table(n=600):
    import numpy as np

    rng = np.random.default_rng(3)
    h = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    h[n // 2:] = h[: n - n // 2] ^ np.int64(0b101)  # the second half: distance 2 from the first
    return pa.table({"record_id": [f"r:{i:04d}" for i in range(n)], "sha256": [f"s{i % (n - 5)}" for i in range(n)],
                     "url": [None] * n, "phash": pa.array(h, pa.int64())})


def test_group_by_key_local_gives_the_pairs_of_one_table(tmp_path):
    import functools

    from curation.runner import ParquetReader

    table = _hash_table()
    shards = _shards(tmp_path, table, 3)
    assert len(shards) >= 3
    reader = ParquetReader(batch_size=64)
    got = group_by_key(shards, reader, functools.partial(band_rows, k=2), functools.partial(candidate_pairs, k=2),
                       partitions=4, executor="local")
    pairs = {(r["a"], r["b"]) for t in got for r in t.to_pylist()}
    want = {(r["a"], r["b"]) for r in candidate_pairs(band_rows(table, 2), 2).to_pylist()}
    assert pairs == want and len(want) >= 300


def test_group_by_key_on_a_real_local_ray_with_several_blocks(local_ray, tmp_path):
    import functools

    from curation.runner import ParquetReader

    table = _hash_table()
    shards = _shards(tmp_path, table, 3)
    reader = ParquetReader(batch_size=64)
    got = group_by_key(shards, reader, functools.partial(band_rows, k=2), functools.partial(candidate_pairs, k=2),
                       partitions=5, executor="ray")
    assert len(got) == 5  # one result per partition, each from its own reduce task
    pairs = {(r["a"], r["b"]) for t in got for r in t.to_pylist()}
    want = {(r["a"], r["b"]) for r in candidate_pairs(band_rows(table, 2), 2).to_pylist()}
    assert pairs == want
    exact = group_by_key(shards, reader, exact_rows, exact_pairs, partitions=3, executor="ray")
    assert {(r["a"], r["b"]) for t in exact for r in t.to_pylist()} == {(f"r:{i:04d}", f"r:{i + 595:04d}") for i in range(5)}


def test_group_by_key_refuses_a_bad_executor():
    with pytest.raises(ValueError, match="executor"):
        group_by_key([InputShard(0, "x")], lambda s: iter(()), exact_rows, exact_pairs, executor="spark")


def test_one_shuffle_for_exact_keys_and_bands_gives_the_pairs_of_both(tmp_path):
    import functools

    from curation.runner import ParquetReader
    from filters.dedup_exact import dedup_pairs_of_group, dedup_rows

    table = _hash_table()
    shards = _shards(tmp_path, table, 3)
    emit = functools.partial(dedup_rows, by_image=True, by_url=True, max_distance=2)
    got = group_by_key(shards, ParquetReader(batch_size=64), emit,
                       functools.partial(dedup_pairs_of_group, max_distance=2), partitions=4, executor="local")
    pairs = {(r["a"], r["b"]) for t in got for r in t.to_pylist()}
    bands = {(r["a"], r["b"]) for r in candidate_pairs(band_rows(table, 2), 2).to_pylist()}
    exact = {(r["a"], r["b"]) for r in exact_pairs(exact_rows(table)).to_pylist()}
    assert pairs == bands | exact and exact - bands  # some byte copies are no pHash pairs here
    # an exact key row never pairs with a band row, whatever their int keys
    rows = pa.concat_tables([dedup_rows(table.slice(0, 1), True, False, None).set_column(0, "key", pa.array([7], pa.int64())),
                             band_rows(pa.table({"record_id": ["z:1"], "phash": pa.array([7], pa.int64())}), 0)],
                            promote_options="permissive")
    assert dedup_pairs_of_group(rows, 0).num_rows == 0

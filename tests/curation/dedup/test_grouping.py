"""Dedup's grouping on the cluster (curation/dedup, jobs.dedup.group_duplicates) against a brute-force oracle."""

import math

import numpy as np
import pyarrow as pa
import pytest

from curation.dedup import components, keys, leaders
from curation.runner import shuffle
from jobs.dedup import group_duplicates
from oracle import decisions_of, flip, hash_set, leader_rule, oracle, with_crop_hashes, write_files


@pytest.mark.parametrize("m", [1, 5, 6, 7, 11])
def test_blocks_cover_the_64_bits_once(m):
    bits = sorted(b for shift, width in keys.block_layout(m) for b in range(shift, shift + width))
    assert bits == list(range(64))


@pytest.mark.parametrize("k", [0, 1, 2, 4, 6, 9])
def test_any_two_hashes_within_k_share_a_table_key(k):
    rng = np.random.default_rng(k)
    m = keys.choose_blocks(k, 1_000_000)
    assert len(keys.index_tables(k, m)) == (1 if k == 0 else math.comb(m, k))
    for _ in range(300):
        a = int(rng.integers(-(1 << 63), (1 << 63) - 1, dtype=np.int64))
        b = flip(a, rng.choice(64, k, replace=False))  # exactly k bits apart: the hardest case
        _, ka = keys.table_keys(np.array([a]), k, m)
        _, kb = keys.table_keys(np.array([b]), k, m)
        assert set(ka.tolist()) & set(kb.tolist())


def test_more_records_get_longer_keys_and_no_more_tables_than_they_need():
    small, large = keys.choose_blocks(4, 10_000), keys.choose_blocks(4, 10**9)
    assert small < large
    assert keys.choose_blocks(4, 10_000_000) == 6  # 15 tables of 21-bit keys: a bucket holds < 5 by chance
    assert keys.choose_blocks(4, 10**9) == 7  # 35 tables of 27-bit keys
    with pytest.raises(ValueError):
        keys.choose_blocks(32, 10)


def test_a_hot_bucket_is_a_star_not_its_square():
    g = keys.HOT_BUCKET * 8
    rows = pa.table({"key": pa.array(np.full(g, 42), pa.int64()), "key2": pa.array(np.full(g, 7), pa.int64()),
                     "kind": pa.array(np.full(g, keys.PHASH, np.int8)), "node": pa.array(np.arange(g)[::-1], pa.int64())})
    edges, stats = keys.bucket_edges(rows, 0, k=4)
    assert edges.num_rows == g - 1 and stats["hot_buckets"] == 1 and stats["checked"] == 0
    assert set(edges.column("a").to_pylist()) == {0}  # on the smallest node


def _union_find(n, a, b):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a, b):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return [find(x) for x in range(n)]


def _components(a, b, partitions=3):
    edges = [pa.table({"a": pa.array(a, pa.int64()), "b": pa.array(b, pa.int64())})]
    for rounds in range(1, 100):
        edges, st = shuffle(edges, components.large_star_rows, components.large_star, partitions, executor="local")
        if sum(s["unsettled"] for s in st) == 0:
            break
        edges, _ = shuffle(edges, components.small_star_rows, components.small_star, partitions, executor="local")
    labels, _ = shuffle(edges, components.label_rows, components.labels, ranges=[1000, 5000], executor="local")
    got = {}
    for t in labels:
        got.update(zip(t.column("node").to_pylist(), t.column("root").to_pylist()))
    return got, rounds


@pytest.mark.parametrize("shape", ["random", "chain_sorted", "chain_shuffled", "star", "two_stars_bridged"])
def test_components_are_those_of_union_find(shape):
    rng = np.random.default_rng(3)
    n = 6000
    if shape == "random":
        a, b = rng.integers(0, n, 4000), rng.integers(0, n, 4000)
    elif shape.startswith("chain"):
        perm = np.arange(n) if shape == "chain_sorted" else rng.permutation(n)
        a, b = perm[:-1], perm[1:]
    elif shape == "star":
        a, b = np.full(n - 1, n // 2), np.r_[np.arange(n // 2), np.arange(n // 2 + 1, n)]
    else:
        a = np.r_[np.full(2999, 5), np.full(2999, 5999), [17]]
        b = np.r_[np.arange(6, 3005), np.arange(3000, 5999), [5998]]
    got, rounds = _components(a, b)
    want = _union_find(n, a.tolist(), b.tolist())
    touched = {x for e in zip(a.tolist(), b.tolist()) if e[0] != e[1] for x in e}
    assert got == {x: want[x] for x in touched}  # every node of an edge, labelled with its component's smallest
    assert rounds < 40, rounds


def _group(files, tmp_path, k=4, dedup=("exact", "url", "phash"), executor="local", partitions=3, shard_rows=300,
           wave_rows=None, crop=None):
    import jobs.dedup as jd

    old, old_wave = jd.GROUP_SHARD_ROWS, jd.WAVE_KEY_ROWS
    jd.GROUP_SHARD_ROWS = shard_rows  # several map tasks and ranges on a small input
    jd.WAVE_KEY_ROWS = wave_rows or old_wave
    try:
        stage, figures = group_duplicates(files, dedup, k, str(tmp_path / "work"), shard_rows=shard_rows,
                                          partitions=partitions, executor=executor, crop_distance=crop)
    finally:
        jd.GROUP_SHARD_ROWS, jd.WAVE_KEY_ROWS = old, old_wave
    return stage, figures, decisions_of(tmp_path / "work" / "dedup_decisions")


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("k", [2, 4])
def test_decisions_equal_the_brute_force_oracle(tmp_path, clustered, k):
    rng = np.random.default_rng(10 * k + clustered)
    recs = hash_set(rng, 3000, k, clustered, chains=8, hot=keys.HOT_BUCKET + 40)
    files = write_files(recs, tmp_path / "in", per_file=700)
    # clustered: the key rows in waves of tables (as at 10^7 records and more)
    _, figures, got = _group(files, tmp_path, k=k, wave_rows=10_000 if clustered else None)
    assert (figures["waves"] > 1) == clustered
    want = oracle(recs, k)
    assert got == want
    reasons = {v[1] for v in want.values()}
    assert reasons == {"duplicate_image", "duplicate_url", "near_duplicate"}
    assert figures["hot_buckets"] >= 1 and figures["duplicates"] == len(want)
    # every planted chain: the middle one dropped naming the first, the last kept (not within k of the first)
    assert figures["largest_component"] >= keys.HOT_BUCKET + 40


@pytest.mark.parametrize("dedup", [("exact", "url", "phash"), ("exact", "phash"), ("url",)])
def test_components_that_span_blocks_decide_as_in_one(tmp_path, monkeypatch, dedup):
    # a component's members are taken a block at a time (a component of 10^6 records is never 10^6 Python
    # objects), those matching what it kept in earlier blocks at once in numpy; with blocks of 7 rows every
    # large component spans many, and the kept index crosses blocks
    rng = np.random.default_rng(12)
    recs = hash_set(rng, 2500, 4, True, chains=6, hot=keys.HOT_BUCKET + 80, exact_share=0.3)
    files = write_files(recs, tmp_path / "in", per_file=900)
    monkeypatch.setattr(leaders, "BLOCK_ROWS", 7)
    _, figures, got = _group(files, tmp_path, k=4, dedup=dedup)
    k = 4 if "phash" in dedup else None
    assert got == oracle(recs, k, by_image="exact" in dedup, by_url="url" in dedup)
    if k is not None:
        assert figures["largest_component"] > 100 * 7


def test_exact_only_and_image_only_decide_as_the_oracle(tmp_path):
    rng = np.random.default_rng(5)
    recs = hash_set(rng, 1500, 4, False, exact_share=0.2)
    files = write_files(recs, tmp_path / "in", per_file=400)
    _, _, got = _group(files, tmp_path / "a", dedup=("exact", "url"))
    assert got == oracle(recs, None)
    _, _, got = _group(files, tmp_path / "b", dedup=("exact",))
    assert got == oracle(recs, None, by_url=False)


def test_ties_name_the_first_kept_record_not_the_nearest(tmp_path):
    base = 0x0123456789ABCDEF
    recs = [{"record_id": "a", "sha256": "1", "url": "http://x/a", "phash": flip(base, [1, 2, 3])},  # kept
            {"record_id": "b", "sha256": "2", "url": "http://x/b", "phash": flip(base, [40, 41, 42, 43, 44, 45, 46, 47])},
            {"record_id": "c", "sha256": "3", "url": "http://x/c", "phash": base}]  # 3 from a; b is 8 from a
    recs[1]["phash"] = flip(base, [60])  # b: 4 from a, 1 from c: dropped naming a
    files = write_files(recs, tmp_path / "in", per_file=3)
    _, _, got = _group(files, tmp_path, k=4)
    assert got == oracle(recs, 4)
    assert got["b"][0] == "a" and got["c"][0] == "a"


def test_the_decide_stage_applies_decisions_by_row_range(tmp_path):
    from curation.runner import ParquetReader, parquet_shards

    rng = np.random.default_rng(8)
    recs = hash_set(rng, 2000, 4, True)
    files = write_files(recs, tmp_path / "in", per_file=600)
    stage, _, got = _group(files, tmp_path, k=4)
    reader = ParquetReader(batch_size=128, node_files=tuple(f for f, _ in files))
    dropped = {}
    for shard in parquet_shards(files, 250):
        for batch in reader(shard):
            out = stage(batch)
            assert "_node" not in out.column_names
            for r in out.filter(pa.compute.is_valid(out.column("reject_stage"))).to_pylist():
                dropped[r["record_id"]] = (r["reject_reason"], r["reject_detail"])
    assert dropped == {rid: (reason, detail) for rid, (_, reason, detail) in got.items()}


def test_on_ray_with_a_worker_killed_mid_grouping_the_decisions_are_exact(local_ray, tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    recs = hash_set(rng, 2500, 4, True, hot=300)
    files = write_files(recs, tmp_path / "in", per_file=500)
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("CURATE_TEST_KILL_ONCE", str(marker))
    import functools

    import jobs.dedup as jd

    original = components.large_star
    monkeypatch.setattr(components, "large_star", functools.partial(_die_once, original, str(marker)))
    _, figures, got = _group(files, tmp_path, executor="ray", partitions=3, shard_rows=500)
    assert marker.exists()  # a worker did die
    assert got == oracle(recs, 4)
    assert figures["rounds"] >= 1 and jd.GROUP_SHARD_ROWS == 250_000


def _die_once(reduce, marker, rows, part):
    import os

    if part == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies in the middle of a round
    return reduce(rows, part)


def test_the_two_references_agree():
    # the pair-based reference (decide_duplicates over brute-force pairs) and the rule applied record by record
    rng = np.random.default_rng(21)
    recs = hash_set(rng, 1200, 4, True, chains=6, hot=keys.HOT_BUCKET + 5, exact_share=0.2)
    assert leader_rule(recs, 4) == oracle(recs, 4)
    assert leader_rule(recs, None, by_url=False) == oracle(recs, None, by_url=False)


@pytest.mark.parametrize("blocks", [None, 7])
def test_with_the_crop_hash_decisions_equal_the_rule(tmp_path, monkeypatch, blocks):
    # a second perceptual signal: records linked by their crop hash only (their pHashes unrelated), crop
    # chains, a hot bucket of crop keys; in the same shuffle, components and decisions as the pHash
    rng = np.random.default_rng(33)
    recs = with_crop_hashes(rng, hash_set(rng, 2000, 4, False, chains=4, hot=keys.HOT_BUCKET + 10), 2)
    files = write_files(recs, tmp_path / "in", per_file=700)
    if blocks:
        monkeypatch.setattr(leaders, "BLOCK_ROWS", blocks)
    _, figures, got = _group(files, tmp_path, k=4, crop=2, wave_rows=20_000)
    want = leader_rule(recs, 4, crop=2)
    assert got == want
    assert figures["waves"] > 1 and figures["crop_distance"] == 2
    by_signal = {d.rsplit("(", 1)[1] for _, r, d in want.values() if r == "near_duplicate"}
    assert by_signal == {"phash)", "crop_hash)"}
    # pHash alone finds fewer: the crop-only copies are kept
    _, _, alone = _group(files, tmp_path / "alone", k=4)
    assert alone == leader_rule(recs, 4) and len(alone) < len(got)

"""CLIP top fraction (filters/clip_fraction.py + the two passes of jobs/web_pairs.py)."""

import json
import math
import random

import pytest

from curation.cli import main
from curation.storage.dataset import Dataset, DatasetWriter
from curation.errors import InputError
from curation.runtime import run_local, split_rejects
from curation.schema import records_from_pylist
from filters.clip_fraction import ALL_SOURCES, ClipTopFraction, fraction_cutoffs, keep_count, top_fraction_cutoff
from jobs.config import config_from_dict
from jobs.web_pairs import WebPairsConfig, filter_records


@pytest.mark.parametrize(
    "fraction, n, k",
    [(0.3, 10, 3), (0.3, 7, 3), (0.3, 203, 61), (0.1, 30, 3), (0.7, 10, 7), (1.0, 5, 5), (0.5, 0, 0), (0.001, 10, 1),
     (0.29, 100, 29), (1 / 3, 3, 1)],
)
def test_keep_count_is_the_ceiling_of_the_fraction_as_written(fraction, n, k):
    assert keep_count(fraction, n) == k  # 0.3 x 10 is 3.0000000000000004 in floats: still 3


def brute_force_top(rows, fraction):
    """The best ceil(f x N) (score, id) pairs: score high to low, ties by id."""
    ranked = sorted(rows, key=lambda r: (-r[0], r[1]))
    return {rid for _, rid in ranked[: keep_count(fraction, len(ranked))]}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction", [0.3, 0.05, 0.5, 1.0])
def test_cutoff_keeps_exactly_the_top_with_ties_broken_by_id(seed, fraction):
    rng = random.Random(seed)
    # float32 scores on a coarse grid: many ties at every value
    rows = [(float(rng.randint(0, 12)) / 16, f"s:{rng.randrange(10**6):07d}-{i}") for i in range(rng.randint(1, 400))]
    cut = top_fraction_cutoff([s for s, _ in rows], [r for _, r in rows], fraction)
    kept = {rid for s, rid in rows if cut.keeps(s, rid)}
    assert len(kept) == math.ceil(fraction * len(rows) - 1e-9) == cut.kept
    assert kept == brute_force_top(rows, fraction)


def test_the_stage_drops_below_the_cutoff_and_passes_unscored_records():
    rows = [{"record_id": f"t:{i}", "source": "t", "clip_score": s} for i, s in enumerate([0.5, 0.1, 0.3, 0.3, 0.2, None])]
    cuts = fraction_cutoffs([records_from_pylist(rows)], 0.5)
    assert cuts[ALL_SOURCES].scored == 5 and cuts[ALL_SOURCES].kept == 3
    assert (cuts[ALL_SOURCES].clip_score, cuts[ALL_SOURCES].record_id) == (pytest.approx(0.3), "t:3")
    kept, rejects = split_rejects(run_local(records_from_pylist(rows), [ClipTopFraction(cuts)]))
    assert sorted(kept.column("record_id").to_pylist()) == ["t:0", "t:2", "t:3", "t:5"]
    assert sorted(rejects.column("record_id").to_pylist()) == ["t:1", "t:4"]
    assert set(rejects.column("reason").to_pylist()) == {"clip_score_below_fraction"}
    assert "below the top 0.5 of the dataset: cutoff 0.3000 (t:3)" in rejects.column("detail")[0].as_py()


def test_sources_with_a_fraction_of_their_own_are_cut_on_their_own():
    rows = ([{"record_id": f"a:{i}", "source": "a", "clip_score": i / 100} for i in range(10)]
            + [{"record_id": f"b:{i}", "source": "b", "clip_score": 0.5 + i / 100} for i in range(10)]
            + [{"record_id": f"c:{i}", "source": "c", "clip_score": 0.9} for i in range(4)])
    t = records_from_pylist(rows)
    # a keeps its own top 50%; b and c share the global 0.25: ceil(0.25 x 14) = 4, all from c (0.9) ... then b
    cuts = fraction_cutoffs([t.slice(0, 7), t.slice(7)], 0.25, {"a": 0.5})
    assert cuts["a"].kept == 5 and cuts[ALL_SOURCES].scored == 14 and cuts[ALL_SOURCES].kept == 4
    kept, _ = split_rejects(run_local(t, [ClipTopFraction(cuts)]))
    assert sorted(kept.column("record_id").to_pylist()) == sorted([f"a:{i}" for i in range(5, 10)] + [f"c:{i}" for i in range(4)])
    # no global fraction: only the named source is cut
    kept, _ = split_rejects(run_local(t, [ClipTopFraction(fraction_cutoffs([t], None, {"b": 0.1}))]))
    assert kept.num_rows == 10 + 1 + 4


@pytest.mark.parametrize("fraction, by_source", [(0.0, None), (1.5, None), (None, {"a": -0.1}), (True, None)])
def test_bad_fractions_are_refused(fraction, by_source):
    with pytest.raises(InputError, match="must be a fraction in \\(0, 1\\]"):
        fraction_cutoffs([], fraction, by_source)


def test_a_toml_table_gives_the_per_source_fractions():
    cfg = config_from_dict(WebPairsConfig, {"urls": "u", "out": "o", "clip_keep_fraction": 0.3,
                                            "clip_keep_fraction_by_source": {"laion": 0.2, "cc3m": 1}})
    assert cfg.clip_keep_fraction_by_source == {"laion": 0.2, "cc3m": 1}
    with pytest.raises(InputError, match="clip_keep_fraction_by_source"):
        config_from_dict(WebPairsConfig, {"urls": "u", "out": "o", "clip_keep_fraction_by_source": {"laion": "x"}})


# ------------------------------------------------------------------ on a real local Ray, several shards


N = 203


def scored_dataset(path, seed=7):
    """N scored records in several Parquet shards (plus 5 without a score), ids in shuffled order."""
    rng = random.Random(seed)
    rows = [{"record_id": f"web:{rng.randrange(10**6):06d}-{i:03d}", "source": "web" if i % 3 else "cc",
             "image": b"x" * 40, "width": 64, "height": 64, "captions": [f"a photo number {i}"],
             "clip_score": rng.randint(0, 20) / 32} for i in range(N)]
    rows += [{"record_id": f"web:none-{i}", "source": "web", "image": b"x", "width": 64, "height": 64, "captions": []}
             for i in range(5)]
    rng.shuffle(rows)
    w = DatasetWriter(path, target_shard_bytes=3_000)
    for k in range(0, len(rows), 20):
        w.write("records", records_from_pylist(rows[k:k + 20]))
    w.close()
    return rows


def test_filter_keeps_exactly_ceil_f_n_over_several_shards_on_a_local_ray(local_ray, tmp_path):
    rows = scored_dataset(tmp_path / "in")
    assert len(Dataset(tmp_path / "in").shards("records")) >= 4
    cfg = WebPairsConfig(urls="", out=str(tmp_path / "out"), filters=("basic",), clip_keep_fraction=0.3, shard_rows=30)
    m = filter_records(cfg, str(tmp_path / "in"))
    assert m["run"]["input_shards"] >= 4  # the second pass ran as several shard tasks
    out = Dataset(tmp_path / "out")
    kept = set(out.read("records", columns=["record_id"]).column(0).to_pylist())
    scored = [(r["clip_score"], r["record_id"]) for r in rows if r.get("clip_score") is not None]
    top = brute_force_top(scored, 0.3)
    assert len(top) == math.ceil(0.3 * N) == 61
    assert kept == top | {r["record_id"] for r in rows if r.get("clip_score") is None}  # unscored: not ranked, not dropped
    rejects = out.read("rejects").to_pylist()
    assert len(rejects) == N - 61 and {r["reason"] for r in rejects} == {"clip_score_below_fraction"}
    # the cutoff in the manifest is the 61st (score, id)
    last = sorted(scored, key=lambda r: (-r[0], r[1]))[60]
    block = m["clip_keep_fraction"][ALL_SOURCES]
    assert (block["fraction"], block["scored"], block["kept"]) == (0.3, N, 61)
    assert (block["threshold"], block["threshold_record_id"]) == (last[0], last[1])
    assert m["stages"]["basic"] == {**m["stages"]["basic"], "in": N + 5, "out": N + 5}
    assert m["stages"]["clip_fraction"]["in"] == N + 5 and m["stages"]["clip_fraction"]["out"] == 61 + 5
    assert m["stages"]["clip_fraction"]["dropped"] == {"clip_score_below_fraction": N - 61}
    assert m["config"]["clip_keep_fraction"] == 0.3


def test_the_filter_command_cuts_per_source_and_prints_the_cutoffs(local_ray, tmp_path, capsys):
    rows = scored_dataset(tmp_path / "in", seed=11)
    assert main(["filter", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--filters", "basic",
                 "--clip-keep-fraction", "0.3", "--clip-keep-fraction-by-source", "cc=0.5", "--shard-rows", "40"]) == 0
    printed = capsys.readouterr().out
    kept = set(Dataset(tmp_path / "out").read("records", columns=["record_id"]).column(0).to_pylist())
    want = set()
    for source, f in (("cc", 0.5), ("web", 0.3)):
        group = [(r["clip_score"], r["record_id"]) for r in rows if r["source"] == source and r.get("clip_score") is not None]
        want |= brute_force_top(group, f)
        assert f"clip top {f:g} of " in printed
    assert kept == want | {r["record_id"] for r in rows if r.get("clip_score") is None}
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(m["clip_keep_fraction"]) == {"cc", ALL_SOURCES}
    assert main(["filter", str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--clip-keep-fraction-by-source", "cc"]) == 2


def test_curate_run_refuses_a_bad_fraction_before_any_work(tmp_path, capsys):
    job = tmp_path / "job.toml"
    job.write_text(f'urls = "{tmp_path / "absent.csv"}"\nout = "{tmp_path / "out"}"\nclip_keep_fraction = 1.5\n')
    assert main(["run", str(job)]) == 2
    assert "clip_keep_fraction must be a fraction in (0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fraction, by_source", [(0.3, None), (0.5, {"a": 0.1, "b": 1.0}), (None, {"c": 0.77}),
                                                 (0.0001, None), (1.0, {"a": 0.5})])
def test_cutoffs_on_the_cluster_equal_the_in_memory_ones_with_ties_nulls_and_excluded_records(tmp_path, fraction, by_source):
    """The radix selection over folds (`cutoffs_on_cluster`) finds the same cutoffs as `fraction_cutoffs` over
    every column in memory: scores from 51 values (many exact ties), NaN and null scores, null sources, -0.0,
    and records dropped by dedup decisions by row range left out of the ranking."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.dedup.decisions import RangeDecisions, row_ranges
    from curation.dedup.leaders import write_decisions
    from curation.runner import node_id, parquet_shards
    from filters.clip_fraction import cutoffs_on_cluster

    rng = np.random.default_rng(1)
    values = np.r_[rng.random(49).astype(np.float32), np.float32(0.25), np.float32(-0.0)]
    files, tables = [], []
    for f in range(3):
        n = 3000
        sc = rng.choice(values, n).astype(np.float32)
        sc[rng.random(n) < 0.05] = np.nan
        src = rng.choice(np.array(["a", "b", "c", None], dtype=object), n)
        ids = [f"r{f}-{i:05d}" for i in rng.permutation(n)]
        t = pa.table({"record_id": ids, "source": pa.array(list(src), pa.string()), "clip_score": pa.array(sc, pa.float32())})
        path = str(tmp_path / f"part-{f}.parquet")
        pq.write_table(t, path, row_group_size=500)
        files.append((path, n))
        tables.append(t)
    names = [p for p, _ in files]
    shards = parquet_shards(files, 1000)
    # a tenth of the records dropped by an earlier dedup step, written by row range as dedup writes them
    dropped = [(f, i) for f in range(3) for i in np.flatnonzero(rng.random(3000) < 0.1).tolist()]
    _, ranges = row_ranges(shards, names, 4)
    folder = str(tmp_path / "decisions")
    decisions = pa.table({"key": pa.array([node_id(f, i) for f, i in dropped], pa.int64()),
                          "record_id": [tables[f]["record_id"][i].as_py() for f, i in dropped],
                          "reason": ["duplicate_image"] * len(dropped), "kept": ["x"] * len(dropped),
                          "detail": ["d"] * len(dropped)})
    bounds = [0, *ranges, 1 << 62]
    for part in range(len(ranges) + 1):
        keys = decisions["key"].to_numpy()
        write_decisions(decisions.filter(pa.array((keys >= bounds[part]) & (keys < bounds[part + 1]))), part, folder)
    exclude = {r for r in decisions["record_id"].to_pylist()}
    want = fraction_cutoffs(tables, fraction, by_source, exclude=exclude)
    got = cutoffs_on_cluster(shards, names, fraction, by_source, [RangeDecisions(folder, ranges)], executor="local")
    assert got == want
    assert fraction_cutoffs(tables, fraction, by_source) == cutoffs_on_cluster(shards, names, fraction, by_source,
                                                                               executor="local")
    assert all(c.kept > 0 for c in want.values())

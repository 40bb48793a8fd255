"""curation/crawl/urls.py: URL lists in many files, planned from footers, read slice by slice, duplicates
found by the shuffle (its decisions against the one-process oracle, netpolicy.duplicate_of)."""

from __future__ import annotations

import dataclasses
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.crawl.netpolicy import duplicate_of
from curation.crawl.urls import (
    DuplicatesReduce, UrlColumns, UrlKeys, UrlList, mark_duplicates, read_slice, read_url_list, shard_duplicates,
)
from curation.errors import InputError

COLUMNS = UrlColumns("web")


def _urls(n, seed=0, hosts=5, repeat=0.3):
    """URLs with copies that normalise alike (case of the host, default port, fragment) and true duplicates."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if out and rng.random() < repeat:
            u = rng.choice(out)
            u = rng.choice([u, u + "#frag", u.replace("http://h", "HTTP://H", 1), u.replace(".example/", ".example:80/", 1)])
        else:
            u = f"http://h{rng.randrange(hosts)}.example/img/{rng.randrange(10**6)}.jpg"
        out.append(u)
    return out


def _write_parts(folder, urls, sizes, row_group=None, name="part-{:03d}.parquet"):
    folder.mkdir(parents=True, exist_ok=True)
    paths, k = [], 0
    for i, n in enumerate(sizes):
        rows = urls[k:k + n]
        t = pa.table({"url": rows, "caption": [f"c{k + j}" for j in range(n)]})
        p = folder / name.format(i)
        pq.write_table(t, p, row_group_size=row_group or max(1, n))
        paths.append(p)
        k += n
    return paths


def test_a_folder_a_glob_and_a_list_of_three_files_are_their_concatenation(tmp_path):
    urls = _urls(250)
    paths = _write_parts(tmp_path / "parts", urls, [100, 60, 90], row_group=16)
    singles = [read_url_list(p, "web") for p in paths]
    expected_ids = [f"web:part-{i:03d}:{r}" for i, t in enumerate(singles) for r in range(t.num_rows)]
    for spec in (str(tmp_path / "parts"), str(tmp_path / "parts" / "*.parquet"), [str(p) for p in paths]):
        t = read_url_list(spec, "web", rows_per_shard=37)
        assert t.column("record_id").to_pylist() == expected_ids
        assert t.column("url").to_pylist() == urls
        assert t.column("caption").to_pylist() == [f"c{i}" for i in range(250)]
    # one file alone: ids SOURCE:ROW
    assert singles[1].column("record_id").to_pylist() == [f"web:{r}" for r in range(60)]


@pytest.mark.parametrize("rows_per_shard", [1, 7, 16, 40, 1000])
def test_ids_and_duplicates_do_not_depend_on_the_shard_size(tmp_path, rows_per_shard):
    urls = _urls(180, seed=3)
    _write_parts(tmp_path / "p", urls, [50, 80, 50], row_group=33)
    t = read_url_list(tmp_path / "p", "web", rows_per_shard=rows_per_shard)
    ids = t.column("record_id").to_pylist()
    assert t.column("duplicate_of").to_pylist() == duplicate_of(ids, urls)  # across files, earliest row named
    assert sum(d is not None for d in t.column("duplicate_of").to_pylist()) > 20


def test_shards_come_from_footers_in_whole_row_groups_or_even_pieces(tmp_path):
    paths = _write_parts(tmp_path / "p", _urls(130), [100, 30], row_group=25)
    urls = UrlList(str(tmp_path / "p"), COLUMNS)
    shards = list(urls.shards(50, str(tmp_path / "staging")))
    assert [(s.shard_id, s.row_groups, s.rows, s.first_row, s.label) for s in shards] == [
        (0, (0, 1), 50, 0, "part-000"), (1, (2, 3), 50, 50, "part-000"), (2, (0, 1), 30, 0, "part-001")]
    big = list(UrlList(str(paths[0]), COLUMNS).shards(10, str(tmp_path / "staging")))  # groups of 25 in 3 pieces
    assert [s.rows for s in big] == [8, 8, 9] * 4 and [s.first_row for s in big][:4] == [0, 8, 16, 25]
    rows = pa.concat_tables([read_slice(s, COLUMNS) for s in big])
    assert rows.column("url").to_pylist() == pq.read_table(paths[0]).column("url").to_pylist()


def test_planning_is_lazy_file_by_file(tmp_path, monkeypatch):
    _write_parts(tmp_path / "p", _urls(90), [30, 30, 30])
    import curation.crawl.urls as urls_mod

    opened = []
    real = urls_mod.open_parquet
    monkeypatch.setattr(urls_mod, "open_parquet", lambda url: opened.append(url) or real(url))
    shards = UrlList(str(tmp_path / "p"), COLUMNS).shards(10, str(tmp_path / "s"))
    first = next(shards)
    assert first.shard_id == 0 and len(opened) == 1  # the later files are not opened yet
    assert len(list(shards)) == 8 and len(opened) == 3


def test_text_lists_are_converted_in_row_groups_and_read_the_same(tmp_path):
    urls = _urls(45, seed=9)
    src = tmp_path / "urls.jsonl"
    src.write_text("".join(json.dumps({"url": u, "caption": f"c{i}"}) + "\n" for i, u in enumerate(urls)))
    calls = []
    shards = list(UrlList(str(src), COLUMNS).shards(20, str(tmp_path / "staging"),
                                                      convert=lambda fn, *a: calls.append(a) or fn(*a)))
    assert len(calls) == 1 and [s.rows for s in shards] == [20, 20, 5]
    assert all(s.source_url == str(src) for s in shards)
    assert pa.concat_tables([read_slice(s, COLUMNS) for s in shards]).column("url").to_pylist() == urls


def test_the_shuffle_in_partitions_finds_what_one_process_finds(tmp_path):
    """Map tasks cut by key into partitions, each reduced alone: the union equals the oracle."""
    urls = _urls(400, seed=5)
    _write_parts(tmp_path / "p", urls, [150, 100, 150], row_group=40)
    shards = list(UrlList(str(tmp_path / "p"), COLUMNS).shards(60, str(tmp_path / "s")))
    from curation.runner import _partition

    keyed = pa.concat_tables([t for s in shards for t in UrlKeys(COLUMNS)(s)])
    counts = {}
    for p, part in enumerate(_partition(keyed, 4)):
        for k, v in DuplicatesReduce(str(tmp_path / "dups"))(p, part).items():
            counts[k] = counts.get(k, 0) + v
    found = {}
    for s in shards:
        t = shard_duplicates(str(tmp_path / "dups"), s.shard_id)
        assert t.num_rows == counts.get(s.shard_id, 0)
        found.update(zip(t.column("record_id").to_pylist(), t.column("duplicate_of").to_pylist()))
    ids = pa.concat_tables([read_slice(s, COLUMNS) for s in shards]).column("record_id").to_pylist()
    assert [found.get(r) for r in ids] == duplicate_of(ids, urls)


def test_an_id_used_twice_across_files_names_both_rows(tmp_path):
    for i, ids in enumerate((["a", "b"], ["c", "b"])):
        pq.write_table(pa.table({"url": [f"http://h/{i}{j}.jpg" for j in range(2)], "key": ids}), tmp_path / f"{i}.parquet")
    with pytest.raises(InputError, match=r"1\.parquet: row 2: id 'b' is used twice \(first in row 2 of .*0\.parquet\)"):
        read_url_list(tmp_path, "web", caption_col=None, id_col="key")
    assert mark_duplicates(None).num_rows == 0


def test_a_missing_column_in_a_later_file_is_named(tmp_path):
    _write_parts(tmp_path / "p", _urls(20), [10, 10])
    pq.write_table(pa.table({"link": ["http://h/x.jpg"]}), tmp_path / "p" / "part-002.parquet")
    urls = UrlList(str(tmp_path / "p"), COLUMNS)
    urls.check()  # the first file is fine
    with pytest.raises(InputError, match=r"part-002\.parquet: no URL column 'url' \(columns: link\)"):
        list(urls.shards(5, str(tmp_path / "s")))


@pytest.fixture
def parts_dir(tmp_path):
    _write_parts(tmp_path / "parts", _urls(6), [3, 3])
    return tmp_path / "parts"


@pytest.mark.parametrize("case, message", [
    ("glob", "the pattern matches no file"),
    ("other-format", "notes.txt: not a URL list file of a known format"),
    ("missing-column", "part-009.parquet: no URL column 'url'"),
    ("missing-file", "nope.parquet: not found"),
    ("not-parquet", "part-008.parquet: not a readable Parquet file"),
])
def test_curate_download_bad_inputs_are_one_line_and_exit_2_writing_nothing(parts_dir, tmp_path, capsys, case, message):
    spec = str(parts_dir)
    if case == "glob":
        spec = str(parts_dir / "*.csv")
    elif case == "other-format":
        (parts_dir / "notes.txt").write_text("hello")
    elif case == "missing-column":
        pq.write_table(pa.table({"link": ["http://127.0.0.1:1/x.jpg"]}), parts_dir / "part-009.parquet")
    elif case == "missing-file":
        spec = str(parts_dir / "nope.parquet")
    elif case == "not-parquet":
        (parts_dir / "part-008.parquet").write_bytes(b"PAR1 not really")
    out = tmp_path / "out"
    assert main(["download", spec, "--out", str(out), "--shard-rows", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()  # the lazily found ones too: the run that had begun is taken away


def test_a_shard_fetched_before_the_index_is_corrected_and_a_redone_correction_changes_nothing(tmp_path):
    """`curate download` does not wait for the duplicate index: a shard that ran before it is corrected
    after (fix_shard); a correction killed half-way is run again from the shard's first result."""
    from netfixtures import FaultServer

    from curation.crawl.download import FromImg2dataset, Img2datasetReader
    from curation.crawl.fetch import FetchPolicy
    from curation.crawl.urls import fix_shard
    from curation.runner import Pipeline, Sink, run_pipeline
    from curation.storage.dataset import Dataset, DatasetWriter

    with FaultServer() as server:
        urls = [f"{server.base}/img/a.jpg", f"{server.base}/img/b.jpg", f"{server.base}/img/a.jpg#copy",
                f"{server.base}/404.jpg"]
        src = tmp_path / "urls.parquet"
        pq.write_table(pa.table({"url": urls, "caption": ["a", "b", "a again", "gone"]}), src)
        reader = Img2datasetReader(threads=2, timeout=2, retries=0, columns=COLUMNS,
                                   policy=FetchPolicy(allow_private_network=True))
        pipeline = Pipeline(reader, [FromImg2dataset("web", 10_000_000), Sink("records")])
        writer = DatasetWriter(tmp_path / "out")
        shards = list(UrlList(str(src), COLUMNS).shards(2, str(writer.staging)))
        run_pipeline(pipeline, shards, writer, executor="local")  # no index given: every URL fetched
        assert server.hits["/img/a.jpg"] == 2
        folder = str(writer.staging / "url-duplicates")
        counts = DuplicatesReduce(folder)(0, pa.concat_tables([t for s in shards for t in UrlKeys(COLUMNS)(s)]))
        assert counts == {1: 1}
        first = {int(r["shard_id"]): r for r in writer.shard_results()}
        fixed = fix_shard(first[1], str(writer.staging), folder)
        again = fix_shard(first[1], str(writer.staging), folder)  # as a resumed run redoes a killed correction
        assert again["files"] == fixed["files"] and again["stages"] == fixed["stages"]
        assert fixed["duplicate_urls_fetched"] == 1 and fixed["stages"]["download"]["out"] == 0
        assert fixed["stages"]["download"]["dropped"] == {"duplicate_url": 1, "http_error": 1}
        writer.add_shard(fixed)
        manifest = writer.close()
    data = Dataset(tmp_path / "out", verify=True)  # the rewritten parts match the manifest's sha256
    assert sorted(data.read("records").column("record_id").to_pylist()) == ["web:0", "web:1"]
    rejects = {r["record_id"]: r for r in data.read("rejects").to_pylist()}
    assert rejects["web:2"]["reason"] == "duplicate_url"
    assert rejects["web:2"]["detail"] == "same URL as web:0, found after it was fetched"
    assert rejects["web:3"]["reason"] == "http_error" and len(rejects) == 2
    assert manifest["download"]["duplicate_urls_fetched"] == 1
    assert manifest["tables"]["records"]["rows"] == 2 and manifest["tables"]["rejects"]["rows"] == 2


@dataclasses.dataclass(frozen=True)
class SlowKeys:
    """UrlKeys that take their time: every shard is done before the duplicate index is."""

    keys: UrlKeys
    seconds: float = 4.0

    def __call__(self, shard):
        import time

        time.sleep(self.seconds)
        yield from self.keys(shard)


def test_on_ray_shards_that_ran_before_the_index_are_corrected_by_tasks(tmp_path, local_ray):
    """The runner's side of it: shards start at once (a download), the shuffle finishes after them, and the
    shards holding copies are corrected in tasks before the manifest is written."""
    import functools

    from netfixtures import FaultServer

    from curation.crawl.download import FromImg2dataset, Img2datasetReader
    from curation.crawl.fetch import FetchPolicy
    from curation.crawl.urls import fix_shard
    from curation.runner import Beside, Pipeline, Sink, run_pipeline
    from curation.storage.dataset import Dataset, DatasetWriter

    with FaultServer() as server:
        urls = [f"{server.base}/img/a.jpg", f"{server.base}/img/b.jpg", f"{server.base}/img/a.jpg#copy",
                f"{server.base}/img/c.jpg", f"{server.base}/img/b.jpg#y", f"{server.base}/404.jpg"]
        src = tmp_path / "urls.parquet"
        pq.write_table(pa.table({"url": urls, "caption": [f"c{i}" for i in range(6)]}), src)
        reader = Img2datasetReader(threads=2, timeout=2, retries=0, columns=COLUMNS,
                                   policy=FetchPolicy(allow_private_network=True))
        pipeline = Pipeline(reader, [FromImg2dataset("web", 10_000_000), Sink("records")])
        with DatasetWriter(tmp_path / "out") as writer:
            staging = str(writer.staging)
            folder = f"{staging}/url-duplicates"
            beside = Beside(SlowKeys(UrlKeys(COLUMNS)), DuplicatesReduce(folder), folder, local_rows=0,
                            fix=functools.partial(fix_shard, staging=staging, folder=folder))
            run_pipeline(pipeline, UrlList(str(src), COLUMNS).shards(2, staging), writer, beside=beside)
            manifest = writer.close()
        assert server.hits["/img/a.jpg"] == 2 and server.hits["/img/b.jpg"] == 2  # fetched before they were known
    assert manifest["download"]["duplicate_urls_fetched"] == 2
    assert manifest["stages"]["download"]["dropped"] == {"duplicate_url": 2, "http_error": 1}
    data = Dataset(tmp_path / "out", verify=True)
    assert sorted(data.read("records").column("record_id").to_pylist()) == ["web:0", "web:1", "web:3"]
    rejects = {r["record_id"]: r["detail"] for r in data.read("rejects").to_pylist()}
    assert rejects["web:2"] == "same URL as web:0, found after it was fetched"
    assert rejects["web:4"] == "same URL as web:1, found after it was fetched"


def test_fits_counts_rows_from_footers_and_small_text_files(tmp_path, monkeypatch):
    import curation.crawl.urls as urls_module

    cols = UrlColumns("web")
    a, b = tmp_path / "a.parquet", tmp_path / "b.csv"
    pq.write_table(pa.table({"url": [f"http://x/{i}" for i in range(30)], "caption": ["c"] * 30}), a, row_group_size=7)
    b.write_text("url,caption\n" + "".join(f"http://y/{i},c\n" for i in range(20)))
    assert UrlList([str(a)], cols).fits(30) and not UrlList([str(a)], cols).fits(29)
    both = UrlList([str(a), str(b)], cols)
    assert both.fits(60) and not both.fits(45)  # a text file's lines, header included, are an upper bound
    monkeypatch.setattr(urls_module, "TEXT_COUNT_BYTES", 100)  # a text file too large to count here: not small
    assert not UrlList([str(b)], cols).fits(10**6)
    monkeypatch.setattr(urls_module, "FITS_MAX_FILES", 1)
    c = tmp_path / "c.parquet"
    c.write_bytes(a.read_bytes())
    assert not UrlList([str(a), str(c)], cols).fits(10**6)

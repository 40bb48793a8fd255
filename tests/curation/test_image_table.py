"""curation/image_table.py: images stored once (`--images-once`), and everything that reads samples joining them."""

import io

import pyarrow as pa
import pytest

from curation.storage.dataset import Dataset
from curation.image_table import IMAGES_TABLE, fill_images, split_images
from curation.schema import IMAGE_REF, SAMPLE_SCHEMA


def _samples(images: list) -> pa.Table:
    rows = [{"sample_id": f"s{i}", "record_id": "r", "task": "caption", "format": "qwen-vl", "images": im}
            for i, im in enumerate(images)]
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def _im(key, data):
    return {"key": key, "image": data, "width": 4, "height": 3}


def test_split_then_fill_gives_the_rows_back_and_stores_each_image_once(tmp_path):
    import pyarrow.parquet as pq

    from curation.image_table import ImagePart

    a, b, c = b"A" * 50, b"B" * 70, b"C" * 30
    images = [[_im("a", a)], None, [], [_im("a", a), _im("b", b)], [_im("n", None)], [_im("b", b)], [_im("c", c)]]
    table = _samples(images)
    seen: set[str] = set()
    parts = [split_images(table.slice(0, 4), seen), split_images(table.slice(4), seen)]  # two batches of one shard
    stripped = pa.concat_tables([p[0] for p in parts])
    stored = pa.concat_tables([p[1] for p in parts])
    assert stored.column("key").to_pylist() == ["a", "b", "c"] and stored.column("image").to_pylist() == [a, b, c]
    assert all(im["image"] is None for ims in stripped.column("images").to_pylist() for im in ims or [])
    assert stripped.drop_columns(["images"]).equals(table.drop_columns(["images"]))
    pq.write_table(stored, tmp_path / "images.parquet", row_group_size=2)  # keys over two row groups
    part = ImagePart(tmp_path / "images.parquet", keep_row_groups=1)
    for lo, n in ((0, 7), (2, 3), (5, 2)):
        assert fill_images(stripped.slice(lo, n), part).to_pylist() == table.slice(lo, n).to_pylist()
    assert fill_images(pa.RecordBatch.from_pylist(stripped.to_pylist(), schema=SAMPLE_SCHEMA), part).to_pylist() == table.to_pylist()
    assert part.images(["c", "zz", None, "a"]).to_pylist() == [c, None, None, a]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The clean demo records built twice (qwen2-vl, packed): self-contained rows, and images stored once."""
    from curation.commands.build import build_dataset
    from curation.democorpus import write_clean_records

    root = tmp_path_factory.mktemp("images-once")
    records = write_clean_records(root, n=30, seed=3)
    out = {}
    for name, once in (("rows", False), ("once", True)):
        out[name] = root / name
        build_dataset(str(records), str(out[name]), format="qwen2-vl", tasks="caption,vqa,ref_grounding,ocr", pack=2048,
                      runner="local", shard_rows=10, images_once=once, min_pixels=3136, max_pixels=56 * 56 * 16)
    return out


def _by_id(ds: Dataset) -> dict:
    return {r["sample_id"]: r for b in ds.iter_batches("samples") for r in b.to_pylist()}


def test_images_once_stores_each_image_once_per_shard_and_reads_back_the_same_samples(both):
    rows, once = Dataset(both["rows"], verify=True), Dataset(both["once"], verify=True)
    assert once.manifest["build"]["images_once"] is True and rows.manifest["build"]["images_once"] is False
    assert _by_id(once) == _by_id(rows)  # joined by Dataset.iter_batches: self-contained rows again
    import pyarrow.parquet as pq

    keys_per_part = {}
    for shard in once.shards("samples"):
        samples = pq.read_table(both["once"] / shard["path"])
        images = pq.read_table(both["once"] / IMAGES_TABLE / shard["path"].split("/")[1])
        used = {im["key"] for ims in samples.column("images").to_pylist() for im in ims or []}
        assert all(im["image"] is None for ims in samples.column("images").to_pylist() for im in ims or [])
        keys = images.column("key").to_pylist()
        assert len(keys) == len(set(keys)) and set(keys) == used  # once per part, every referenced key
        keys_per_part[shard["path"]] = len(keys)
    distinct = {im["key"] for r in _by_id(rows).values() for im in r["images"] or []}
    assert sum(keys_per_part.values()) == len(distinct) > 10


def once_keys(path) -> int:
    return Dataset(path).rows(IMAGES_TABLE)


def test_reader_export_validate_sql_and_datasets_on_images_stored_once(both, tmp_path, capsys, monkeypatch):
    from curation.audit import query
    from curation.cli import main
    from formats.reader import QwenVLReader

    for table in ("samples", "sequences"):
        got = {}
        for name in ("rows", "once"):
            got[name] = [(e["id"], e["input_ids"].tolist(), e["pixel_values"].sum().item(), e["image_grid_thw"].tolist())
                         for e in QwenVLReader(both[name], table=table, seed=1)]
        assert got["once"] == got["rows"] and len(got["rows"]) > 10
    assert main(["validate", str(both["once"])]) == 0
    for name in ("rows", "once"):
        assert main(["export", str(both[name]), "--to", "ms-swift", "--out", str(tmp_path / f"{name}.jsonl")]) == 0
    exported = {n: (tmp_path / f"{n}.jsonl").read_text().replace(f"{n}_images", "X") for n in ("rows", "once")}
    assert exported["once"] == exported["rows"] and exported["rows"].count("\n") > 100
    assert sorted(p.read_bytes() for p in (tmp_path / "once_images").iterdir()) == sorted(
        p.read_bytes() for p in (tmp_path / "rows_images").iterdir())
    _, n = query(both["once"], "select count(*), count(distinct key) from images")
    assert n[0][0] == n[0][1] == once_keys(both["once"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    images = load_dataset(str(both["once"]), "images", split="train", cache_dir=str(tmp_path / "hf"))
    first = images[0]
    assert first["image"].size == (first["width"], first["height"])
    from PIL import Image

    by_key = {im["key"]: im["image"] for r in _by_id(Dataset(both["rows"])).values() for im in r["images"]}
    assert Image.open(io.BytesIO(by_key[first["key"]])).size == first["image"].size


def test_the_report_draws_thumbnails_from_the_images_table(both):
    import re

    from curation.report import report_html

    pages = {name: report_html(both[name])[0] for name in ("rows", "once")}
    thumbs = {name: re.findall(r"<img[^>]*src='(data:image/[^']+)'[^>]*class='[^']*thumb|class='thumb'[^>]*>\s*<img[^>]*src='(data:image/[^']+)'", page)
              for name, page in pages.items()}
    srcs = {name: sorted(a or b for a, b in found) for name, found in thumbs.items()}
    assert srcs["once"] == srcs["rows"] and len(srcs["rows"]) >= 4


def test_validate_reports_a_key_stored_twice_and_a_sample_whose_image_is_missing(both, tmp_path, capsys):
    import pyarrow.parquet as pq

    from curation.cli import main
    from curation.storage.dataset import DatasetWriter

    src = Dataset(both["once"])
    samples = pa.concat_tables([pq.read_table(p) for p in src.shard_paths("samples")])
    images = pa.concat_tables([pq.read_table(p) for p in src.shard_paths(IMAGES_TABLE)])
    gone = images.column("key")[0].as_py()
    broken = pa.concat_tables([images.slice(1), images.slice(2, 1)])  # the first key gone, the third twice
    with DatasetWriter(tmp_path / "broken") as w:
        w.write("samples", samples)
        w.write(IMAGES_TABLE, broken)
        w.close()
    assert main(["validate", str(tmp_path / "broken")]) == 1
    out = capsys.readouterr().out
    twice = images.column("key")[2].as_py()
    assert f"image key {twice!r} stored 2 times" in out and f"image {gone!r} has no bytes" in out

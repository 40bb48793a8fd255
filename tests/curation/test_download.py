import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.dataset import Dataset, DatasetWriter
from curation.download import FromImg2dataset, Img2datasetReader, read_url_list, url_shards
from curation.errors import InputError
from curation.runner import Pipeline, Sink, run_pipeline
from jobs.demo import serve_directory


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    Image.new("RGB", (64, 48), (255, 0, 0)).save(www / "red.jpg", quality=90)
    Image.new("RGB", (40, 40), (0, 0, 255)).save(www / "blue.png")
    (www / "html.jpg").write_bytes(b"<html><body>404 but with status 200</body></html>")
    good = (www / "red.jpg").read_bytes()
    (www / "truncated.jpg").write_bytes(good[: len(good) // 3])
    # a decompression bomb: tiny file, 20,000 x 20,000 pixels
    Image.new("1", (20000, 20000)).save(www / "bomb.png", optimize=True)
    with serve_directory(www) as base:
        yield base, www


def url_table(base):
    names = ["red.jpg", "blue.png", "html.jpg", "truncated.jpg", "missing.jpg", "bomb.png"]
    return pa.table(
        {
            "record_id": [f"t:{n}" for n in names],
            "url": [f"{base}/{n}" for n in names],
            "caption": [f"picture {n}" for n in names],
            "meta": [json.dumps({"name": n}) for n in names],
            "regions": [json.dumps([{"phrase": "the red", "boxes": [[1, 2, 30, 40]]}])] + [None] * 5,
        }
    )


@pytest.mark.parametrize("shard_rows", [100, 4])
def test_every_url_ends_as_a_record_or_a_reject(site, tmp_path, local_ray, shard_rows):
    base, _ = site
    pipeline = Pipeline(Img2datasetReader(threads=4, timeout=5, max_pixels=10_000_000), [FromImg2dataset("t"), Sink("records")])
    with DatasetWriter(tmp_path / "out") as writer:
        shards = list(url_shards(url_table(base), writer.staging, shard_rows))
        assert [s.rows for s in shards] == ([6] if shard_rows == 100 else [4, 2])
        summary = run_pipeline(pipeline, shards, writer)  # one Ray task per shard downloads it
        manifest = writer.close()
    assert summary["shards"] == len(shards) and summary["rows_in"] == 6
    dropped = manifest["stages"]["download"]["dropped"]
    assert manifest["stages"]["download"]["in"] == 6 and manifest["stages"]["download"]["out"] == 2
    assert manifest["stages"]["download"]["seconds"] > 0
    # each shard's task wrote its own shards, named by input shard: red and blue are in the first
    assert [s["path"] for s in manifest["tables"]["records"]["shards"]] == ["records/part-00000.parquet"]
    assert [s["path"] for s in manifest["tables"]["rejects"]["shards"]] == [
        f"rejects/part-{k:05d}.parquet" for k in range(len(shards))]
    out = Dataset(tmp_path / "out")
    records = {r["record_id"]: r for r in out.read("records").to_pylist()}
    rejects = {r["record_id"]: r for r in out.read("rejects").to_pylist()}
    assert set(records) | set(rejects) == set(url_table(base).column("record_id").to_pylist())
    assert not set(records) & set(rejects)
    assert set(records) == {"t:red.jpg", "t:blue.png"}
    red = records["t:red.jpg"]
    assert (red["width"], red["height"]) == (64, 48)
    assert Image.open(io.BytesIO(red["image"])).size == (64, 48)
    assert red["captions"] == ["picture red.jpg"]
    assert json.loads(red["meta"]) == {"name": "red.jpg"}
    assert red["regions"] == [{"phrase": "the red", "boxes": [[1.0, 2.0, 30.0, 40.0]]}]
    import hashlib

    assert red["sha256"] == hashlib.sha256(red["image"]).hexdigest()
    assert rejects["t:missing.jpg"]["reason"].startswith("HTTP Error 404")
    assert rejects["t:html.jpg"]["reason"] == "Image decoding error"
    assert rejects["t:truncated.jpg"]["stage"] == "download"
    assert rejects["t:bomb.png"]["reason"] == "image exceeds pixel limit"
    assert json.loads(rejects["t:bomb.png"]["meta"]) == {"name": "bomb.png"}
    assert sum(dropped.values()) == 4


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_url_lists_in_every_format(tmp_path, suffix):
    rows = [{"u": "http://127.0.0.1:1/a.jpg", "text": "a cat", "key": 7}, {"u": "http://127.0.0.1:1/b.jpg", "text": "a dog", "key": 9}]
    path = tmp_path / f"urls{suffix}"
    if suffix == ".csv":
        path.write_text("u,text,key\n" + "\n".join(f"{r['u']},{r['text']},{r['key']}" for r in rows) + "\n")
    elif suffix == ".tsv":
        path.write_text("u\ttext\tkey\n" + "\n".join(f"{r['u']}\t{r['text']}\t{r['key']}" for r in rows) + "\n")
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    t = read_url_list(path, "web", url_col="u", caption_col="text", id_col="key")
    assert t.column("record_id").to_pylist() == ["web:7", "web:9"]
    assert t.column("caption").to_pylist() == ["a cat", "a dog"]
    assert t.column("url").to_pylist()[1].endswith("b.jpg")


def test_url_list_errors_name_the_file_and_column(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_url_list(tmp_path / "nope.parquet", "web")
    p = tmp_path / "urls.csv"
    p.write_text("link,caption\nhttp://x/a.jpg,a\n")
    with pytest.raises(InputError, match=r"urls.csv: no URL column 'url' \(columns: link, caption\)"):
        read_url_list(p, "web")
    bad = tmp_path / "urls.txt"
    bad.write_text("http://x\n")
    with pytest.raises(InputError, match="unknown URL list format"):
        read_url_list(bad, "web")
    dup = tmp_path / "dup.csv"
    dup.write_text("url,caption,id\nhttp://x/a,a,1\nhttp://x/b,b,1\n")
    with pytest.raises(InputError, match="duplicate ids"):
        read_url_list(dup, "web", id_col="id")
    badjson = tmp_path / "ann.jsonl"
    badjson.write_text(json.dumps({"url": "http://x/a", "caption": "a", "qa": "[{oops"}) + "\n")
    with pytest.raises(InputError, match="row 1, column 'qa': invalid JSON"):
        read_url_list(badjson, "web")

import contextlib
import functools
import http.server
import io
import json
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.cli import main
from curation.crawl.fetch import FetchPolicy
from curation.storage.dataset import Dataset, DatasetWriter
from curation.crawl.download import FromImg2dataset, Img2datasetReader
from curation.crawl.urls import UrlColumns, UrlList, read_url_list
from curation.errors import InputError
from curation.runner import Pipeline, Sink, run_pipeline
from curation.runtime import Stage

TIMEOUT = 5  # seconds per URL in these tests; /slow.jpg answers after SLOW
SLOW = TIMEOUT + 3


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files of a folder, plus /slow.jpg, which answers too late."""

    def do_GET(self):
        if self.path == "/slow.jpg":
            time.sleep(SLOW)
            with contextlib.suppress(OSError):  # the client has given up by now
                self.send_error(404)
            return
        super().do_GET()

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass


@contextlib.contextmanager
def _serve(root):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def photo_jpeg(w=320, h=240):
    """A JPEG whose bytes all carry pixels (noise), about 60 KB."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    Image.new("RGB", (64, 48), (255, 0, 0)).save(www / "red.jpg", quality=90)
    Image.new("RGB", (40, 40), (0, 0, 255)).save(www / "blue.png")
    (www / "html.jpg").write_bytes(b"<html><body>404 but with status 200</body></html>")
    (www / "empty.jpg").write_bytes(b"")
    good = (www / "red.jpg").read_bytes()
    (www / "truncated.jpg").write_bytes(good[: len(good) // 3])
    photo = photo_jpeg()
    (www / "photo.jpg").write_bytes(photo)
    (www / "cut.jpg").write_bytes(photo[: len(photo) * 6 // 10])  # cut at 60%: the header is intact
    # a decompression bomb: tiny file, 20,000 x 20,000 pixels
    Image.new("1", (20000, 20000)).save(www / "bomb.png", optimize=True)
    with _serve(www) as base:
        yield base, www


NAMES = ["red.jpg", "blue.png", "photo.jpg", "html.jpg", "empty.jpg", "truncated.jpg", "cut.jpg", "missing.jpg", "bomb.png", "slow.jpg"]


def url_table(base):
    return pa.table(
        {
            "name": [n for n in NAMES] + ["refused"],
            "url": [f"{base}/{n}" for n in NAMES] + ["http://127.0.0.1:1/refused.jpg"],
            "caption": [f"picture {n}" for n in NAMES] + ["picture refused"],
            "meta": [json.dumps({"name": n}) for n in NAMES] + [None],
            "regions": [json.dumps([{"phrase": "the red", "boxes": [[1, 2, 30, 40]]}])] + [None] * len(NAMES),
        }
    )


@pytest.mark.parametrize("shard_rows", [100, 4])
def test_every_url_ends_as_a_record_or_a_reject(site, tmp_path, local_ray, shard_rows, assert_known_reasons):
    base, _ = site
    # loopback on purpose (allow_private_network); no retries: tests/curation/crawl/test_fetch.py covers them
    columns = UrlColumns("t", id_col="name")
    reader = Img2datasetReader(threads=4, timeout=TIMEOUT, retries=0, max_pixels=10_000_000,
                               policy=FetchPolicy(allow_private_network=True), columns=columns)
    pipeline = Pipeline(reader, [FromImg2dataset("t", max_pixels=10_000_000), Sink("records")])
    pq.write_table(url_table(base), tmp_path / "urls.parquet", row_group_size=4)
    with DatasetWriter(tmp_path / "out") as writer:
        shards = list(UrlList(str(tmp_path / "urls.parquet"), columns).shards(shard_rows, str(writer.staging)))
        assert [s.rows for s in shards] == ([11] if shard_rows == 100 else [4, 4, 3])
        summary = run_pipeline(pipeline, shards, writer)  # one Ray task per shard downloads it
        manifest = writer.close()
    assert summary["shards"] == len(shards) and summary["rows_in"] == 11
    dropped = manifest["stages"]["download"]["dropped"]
    assert manifest["stages"]["download"]["in"] == 11 and manifest["stages"]["download"]["out"] == 3
    assert manifest["stages"]["download"]["seconds"] > 0
    # each shard's task wrote its own shards, named by input shard: red, blue and photo are in the first
    assert [s["path"] for s in manifest["tables"]["records"]["shards"]] == ["records/part-00000.parquet"]
    assert [s["path"] for s in manifest["tables"]["rejects"]["shards"]] == [
        f"rejects/part-{k:05d}.parquet" for k in range(len(shards))]
    out = Dataset(tmp_path / "out")
    records = {r["record_id"]: r for r in out.read("records").to_pylist()}
    rejects = {r["record_id"]: r for r in assert_known_reasons(tmp_path / "out")}
    assert set(records) | set(rejects) == {f"t:{n}" for n in url_table(base).column("name").to_pylist()}
    assert not set(records) & set(rejects)
    assert set(records) == {"t:red.jpg", "t:blue.png", "t:photo.jpg"}
    red = records["t:red.jpg"]
    assert (red["width"], red["height"]) == (64, 48)
    assert Image.open(io.BytesIO(red["image"])).size == (64, 48)
    assert red["captions"] == ["picture red.jpg"]
    assert json.loads(red["meta"]) == {"name": "red.jpg"}
    assert red["regions"] == [{"phrase": "the red", "boxes": [[1.0, 2.0, 30.0, 40.0]]}]
    import hashlib

    assert red["sha256"] == hashlib.sha256(red["image"]).hexdigest()
    reasons = {rid: (r["stage"], r["reason"]) for rid, r in rejects.items()}
    # A truncated JPEG: OpenCV 4.14's imdecode refuses it ("Image decoding error", and img2dataset keeps no
    # bytes of a failed row); an OpenCV that decodes what it can (libjpeg's "Premature end of JPEG file"
    # warning) hands it on as a success, and FromImg2dataset's own full decode rejects it as truncated.
    truncated = {reasons.pop("t:truncated.jpg"), reasons.pop("t:cut.jpg")}
    assert truncated <= {("download", "not_an_image"), ("download", "image_truncated")}
    assert reasons == {
        "t:html.jpg": ("download", "not_an_image"),
        "t:empty.jpg": ("download", "not_an_image"),
        "t:missing.jpg": ("download", "http_error"),
        "t:bomb.png": ("download", "image_too_large"),
        "t:slow.jpg": ("download", "timeout"),
        "t:refused": ("download", "connection_error"),
    }
    # img2dataset's own message is kept in the detail
    assert rejects["t:missing.jpg"]["detail"] == "HTTP Error 404: File not found"
    assert rejects["t:html.jpg"]["detail"] == "Image decoding error"
    assert "CV_IO_MAX_IMAGE_PIXELS" in rejects["t:bomb.png"]["detail"]
    assert "timed out" in rejects["t:slow.jpg"]["detail"]
    assert "Connection refused" in rejects["t:refused"]["detail"]
    assert json.loads(rejects["t:bomb.png"]["meta"]) == {"name": "bomb.png"}
    assert sum(dropped.values()) == 8


def test_the_stage_decodes_what_img2dataset_calls_a_success():
    """FromImg2dataset on img2dataset-shaped rows (no download): a truncated JPEG is a reject."""
    photo = photo_jpeg()
    rows = {
        "record_id": ["t:whole", "t:cut", "t:junk", "t:failed"],
        "url": ["u0", "u1", "u2", "u3"],
        "caption": ["a", "b", "c", "d"],
        "status": ["success", "success", "success", "failed_to_download"],
        "error_message": [None, None, None, "<urlopen error [Errno 111] Connection refused>"],
        "jpg": [photo, photo[: len(photo) * 6 // 10], b"<html></html>", None],
        "width": [320, 320, 10, None],
        "height": [240, 240, 10, None],
    }
    out = FromImg2dataset("t")(pa.table(rows)).to_pylist()
    assert [r["reject_reason"] for r in out] == [None, "image_truncated", "not_an_image", "connection_error"]
    assert out[0]["image"] == photo and out[1]["image"] is None
    assert out[3]["reject_detail"] == "<urlopen error [Errno 111] Connection refused>"
    with pytest.raises(ValueError, match="max_pixels must be positive, got 0"):
        FromImg2dataset("t", max_pixels=0)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_url_list_without_rows_makes_an_empty_dataset(suffix, tmp_path, capsys, local_ray):
    urls = tmp_path / f"urls{suffix}"
    if suffix == ".csv":
        urls.write_text("url,caption\n")  # a header and no rows
    else:
        pq.write_table(pa.table({"url": pa.array([], pa.string()), "caption": pa.array([], pa.string())}), urls)
    out = tmp_path / "out"
    assert main(["download", str(urls), "--out", str(out)]) == 0
    assert "download: 0 URLs -> 0 records, 0 rejects" in capsys.readouterr().out
    ds = Dataset(out)
    assert ds.manifest["tables"]["records"]["rows"] == 0 and ds.manifest["tables"]["rejects"]["rows"] == 0
    assert ds.manifest["stages"]["download"]["in"] == 0
    assert ds.read("records").num_rows == 0


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
    with pytest.raises(InputError, match=r"urls.txt: not a URL list file of a known format \(.txt; use one of"):
        read_url_list(bad, "web")
    dup = tmp_path / "dup.csv"
    dup.write_text("url,caption,id\nhttp://x/a,a,1\nhttp://x/b,b,1\n")
    with pytest.raises(InputError, match=r"dup.csv: row 2: id '1' is used twice \(first in row 1 of .*dup.csv\)"):
        read_url_list(dup, "web", id_col="id")
    badjson = tmp_path / "ann.jsonl"
    badjson.write_text(json.dumps({"url": "http://x/a", "caption": "a", "qa": "[{oops"}) + "\n")
    with pytest.raises(InputError, match="row 1, column 'qa': invalid JSON"):
        read_url_list(badjson, "web")


def test_one_complete_decode_per_image_in_the_download_loop(monkeypatch):
    """img2dataset would keep a JPEG's bytes: it is checked by PIL (1/8 DCT scale) instead of OpenCV's full
    decode; other images go through img2dataset's resizer (re-encoded to JPEG) and its result is checked."""
    import curation.crawl.download as dl
    from img2dataset.resizer import Resizer

    calls = []
    real = dl.decoded_size
    monkeypatch.setattr(dl, "decoded_size", lambda data, limit: calls.append(len(data)) or real(data, limit))

    class NoOpenCV:  # img2dataset's resizer, which must not run for a JPEG it would keep
        def __call__(self, stream, bbox=None):
            raise AssertionError("OpenCV decode for a JPEG kept as it is")

    photo = photo_jpeg()
    checked = dl._CheckedResizer(NoOpenCV(), 10_000_000)
    assert checked(io.BytesIO(photo)) == (photo, 320, 240, 320, 240, None)
    cut = checked(io.BytesIO(photo[: len(photo) * 6 // 10]))
    assert cut[0] is None and cut[-1].startswith("image check: image_truncated: JPEG 320x240")
    assert dl.download_reason(cut[-1]) == "image_truncated"
    big = dl._CheckedResizer(NoOpenCV(), 320 * 240 - 1)(io.BytesIO(photo))
    assert dl.download_reason(big[-1]) == "image_too_large"
    assert len(calls) == 3

    # a PNG: img2dataset's own resizer re-encodes it to JPEG, and that JPEG is what is checked
    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (10, 200, 30)).save(buf, format="PNG")
    resizer = Resizer(image_size=256, resize_mode="no", resize_only_if_bigger=False, encode_format="jpg", skip_reencode=True)
    out = dl._CheckedResizer(resizer, 10_000_000)(io.BytesIO(buf.getvalue()))
    assert out[-1] is None and out[1:3] == (50, 40) and out[0][:3] == b"\xff\xd8\xff"
    assert calls[-1] == len(out[0])

    # FromImg2dataset trusts rows the download loop checked, and decodes the others
    rows = {"record_id": ["t:a", "t:b"], "url": ["u", "v"], "caption": ["a", "b"], "status": ["success"] * 2,
            "error_message": [None, None], "jpg": [photo, photo], "width": [320, 320], "height": [240, 240]}
    calls.clear()
    dl.FromImg2dataset("t")(pa.table({**rows, "image_checked": [True, True]}))
    assert calls == []
    dl.FromImg2dataset("t")(pa.table(rows))
    assert len(calls) == 2
    failed = dl.FromImg2dataset("t")(pa.table({
        **rows, "status": ["failed_to_resize", "success"], "jpg": [None, photo], "image_checked": [True, True],
        "error_message": [cut[-1], None]})).to_pylist()
    assert failed[0]["reject_reason"] == "image_truncated" and failed[0]["reject_detail"].startswith("JPEG 320x240")


class _Slow(Stage):
    """A stage slower than the fetch: 0.25 s a batch."""

    name = "slow"
    batch_size = 2

    def __call__(self, batch):
        time.sleep(0.25)
        return batch


def test_the_download_stage_seconds_are_the_fetchs_own_not_the_pace_of_the_flow(tmp_path):
    """12 JPEGs in batches of 2 behind a stage of 0.25 s a batch (1.5 s in all): the download's seconds
    stay those of the fetch, which is done long before the flow has taken its rows."""
    www = tmp_path / "www"
    www.mkdir()
    for i in range(12):
        (www / f"p{i}.jpg").write_bytes(photo_jpeg(160 + i, 120))
    with _serve(www) as base:
        pq.write_table(pa.table({"url": [f"{base}/p{i}.jpg" for i in range(12)], "caption": ["a photo"] * 12}),
                       tmp_path / "urls.parquet")
        columns = UrlColumns("t")
        reader = Img2datasetReader(threads=4, timeout=TIMEOUT, retries=0, batch_size=2,
                                   policy=FetchPolicy(allow_private_network=True), columns=columns)
        pipeline = Pipeline(reader, [FromImg2dataset("t"), _Slow(), Sink("records")])
        with DatasetWriter(tmp_path / "out") as writer:
            shards = list(UrlList(str(tmp_path / "urls.parquet"), columns).shards(100, str(writer.staging)))
            run_pipeline(pipeline, shards, writer, executor="local")
            manifest = writer.close()
    stages, fetch = manifest["stages"], manifest["download"]["fetch_seconds"]
    assert stages["slow"]["seconds"] >= 1.5 and manifest["tables"]["records"]["rows"] == 12
    assert 0 < fetch < 1.0
    assert fetch - 0.05 <= stages["download"]["seconds"] <= fetch + 0.5  # the fetch, plus turning rows into records
    tasks = manifest["run"]["tasks"]
    assert tasks["tasks"] == 1 and tasks["spans"][0]["wall"] >= stages["slow"]["seconds"]

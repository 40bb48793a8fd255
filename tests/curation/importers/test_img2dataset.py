import io
import json
import tarfile
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def _jpeg(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards(tmp_path, run_ingest, local_ray):
    out = tmp_path / "i2d"
    out.mkdir()
    with tarfile.open(out / "00000.tar", "w") as tar:
        _add(tar, "000000000.jpg", _jpeg(40, 30))
        _add(tar, "000000000.txt", b"a red square")
        _add(tar, "000000000.json", json.dumps({"key": "000000000", "url": "https://x/0.jpg", "status": "success", "width": 40, "height": 30}).encode())
        _add(tar, "000000001.json", json.dumps({"key": "000000001", "url": "https://x/1.jpg", "status": "failed_to_download", "error_message": "HTTP Error 404"}).encode())
    pq.write_table(pa.table({"key": ["000000000"]}), out / "00000.parquet")  # metadata beside the tars: ignored
    from curation.commands.ingest import ingest
    from curation.storage.dataset import Dataset

    ingest({"img2dataset": [out]}, tmp_path / "out", source="laion", use_ray=True, num_cpus=2)
    ds = Dataset(tmp_path / "out")
    (r,) = ds.read("records").to_pylist()
    assert r["record_id"] == "laion:000000000" and r["captions"] == ["a red square"] and (r["width"], r["height"]) == (40, 30)
    assert r["url"] == "https://x/0.jpg" and len(r["sha256"]) == 64
    (rej,) = ds.read("rejects").to_pylist()
    assert rej["reason"] == "http_error" and "sample 000000001: HTTP Error 404" in rej["detail"]


def test_parquet_shards(tmp_path, run_ingest):
    out = tmp_path / "i2d"
    out.mkdir()
    pq.write_table(pa.table({
        "key": ["0", "1", "2"], "url": ["u0", "u1", "u2"], "caption": ["one", None, "three"],
        "status": ["success", "success", "failed_to_resize"], "error_message": [None, None, "Image decoding error"],
        "jpg": [_jpeg(8, 8), _jpeg(8, 8), None],
    }), out / "00000.parquet")
    manifest, records, rejects = run_ingest({"img2dataset": [out]})
    assert [r["record_id"] for r in records] == ["img2dataset:0"]
    assert Counter(r["reason"] for r in rejects) == {"no_annotations": 1, "not_an_image": 1}


def test_a_truncated_image_in_a_shard_is_rejected(tmp_path, run_ingest):
    """img2dataset's "success" is not trusted: the image stage decodes every image fully."""
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    whole = buf.getvalue()
    out = tmp_path / "i2d"
    out.mkdir()
    pq.write_table(pa.table({
        "key": ["0", "1"], "url": ["u0", "u1"], "caption": ["whole", "cut"], "status": ["success", "success"],
        "jpg": [whole, whole[: len(whole) * 6 // 10]],
    }), out / "00000.parquet")
    _, records, rejects = run_ingest({"img2dataset": [out]})
    assert [r["record_id"] for r in records] == ["img2dataset:0"]
    assert [(r["record_id"], r["stage"], r["reason"]) for r in rejects] == [("img2dataset:1", "images", "image_truncated")]

"""LoadImages, called directly on a small table (no Ray)."""

import io
import json

import pyarrow as pa
from PIL import Image

from curation.importers.base import partial
from curation.importers.images import LoadImages, partial_to_row, WORK_SCHEMA


def _table(*partials):
    return pa.Table.from_pylist([partial_to_row(p) for p in partials], schema=WORK_SCHEMA)


def _row(name, **kw):
    return partial(f"t:{name}", "t", image_files=[name], declared=True, **kw)


def test_reads_bytes_hash_and_size_from_the_image(tmp_path, make_images):
    folder = make_images(tmp_path / "img", {"a.jpg": (30, 20)})
    (out,) = LoadImages([folder])(_table(_row("a.jpg", captions=["x"]))).to_pylist()
    assert out["reject_stage"] is None and (out["width"], out["height"]) == (30, 20)
    import hashlib

    assert out["sha256"] == hashlib.sha256((folder / "a.jpg").read_bytes()).hexdigest()


def test_rejects_with_reasons(tmp_path, make_images):
    folder = make_images(tmp_path / "img", {"small.jpg": (20, 20), "wide.jpg": (200, 100)})
    (folder / "junk.jpg").write_bytes(b"\x00" * 100)
    (tmp_path / "secret.jpg").write_bytes((folder / "small.jpg").read_bytes())
    rows = [
        _row("nothere.jpg", captions=["x"]),
        _row("junk.jpg", captions=["x"]),
        _row("../secret.jpg", captions=["x"]),  # outside the image folder: not followed
        _row("wide.jpg", width=100, height=100, regions=[{"phrase": "p", "boxes": [[1.0, 1.0, 5.0, 5.0]]}]),
    ]
    out = LoadImages([folder])(_table(*rows)).to_pylist()
    assert [r["reject_reason"] for r in out] == ["image_missing", "not_an_image", "image_missing", "size_mismatch"]
    assert all(r["reject_stage"] == "images" and r["image"] is None for r in out)
    assert "annotation says 100x100, the image is 200x100" in out[3]["reject_detail"]


def test_pixel_limit_against_decompression_bombs(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    Image.new("1", (10_000, 10_000)).save(folder / "bomb.png")  # 100 megapixels in a small file
    assert (folder / "bomb.png").stat().st_size < 100_000
    (out,) = LoadImages([folder])(_table(_row("bomb.png", captions=["x"]))).to_pylist()
    assert out["reject_reason"] == "image_too_large"
    (out,) = LoadImages([folder], max_pixels=200_000_000)(_table(_row("bomb.png", captions=["x"]))).to_pylist()
    assert out["reject_reason"] is None and out["width"] == 10_000


def test_boxes_follow_a_resized_copy_of_the_same_aspect(tmp_path, make_images):
    folder = make_images(tmp_path / "img", {"half.jpg": (320, 240)})
    row = _row("half.jpg", width=640, height=480, regions=[{"phrase": "p", "boxes": [[100.0, 50.0, 300.0, 400.0]]}],
               ocr=[{"text": "t", "quad": [0.0, 0.0, 64.0, 0.0, 64.0, 48.0, 0.0, 48.0]}])
    (out,) = LoadImages([folder])(_table(row)).to_pylist()
    assert out["regions"][0]["boxes"] == [[50.0, 25.0, 150.0, 200.0]]
    assert out["ocr"][0]["quad"] == [0.0, 0.0, 32.0, 0.0, 32.0, 24.0, 0.0, 24.0]
    assert json.loads(out["meta"]) == {"annotation_size": [640, 480]}


def test_image_bytes_already_in_the_row_are_used(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (7, 5)).save(buf, format="PNG")
    row = partial("t:1", "t", image=buf.getvalue(), captions=["x"], declared=True)
    (out,) = LoadImages([])(_table(row)).to_pylist()
    assert (out["width"], out["height"]) == (7, 5) and out["reject_reason"] is None


def test_without_images_boxes_need_a_size(tmp_path):
    row = _row("a.jpg", regions=[{"phrase": "p", "boxes": [[1.0, 1.0, 5.0, 5.0]]}])
    (out,) = LoadImages([])(_table(row)).to_pylist()
    assert out["reject_reason"] == "size_unknown"


def _photo_jpeg(w=320, h=240):
    """A JPEG with real entropy-coded data (noise), so that cutting it loses pixels."""
    import numpy as np

    arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_a_truncated_jpeg_is_rejected_where_it_enters(tmp_path):
    from PIL import ImageFile

    folder = tmp_path / "img"
    folder.mkdir()
    good = _photo_jpeg()
    (folder / "good.jpg").write_bytes(good)
    (folder / "cut.jpg").write_bytes(good[: len(good) * 6 // 10])  # the header is intact: PIL opens it
    # both paths of the stage: column-wise (no geometry) and row by row (boxes to check against the image)
    rows = [_row("good.jpg", captions=["x"]), _row("cut.jpg", captions=["x"]),
            _row("cut.jpg", regions=[{"phrase": "p", "boxes": [[1.0, 1.0, 5.0, 5.0]]}])]
    out = LoadImages([folder])(_table(*rows)).to_pylist()
    assert [r["reject_reason"] for r in out] == [None, "image_truncated", "image_truncated"]
    assert "cut.jpg" in out[1]["reject_detail"] and "truncated" in out[1]["reject_detail"]
    assert out[1]["image"] is None
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # set for the check and restored


def test_a_truncated_png_is_rejected_too(tmp_path):
    import numpy as np

    folder = tmp_path / "img"
    folder.mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    (folder / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    (out,) = LoadImages([folder])(_table(_row("cut.png", captions=["x"]))).to_pylist()
    assert out["reject_reason"] == "image_truncated"

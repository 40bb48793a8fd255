"""Annotated image sizes that are not positive whole numbers: one `invalid_size` reject, the run goes on."""

import json

import pytest

# (value written as width, text the detail must show)
BAD_WIDTHS = [
    (-640, "-640"),
    (0, "0"),
    (2.5, "2.5"),
    ("640", "'640'"),
    (1e30, "1e+30"),
    (float("nan"), "nan"),
]


def _coco(tmp_path, width, height=480):
    doc = {
        "images": [
            {"id": 1, "file_name": "1.jpg", "width": width, "height": height},
            {"id": 2, "file_name": "2.jpg", "width": 640, "height": 480},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "a cat on a mat"},
            {"id": 11, "image_id": 2, "caption": "a dog on a log"},
        ],
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(doc))  # NaN is written as the bare NaN that Python's json reads back
    return path


def _only_invalid_size(rejects, record_id, shown):
    (r,) = rejects
    assert (r["record_id"], r["stage"], r["reason"]) == (record_id, "ingest", "invalid_size")
    assert shown in r["detail"], r["detail"]
    return r


@pytest.mark.parametrize("with_images", [True, False], ids=["images", "no-images"])
@pytest.mark.parametrize("width, shown", BAD_WIDTHS, ids=[repr(w) for w, _ in BAD_WIDTHS])
def test_coco_bad_width_rejects_the_image_and_the_run_goes_on(width, shown, with_images, tmp_path, make_images, run_ingest):
    images = make_images(tmp_path / "img", {"1.jpg": (640, 480), "2.jpg": (640, 480)}) if with_images else None
    manifest, records, rejects = run_ingest({"coco-captions": [_coco(tmp_path, width)]}, images)
    assert [(r["record_id"], r["width"], r["height"]) for r in records] == [("coco:2", 640, 480)]
    r = _only_invalid_size(rejects, "coco:1", shown)
    assert "1.jpg" in r["detail"] and "width" in r["detail"]
    assert manifest["stages"]["ingest"]["dropped"] == {"invalid_size": 1}


@pytest.mark.parametrize("width, shown", BAD_WIDTHS, ids=[repr(w) for w, _ in BAD_WIDTHS])
def test_records_jsonl_bad_width(width, shown, tmp_path, make_images, run_ingest):
    lines = [
        {"record_id": "web:1", "source": "web", "image_file": "1.jpg", "width": width, "height": 480, "captions": ["a cat"]},
        {"record_id": "web:2", "source": "web", "image_file": "2.jpg", "width": 640, "height": 480, "captions": ["a dog"]},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    images = make_images(tmp_path / "img", {"1.jpg": (640, 480), "2.jpg": (640, 480)})
    _, records, rejects = run_ingest({"records-jsonl": [path]}, images)
    assert [r["record_id"] for r in records] == ["web:2"]
    r = _only_invalid_size(rejects, "web:1", shown)
    assert "records.jsonl: line 1" in r["detail"]


def test_a_whole_float_size_is_a_size(tmp_path, run_ingest):
    _, records, rejects = run_ingest({"coco-captions": [_coco(tmp_path, 640.0, 480.0)]})
    assert rejects == [] and [(r["width"], r["height"]) for r in records] == [(640, 480), (640, 480)]


def test_a_bad_size_in_a_second_file_is_invalid_not_a_conflict(tmp_path, run_ingest):
    caps = _coco(tmp_path, 640)
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": "640", "height": 480}],
        "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]}],
        "categories": [{"id": 1, "name": "cat"}],
    }))
    _, records, rejects = run_ingest({"coco-captions": [caps], "coco-instances": [inst]})
    assert [r["record_id"] for r in records] == ["coco:2"]
    _only_invalid_size(rejects, "coco:1", "'640'")


@pytest.mark.parametrize("width, shown", BAD_WIDTHS, ids=[repr(w) for w, _ in BAD_WIDTHS])
def test_grit_bad_width(width, shown, tmp_path, run_ingest):
    rows = [
        {"key": "1", "caption": "a dog", "width": width, "height": 100, "noun_chunks": [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9]]},
        {"key": "2", "caption": "a cat", "width": 200, "height": 100, "noun_chunks": [[0, 5, 0.1, 0.1, 0.5, 0.5, 0.9]]},
    ]
    path = tmp_path / "grit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, records, rejects = run_ingest({"grit": [path]})
    assert [r["record_id"] for r in records] == ["grit:2"]
    _only_invalid_size(rejects, "grit:1", shown)

import json
from collections import Counter

from curation.importers.jsonstream import load_json


def _sizes(path):
    return {im["file_name"]: (im["width"], im["height"]) for im in load_json(path)["images"]}


def test_captions_excerpt_records_and_rejects(real, tmp_path, make_images, run_ingest):
    path = real / "coco2017" / "captions_val2017.sample.json"
    images = make_images(tmp_path / "val2017", _sizes(path))
    manifest, records, rejects = run_ingest({"coco-captions": [path]}, images)
    # 9 of 100 captions reference one of 2 listed images; 91 reference images not in the excerpt.
    assert len(records) == 2
    assert sum(len(r["captions"]) for r in records) == 9
    assert Counter(r["reason"] for r in rejects) == {"image_unknown": 91, "no_annotations": 98}
    assert manifest["ingest"]["annotations_read"] == {"coco-captions": 100}
    assert manifest["stages"]["ingest"]["dropped"] == {"image_unknown": 91, "no_annotations": 98}
    images = manifest["stages"]["images"]
    assert {k: images[k] for k in ("in", "out", "dropped")} == {"in": 2, "out": 2, "dropped": {}}
    assert images["seconds"] > 0
    for r in records:
        assert r["record_id"] == f"coco:{int(r['record_id'].split(':')[1])}" and r["source"] == "coco"
        assert r["sha256"] and r["image"][:2] == b"\xff\xd8"
    unknown = next(r for r in rejects if r["reason"] == "image_unknown")
    assert unknown["record_id"] == "coco:179765" and unknown["stage"] == "ingest"
    assert "caption 38" in unknown["detail"]


def test_size_comes_from_the_image_and_boxes_follow_a_resized_copy(tmp_path, make_images, run_ingest):
    doc = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": 640, "height": 480}],
        "annotations": [{"id": 5, "image_id": 1, "caption": "a dog"}],
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(doc))
    images = make_images(tmp_path / "img", {"1.jpg": (320, 240)})
    _, records, rejects = run_ingest({"coco-captions": [path]}, images)
    assert (records[0]["width"], records[0]["height"]) == (320, 240)
    assert json.loads(records[0]["meta"]) == {"annotation_size": [640, 480]}
    assert rejects == []


def test_without_images_the_record_keeps_the_annotated_size_and_url(real, run_ingest):
    path = real / "coco2017" / "captions_val2017.sample.json"
    listed = {f"coco:{im['id']}": (im["width"], im["height"]) for im in load_json(path)["images"]}
    _, records, _ = run_ingest({"coco-captions": [path]})
    assert len(records) == 2
    for r in records:
        assert (r["width"], r["height"]) == listed[r["record_id"]]
        assert r["image"] is None and r["sha256"] is None
        assert r["url"].startswith("http://images.cocodataset.org/val2017/")


def test_missing_image_is_a_reject_with_the_reason(real, tmp_path, make_images, run_ingest):
    path = real / "coco2017" / "captions_val2017.sample.json"
    sizes = _sizes(path)
    manifest, records, rejects = run_ingest({"coco-captions": [path]}, make_images(tmp_path / "img", {}))
    missing = [r for r in rejects if r["reason"] == "image_missing"]
    assert records == [] and len(missing) == 2
    assert all(r["stage"] == "images" and "annotations)" in r["detail"] for r in missing)
    assert manifest["stages"]["images"]["dropped"] == {"image_missing": 2}
    assert len(sizes) == 100

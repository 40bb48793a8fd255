import json
from collections import Counter


def test_ocr_items_with_quads_and_boxes(tmp_path, make_images, run_ingest):
    path = tmp_path / "ocr.jsonl"
    lines = [
        {"image": "p1.png", "items": [{"text": "EXIT", "quad": [10, 10, 50, 12, 49, 30, 9, 28]}, {"text": "42", "box": [60, 5, 80, 20]}]},
        {"image": "p1.png", "text": "late", "box": [0, 0, 5, 5]},
        {"image": "p2.png", "items": [{"text": "far", "box": [500, 500, 520, 510]}, {"text": "ok", "box": [1, 1, 2, 2]}, {"text": "", "box": [1, 1, 2, 2]}]},
        {"image": "missing.png", "items": [{"text": "x", "box": [1, 1, 2, 2]}]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    folder = make_images(tmp_path / "img", {"p1.png": (100, 40), "p2.png": (100, 100)})
    manifest, records, rejects = run_ingest({"ocr-jsonl": [path]}, folder)
    by_id = {r["record_id"]: r for r in records}
    assert by_id["ocr:p1.png"]["ocr"] == [
        {"text": "EXIT", "quad": [10.0, 10.0, 50.0, 12.0, 49.0, 30.0, 9.0, 28.0]},
        {"text": "42", "quad": [60.0, 5.0, 80.0, 5.0, 80.0, 20.0, 60.0, 20.0]},
        {"text": "late", "quad": [0.0, 0.0, 5.0, 0.0, 5.0, 5.0, 0.0, 5.0]},
    ]
    # no size in the annotation: the quad outside 100x100 is found once the image is read
    assert by_id["ocr:p2.png"]["ocr"] == [{"text": "ok", "quad": [1.0, 1.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0]}]
    assert Counter((r["stage"], r["reason"]) for r in rejects) == {
        ("images", "quad_outside_image"): 1, ("ingest", "empty_text"): 1, ("images", "image_missing"): 1,
    }
    assert manifest["stages"]["images"]["dropped"] == {"image_missing": 1, "quad_outside_image": 1}

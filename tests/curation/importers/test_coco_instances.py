import json
import math
from collections import Counter

from curation.importers.jsonstream import load_json


def test_instances_excerpt_records_and_rejects(real, tmp_path, make_images, run_ingest):
    path = real / "coco2017" / "instances_val2017.sample.json"
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in load_json(path)["images"]}
    manifest, records, rejects = run_ingest({"coco-instances": [path]}, make_images(tmp_path / "img", sizes))
    # 1 of 100 annotations references a listed image: 37777, category 64.
    assert [r["record_id"] for r in records] == ["coco:37777"]
    (region,) = records[0]["regions"]
    assert region["phrase"] == "potted plant"
    assert region["boxes"] == [[102.49, 118.47, 102.49 + 7.9, 118.47 + 17.31]]
    assert Counter(r["reason"] for r in rejects) == {"image_unknown": 99, "no_annotations": 99}
    assert manifest["ingest"]["annotations"]["regions"] == 1


def _doc(annotations, images=None):
    return {
        "images": images or [{"id": 7, "file_name": "7.jpg", "width": 100, "height": 80}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "bird"}],
    }


def test_one_region_per_category_with_all_its_boxes(tmp_path, run_ingest):
    anns = [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [20, 20, 5, 5], "iscrowd": 0},
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [50, 40, 60, 50], "iscrowd": 0},  # partly outside: kept as is
    ]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_doc(anns)))
    _, records, rejects = run_ingest({"coco-instances": [path]})
    assert rejects == []
    assert records[0]["regions"] == [
        {"phrase": "dog", "boxes": [[0.0, 0.0, 10.0, 10.0], [50.0, 40.0, 110.0, 90.0]]},
        {"phrase": "cat", "boxes": [[20.0, 20.0, 25.0, 25.0]]},
    ]


def test_a_category_with_any_invalid_box_is_rejected_whole(tmp_path, run_ingest):
    anns = [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [5, 5, 0, 10]},  # zero width
        {"id": 3, "image_id": 7, "category_id": 2, "bbox": [200, 10, 5, 5]},  # wholly outside 100x80
        {"id": 4, "image_id": 7, "category_id": 3, "bbox": [1, 1, math.nan, 4]},
        {"id": 5, "image_id": 7, "category_id": 3, "bbox": [1, 1, 4, 4]},
    ]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_doc(anns + [{"id": 6, "image_id": 7, "category_id": 2, "bbox": [1, 1, 2, 2]}])))
    _, records, rejects = run_ingest({"coco-instances": [path]})
    # every category of the image had a bad box: nothing is kept, nothing is fixed
    assert records == []
    by_reason = {r["reason"]: r for r in rejects}
    assert set(by_reason) == {"box_empty", "box_outside_image", "box_not_finite"}
    assert "'dog'" in by_reason["box_empty"]["detail"] and "1 of 2 boxes" in by_reason["box_empty"]["detail"]
    assert "'cat'" in by_reason["box_outside_image"]["detail"]
    assert all(r["record_id"] == "coco:7" and r["stage"] == "ingest" for r in rejects)


def test_merged_captions_and_instances_make_one_record_per_image(tmp_path, make_images, run_ingest):
    images = [{"id": 7, "file_name": "7.jpg", "width": 100, "height": 80}, {"id": 8, "file_name": "8.jpg", "width": 64, "height": 64}]
    caps = tmp_path / "captions.json"
    caps.write_text(json.dumps({"images": images, "annotations": [
        {"id": 1, "image_id": 7, "caption": "A dog and a cat."},
        {"id": 2, "image_id": 8, "caption": "Nothing here."},
        {"id": 3, "image_id": 7, "caption": "Two pets."},
    ]}))
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps(_doc([{"id": 9, "image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10]}], images)))
    folder = make_images(tmp_path / "img", {"7.jpg": (100, 80), "8.jpg": (64, 64)})
    manifest, records, rejects = run_ingest({"coco-captions": [caps], "coco-instances": [inst]}, folder)
    assert rejects == []
    by_id = {r["record_id"]: r for r in records}
    assert set(by_id) == {"coco:7", "coco:8"}
    assert by_id["coco:7"]["captions"] == ["A dog and a cat.", "Two pets."]
    assert by_id["coco:7"]["regions"] == [{"phrase": "dog", "boxes": [[0.0, 0.0, 10.0, 10.0]]}]
    assert by_id["coco:8"]["regions"] == []
    assert manifest["ingest"]["annotations_read"] == {"coco-captions": 3, "coco-instances": 1}

"""`curate ingest` then `curate build` then `curate validate` on each real excerpt."""

import json
from collections import Counter

import pytest

from curation.cli import main
from curation.storage.dataset import Dataset
from curation.importers.jsonstream import load_json


def _coco_sizes(path):
    return {im["file_name"]: (im["width"], im["height"]) for im in load_json(path)["images"]}


def _vg_sizes(path):
    return {f"{im['image_id']}.jpg": (im["width"], im["height"]) for im in load_json(path)}


def _text_sizes(path):
    return {f"{d['image_id']}.jpg": (d["image_width"], d["image_height"]) for d in load_json(path)["data"]}


CASES = {
    "coco-captions": (["coco2017/captions_val2017.sample.json"], _coco_sizes, {"caption": 9}),
    "coco-instances": (["coco2017/instances_val2017.sample.json"], _coco_sizes, {"ref_grounding": 1}),
    "vg-regions": (["visual_genome/region_descriptions.sample.json", "visual_genome/image_data.sample.json"], _vg_sizes, {"ref_grounding": 7278, "grounded_caption": 7278}),
    "vg-qa": (["visual_genome/question_answers.sample.json", "visual_genome/image_data.sample.json"], _vg_sizes, {"vqa": 3393}),
    "textvqa": (["textvqa/TextVQA_0.5.1_val.sample.json"], _text_sizes, {"vqa": 100}),
    "textcaps": (["textcaps/TextCaps_0.1_val.sample.json"], _text_sizes, {"caption": 100}),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_ingest_build_validate_on_each_excerpt(kind, real, tmp_path, make_images, capsys, assert_known_reasons):
    files, sizes_of, tasks = CASES[kind]
    paths = [real / f for f in files]
    images = make_images(tmp_path / "images", sizes_of(paths[-1]))
    records, samples = tmp_path / "records", tmp_path / "samples"
    # few images: the image side runs in this process (the Ray path has its own tests)
    assert main(["ingest", *map(str, paths), "--kind", kind, "--images", str(images), "--out", str(records), "--runner", "local"]) == 0
    assert main(["build", str(records), "--out", str(samples), "--runner", "local"]) == 0
    assert main(["validate", str(samples)]) == 0
    out = capsys.readouterr().out
    assert "0 problems" in out
    got = Counter(Dataset(samples).read("samples").column("task").to_pylist())
    assert {t: got[t] for t in tasks} == tasks
    assert_known_reasons(records)
    assert_known_reasons(samples)


def test_a_merged_coco_record_yields_caption_and_grounding_samples(tmp_path, make_images, local_ray, assert_known_reasons):
    images = [{"id": 42, "file_name": "000000000042.jpg", "width": 640, "height": 480}]
    caps = tmp_path / "captions_x.json"
    caps.write_text(json.dumps({"images": images, "annotations": [{"id": 1, "image_id": 42, "caption": "A dog on a sofa."}]}))
    inst = tmp_path / "instances_x.json"
    inst.write_text(json.dumps({
        "images": images,
        "annotations": [{"id": 2, "image_id": 42, "category_id": 18, "bbox": [100, 50, 200, 350], "iscrowd": 0}],
        "categories": [{"id": 18, "name": "dog"}],
    }))
    folder = make_images(tmp_path / "img", {"000000000042.jpg": (640, 480)})
    records, samples = tmp_path / "records", tmp_path / "samples"
    assert main(["ingest", f"coco-captions={caps}", f"coco-instances={inst}", "--images", str(folder), "--out", str(records), "--runner", "ray"]) == 0
    (record,) = Dataset(records).read("records").to_pylist()
    assert record["record_id"] == "coco:42" and record["captions"] == ["A dog on a sofa."]
    assert record["regions"] == [{"phrase": "dog", "boxes": [[100.0, 50.0, 300.0, 400.0]]}]
    assert main(["build", str(records), "--out", str(samples), "--runner", "local"]) == 0
    assert main(["validate", str(samples)]) == 0
    rows = Dataset(samples).read("samples").to_pylist()
    tasks = {r["task"] for r in rows}
    assert {"caption", "ref_grounding"} <= tasks
    assert all(r["record_id"] == "coco:42" for r in rows)
    assert assert_known_reasons(records) == [] and assert_known_reasons(samples) == []
    ref = next(r for r in rows if r["task"] == "ref_grounding")
    # the spec's worked box: (100, 50, 300, 400) on 640x480 -> (156,104),(469,833)
    assert "<ref>dog</ref>" in ref["prompt"] and "<box>(156,104),(469,833)</box>" in ref["target"]

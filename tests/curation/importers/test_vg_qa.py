from collections import Counter

from curation.importers.jsonstream import load_json


def test_vg_qa_excerpt(real, tmp_path, make_images, run_ingest):
    qa_path = real / "visual_genome" / "question_answers.sample.json"
    image_data = real / "visual_genome" / "image_data.sample.json"
    sizes = {f"{im['image_id']}.jpg": (im["width"], im["height"]) for im in load_json(image_data)}
    manifest, records, rejects = run_ingest({"vg-qa": [qa_path, image_data]}, make_images(tmp_path / "vg", sizes))
    # 3,393 QA pairs over the 50 images that have any; the other 50 listed images have none.
    assert len(records) == 50
    assert sum(len(r["qa"]) for r in records) == 3393
    assert Counter(r["reason"] for r in rejects) == {"no_annotations": 50}
    first = next(r for r in records if r["record_id"] == "vg:1")
    assert first["qa"][0] == {"question": "What color is the clock?", "answer": "Green."}


def test_vg_regions_and_qa_merge_into_one_record_per_image(real, tmp_path, make_images, run_ingest):
    vg = real / "visual_genome"
    manifest, records, rejects = run_ingest({
        "vg-regions": [vg / "region_descriptions.sample.json", vg / "image_data.sample.json"],
        "vg-qa": [vg / "question_answers.sample.json", vg / "image_data.sample.json"],
    })
    assert len(records) == 100 and rejects == []
    assert sum(len(r["regions"]) for r in records) == 7278
    assert sum(len(r["qa"]) for r in records) == 3393
    assert sum(1 for r in records if r["qa"] and r["regions"]) == 50

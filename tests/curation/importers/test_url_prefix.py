"""--images as a URL prefix: images fetched through the download path (img2dataset) from loopback."""

from collections import Counter

from curation.crawl import FetchPolicy
from curation.importers.jsonstream import load_json
from jobs.demo import serve_directory


def test_images_from_a_url_prefix(real, tmp_path, make_images, run_ingest):
    path = real / "coco2017" / "captions_val2017.sample.json"
    listed = {im["id"]: im for im in load_json(path)["images"]}
    # the excerpt's captions reference 2 listed images; serve only one of them
    ids = sorted({a["image_id"] for a in load_json(path)["annotations"] if a["image_id"] in listed})
    keep, gone = listed[ids[0]], listed[ids[1]]
    make_images(tmp_path / "www" / "val2017", {keep["file_name"]: (keep["width"], keep["height"])})
    with serve_directory(tmp_path / "www") as base:
        manifest, records, rejects = run_ingest({"coco-captions": [path]}, f"{base}/val2017",
                                                fetch=FetchPolicy(allow_private_network=True))
    assert [r["record_id"] for r in records] == [f"coco:{keep['id']}"]
    (rec,) = records
    assert rec["url"] == f"{base}/val2017/{keep['file_name']}" and (rec["width"], rec["height"]) == (keep["width"], keep["height"])
    missing = [r for r in rejects if r["reason"] == "image_missing"]
    assert [r["record_id"] for r in missing] == [f"coco:{gone['id']}"]
    assert f"{base}/val2017/{gone['file_name']}" in missing[0]["detail"] and "404" in missing[0]["detail"]
    assert Counter(r["reason"] for r in rejects) == {"image_unknown": 91, "no_annotations": 98, "image_missing": 1}
    assert "download" in manifest["timings"]

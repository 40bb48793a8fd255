import json
from collections import Counter

from curation.storage.dataset import Dataset
from curation.importers.jsonstream import load_json


def _vg(real):
    return real / "visual_genome" / "region_descriptions.sample.json", real / "visual_genome" / "image_data.sample.json"


def _image_folder(make_images, folder, image_data, skip=()):
    sizes = {f"{im['image_id']}.jpg": (im["width"], im["height"]) for im in load_json(image_data) if im["image_id"] not in skip}
    return make_images(folder, sizes)


def test_vg_excerpt_through_the_cli_on_a_real_ray(real, tmp_path, make_images, local_ray, capsys):
    """100 records and 7,278 region phrases in; every one a region or a reject with its reason."""
    from curation.cli import main

    regions, image_data = _vg(real)
    folder = _image_folder(make_images, tmp_path / "vg", image_data, skip={3, 7})
    out = tmp_path / "out"
    rc = main(["ingest", str(regions), str(image_data), "--kind", "vg-regions", "--images", str(folder), "--out", str(out), "--num-cpus", "2"])
    assert rc == 0
    ds = Dataset(out)
    records, rejects = ds.read("records").to_pylist(), ds.read("rejects").to_pylist()
    phrases_in = sum(len(e["regions"]) for e in load_json(regions))
    assert phrases_in == 7278
    missing = {r["record_id"]: r for r in rejects if r["reason"] == "image_missing"}
    assert set(missing) == {"vg:3", "vg:7"} and len(rejects) == 2
    lost = sum(int(r["detail"].rsplit("(", 1)[1].split()[0]) for r in missing.values())
    assert len(records) == 98
    assert sum(len(r["regions"]) for r in records) + lost == 7278
    assert all(len(reg["boxes"]) == 1 for r in records for reg in r["regions"])
    m = ds.manifest
    assert m["stages"]["ingest"] == {"in": 7278, "out": 100, "dropped": {}, "seconds": m["stages"]["ingest"]["seconds"]}
    assert m["stages"]["images"]["in"] == 100 and m["stages"]["images"]["dropped"] == {"image_missing": 2}
    assert m["ingest"]["annotations"]["regions"] == 7278 - lost
    assert capsys.readouterr().out.startswith(f"ingest: 98 records ({7278 - lost} regions); 2 rejects (2 image_missing) -> ")


def test_vg_excerpt_all_phrases_become_regions(real, tmp_path, make_images, run_ingest):
    regions, image_data = _vg(real)
    folder = _image_folder(make_images, tmp_path / "vg", image_data)
    manifest, records, rejects = run_ingest({"vg-regions": [regions, image_data]}, folder)
    assert len(records) == 100 and rejects == []
    assert sum(len(r["regions"]) for r in records) == 7278
    first = next(r for r in records if r["record_id"] == "vg:1")
    assert first["regions"][0] == {"phrase": "the clock is green in colour", "boxes": [[421.0, 57.0, 503.0, 196.0]]}
    assert (first["width"], first["height"]) == (800, 600)
    assert first["url"] == "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg"
    # the excerpt has 4 boxes partly outside the image (x = -2 ...): kept as they are
    partly = [b for r in records for reg in r["regions"] for b in reg["boxes"] if b[0] < 0 or b[1] < 0 or b[2] > r["width"] or b[3] > r["height"]]
    assert len(partly) == 4
    assert manifest["ingest"]["annotations_read"] == {"vg-regions": 7278}


def test_invalid_vg_boxes_are_rejects_with_reasons(tmp_path, run_ingest):
    image_data = tmp_path / "image_data.json"
    image_data.write_text(json.dumps([{"image_id": 1, "width": 100, "height": 50, "url": "https://x/VG_100K/1.jpg"}]))
    regions = tmp_path / "region_descriptions.json"
    regions.write_text(json.dumps([
        {"id": 1, "regions": [
            {"region_id": 1, "image_id": 1, "phrase": "ok", "x": 1, "y": 1, "width": 10, "height": 10},
            {"region_id": 2, "image_id": 1, "phrase": "flat", "x": 1, "y": 1, "width": 10, "height": 0},
            {"region_id": 3, "image_id": 1, "phrase": "away", "x": 150, "y": 1, "width": 10, "height": 10},
            {"region_id": 4, "image_id": 1, "phrase": " ", "x": 1, "y": 1, "width": 10, "height": 10},
            {"region_id": 5, "image_id": 1, "phrase": "odd", "x": "1", "y": 1, "width": 10, "height": 10},
        ]},
        {"id": 99, "regions": [{"region_id": 6, "image_id": 99, "phrase": "unknown image", "x": 1, "y": 1, "width": 1, "height": 1}]},
    ]))
    manifest, records, rejects = run_ingest({"vg-regions": [image_data, regions]})
    assert [reg["phrase"] for reg in records[0]["regions"]] == ["ok"]
    assert Counter((r["record_id"], r["reason"]) for r in rejects) == {
        ("vg:1", "box_empty"): 1,
        ("vg:1", "box_outside_image"): 1,
        ("vg:1", "empty_text"): 1,
        ("vg:1", "box_malformed"): 1,
        ("vg:99", "image_unknown"): 1,
    }
    assert manifest["stages"]["ingest"]["in"] == 6

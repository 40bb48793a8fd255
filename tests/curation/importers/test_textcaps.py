from curation.importers.jsonstream import load_json


def test_textcaps_excerpt(real, tmp_path, make_images, run_ingest):
    path = real / "textcaps" / "TextCaps_0.1_val.sample.json"
    data = load_json(path)["data"]
    sizes = {f"{d['image_id']}.jpg": (d["image_width"], d["image_height"]) for d in data}
    manifest, records, rejects = run_ingest({"textcaps": [path]}, make_images(tmp_path / "img", sizes))
    # 100 captions of 99 images; the 5 reference_strs repeat the image's captions and are not added again
    assert len(records) == 99 and rejects == []
    assert sum(len(r["captions"]) for r in records) == 100
    assert {c for r in records for c in r["captions"]} == {d["caption_str"] for d in data}
    first = next(r for r in records if r["record_id"] == "textcaps:caef3d1e97c2cf15")
    assert first["captions"] == ["A book about CEOs is sitting on top of a box."]
    assert (first["width"], first["height"]) == (1024, 1024)

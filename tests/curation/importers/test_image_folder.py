import json
from collections import Counter


def test_image_folder_with_sidecars(tmp_path, make_images, run_ingest):
    folder = make_images(tmp_path / "photos", {"dog.jpg": (64, 48), "sub/cat.png": (32, 32), "bare.jpg": (8, 8), "broken.jpg": (8, 8)})
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "broken.txt").write_text("a broken file")
    dog = (folder / "dog.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(dog[: len(dog) * 6 // 10])  # a truncated JPEG: its header still reads
    (folder / "cut.txt").write_text("a cut file")
    (folder / "dog.txt").write_text("  A dog in the park.\n")
    (folder / "sub" / "cat.json").write_text(json.dumps({"captions": ["A cat.", "Grey cat."], "regions": [{"phrase": "cat", "boxes": [[1, 1, 20, 20]]}], "license": "cc-by"}))
    manifest, records, rejects = run_ingest({"image-folder": [folder]})
    by_id = {r["record_id"]: r for r in records}
    assert set(by_id) == {"folder:dog", "folder:sub/cat"}
    assert by_id["folder:dog"]["captions"] == ["A dog in the park."] and (by_id["folder:dog"]["width"], by_id["folder:dog"]["height"]) == (64, 48)
    assert by_id["folder:sub/cat"]["captions"] == ["A cat.", "Grey cat."]
    assert json.loads(by_id["folder:sub/cat"]["meta"]) == {"license": "cc-by"}
    assert by_id["folder:sub/cat"]["image"][:4] == b"\x89PNG"
    assert Counter((r["record_id"], r["reason"]) for r in rejects) == {
        ("folder:bare", "no_annotations"): 1, ("folder:broken", "not_an_image"): 1, ("folder:cut", "image_truncated"): 1}

import json
from collections import Counter


def test_canonical_records_are_validated(tmp_path, make_images, run_ingest):
    lines = [
        {"record_id": "web:1", "source": "web", "image_file": "1.jpg", "captions": ["a cat"], "regions": [{"phrase": "cat", "boxes": [[1, 1, 5, 5]]}], "meta": {"lang": "en"}},
        {"record_id": "web:1", "source": "web", "qa": [{"question": "What?", "answer": "A cat."}]},
        {"record_id": "web:2", "source": "web", "image_file": "2.jpg", "captions": "not a list"},
        {"record_id": "web:3", "source": "web", "image_file": "2.jpg", "captions": ["x"], "colour": "red"},
        {"source": "web", "captions": ["no id"]},
        {"record_id": "web:4", "source": "web", "image_file": "2.jpg", "regions": [{"phrase": "bad", "boxes": [[5, 5, 1, 1]]}, {"phrase": "good", "boxes": [[1, 1, 5, 5]]}]},
        {"record_id": "doc:1", "source": "doc", "text": "A plain text document."},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    folder = make_images(tmp_path / "img", {"1.jpg": (10, 10), "2.jpg": (10, 10)})
    manifest, records, rejects = run_ingest({"records-jsonl": [path]}, folder)
    by_id = {r["record_id"]: r for r in records}
    assert by_id["web:1"]["captions"] == ["a cat"] and by_id["web:1"]["qa"] == [{"question": "What?", "answer": "A cat."}]
    assert json.loads(by_id["web:1"]["meta"]) == {"lang": "en"}
    assert [g["phrase"] for g in by_id["web:4"]["regions"]] == ["good"]
    assert Counter(r["reason"] for r in rejects) == {"invalid_record": 3, "box_empty": 1, "image_missing": 1}
    missing = next(r for r in rejects if r["reason"] == "image_missing")
    assert missing["record_id"] == "doc:1"  # a document without an image under --images
    assert "unknown columns ['colour']" in next(r["detail"] for r in rejects if r["record_id"] == "web:3")


def test_records_jsonl_without_images_keeps_documents(tmp_path, run_ingest):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"record_id": "doc:1", "source": "doc", "text": "Hello."}) + "\n")
    _, records, rejects = run_ingest({"records-jsonl": [path]})
    assert [r["text"] for r in records] == ["Hello."] and rejects == []

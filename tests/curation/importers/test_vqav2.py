import json
from collections import Counter


def _files(tmp_path):
    q = tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json"
    q.write_text(json.dumps({"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014", "questions": [
        {"image_id": 262148, "question": "What color is the bus?", "question_id": 262148000},
        {"image_id": 262148, "question": "How many wheels?", "question_id": 262148001},
        {"image_id": 393225, "question": "Is it raining?", "question_id": 393225000},
        {"image_id": 393225, "question": "Unanswered?", "question_id": 393225009},
    ]}))
    a = tmp_path / "v2_mscoco_val2014_annotations.json"
    a.write_text(json.dumps({"info": {}, "data_subtype": "val2014", "annotations": [
        {"question_id": 262148000, "image_id": 262148, "multiple_choice_answer": "red", "answers": [{"answer": "red"}] * 10},
        {"question_id": 262148001, "image_id": 262148, "multiple_choice_answer": "4", "answers": []},
        {"question_id": 393225000, "image_id": 393225, "multiple_choice_answer": "no", "answers": []},
        {"question_id": 1, "image_id": 5, "multiple_choice_answer": "?", "answers": []},
    ]}))
    return q, a


def test_vqav2_questions_join_annotations_on_coco_images(tmp_path, make_images, run_ingest):
    q, a = _files(tmp_path)
    folder = make_images(tmp_path / "val2014", {"COCO_val2014_000000262148.jpg": (640, 480), "000000393225.jpg": (500, 375)})
    manifest, records, rejects = run_ingest({"vqav2": [a, q]}, folder)
    by_id = {r["record_id"]: r for r in records}
    assert by_id["coco:262148"]["qa"] == [{"question": "What color is the bus?", "answer": "red"}, {"question": "How many wheels?", "answer": "4"}]
    assert (by_id["coco:393225"]["width"], by_id["coco:393225"]["height"]) == (500, 375)  # 2017-style name, size from the image
    assert Counter(r["reason"] for r in rejects) == {"question_unknown": 1, "answer_missing": 1}
    assert manifest["ingest"]["annotations_read"] == {"vqav2": 5}


def test_vqav2_merges_with_coco_captions(tmp_path, run_ingest):
    q, a = _files(tmp_path)
    caps = tmp_path / "captions.json"
    caps.write_text(json.dumps({"images": [{"id": 262148, "file_name": "COCO_val2014_000000262148.jpg", "width": 640, "height": 480}],
                                "annotations": [{"id": 1, "image_id": 262148, "caption": "A red bus."}]}))
    _, records, _ = run_ingest({"coco-captions": [caps], "vqav2": [q, a]})
    merged = next(r for r in records if r["record_id"] == "coco:262148")
    assert merged["captions"] == ["A red bus."] and len(merged["qa"]) == 2

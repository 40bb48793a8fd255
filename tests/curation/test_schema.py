import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.schema import (
    RECORD_SCHEMA,
    REJECT_SCHEMA,
    SAMPLE_SCHEMA,
    conform,
    make_reject,
    records_from_pylist,
    rejects_from_pylist,
)

FULL_RECORD = {
    "record_id": "coco:391895",
    "source": "coco",
    "url": "http://127.0.0.1/x.jpg",
    "image": b"\xff\xd8jpeg",
    "width": 640,
    "height": 480,
    "sha256": "ab" * 32,
    "captions": ["A man riding a motorcycle.", "Ünïcödé 字幕"],
    "qa": [{"question": "What color?", "answer": "red"}],
    "regions": [{"phrase": "the dog", "boxes": [[1.5, 2.0, 30.0, 40.25], [5, 5, 9, 9]]}],
    "grounded_captions": [{"text": "a dog", "spans": [{"start": 2, "end": 5, "boxes": [[1, 2, 3, 4]]}]}],
    "ocr": [{"text": "STOP", "quad": [1, 2, 3, 2, 3, 4, 1, 4]}],
    "text": None,
    "meta": {"planted": "swapped_caption"},
    "clip_score": 0.25,
    "phash": -5,
}


def test_record_round_trip_through_parquet(tmp_path):
    table = records_from_pylist([FULL_RECORD, {"record_id": "doc:1", "source": "doc", "text": "plain text"}])
    assert table.schema == RECORD_SCHEMA
    pq.write_table(table, tmp_path / "r.parquet")
    back = pq.read_table(tmp_path / "r.parquet")
    assert back.schema.equals(RECORD_SCHEMA)
    rows = back.to_pylist()
    assert rows[0]["regions"][0]["boxes"][0] == [1.5, 2.0, 30.0, 40.25]
    assert rows[0]["captions"][1] == "Ünïcödé 字幕"
    assert json.loads(rows[0]["meta"]) == {"planted": "swapped_caption"}
    assert rows[0]["clip_score"] == pytest.approx(0.25)
    assert rows[1]["image"] is None and rows[1]["text"] == "plain text"


def test_conform_adds_missing_nullable_columns_and_orders():
    t = pa.table({"reason": ["x"], "stage": ["basic"], "extra": [1]})
    out = conform(t, REJECT_SCHEMA)
    assert out.schema == REJECT_SCHEMA
    assert out.to_pylist() == [{"record_id": None, "source": None, "stage": "basic", "reason": "x", "detail": None, "meta": None}]


def test_conform_names_the_missing_required_column():
    with pytest.raises(ValueError, match="'stage'"):
        conform(pa.table({"reason": ["x"]}), REJECT_SCHEMA)


def test_conform_names_the_column_that_cannot_cast():
    with pytest.raises(ValueError, match="num_tokens"):
        conform(pa.table({"sample_id": ["a"], "record_id": ["r"], "task": ["caption"], "format": ["qwen-vl"],
                          "num_tokens": ["many"]}), SAMPLE_SCHEMA)


def test_rejects_carry_source_and_meta():
    t = rejects_from_pylist([make_reject("web:1", "clip", "clip_score_below_threshold", "0.1 < 0.2", "web", {"a": 1})])
    assert t.to_pylist()[0] == {
        "record_id": "web:1", "source": "web", "stage": "clip", "reason": "clip_score_below_threshold",
        "detail": "0.1 < 0.2", "meta": '{"a": 1}',
    }

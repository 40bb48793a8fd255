import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROWS = [
    {"key": "000000001", "id": 1, "url": "https://x/a.jpg", "caption": "a dog chasing a ball", "width": 200, "height": 100,
     "noun_chunks": [[0, 5, 0.1, 0.2, 0.5, 0.9, 0.8], [14, 20, 0.6, 0.5, 0.7, 0.6, 0.7], [14, 20, 0.75, 0.5, 0.8, 0.6, 0.6]],
     "clip_similarity_vitb32": 0.31},
    {"key": "000000002", "id": 2, "url": "https://x/b.jpg", "caption": "a cat", "width": None, "height": None, "noun_chunks": [[0, 5, 0.1, 0.1, 0.2, 0.2, 0.9]]},
    {"key": "000000003", "id": 3, "url": "https://x/c.jpg", "caption": "a box", "width": 100, "height": 100, "noun_chunks": [[0, 5, 0.5, 0.5, 0.5, 0.9, 0.9]]},
]


@pytest.mark.parametrize("form", ["parquet", "jsonl"])
def test_grit_grounded_captions_in_pixels(form, tmp_path, run_ingest):
    if form == "parquet":
        path = tmp_path / "grit-00000.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        path = tmp_path / "grit.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    manifest, records, rejects = run_ingest({"grit": [path]})
    (r,) = records
    assert r["record_id"] == "grit:000000001" and r["url"] == "https://x/a.jpg"
    (g,) = r["grounded_captions"]
    assert g["text"] == "a dog chasing a ball"
    assert g["spans"][0]["start"] == 0 and g["spans"][0]["end"] == 5
    assert g["spans"][0]["boxes"] == [pytest.approx([20.0, 20.0, 100.0, 90.0])]
    assert [len(s["boxes"]) for s in g["spans"]] == [1, 2]  # one span, two boxes: "a ball" twice
    assert Counter(x["reason"] for x in rejects) == {"size_unknown": 1, "box_empty": 1}

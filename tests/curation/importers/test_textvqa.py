from collections import Counter

import pytest

from curation.importers.jsonstream import load_json
from curation.importers.textvqa import majority_answer


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["a", "b", "b", "a", "c"], "a"),  # a tie goes to the first given
        (["x", "y", "y"], "y"),
        (["only"], "only"),
        ([], None),
    ],
)
def test_majority_answer(answers, expected):
    assert majority_answer(answers) == expected


def test_textvqa_excerpt(real, tmp_path, make_images, run_ingest):
    path = real / "textvqa" / "TextVQA_0.5.1_val.sample.json"
    data = load_json(path)["data"]
    sizes = {f"{d['image_id']}.jpg": (d["image_width"], d["image_height"]) for d in data}
    manifest, records, rejects = run_ingest({"textvqa": [path]}, make_images(tmp_path / "train_images", sizes))
    assert len(records) == 64 and rejects == []
    assert sum(len(r["qa"]) for r in records) == 100
    first = next(r for r in records if r["record_id"] == "textvqa:003a8ae2ef43b901")
    assert first["qa"][0] == {"question": "what is the brand of this camera?", "answer": "dakota"}
    assert (first["width"], first["height"]) == (1024, 664)
    # answers are the most frequent of the 10, ties to the first; all 10 kept in meta
    expected = Counter((f"textvqa:{d['image_id']}", d["question"], majority_answer(d["answers"])) for d in data)
    got = Counter((r["record_id"], q["question"], q["answer"]) for r in records for q in r["qa"])
    assert got == expected
    import json

    assert all(len(a) == 10 for r in records for a in json.loads(r["meta"])["answers"])

"""`curate build / preview / validate / export` end to end on small datasets."""

import json

import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.dataset import Dataset, DatasetWriter
from curation.schema import records_from_pylist

PNG = b"\x89PNG fake bytes"


def _records(n=40):
    rows = []
    for i in range(n):
        rows.append(
            {
                "record_id": f"demo:{i}",
                "source": "demo",
                "image": PNG,
                "width": 640,
                "height": 480,
                "captions": [f"A photo number {i} of a dog.", "Another caption."],
                "qa": [{"question": "What is it?", "answer": "A dog."}, {"question": "Where?", "answer": "Outside."}],
                "regions": [{"phrase": "the dog", "boxes": [[100, 50, 300, 400]]}]
                + ([{"phrase": "broken", "boxes": [[5, 5, 3, 3]]}] if i % 10 == 0 else []),
                "grounded_captions": [
                    {"text": "A dog on grass.", "spans": [{"start": 2, "end": 5, "boxes": [[100, 50, 300, 400]]}]}
                ],
                "ocr": [{"text": "STOP", "quad": [10, 10, 100, 10, 100, 50, 10, 50]}],
            }
        )
    rows.append({"record_id": "wiki:1", "source": "wiki", "text": "A plain document."})
    return records_from_pylist(rows)


@pytest.fixture
def records_dir(tmp_path):
    w = DatasetWriter(tmp_path / "in")
    w.write("records", _records())
    w.close()
    return tmp_path / "in"


def test_build_writes_samples_rejects_and_manifest(records_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", str(records_dir), "--out", str(out), "--format", "qwen-vl"]) == 0
    ds = Dataset(out)
    m = ds.manifest
    # 40 records x (2 captions + 2 vqa + 1 ref + 1 grounded + 1 caption_grounding + 1 ocr) + 1 text
    assert ds.rows("samples") == 40 * 8 + 1
    assert ds.rows("rejects") == 4
    assert m["stages"]["build"]["dropped"] == {"invalid_box": 4}
    assert m["config"]["format"] == "qwen-vl" and m["config"]["runner"] == "local"
    assert "321 samples" in capsys.readouterr().out


def test_build_tasks_and_pack(records_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["build", str(records_dir), "--out", str(out), "--tasks", "caption,vqa", "--pack", "1024"])
    assert rc == 0
    ds = Dataset(out)
    samples = ds.read("samples")
    assert set(samples.column("task").to_pylist()) == {"caption", "vqa"}
    seqs = ds.read("sequences").to_pylist()
    tokens = dict(zip(samples.column("sample_id").to_pylist(), samples.column("num_tokens").to_pylist()))
    task = dict(zip(samples.column("sample_id").to_pylist(), samples.column("task").to_pylist()))
    members = [sid for s in seqs for sid in s["sample_ids"]]
    assert sorted(members) == sorted(tokens)  # every sample packed exactly once
    for s in seqs:
        assert s["num_tokens"] <= 1024
        assert {task[i] for i in s["sample_ids"]} == {s["task"]}
        assert s["offsets"][0] == 0
        for a, b, sid in zip(s["offsets"], s["offsets"][1:], s["sample_ids"]):
            assert b - a == tokens[sid]
        assert s["offsets"][-1] + tokens[s["sample_ids"][-1]] == s["num_tokens"]
    p = ds.manifest["packing"]
    assert p["max_tokens"] == 1024 and p["sequences"] == len(seqs)
    assert p["fill_ratio"] == pytest.approx(sum(tokens.values()) / (1024 * len(seqs)), abs=1e-4)
    assert f"fill ratio {p['fill_ratio']:.3f}" in capsys.readouterr().out


def test_build_missing_input_is_exit_2(tmp_path, capsys):
    rc = main(["build", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no such dataset directory" in err and err.count("\n") == 1

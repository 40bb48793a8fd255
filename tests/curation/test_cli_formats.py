"""`curate build / preview / validate / export` end to end on small datasets."""

import json

import pytest

from curation.cli import main
from curation.storage.dataset import Dataset, DatasetWriter
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
    assert m["stages"]["build"]["dropped"] == {"box_empty": 4}
    assert m["config"]["format"] == "qwen-vl" and m["config"]["runner"] == "local"
    assert m["build"]["records"] == 41 == m["stages"]["build"]["in"]
    assert m["stages"]["build"]["out"] == 321
    assert m["build"]["samples_by_task"] == {
        "caption": 80, "caption_grounding": 40, "grounded_caption": 40, "ocr": 40, "ref_grounding": 40, "text": 1, "vqa": 80,
    }
    assert "41 records -> 321 samples" in capsys.readouterr().out


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


def test_validate_passes_on_build_output(records_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", str(records_dir), "--out", str(out), "--tasks", "caption,vqa,ref_grounding,ocr,sft,text", "--pack", "2048"]) == 0
    capsys.readouterr()
    assert main(["validate", str(out)]) == 0
    assert capsys.readouterr().out.endswith("problems\n")


def test_validate_catches_planted_faults(records_dir, tmp_path, capsys):
    built = tmp_path / "built"
    assert main(["build", str(records_dir), "--out", str(built), "--tasks", "ref_grounding"]) == 0
    rows = Dataset(built).read("samples").to_pylist()
    a, b, c, d = rows[:4]
    a["target"] = "<box>(5,5),(3,3)</box><|endoftext|>"
    b["prompt"] = b["prompt"].replace("</ref>", "")
    c["images"] = [dict(c["images"][0], key="elsewhere.jpg")]
    d["num_tokens"] += 3
    from curation.schema import SAMPLE_SCHEMA
    import pyarrow as pa

    w = DatasetWriter(tmp_path / "faulty")
    w.write("samples", pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA))
    w.close()
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "faulty")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{a['sample_id']}: box '(5,5),(3,3)': x2 <= x1" in lines
    assert any(l.startswith(f"{b['sample_id']}: unbalanced <ref>") for l in lines)
    assert f"{c['sample_id']}: image key '{c['record_id']}' not in the row's images" in lines
    assert f"{d['sample_id']}: num_tokens {d['num_tokens']} != {d['num_tokens'] - 3} counted" in lines
    assert lines[-1] == f"validate: {len(rows)} samples, 0 sequences, {len(lines) - 1} problems"
    # the four faults; the box and the <ref> changes also change the token count
    assert len(lines) - 1 == 6


def test_validate_missing_dir(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none")]) == 2
    assert "no such dataset directory" in capsys.readouterr().err


def _preview(monkeypatch, capsys, lines, *args):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("".join(l + "\n" for l in lines)))
    rc = main(["preview", *args])
    cap = capsys.readouterr()
    return rc, [json.loads(l) for l in cap.out.splitlines()], cap.err


def test_preview_samples_and_rejects(monkeypatch, capsys):
    rec = {
        "record_id": "coco/000000391895.jpg", "width": 640, "height": 480,
        "captions": ["A man riding a motorcycle on a dirt road."],
        "qa": [{"question": "What color is the bus?", "answer": "Red."}],
        "regions": [{"phrase": "bad", "boxes": [[5, 5, 3, 3]]}],
    }
    rc, out, err = _preview(monkeypatch, capsys, [json.dumps(rec), "", json.dumps({"record_id": "d", "text": "doc"})], "--tasks", "caption,ref_grounding,sft,text")
    assert rc == 0 and err == ""
    cap, sft, rej, doc = out
    assert cap == {
        "sample_id": cap["sample_id"], "record_id": "coco/000000391895.jpg", "task": "caption",
        "prompt": "<img>coco/000000391895.jpg</img>Generate the caption in English:",
        "target": " A man riding a motorcycle on a dirt road.<|endoftext|>", "num_tokens": 275,
    }
    assert sft["task"] == "sft" and sft["conversations"][1] == {"from": "assistant", "value": "Red."}
    assert rej == {"record_id": "coco/000000391895.jpg", "stage": "build", "reason": "box_empty",
                   "detail": "regions[0]: boxes[0] of 'bad': box [5, 5, 3, 3]: x2 <= x1"}
    assert doc["task"] == "text" and doc["num_tokens"] == 2


def test_preview_qwen2_formats(monkeypatch, capsys):
    rec = json.dumps({"record_id": "k", "width": 640, "height": 480, "regions": [{"phrase": "dog", "boxes": [[100, 50, 300, 400]]}]})
    _, out, _ = _preview(monkeypatch, capsys, [rec], "--format", "qwen2-vl", "--tasks", "ref_grounding")
    assert out[0]["target"] == "<|box_start|>(156,104),(469,833)<|box_end|><|endoftext|>"
    from formats.tokenizer import get_tokenizer

    text = out[0]["prompt"] + out[0]["target"]
    assert out[0]["num_tokens"] == len(get_tokenizer("qwen2-vl").encode(text, [17 * 23])) == 416
    _, out25, _ = _preview(monkeypatch, capsys, [rec], "--format", "qwen2.5-vl", "--tasks", "ref_grounding")
    assert json.loads(out25[0]["target"].removesuffix("<|endoftext|>")) == [{"bbox_2d": [101, 50, 302, 397], "label": "dog"}]


@pytest.mark.parametrize(
    "lines,message",
    [
        (['{"record_id": "a", "text": "x"}', "{not json"], "<stdin> line 2: malformed JSON"),
        (["[1, 2]"], "<stdin> line 1: expected a JSON object"),
        (['{"text": "x"}'], "<stdin> line 1: record has no record_id string"),
    ],
)
def test_preview_bad_input(monkeypatch, capsys, lines, message):
    rc, out, err = _preview(monkeypatch, capsys, lines)
    assert rc == 2
    assert err.startswith(f"curate preview: error: {message}") and err.count("\n") == 1


def test_preview_imports_neither_ray_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, io; sys.stdin = io.StringIO('{\"record_id\": \"d\", \"text\": \"x\"}\\n');"
        "from curation.cli import main; rc = main(['preview']);"
        "bad = [m for m in ('ray', 'torch', 'pyarrow') if m in sys.modules]; print(rc, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "0 []"


def test_export_three_layouts(records_dir, tmp_path, capsys):
    from pathlib import Path

    from formats.sft import check_conversation

    built = tmp_path / "built"
    assert main(["build", str(records_dir), "--out", str(built), "--tasks", "caption,ref_grounding,sft,text"]) == 0
    n = Dataset(built).rows("samples")
    for to in ("qwen-vl-json", "llama-factory", "ms-swift"):
        out = tmp_path / "exp" / f"{to}.json"
        assert main(["export", str(built), "--to", to, "--out", str(out)]) == 0
        assert "1 text-only samples skipped" in capsys.readouterr().out
        with open(out) as f:
            data = json.load(f)
        assert len(data) == n - 1
        images_dir = tmp_path / "exp" / f"{to}_images"
        assert len(list(images_dir.iterdir())) == 40
        for item in data:
            if to == "qwen-vl-json":
                assert set(item) == {"id", "conversations"}
                check_conversation(item["conversations"])
                import re

                for key in re.findall(r"<img>(.*?)</img>", item["conversations"][0]["value"]):
                    assert Path(key).read_bytes() == PNG
            else:
                assert [m["role"] for m in item["messages"]][::2] == ["user"] * (len(item["messages"]) // 2)
                assert item["messages"][-1]["role"] == "assistant"
                text = "".join(m["content"] for m in item["messages"])
                assert text.count("<image>") == len(item["images"]) == 1
                assert Path(item["images"][0]).read_bytes() == PNG
                if to == "ms-swift":
                    assert set(item["objects"]) == {"ref", "bbox", "bbox_type"}
                    assert text.count("<ref-object>") == len(item["objects"]["ref"])
                    assert text.count("<bbox>") == len(item["objects"]["bbox"])


def test_build_with_ray(records_dir, tmp_path, local_ray):
    """On the session's real local Ray (tests/conftest.py): same output as the in-process runner."""
    a, b = tmp_path / "local", tmp_path / "ray"
    assert main(["build", str(records_dir), "--out", str(a), "--runner", "local", "--batch-size", "16"]) == 0
    assert main(["build", str(records_dir), "--out", str(b), "--runner", "ray", "--batch-size", "16"]) == 0
    la, lb = Dataset(a).read("samples"), Dataset(b).read("samples")
    assert Dataset(b).manifest["config"]["runner"] == "ray"
    assert sorted(la.column("sample_id").to_pylist()) == sorted(lb.column("sample_id").to_pylist())
    assert la.sort_by("sample_id").equals(lb.sort_by("sample_id"))
    sa, sb = Dataset(a).manifest["stages"]["build"], Dataset(b).manifest["stages"]["build"]
    assert {k: v for k, v in sa.items() if k != "seconds"} == {k: v for k, v in sb.items() if k != "seconds"}


def test_demo_corpus_build_pack_validate(tmp_path, capsys):
    """The demo's records (as the demo stores them after download) -> every task, packed, validated."""
    from curation.democorpus import generate_corpus

    items = generate_corpus(tmp_path / "www", n=24, seed=3)
    rows = [
        {
            "record_id": f"demo:{it.item_id}", "source": "demo", "image": (tmp_path / "www" / it.filename).read_bytes(),
            "width": it.width, "height": it.height, "captions": [it.caption], "qa": it.qa, "regions": it.regions, "ocr": it.ocr,
        }
        for it in items
    ]
    w = DatasetWriter(tmp_path / "records")
    w.write("records", records_from_pylist(rows))
    w.close()
    out = tmp_path / "out"
    tasks = "caption,vqa,ref_grounding,grounded_caption,ocr,sft"
    assert main(["build", str(tmp_path / "records"), "--out", str(out), "--tasks", tasks, "--pack", "2048"]) == 0
    printed = capsys.readouterr().out
    ds = Dataset(out)
    samples = ds.read("samples", columns=["sample_id", "task", "num_tokens"]).to_pylist()
    assert {s["task"] for s in samples} == set(tasks.split(","))
    task = {s["sample_id"]: s["task"] for s in samples}
    n_tok = {s["sample_id"]: s["num_tokens"] for s in samples}
    seqs = ds.read("sequences").to_pylist()
    assert sorted(i for q in seqs for i in q["sample_ids"]) == sorted(task)
    for q in seqs:
        assert q["num_tokens"] <= 2048 and q["num_tokens"] == sum(n_tok[i] for i in q["sample_ids"])
        assert {task[i] for i in q["sample_ids"]} == {q["task"]}
    fill = ds.manifest["packing"]["fill_ratio"]
    assert 0.5 < fill <= 1 and f"fill ratio {fill:.3f}" in printed
    assert main(["validate", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"validate: {len(samples)} samples, {len(seqs)} sequences, 0 problems"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--tasks", "caption,nope"], "unknown task 'nope'"),
        (["--pack", "0"], "--pack must be positive"),
        (["--min-pixels", "100"], "min_pixels must be an integer of at least 784"),
        (["--min-pixels", "200000", "--max-pixels", "100000"], "max_pixels 100000 is below min_pixels 200000"),
    ],
)
def test_build_bad_options_exit_2(records_dir, tmp_path, capsys, extra, message):
    assert main(["build", str(records_dir), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_preview_non_utf8_stdin_names_line_and_byte_offset(monkeypatch, capsys):
    import io

    data = '{"record_id": "a", "text": "ééé"}\n'.encode() + '{"record_id": "b", "text": "€'.encode() + b'\xff"}\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    rc = main(["preview", "--tasks", "text"])
    out, err = capsys.readouterr()
    assert rc == 2 and json.loads(out)["record_id"] == "a"
    offset = data.index(b"\xff")
    assert err == f"curate preview: error: <stdin>: not UTF-8 text: byte 0xff at byte offset {offset} (line 2, byte {offset - 37 + 1} of the line): invalid start byte\n"


def test_build_pixel_limits_reach_the_samples_and_the_manifest(records_dir, tmp_path):
    """--min-pixels/--max-pixels set smart_resize's limits: pad counts (and Qwen2.5-VL boxes) follow, the manifest says."""
    from formats.coords import image_pad_count, smart_resize
    from formats.tokenizer import get_tokenizer

    counts = {}
    for name, extra in (("default", []), ("small", ["--min-pixels", "3136", "--max-pixels", "50176"])):
        out = tmp_path / name
        assert main(["build", str(records_dir), "--out", str(out), "--format", "qwen2.5-vl", "--tasks", "caption,ref_grounding", *extra]) == 0
        m = Dataset(out).manifest
        limits = (3136, 50176) if extra else (4 * 28 * 28, 16384 * 28 * 28)
        assert (m["build"]["min_pixels"], m["build"]["max_pixels"]) == limits
        assert (m["config"]["min_pixels"], m["config"]["max_pixels"]) == limits
        rows = Dataset(out).read("samples").to_pylist()
        tok = get_tokenizer("qwen2.5-vl")
        pads = image_pad_count(480, 640, min_pixels=limits[0], max_pixels=limits[1])
        for r in rows:
            assert r["num_tokens"] == tok.count(r["prompt"] + r["target"], [pads])
        counts[name] = {r["sample_id"]: r for r in rows}
    assert image_pad_count(480, 640, min_pixels=3136, max_pixels=50176) < image_pad_count(480, 640)
    ref = [r for r in counts["small"].values() if r["task"] == "ref_grounding"][0]
    h, w = smart_resize(480, 640, min_pixels=3136, max_pixels=50176)
    # the box (100, 50, 300, 400) in pixels of the resized image
    assert f"[{round(100 * w / 640)}, {round(50 * h / 480)}, {round(300 * w / 640)}, {round(400 * h / 480)}]" in ref["target"]
    assert counts["small"][ref["sample_id"]]["target"] != counts["default"][ref["sample_id"]]["target"]
    # validate recounts with the manifest's limits: both outputs are sound
    for name in counts:
        assert main(["validate", str(tmp_path / name)]) == 0

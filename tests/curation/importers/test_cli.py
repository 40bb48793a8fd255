"""`curate ingest` on bad input: one clear line on stderr and exit status 2."""

import json

import pytest

from curation.cli import main
from curation.importers import IMPORTERS


def _run(argv, capsys):
    rc = main(["ingest", *argv])
    err = capsys.readouterr().err.strip()
    return rc, err


def test_every_kind_is_registered():
    assert list(IMPORTERS) == [
        "records-jsonl", "coco-captions", "coco-instances", "refcoco", "vg-regions", "vg-qa", "vqav2",
        "textvqa", "textcaps", "grit", "ocr-jsonl", "image-folder", "img2dataset",
    ]


def test_wrong_kind(real, tmp_path, capsys):
    rc, err = _run([str(real / "coco2017" / "captions_val2017.sample.json"), "--kind", "coco-caption", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("curate ingest: error: unknown kind 'coco-caption'; known kinds: records-jsonl, coco-captions")
    assert not (tmp_path / "o").exists()


def test_truncated_json_file(real, tmp_path, capsys):
    data = (real / "visual_genome" / "region_descriptions.sample.json").read_bytes()
    cut = tmp_path / "region_descriptions.json"
    cut.write_bytes(data[: len(data) - 5000])
    rc, err = _run([str(cut), str(real / "visual_genome" / "image_data.sample.json"), "--kind", "vg-regions", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"{cut}: truncated JSON" in err
    assert not (tmp_path / "o" / "manifest.json").exists()  # no finished dataset from a broken input


def test_missing_image_folder(real, tmp_path, capsys):
    rc, err = _run([str(real / "textcaps" / "TextCaps_0.1_val.sample.json"), "--kind", "textcaps", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and err == f"curate ingest: error: --images {tmp_path / 'nope'}: no such folder"


def test_missing_source_file_and_missing_kind(tmp_path, capsys):
    rc, err = _run([str(tmp_path / "nope.json"), "--kind", "textvqa", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and err == f"curate ingest: error: {tmp_path / 'nope.json'}: no such file or directory"
    rc, err = _run([str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "no kind; give --kind KIND" in err


def test_wrong_file_for_the_kind(real, tmp_path, capsys):
    rc, err = _run([str(real / "coco2017" / "captions_val2017.sample.json"), "--kind", "vg-regions", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not a Visual Genome file" in err
    only = tmp_path / "regions.json"
    only.write_text(json.dumps([{"id": 1, "regions": []}]))
    rc, err = _run([str(only), "--kind", "vg-regions", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "give Visual Genome image_data.json" in err


@pytest.mark.parametrize("prefix", ["coco-captions=", ""])
def test_kind_per_source(real, tmp_path, capsys, prefix):
    path = real / "coco2017" / "captions_val2017.sample.json"
    argv = [f"{prefix}{path}", "--out", str(tmp_path / "o"), "--runner", "local"] + ([] if prefix else ["--kind", "coco-captions"])
    rc = main(["ingest", *argv])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("ingest: 2 records (9 captions); 189 rejects (91 image_unknown, 98 no_annotations) -> ")


@pytest.mark.parametrize(
    "kind,content,message",
    [
        ("coco-captions", {"images": [{"file_name": "a.jpg"}], "annotations": []}, "image {\"file_name\": \"a.jpg\"} has no 'id'"),
        ("coco-captions", {"images": [7], "annotations": []}, "an entry of 'images' is not a JSON object: 7"),
        ("coco-instances", {"images": [], "annotations": [], "categories": [{"id": 1}]}, "category {\"id\": 1} has no 'name'"),
        ("vqav2", {"questions": [{"question_id": 1, "question": "why?"}]}, "question {\"question_id\": 1, \"question\": \"why?\"} has no 'image_id'"),
    ],
)
def test_broken_file_structure_is_one_line_naming_the_file(tmp_path, capsys, kind, content, message):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(content))
    extra = []
    if kind == "vqav2":
        (tmp_path / "ann.json").write_text(json.dumps({"annotations": [{"question_id": 1}]}))
        extra = [str(tmp_path / "ann.json")]
    rc, err = _run([str(path), *extra, "--kind", kind, "--out", str(tmp_path / "o"), "--runner", "local"], capsys)
    assert rc == 2 and err == f"curate ingest: error: {path}: {message}"


def test_a_size_that_is_not_a_number_is_a_reject_naming_the_record(tmp_path, capsys):
    from curation.storage.dataset import Dataset

    path = tmp_path / "textvqa.json"
    path.write_text(json.dumps({"data": [{"image_id": "a", "question_id": 7, "image_width": "wide", "image_height": 4, "question": "q", "answers": ["x"]}]}))
    rc, err = _run([str(path), "--kind", "textvqa", "--out", str(tmp_path / "o"), "--runner", "local"], capsys)
    assert rc == 0, err
    (reject,) = Dataset(tmp_path / "o").read("rejects").to_pylist()
    assert (reject["record_id"], reject["reason"]) == ("textvqa:a", "invalid_size")
    assert "wide" in reject["detail"]
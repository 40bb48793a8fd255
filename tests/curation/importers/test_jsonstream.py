import json

import pytest

from curation.errors import InputError
from curation.importers.jsonstream import iter_array, iter_jsonl, iter_members, peek_first

DOC = {"info": {"v": 1}, "images": [{"id": i, "w": 1.5 * i} for i in range(300)], "empty": [], "n": 12345, "tail": [1, 22, 333]}


def _members(path, chunk):
    out: dict = {}
    for key, value in iter_members(path, chunk=chunk):
        if isinstance(DOC[key], list):
            out.setdefault(key, []).append(value)
        else:
            out[key] = value
    out.setdefault("empty", [])
    return out


@pytest.mark.parametrize("chunk", [1, 2, 7, 100, 1 << 20])
def test_members_stream_whatever_the_chunk(tmp_path, chunk):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(DOC, indent=1))
    assert _members(path, chunk) == DOC


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_array_numbers_split_across_chunks(tmp_path, chunk):
    path = tmp_path / "a.json"
    items = [1, 22, 333, 4444.5, {"a": [1, 2]}, "x", None, True]
    path.write_text(json.dumps(items))
    assert list(iter_array(path, chunk=chunk)) == items


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a": [1, 2, 3]', "truncated JSON"),
        ('{"a": [1, 2, {"b": "c', "truncated JSON"),
        ('{"a": [1, 2,', "truncated JSON"),
        ("", "truncated JSON"),
        ('{"a": [1, 2,, 3]}', "invalid JSON at character 12"),
        ('{"a": 1} extra', "extra data"),
        ("[1, 2]", "expected a top-level object"),
    ],
)
def test_bad_files_raise_one_line_input_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as exc:
        list(iter_members(path))
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_truncated_real_file_is_reported(tmp_path, real):
    data = (real / "coco2017" / "captions_val2017.sample.json").read_bytes()
    path = tmp_path / "captions.json"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated JSON"):
        list(iter_members(path))


def test_peek_and_jsonl(tmp_path, real):
    assert peek_first(real / "visual_genome" / "image_data.sample.json")[1]["image_id"] == 1
    assert peek_first(real / "textvqa" / "TextVQA_0.5.1_val.sample.json") == ("object", ("dataset_type", "val"))
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3')
    with pytest.raises(InputError, match="line 4: truncated JSON"):
        list(iter_jsonl(path))
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]

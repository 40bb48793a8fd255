import json

import pytest

from curation.errors import InputError
from curation.importers.jsonstream import iter_array, iter_jsonl, iter_members, load_json, peek_first

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


def _after_multibyte_and_a_chunk(tmp_path, name, head: bytes, tail: bytes):
    """A file whose one bad byte (0xff) sits after 2-, 3- and 4-byte characters and past the first 1 MiB chunk."""
    text = ("é€😀" * 120_000).encode()  # 1.08 MB of multibyte characters, so characters != bytes
    data = head + text + b"\xff" + tail
    path = tmp_path / name
    path.write_bytes(data)
    return path, data.index(b"\xff")


@pytest.mark.parametrize("chunk", [1 << 20, 1000, 3])
def test_non_utf8_reports_the_byte_offset_of_the_bad_byte(tmp_path, chunk):
    path, offset = _after_multibyte_and_a_chunk(tmp_path, "a.json", b'{"images": [{"caption": "', b'"}]}')
    assert offset > 1 << 20
    with pytest.raises(InputError) as exc:
        list(iter_members(path, chunk=chunk))
    assert str(exc.value) == f"{path}: not UTF-8 text: byte 0xff at byte offset {offset}: invalid start byte"


def test_non_utf8_offset_counts_a_byte_order_mark_and_a_cut_character(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + '["é€", "x'.encode() + b"\xe2\x82")  # ends inside a 3-byte character
    with pytest.raises(InputError, match=r"byte 0xe2 at byte offset 15: unexpected end of data$"):
        list(iter_array(path, chunk=4))
    with pytest.raises(InputError, match=r"byte 0xe2 at byte offset 15: unexpected end of data$"):
        load_json(path)


def test_non_utf8_in_json_lines_names_line_and_offset(tmp_path):
    path, offset = _after_multibyte_and_a_chunk(tmp_path, "a.jsonl", b'{"a": 1}\n{"a": "', b'"}\n')
    with pytest.raises(InputError) as exc:
        list(iter_jsonl(path))
    assert str(exc.value) == (
        f"{path}: not UTF-8 text: byte 0xff at byte offset {offset} (line 2, byte {offset - 9 + 1} of the line): invalid start byte"
    )


def test_non_utf8_ingest_is_one_line(tmp_path, capsys):
    from curation.cli import main

    path, offset = _after_multibyte_and_a_chunk(tmp_path, "r.jsonl", b'{"record_id": "a", "source": "s", "text": "', b'"}\n')
    rc = main(["ingest", str(path), "--kind", "records-jsonl", "--out", str(tmp_path / "o"), "--runner", "local"])
    err = capsys.readouterr().err
    assert rc == 2 and err == (
        f"curate ingest: error: {path}: not UTF-8 text: byte 0xff at byte offset {offset} (line 1, byte {offset + 1} of the line): invalid start byte\n"
    )

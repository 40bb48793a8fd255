"""curation/storage/fs.py: inputs named as a file, a folder, a glob or several, each file with its label."""

from __future__ import annotations

import pytest

from curation.errors import InputError
from curation.storage.fs import expand, filesystem, join

SUFFIXES = (".parquet", ".csv")


def _touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def parts(tmp_path):
    root = tmp_path / "parts"
    for name in ("b/0001.parquet", "a/0002.parquet", "a/0001.parquet", "_SUCCESS", ".part.crc", "_tmp/x.parquet"):
        _touch(root / name)
    return root


def test_a_folder_is_its_files_recursively_in_path_order_with_labels(parts):
    files = expand(str(parts), SUFFIXES)
    assert [f.label for f in files] == ["a/0001", "a/0002", "b/0001"]  # _SUCCESS, .crc and _tmp/ skipped
    assert [f.url for f in files] == [str(parts / f"{f.label}.parquet") for f in files]
    assert all(f.size == 1 for f in files)


def test_a_glob_and_a_list_name_the_same_files_with_the_same_labels(parts):
    folder = expand(str(parts), SUFFIXES)
    glob = expand(str(parts / "*" / "*.parquet"), SUFFIXES)
    listed = expand([str(parts / "a/0001.parquet"), str(parts / "a/0002.parquet"), str(parts / "b/0001.parquet")], SUFFIXES)
    assert folder == glob == listed
    # several specs keep the order given; labels stay relative to the folder that holds them all
    reordered = expand([str(parts / "b"), str(parts / "a/0001.parquet")], SUFFIXES)
    assert [f.label for f in reordered] == ["b/0001", "a/0001"]


def test_one_file_has_no_label(parts):
    (f,) = expand(str(parts / "a/0001.parquet"), SUFFIXES)
    assert f.label is None and f.url == str(parts / "a/0001.parquet")


@pytest.mark.parametrize("spec, message", [
    ("parts/*.jsonl", "the pattern matches no file"),
    ("parts/nope.parquet", "not found"),
    ("nowhere/", "not found"),
])
def test_bad_specs_are_one_line_naming_them(parts, tmp_path, spec, message):
    with pytest.raises(InputError) as exc:
        expand(str(tmp_path / spec), SUFFIXES)
    assert message in str(exc.value) and str(tmp_path / spec.rstrip("/")) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_file_of_another_format_among_the_parts_is_named(parts):
    _touch(parts / "b/notes.txt")
    with pytest.raises(InputError, match=r"b/notes\.txt: not a URL list file of a known format \(\.txt; use one of \.parquet, \.csv\), found under"):
        expand(str(parts), SUFFIXES, "URL list")


def test_a_file_named_twice_is_an_error(parts):
    with pytest.raises(InputError, match="0001.parquet: named twice"):
        expand([str(parts / "a"), str(parts / "a/0001.parquet")], SUFFIXES)


def test_an_empty_folder_and_an_unknown_protocol(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="folder holds no URL list file"):
        expand(str(tmp_path / "empty"), SUFFIXES, "URL list")
    with pytest.raises(InputError, match="nosuch://bucket/x.parquet: cannot open this kind of URL"):
        filesystem("nosuch://bucket/x.parquet")


def test_memory_urls_stay_urls():
    fs, _ = filesystem("memory://")
    for name in ("/corpus/p/1.parquet", "/corpus/p/2.parquet"):
        with fs.open(name, "wb") as f:
            f.write(b"x")
    files = expand("memory://corpus/p/", SUFFIXES)
    assert [f.url for f in files] == ["memory:///corpus/p/1.parquet", "memory:///corpus/p/2.parquet"]  # fsspec spells them so
    assert [f.label for f in files] == ["1", "2"]
    assert join("s3://b/prefix/", "/a", "b.parquet") == "s3://b/prefix/a/b.parquet"


def test_an_object_that_cannot_be_read_is_named_in_one_line(monkeypatch):
    """403 and the like, as s3fs raises them (moto does not check access, so this is the function)."""
    from curation.storage import fs as storage
    from curation.storage.fs import describe_error

    assert describe_error("s3://b/k.parquet", PermissionError("Access Denied")) == "s3://b/k.parquet: access denied (Access Denied)"
    assert describe_error("s3://nope/k", FileNotFoundError("The specified bucket does not exist")).startswith("s3://nope/k: no such bucket")
    assert describe_error("s3://b/k", OSError("timed out\nmore")) == "s3://b/k: cannot be read: timed out"

    class Denied:
        def glob(self, *a, **k):
            raise PermissionError("Access Denied")

        isdir = info = glob

    monkeypatch.setattr(storage, "filesystem", lambda url: (Denied(), url.removeprefix("s3://")))
    with pytest.raises(InputError, match=r"^s3://b/parts/: access denied \(Access Denied\)$"):
        expand("s3://b/parts/", SUFFIXES)

"""Paths and URLs to filesystems, and inputs as users give them.

Every path of this tool is a local path or a filesystem URL that fsspec knows:
`s3://bucket/key`, `gs://`, `hf://datasets/ORG/NAME/...`, `https://host/list.parquet`,
`memory://` (tests). `filesystem(url)` gives the fsspec filesystem and the path on
it; credentials and endpoints come from where the filesystem's own library looks
(for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`,
`~/.aws/config`; fsspec's config files), never from a flag of this tool.

`expand(specs, suffixes)` turns what a user names (a file, a folder, a glob, or
several of them) into the list of files to read, in a documented order:

- a file is itself (its suffix must be one of `suffixes`);
- a folder is every file under it, recursively, in path order; names starting
  with `.` or `_` (`_SUCCESS`, `.crc`, `_metadata`) are skipped, any other
  file of another format is an error naming it;
- a glob (`*`, `?`, `[`) is the files it matches, in path order (hidden names skipped as in a folder);
- several specs are concatenated in the order given; a file named twice is an error.

Each file gets a `label`: its path relative to the deepest folder that holds
every input file, without the format suffix (`parts/a/0001.parquet` beside
`parts/b/0001.parquet` -> `a/0001`, `b/0001`). Record ids of a multi-file URL
list are `SOURCE:LABEL:ROW`; the label of a single file is None (ids `SOURCE:ROW`).

Errors are `InputError`s of one line naming the object: a glob that matches
nothing, a missing file, a bucket that does not exist, access denied, a file of
another format.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Sequence

from curation.errors import InputError

__all__ = ["InputFile", "filesystem", "is_local", "expand", "describe_error", "protocol_of", "join", "canonical", "as_path", "open_file",
           "file_size", "parquet_file", "read_parquet", "write_bytes", "create_exclusive", "read_json", "write_json",
           "exists", "remove", "listdir"]


def protocol_of(url: str) -> str:
    """The URL's protocol ("file" for a local path)."""
    from fsspec.utils import get_protocol

    return get_protocol(str(url))


def is_local(url: str) -> bool:
    return protocol_of(str(url)) in ("file", "local")


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path on it) for a local path or any fsspec URL."""
    from fsspec.core import url_to_fs

    url = str(url)
    if is_local(url):
        url = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its library not installed
        raise InputError(f"{url}: cannot open this kind of URL: {str(exc).splitlines()[0]}") from None


def as_path(url):
    """A `pathlib.Path` for a local path, a `upath.UPath` (the same API over fsspec) for a URL: for code that
    walks files as paths (the importers)."""
    from pathlib import Path

    text = str(url)
    if is_local(text):
        return Path(text.removeprefix("file://"))
    from upath import UPath

    return url if isinstance(url, UPath) else UPath(text)


def canonical(url) -> str:
    """What names the same input in two runs: a local path made absolute and resolved, a URL as given."""
    url = str(url)
    if is_local(url):
        from pathlib import Path

        return str(Path(url.removeprefix("file://")).expanduser().resolve())
    return url.rstrip("/")


def join(url: str, *parts: str) -> str:
    """`url` with `parts` appended ('/'-separated on every filesystem)."""
    url = str(url).rstrip("/")
    return "/".join([url, *(p.strip("/") for p in parts if p)])


def describe_error(url: str, exc: BaseException) -> str:
    """One line for an error of reaching `url`: not found, access denied, no such bucket, unreadable."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        low = text.lower()
        if "bucket" in low:
            return f"{url}: no such bucket ({text})"
        return f"{url}: not found"
    if isinstance(exc, PermissionError):
        return f"{url}: access denied ({text})"
    return f"{url}: cannot be read: {text}"


@dataclass(frozen=True)
class InputFile:
    """One file of an input: its URL as given or listed (a local path stays a path), its size, its label."""

    url: str
    size: int | None = None
    label: str | None = None

    @property
    def suffix(self) -> str:
        return _suffix(self.url)


def _suffix(path: str) -> str:
    return posixpath.splitext(path.rstrip("/"))[1].lower()


def _full(fs: Any, path: str, local: bool) -> str:
    return path if local else fs.unstrip_protocol(path)


def _glob_base(pattern: str) -> str:
    """The folder of a glob before its first wildcard (`parts/a*/x.parquet` -> `parts`)."""
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    return posixpath.dirname(pattern[:cut]) or "."


def _is_hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/") if part)


def expand(specs: Sequence[str] | str, suffixes: Sequence[str], what: str = "input") -> list[InputFile]:
    """The files `specs` name (a file, a folder, a glob, several), in order, each with its size and label."""
    from fsspec.core import has_magic

    if isinstance(specs, (str, os.PathLike)):
        specs = [str(specs)]
    if not specs:
        raise InputError(f"no {what} given")
    found: list[tuple[str, str, int | None]] = []  # (full url, path on its fs, size)
    for spec in specs:
        spec = str(spec)
        fs, path = filesystem(spec)
        local = is_local(spec)
        try:
            if has_magic(path):
                hits = fs.glob(path, detail=True)
                base = _glob_base(path)
                files = sorted((p, d.get("size")) for p, d in hits.items()
                               if d.get("type") != "directory" and not _is_hidden(posixpath.relpath(p, base)))
                if not files:
                    raise InputError(f"{spec}: the pattern matches no file")
                for p, size in files:
                    _check_suffix(spec, _full(fs, p, local), suffixes, what)
                found.extend((_full(fs, p, local), p, size) for p, size in files)
            elif fs.isdir(path):
                listed = fs.find(path, detail=True)
                files = []
                for p, d in sorted(listed.items()):
                    rel = posixpath.relpath(p, path)
                    if d.get("type") == "directory" or _is_hidden(rel):
                        continue
                    _check_suffix(spec, _full(fs, p, local), suffixes, what)
                    files.append((p, d.get("size")))
                if not files:
                    raise InputError(f"{spec}: folder holds no {what} file ({', '.join(suffixes)})")
                found.extend((_full(fs, p, local), p, size) for p, size in files)
            else:
                info = fs.info(path)
                _check_suffix(spec, _full(fs, path, local), suffixes, what)
                found.append((_full(fs, path, local), path, info.get("size")))
        except InputError:
            raise
        except (OSError, ValueError) as exc:  # FileNotFoundError, PermissionError, a store's own errors
            raise InputError(describe_error(spec, exc)) from None
        except Exception as exc:  # botocore's and the like: still one line naming the object
            raise InputError(describe_error(spec, exc)) from None
    seen: set[str] = set()
    for url, _, _ in found:
        if url in seen:
            raise InputError(f"{url}: named twice in the {what}")
        seen.add(url)
    if len(found) == 1:
        url, _, size = found[0]
        return [InputFile(url, size, None)]
    paths = [p for _, p, _ in found]
    root = posixpath.commonpath(paths) if all(p.startswith("/") for p in paths) or not any(p.startswith("/") for p in paths) else ""
    if root in paths:  # never a file itself: its folder
        root = posixpath.dirname(root)
    out = []
    for url, p, size in found:
        rel = posixpath.relpath(p, root) if root else p
        out.append(InputFile(url, size, rel[: -len(_suffix(rel))] if _suffix(rel) else rel))
    return out


def _check_suffix(spec: str, path: str, suffixes: Sequence[str], what: str) -> None:
    if _suffix(path) not in suffixes:
        raise InputError(
            f"{path}: not a {what} file of a known format ({_suffix(path) or 'no suffix'}; "
            f"use one of {', '.join(suffixes)})" + (f", found under {spec}" if spec != path else "")
        )


def open_file(url: str, mode: str = "rb"):
    """A file object for a local path or fsspec URL."""
    if is_local(str(url)):
        return open(str(url).removeprefix("file://"), mode)
    fs, path = filesystem(str(url))
    return fs.open(path, mode)


def file_size(url: str) -> int | None:
    """Bytes of the file at a local path or fsspec URL (FileNotFoundError when there is none)."""
    if is_local(str(url)):
        return os.stat(str(url).removeprefix("file://")).st_size
    fs, path = filesystem(str(url))
    info = fs.info(path)
    if info.get("type") == "directory":
        raise FileNotFoundError(url)
    return info.get("size")


def parquet_file(url: str, **kwargs):
    """`pyarrow.parquet.ParquetFile` of a local path or fsspec URL (a remote one read through fsspec)."""
    import pyarrow.parquet as pq

    if is_local(str(url)):
        return pq.ParquetFile(str(url).removeprefix("file://"), **kwargs)
    return pq.ParquetFile(open_file(url), **kwargs)


def read_parquet(url: str, columns=None, **kwargs):
    """A whole Parquet file (its `columns`) from a local path or fsspec URL."""
    import pyarrow.parquet as pq

    if is_local(str(url)):
        return pq.read_table(str(url).removeprefix("file://"), columns=columns, **kwargs)
    fs, path = filesystem(str(url))
    return pq.read_table(path, columns=columns, filesystem=fs, **kwargs)


def write_bytes(url: str, data: bytes) -> None:
    """The whole object or file at `url` (a local file through a temporary name and a rename; an object
    store's PUT is whole or nothing already)."""
    url = str(url)
    if is_local(url):
        path = url.removeprefix("file://")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    fs, path = filesystem(url)
    fs.pipe_file(path, data)


def create_exclusive(url: str, data: bytes) -> bool:
    """Write `url` only if nothing is there (O_EXCL locally, a conditional PUT, `If-None-Match: *`, on S3);
    False when something was. Stores without conditional writes raise NotImplementedError."""
    fs, path = filesystem(str(url))
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except TypeError as exc:  # a filesystem whose pipe_file has no mode
        raise NotImplementedError(f"{url}: this store has no conditional create: {exc}") from None
    return True


def read_json(url: str):
    with open_file(url, "rb") as f:
        return json.loads(f.read())


def write_json(url: str, value) -> None:
    write_bytes(url, json.dumps(value, indent=1, default=str).encode())


def exists(url: str) -> bool:
    fs, path = filesystem(str(url))
    return fs.exists(path)


def remove(url: str, recursive: bool = False) -> None:
    """Delete a file, or every object under a prefix (`recursive`); nothing there is no error."""
    fs, path = filesystem(str(url))
    try:
        fs.rm(path, recursive=recursive)
    except FileNotFoundError:
        pass


def listdir(url: str) -> list[str]:
    """The URLs (local: paths) of the files directly under `url`, sorted; [] when there is nothing."""
    fs, path = filesystem(str(url))
    local = is_local(str(url))
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(_full(fs, e["name"], local) for e in entries if e.get("type") != "directory")

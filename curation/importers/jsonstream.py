"""A small incremental reader for the top level of big JSON files.

Annotation files are either one top-level array (Visual Genome) or one
top-level object whose members hold arrays (COCO, VQAv2, TextVQA). This reader
walks that top level and decodes one array element (or one non-array member)
at a time with the standard library's C decoder, reading the file in chunks,
so memory is bounded by the largest single element plus one read chunk, never
by the file.

    for key, value in iter_members(path):      # top-level object
        ...                                    # list members come one element at a time
    for item in iter_array(path):              # top-level array
        ...

A truncated or malformed file raises InputError naming the file and the
character offset; bytes that are not UTF-8 raise InputError naming the file
and the byte offset of the first bad byte (`curation.errors.not_utf8`).
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Iterator

from curation.storage.fs import as_path
from curation.errors import InputError, not_utf8

__all__ = ["iter_array", "iter_members", "iter_jsonl", "peek_first", "load_json", "CHUNK_CHARS"]

CHUNK_CHARS = 1 << 20
_WS = " \t\n\r"
_NUMBER = "0123456789.eE+-"
_decoder = json.JSONDecoder()


class _Reader:
    """A text buffer over a file that grows on demand and forgets what was consumed."""

    def __init__(self, path: Path, chunk: int = CHUNK_CHARS):
        self.path = as_path(path)
        self.chunk = chunk
        self._f = self.path.open("rb")
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters dropped before buf[0]
        self.eof = False
        self._fed = 0  # bytes of the file handed to the decoder (or skipped, the BOM)
        first = self._f.read(3)
        if first != codecs.BOM_UTF8:
            self._push(first)
        else:
            self._fed = 3

    def close(self) -> None:
        self._f.close()

    def _push(self, data: bytes) -> None:
        # The decoder holds back the bytes of a character cut by the chunk's end;
        # they come first in what it decodes next (and in a decode error's offsets).
        pending = len(self._dec.getstate()[0])
        try:
            self.buf += self._dec.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise not_utf8(self.path, exc, self._fed - pending) from exc
        self._fed += len(data)

    def more(self, at_least: int = 0) -> bool:
        """Read at least one more chunk (or `at_least` characters); False at end of file."""
        if self.eof:
            return False
        if self.pos > len(self.buf) // 2:
            self.base += self.pos
            self.buf = self.buf[self.pos :]
            self.pos = 0
        want = max(self.chunk, at_least)
        data = self._f.read(want)
        if not data:
            self._push(b"")
            self.eof = True
            return False
        self._push(data)
        return True

    def where(self) -> int:
        return self.base + self.pos

    def skip_ws(self) -> str:
        """Skip whitespace; return the next character without consuming it ('' at end)."""
        while True:
            buf, n = self.buf, len(self.buf)
            p = self.pos
            while p < n and buf[p] in _WS:
                p += 1
            self.pos = p
            if p < n:
                return buf[p]
            if not self.more():
                return ""

    def expect(self, chars: str, what: str) -> str:
        c = self.skip_ws()
        if c == "":
            raise InputError(f"{self.path}: truncated JSON: file ends at character {self.where()} where {what} was expected")
        if c not in chars:
            raise InputError(f"{self.path}: invalid JSON at character {self.where()}: expected {what}, found {c!r}")
        self.pos += 1
        return c

    def value(self) -> Any:
        """Decode one complete JSON value at the current position."""
        self.skip_ws()
        while True:
            try:
                obj, end = _decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # Incomplete value: read more (doubling, so a huge element costs O(size)).
                if not self.eof:
                    self.more(at_least=len(self.buf) - self.pos)
                    continue
                if exc.msg.startswith("Unterminated") or exc.pos >= len(self.buf.rstrip()) - 1:
                    raise InputError(
                        f"{self.path}: truncated JSON: file ends inside a value that starts at character {self.where()}"
                    ) from exc
                raise InputError(f"{self.path}: invalid JSON at character {self.base + exc.pos}: {exc.msg}") from exc
            # A number (or literal) that touches the end of the buffer may continue in the next chunk.
            if not self.eof and not isinstance(obj, (dict, list, str)) and (end >= len(self.buf) or self.buf[end] in _NUMBER):
                self.more()
                continue
            self.pos = end
            return obj

    def array_items(self) -> Iterator[Any]:
        """After '[' was consumed: yield elements until the closing ']'."""
        if self.skip_ws() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            if self.expect(",]", "',' or ']' in an array") == "]":
                return


def iter_array(path: Path | str, chunk: int = CHUNK_CHARS) -> Iterator[Any]:
    """Yield the elements of a file whose top level is a JSON array."""
    r = _Reader(path, chunk)
    try:
        r.expect("[", "a top-level array '['")
        yield from r.array_items()
        if r.skip_ws() != "":
            raise InputError(f"{r.path}: invalid JSON at character {r.where()}: extra data after the top-level array")
    finally:
        r.close()


def iter_members(path: Path | str, chunk: int = CHUNK_CHARS) -> Iterator[tuple[str, Any]]:
    """Yield (key, value) for each member of a top-level JSON object.

    A member whose value is an array yields (key, element) once per element,
    in order (an empty array yields nothing); other members yield once.
    """
    r = _Reader(path, chunk)
    try:
        r.expect("{", "a top-level object '{'")
        if r.skip_ws() == "}":
            r.pos += 1
            return
        while True:
            if r.skip_ws() != '"':
                r.expect('"', "a member name")
            key = r.value()
            r.expect(":", "':' after a member name")
            if r.skip_ws() == "[":
                r.pos += 1
                for item in r.array_items():
                    yield key, item
            else:
                yield key, r.value()
            if r.expect(",}", "',' or '}' in the top-level object") == "}":
                break
        if r.skip_ws() != "":
            raise InputError(f"{r.path}: invalid JSON at character {r.where()}: extra data after the top-level object")
    finally:
        r.close()


def peek_first(path: Path | str) -> tuple[str, Any]:
    """('array', first element) or ('object', (first key, first value or element)); for sniffing a file's kind."""
    path = as_path(path)
    with path.open("rb") as f:
        head = f.read(64).lstrip(codecs.BOM_UTF8).lstrip()
    if head.startswith(b"["):
        for item in iter_array(path):
            return "array", item
        return "array", None
    if head.startswith(b"{"):
        for key, value in iter_members(path):
            return "object", (key, value)
        return "object", None
    raise InputError(f"{path}: not a JSON array or object")


def load_json(path: Path | str) -> Any:
    """Load a small JSON file whole, with the same one-line errors."""
    path = as_path(path)
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, skip) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(exc.doc.rstrip()) - 1:
            raise InputError(f"{path}: truncated JSON: file ends at character {exc.pos}") from exc
        raise InputError(f"{path}: invalid JSON at character {exc.pos}: {exc.msg}") from exc


def iter_jsonl(path: Path | str) -> Iterator[tuple[int, Any]]:
    """Yield (line number, value) for each non-blank line of a JSON-lines file."""
    path = as_path(path)
    offset = 0  # byte offset of the line's start
    with path.open("rb") as f:  # bytes, decoded a line at a time, so that an error knows its offset
        for n, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            skip = len(codecs.BOM_UTF8) if n == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                line = raw[skip:].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise not_utf8(path, exc, start + skip, line=(n, start)) from exc
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                what = "truncated JSON" if exc.pos >= len(line.rstrip()) - 1 else "invalid JSON"
                raise InputError(f"{path}: line {n}: {what} at column {exc.colno}: {exc.msg}") from exc

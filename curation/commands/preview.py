"""`curate preview [--format F] [--tasks a,b]`: what a record becomes.

Canonical records as JSON lines on stdin; on stdout one JSON line per sample
(`sample_id`, `record_id`, `task`, `prompt`, `target`, `num_tokens`, and
`conversations` for `sft`) and one per rejected item (`record_id`, `stage`,
`reason`, `detail`). A malformed line stops with a one-line error naming its
line number (exit 2).

Images are not needed: a record counts as having an image when it has
`image`, `url`, or `width` and `height`; a record with only `text` is a plain
document. Imports neither Ray nor torch (nor pyarrow), so it starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any, Iterator

from curation.errors import InputError, not_utf8

__all__ = ["add_arguments", "run", "preview_lines"]

EXAMPLES = """examples:
  echo '{"record_id": "x:1", "width": 640, "height": 480, "captions": ["a dog"]}' | curate preview
  curate preview --format qwen2.5-vl --tasks ref_grounding < records.jsonl"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="qwen-vl", choices=("qwen-vl", "qwen2-vl", "qwen2.5-vl"), help="token format of the samples")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: every pretraining task)")
    p.add_argument("--rounding", default="half_up", choices=("half_up", "floor"), help="0-999 grid rounding of pixel coordinates")
    p.add_argument("--max-tokens", type=int, default=None, help="reject samples longer than this many tokens, as --pack does (default: no limit)")


def _record(line: str, lineno: int) -> dict[str, Any]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"<stdin> line {lineno}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(rec, dict):
        raise InputError(f"<stdin> line {lineno}: expected a JSON object (a record), got {type(rec).__name__}")
    if not isinstance(rec.get("record_id"), str) or not rec["record_id"]:
        raise InputError(f"<stdin> line {lineno}: record has no record_id string")
    if rec.get("image") is None and (rec.get("url") or (rec.get("width") and rec.get("height"))):
        rec["image"] = b""  # the bytes are not needed to render text
    return rec


def preview_lines(lines: Iterator[str], fmt: str = "qwen-vl", tasks=None, rounding: str = "half_up", max_tokens=None) -> Iterator[dict]:
    """JSON-able dicts, one per sample or rejected item, for each input line."""
    from formats.tasks import Options, get_dialect, parse_tasks, render_counted, sample_id

    try:
        task_list = parse_tasks(tasks)
        dialect = get_dialect(fmt, Options(rounding=rounding))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rec = _record(line, lineno)
        try:
            counted, rejected = render_counted(rec, dialect, task_list, max_tokens)
        except (TypeError, AttributeError, KeyError) as exc:
            raise InputError(f"<stdin> line {lineno}: record does not follow the record schema: {exc}") from None
        rid = rec["record_id"]
        for s, n in counted:
            out = {"sample_id": sample_id(rid, s.task, s.index), "record_id": rid, "task": s.task,
                   "prompt": s.prompt, "target": s.target, "num_tokens": n}
            if s.conversations is not None:
                out["conversations"] = s.conversations
            yield out
        for r in rejected:
            yield {"record_id": rid, "stage": "build", "reason": r.reason, "detail": r.detail}


def _decoded_lines(raw: IO[bytes]) -> Iterator[str]:
    """Lines of a byte stream as text; bytes that are not UTF-8 are an InputError with their line and offset."""
    offset = 0
    for n, line in enumerate(raw, 1):
        start, offset = offset, offset + len(line)
        skip = 3 if n == 1 and line.startswith(b"\xef\xbb\xbf") else 0  # a byte order mark
        try:
            yield line[skip:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise not_utf8("<stdin>", exc, start + skip, line=(n, start)) from None


def run(args: argparse.Namespace, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    # Read the bytes where there are any (a real stdin), so that a non-UTF-8 byte is reported where it is.
    lines = _decoded_lines(stdin.buffer) if hasattr(stdin, "buffer") else stdin
    for item in preview_lines(lines, args.format, args.tasks, args.rounding, args.max_tokens):
        stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
    stdout.flush()
    return 0

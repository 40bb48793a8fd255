"""Errors that the CLI turns into one line on stderr and exit status 2.

Only InputError (and its subclasses, e.g. `curation.storage.dataset.ManifestError`)
means bad input; `curate` shows any other exception as a bug, with its
traceback and exit status 1. So code that detects bad input raises
InputError itself, at the place that knows the file, line or option at fault.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["InputError", "not_utf8"]


class InputError(ValueError):
    """Bad input from the user: a missing file, a malformed line, a wrong option.

    The message names the file, line or column at fault and fits on one line.
    """


def not_utf8(path: Path | str, exc: UnicodeDecodeError, offset: int, line: tuple[int, int] | None = None) -> InputError:
    """One line naming the file and where its first non-UTF-8 byte is.

    `offset` is the byte offset in the file of the start of what was decoded
    (`exc.object`); `line` (line number, byte offset of that line's start) adds
    the line and the byte column within it.
    """
    at = offset + exc.start
    bad = exc.object[exc.start : exc.start + 1].hex()
    where = f"byte 0x{bad} at byte offset {at}"
    if line is not None:
        where += f" (line {line[0]}, byte {at - line[1] + 1} of the line)"
    return InputError(f"{path}: not UTF-8 text: {where}: {exc.reason}")

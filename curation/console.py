"""What a person sees while a command runs: progress per stage, and nobody else's chatter.

- `third_party_to_log(log_path)`: while a command runs, file descriptors 1 and 2
  (and so the C++ lines of Ray's core worker, the raylet and workers Ray
  starts, img2dataset's prints, Python warnings) go to a log file; this
  project's own log lines (loggers `curation`, `jobs`, `filters`, `formats`)
  still reach the terminal, and the log file gets them too. `curate -v`
  skips it all.
- `ShardProgress`: a shard task notes the rows each stage has taken in
  (`staging/progress/<shard>.json`, at most twice a second); the driver
  reads those notes while it waits and shows one tqdm bar per stage on a
  terminal (rows done, rate, ETA), or a log line every few seconds when
  stderr is not a terminal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, Iterator, Mapping

__all__ = ["OWN_LOGGERS", "LOG_NAME", "third_party_to_log", "terminal_stream", "ProgressNote", "ShardProgress"]

OWN_LOGGERS = ("curation", "jobs", "filters", "formats")
LOG_NAME = "third-party.log"
PROGRESS_DIR = "progress"

log = logging.getLogger(__name__)

_terminal: IO[str] | None = None


def terminal_stream() -> IO[str]:
    """Where this process's own output for a person goes: the terminal while third-party output is captured."""
    return _terminal if _terminal is not None else sys.stderr


@contextlib.contextmanager
def third_party_to_log(log: Path | str | int) -> Iterator[None]:
    """Send fds 1 and 2 to `log` (a file, appended, or an open file descriptor) for the block;
    this project's loggers and the command's prints keep the real stdout and stderr."""
    global _terminal
    if isinstance(log, int):
        fd = os.dup(log)
    else:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_err), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    # the command's own prints (its summary) still reach the user: sys.stdout moves to a copy of the real fd 1
    # (unless something else already replaced sys.stdout, as pytest's capture does)
    real_stdout = sys.stdout
    try:
        swap_stdout = real_stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        swap_stdout = False
    if swap_stdout:
        user_stdout = os.fdopen(os.dup(saved_out), "w", buffering=1, encoding=getattr(real_stdout, "encoding", None) or "utf-8",
                                errors=getattr(real_stdout, "errors", None) or "strict")
    handler = logging.StreamHandler(terminal)
    root_handlers = logging.getLogger().handlers
    handler.setFormatter(root_handlers[0].formatter if root_handlers else logging.Formatter("%(message)s"))
    own = [logging.getLogger(name) for name in OWN_LOGGERS]
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        for logger in own:
            logger.addHandler(handler)
        _terminal = terminal
        if swap_stdout:
            sys.stdout = user_stdout
        yield
    finally:
        _terminal = None
        if swap_stdout:
            user_stdout.flush()
            sys.stdout = real_stdout
            user_stdout.close()
        for logger in own:
            logger.removeHandler(handler)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for f in (saved_out, saved_err, fd):
            os.close(f)
        terminal.close()


# ------------------------------------------------------------------ progress


class ProgressNote:
    """In a shard task: the rows read and taken in per stage so far, written to `staging/progress/<shard>.json`."""

    def __init__(self, staging: Path | str, shard_id: int, every: float = 0.5):
        self.path = Path(staging) / PROGRESS_DIR / f"{shard_id}.json"
        self.every = every
        self.last = 0.0

    def __call__(self, rows_read: int, stages: Mapping[str, Mapping[str, int]], final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.every:
            return
        self.last = now
        note = {"read": rows_read, "stages": {name: c["in"] for name, c in stages.items()}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(note))
            tmp.replace(self.path)
        except OSError:  # progress is a courtesy: never fail a shard over it
            pass


def _columns() -> int:
    """The terminal's width; 100 where it says 0 or too little (a pty without a size)."""
    import shutil

    cols = shutil.get_terminal_size((100, 24)).columns
    return cols if cols >= 40 else 100


class ShardProgress:
    """On the driver: rows per stage over every shard, from the shard tasks' notes and finished results.

    On a terminal, one tqdm bar per stage (total = the input's rows when known);
    otherwise a log line every `every` seconds. `close()` ends the bars.
    """

    def __init__(self, staging: Path | str, total_rows: int | None, stage_names: list[str], every: float = 10.0,
                 stream: IO[str] | None = None):
        # shard tasks note their progress in a local (or shared) staging only; on object storage the bars
        # move as shards finish
        self.dir = Path(staging) / PROGRESS_DIR if "://" not in str(staging) else None
        self.total = total_rows or None
        self.names = ["read"] + [n for n in stage_names if n != "read"]
        self.every = every
        self.done: dict[int, dict[str, int]] = {}
        self.stream = stream or terminal_stream()
        self.t0 = self.last_line = time.monotonic()
        self.bars: dict[str, object] = {}
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.shown: dict[str, int] = {}

    def finished(self, result: Mapping) -> None:
        """A shard's result: its counts are final."""
        rows = {"read": int(result.get("rows_in", 0))}
        rows.update({name: int(c.get("in", 0)) for name, c in (result.get("stages") or {}).items()})
        self.done[int(result["shard_id"])] = rows
        self.poll()

    def _rows(self) -> dict[str, int]:
        rows = {name: 0 for name in self.names}
        seen = set(self.done)
        for shard_rows in self.done.values():
            for name, n in shard_rows.items():
                rows[name] = rows.get(name, 0) + n
        if self.dir is not None and self.dir.is_dir():
            for p in self.dir.glob("*.json"):
                try:
                    shard = int(p.stem)
                    if shard in seen:
                        continue
                    note = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
                rows["read"] += int(note.get("read", 0))
                for name, n in (note.get("stages") or {}).items():
                    rows[name] = rows.get(name, 0) + int(n)
        return rows

    def poll(self) -> None:
        rows = self._rows()
        if self.tty:
            self._bars(rows)
        elif time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            log.info("progress: %s", self.line(rows))

    def line(self, rows: Mapping[str, int]) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        parts = []
        for name in self.names:
            n = rows.get(name, 0)
            of = f"/{self.total:,}" if self.total and name == "read" else ""
            parts.append(f"{name} {n:,}{of}")
        read = rows.get("read", 0)
        rate = read / elapsed
        eta = ""
        if self.total and rate > 0 and read < self.total:
            eta = f", ETA {(self.total - read) / rate:.0f}s"
        return " · ".join(parts) + f" ({rate:.0f} rows/s{eta})"

    def _bars(self, rows: Mapping[str, int]) -> None:
        from tqdm import tqdm

        if not self.bars:  # all at once, so that each keeps its line
            for k, name in enumerate(self.names):
                self.bars[name] = tqdm(total=self.total, desc=f"{name:<9}", unit=" rows", file=self.stream, position=k,
                                       leave=True, ncols=_columns(), mininterval=0.2)
                self.shown[name] = 0
        for name in self.names:
            n = rows.get(name, 0)
            bar = self.bars[name]
            if n > self.shown[name]:
                bar.update(n - self.shown[name])
                self.shown[name] = n

    def close(self) -> None:
        if self.tty:
            self._bars(self._rows())
            for name in self.names:
                bar = self.bars.get(name)
                if bar is not None:
                    bar.close()

"""The dataset directory: Parquet shards per table, rejects, and the manifest.

    OUT/
      records/part-00000.parquet ...
      samples/part-00000.parquet ...
      rejects/part-00000.parquet ...
      manifest.json      written last and atomically
      README.md          the Hugging Face dataset card (curation/card.py): configs per table, image features
      .curate/lock       held (flock) by the run writing OUT; names its pid
      .curate/staging/   the run being written: its shards, manifest, work files

A run never writes into the dataset that is there: its shards go to
`.curate/staging/` (each under a temporary name, renamed when complete), and
only when the whole run is complete does `DatasetWriter.close` replace the old
dataset: old manifest out, the old shards this tool wrote out, new shards and
manifest in. A failed or killed run leaves the old dataset as it was and its
own staging directory, which the next run cleans (or, later, resumes from).

Readers trust only the shards the manifest lists and check each one's row
count against it (Parquet footer, cheap); `Dataset(path, verify=True)` and
`Dataset.verify()` also check every shard's sha256.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import InputError
from curation.storage import fs as fs_
from curation.schema import ROW_GROUP_ROWS, SCHEMA_VERSION, TABLE_SCHEMAS, conform, parquet_write_options, row_group_rows

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "DEFAULT_ROW_GROUP_ROWS",
    "ShardInfo",
    "ShardWriter",
    "StageCounts",
    "DatasetWriter",
    "Dataset",
    "ManifestError",
    "ShardError",
    "OutputError",
    "CURATE_DIR",
    "sha256_file",
]

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
DEFAULT_ROW_GROUP_ROWS = ROW_GROUP_ROWS
MANIFEST = "manifest.json"
# inside every output directory: the lock and the staging directory of the run writing it
CURATE_DIR = ".curate"
# shards the driver writes itself (beside the shard tasks' part-NNNNN): part-dNNNNN
DRIVER_PREFIX = "part-d"
# what this tool writes in a table directory (and so may remove when replacing a dataset)
_OWN_SHARD = re.compile(r"^\.?part-[da]?\d{5,}\.parquet(\.tmp)?$")


class ManifestError(InputError):
    """The directory has no readable manifest."""


class ShardError(InputError):
    """A manifest-listed shard is missing or differs from what the manifest says."""


class OutputError(InputError):
    """The output directory cannot be written: it is the input, not empty, or in use."""


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the dataset directory
    rows: int
    bytes: int
    sha256: str


def _sha256_url(url: str) -> str:
    h = hashlib.sha256()
    with fs_.open_file(url, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ShardWriter:
    """Writes one table as a series of Parquet shards of about `target_bytes`.

    Rows are buffered until they reach roughly the target size (measured in
    Arrow memory, a close upper bound of the compressed size for image data),
    then written as one shard: `.part-NNNNN.parquet.tmp` first, renamed to
    `part-NNNNN.parquet` once closed. Names are deterministic: the n-th shard
    of a table is always `part-{n:05d}.parquet`.
    """

    def __init__(
        self,
        root: Path | str,
        table: str,
        schema: pa.Schema | None = None,
        target_bytes: int = DEFAULT_SHARD_BYTES,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        prefix: str = "part-",
    ):
        if target_bytes <= 0:
            raise ValueError(f"target shard size must be positive, got {target_bytes}")
        self.local = fs_.is_local(str(root))
        # shards go to root/table/ (a folder, or a prefix on object storage); paths in ShardInfo are relative to root
        self.root = Path(root) if self.local else str(root).rstrip("/")
        self.table = table
        self.schema = schema if schema is not None else TABLE_SCHEMAS[table]
        self.target_bytes = target_bytes
        self.row_group_rows = row_group_rows
        self.prefix = prefix
        self.shards: list[ShardInfo] = []
        self._buffer: list[pa.Table] = []
        self._buffered_bytes = 0
        if self.local:
            (self.root / table).mkdir(parents=True, exist_ok=True)

    def write(self, batch: pa.Table | pa.RecordBatch) -> None:
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        if batch.num_rows == 0:
            return
        batch = conform(batch, self.schema)
        self._buffer.append(batch)
        self._buffered_bytes += batch.nbytes
        if self._buffered_bytes >= self.target_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer)
        self._buffer, self._buffered_bytes = [], 0
        name = f"{self.prefix}{len(self.shards):05d}.parquet"
        size = min(self.row_group_rows, row_group_rows(self.table, table.num_rows, table.nbytes))
        if self.local:
            final = self.root / self.table / name
            tmp = final.with_name(f".{name}.tmp")
            pq.write_table(table, tmp, row_group_size=size, **parquet_write_options(self.table))
            os.replace(tmp, final)
            nbytes, digest = final.stat().st_size, sha256_file(final)
        else:  # one PUT of the whole shard (the driver's shards are small: rejects, a few records)
            import io

            final = fs_.join(self.root, self.table, name)
            buf = io.BytesIO()
            pq.write_table(table, buf, row_group_size=size, **parquet_write_options(self.table))
            data = buf.getvalue()
            fs_.write_bytes(final, data)
            nbytes, digest = len(data), hashlib.sha256(data).hexdigest()
        self.shards.append(ShardInfo(path=f"{self.table}/{name}", rows=table.num_rows, bytes=nbytes, sha256=digest))
        log.debug("wrote %s (%d rows)", final, table.num_rows)

    def close(self) -> list[ShardInfo]:
        self.flush()
        return self.shards


@dataclass
class StageCounts:
    """Rows into and out of one stage, and rows dropped by reason."""

    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "in": self.rows_in,
            "out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            "seconds": round(self.seconds, 3),
        }


def _resolved(path: Path | str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def check_output(out: Path | str, inputs: tuple[Path | str, ...] = ()) -> None:
    """Refuse an output that is an input, lies inside one, or holds one."""
    if not fs_.is_local(str(out)):
        return
    o = _resolved(out)
    for inp in inputs:
        if not fs_.is_local(str(inp)):  # on object storage: never a local output's folder
            continue
        i = _resolved(inp)
        if o == i:
            raise OutputError(f"{out}: the output is the input; write to another directory")
        if o.is_relative_to(i):
            raise OutputError(f"{out}: the output lies inside the input {inp}; write to another directory")
        if i.is_relative_to(o):
            raise OutputError(f"{out}: the input {inp} lies inside the output; write to another directory")


class _Lock:
    """An exclusive flock on OUT/.curate/lock, holding the owner's pid; released on exit or kill."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            try:
                holder = path.read_text().strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise OutputError(
                f"{path.parent.parent}: in use by another curate run (pid {holder}); wait for it or stop it"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class DatasetWriter:
    """Owns one output directory for one run: lock, staging, a ShardWriter per table, the manifest.

    - The output may not be (or lie inside, or hold) one of `inputs`.
    - A non-empty output is refused unless `overwrite`; even then the old
      dataset stays untouched until `close()` has the new one complete.
    - An exclusive lock on OUT/.curate/lock keeps two runs out of one output.
    - Shards and work files go to OUT/.curate/staging/ (`staging`, `work_dir`);
      `close()` writes the manifest and swaps the new dataset in; `abort()`
      (or leaving a `with` block by an exception) releases the lock and
      leaves the old dataset as it was.
    """

    def __init__(
        self,
        out: Path | str,
        target_shard_bytes: int = DEFAULT_SHARD_BYTES,
        overwrite: bool = False,
        inputs: tuple[Path | str, ...] = (),
        resume: bool = False,
        config: Mapping[str, Any] | None = None,
    ):
        if target_shard_bytes <= 0:
            raise InputError(f"target shard size must be positive, got {target_shard_bytes}")
        self.out = Path(out)
        check_output(self.out, inputs)
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"{self.out}: exists and is not a directory")
        own = self.out / CURATE_DIR
        self._made = [p for p in (self.out, own) if not p.exists()]  # what to take away again (`discard`)
        own.mkdir(parents=True, exist_ok=True)
        self._lock = _Lock(own / "lock")
        try:
            others = sorted(p.name for p in self.out.iterdir() if p.name != CURATE_DIR)
            if others and not overwrite:
                shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
                raise OutputError(
                    f"{self.out}: output directory is not empty ({shown}); pass --overwrite to replace it "
                    "(the old dataset stays until the new one is complete)"
                )
            self.staging = own / "staging"
            self.resumed = resume and self._can_resume(config)
            if self.staging.exists() and not self.resumed:  # what a failed or killed run of ours left
                shutil.rmtree(self.staging)
            (self.staging / "done").mkdir(parents=True, exist_ok=True)
            for p in self.staging.glob("*"):  # driver-written shards of the interrupted run: redone
                if p.is_dir() and p.name in TABLE_SCHEMAS:
                    for f in p.glob(f"*{DRIVER_PREFIX}*"):
                        f.unlink()
            _write_json(self.staging / "config.json", dict(config or {}))
        except BaseException:
            self._lock.release()
            raise
        self.target_shard_bytes = target_shard_bytes
        self.writers: dict[str, ShardWriter] = {}
        self.stages: dict[str, StageCounts] = {}
        self.timings: dict[str, float] = {}
        self.started = time.time()
        self.closed = False

    def _can_resume(self, config: Mapping[str, Any] | None) -> bool:
        """Whether the staging directory holds an interrupted run of the same config."""
        saved = self.staging / "config.json"
        if not saved.is_file():
            log.info("%s: nothing to resume; starting from the beginning", self.out)
            return False
        before = json.loads(saved.read_text())
        now = json.loads(json.dumps(dict(config or {}), default=str))
        differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if differ:
            raise OutputError(
                f"{self.out}: --resume with a different config than the interrupted run's (keys: {', '.join(differ)}); "
                "rerun with the same settings, or without --resume to start over"
            )
        return True

    def done_shards(self) -> set[int]:
        """Ids of the input shards whose output this run (or the run it resumes) completed."""
        return {int(p.stem) for p in (self.staging / "done").glob("*.json")}

    def done_inputs(self) -> dict[int, dict | None]:
        """The done input shards, each with what it was (`InputShard.identity`: file and row range), to check
        on resume that the input is the same."""
        out = {}
        for p in (self.staging / "done").glob("*.json"):
            out[int(p.stem)] = json.loads(p.read_text()).get("input")
        return out

    def add_shard(self, result: Mapping[str, Any]) -> None:
        """Record a finished input shard (its files are in staging already): the resume marker."""
        _write_json(self.staging / "done" / f"{int(result['shard_id']):05d}.json", dict(result))

    def adopt(self, source: "Dataset", table: str) -> None:
        """Take `table`'s shards of `source`, a dataset this run wrote in its own staging (a first pass),
        into this output as they are: hard links (a copy where the filesystem refuses one), named
        `part-aNNNNN`, listed in the manifest with their rows, bytes and sha256. No row passes through
        this process. Done once per run: a resumed run finds its marker."""
        marker = self.staging / "adopted" / f"{table}.json"
        if marker.is_file():
            return
        (self.staging / table).mkdir(parents=True, exist_ok=True)
        infos = []
        for k, (src, info) in enumerate(zip(source.shard_paths(table), source.shards(table))):
            name = f"part-a{k:05d}.parquet"
            dst = self.staging / table / name
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            infos.append({**info, "path": f"{table}/{name}"})
        marker.parent.mkdir(exist_ok=True)
        _write_json(marker, {"table": table, "files": infos})

    def shard_results(self) -> Iterator[dict]:
        for p in sorted((self.staging / "done").glob("*.json")):
            yield json.loads(p.read_text())

    def shard_summary(self, stage_order: list[str]) -> dict:
        """Stage counts and build/packing figures over every finished shard, merged into this writer."""
        stages: dict[str, StageCounts] = {}
        by_task: Counter = Counter()
        annotations: Counter = Counter()
        packing: dict[str, Counter] = {}
        nodes: Counter = Counter()
        rows_in = shards = 0
        for r in self.shard_results():
            shards += 1
            rows_in += r["rows_in"]
            if r.get("node"):
                nodes[r["node"]] += 1
            for name, c in r["stages"].items():
                sc = stages.setdefault(name, StageCounts())
                sc.rows_in += c["in"]
                sc.rows_out += c["out"]
                sc.dropped.update(c["dropped"])
                sc.seconds += c["seconds"]
            by_task.update(r.get("samples_by_task") or {})
            annotations.update(r.get("annotations") or {})
            for task, t in (r.get("packing") or {}).items():
                packing.setdefault(task, Counter()).update(t)
        for name in stage_order + [n for n in stages if n not in stage_order]:
            if name in stages:
                c = stages[name]
                self.count_stage(name, c.rows_in, c.rows_out, c.dropped, c.seconds)
            elif name in stage_order:
                self.count_stage(name, 0, 0)
        return {"shards": shards, "rows_in": rows_in, "samples_by_task": dict(sorted(by_task.items())),
                "annotations": dict(annotations), "nodes": dict(nodes),
                "packing": {k: dict(v) for k, v in sorted(packing.items())}}

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.closed:
            if exc_type is not None and issubclass(exc_type, InputError) and not self.resumed and not self.done_shards():
                self.discard()  # bad input found once the run had begun (a later file of the list): nothing stays
            else:
                self.abort()

    def discard(self) -> None:
        """Give up a run that finished no shard: its staging goes, and the output folder if this run made it."""
        self.abort()
        shutil.rmtree(self.staging, ignore_errors=True)
        own = self.out / CURATE_DIR
        if own in self._made:
            shutil.rmtree(own / "logs", ignore_errors=True)
            (own / "lock").unlink(missing_ok=True)
        for p in reversed(self._made):  # .curate, then the output folder, only while they hold nothing else
            with contextlib.suppress(OSError):
                p.rmdir()

    @property
    def work_dir(self) -> Path:
        """A folder for this run's working files; removed with the staging directory."""
        path = self.staging / "work"
        path.mkdir(exist_ok=True)
        return path

    def staged(self, shard: ShardInfo) -> Path:
        """Where a shard written by this run lies until `close()`."""
        return self.staging / shard.path

    def writer(self, table: str) -> ShardWriter:
        if table not in self.writers:
            self.writers[table] = ShardWriter(self.staging, table, target_bytes=self.target_shard_bytes, prefix=DRIVER_PREFIX)
        return self.writers[table]

    def write(self, table: str, batch: pa.Table) -> None:
        self.writer(table).write(batch)

    def stage(self, name: str) -> StageCounts:
        return self.stages.setdefault(name, StageCounts())

    def count_stage(
        self, name: str, rows_in: int, rows_out: int, dropped: Mapping[str, int] | None = None, seconds: float = 0.0
    ) -> None:
        s = self.stage(name)
        s.rows_in += rows_in
        s.rows_out += rows_out
        s.dropped.update(dropped or {})
        s.seconds += seconds

    def abort(self) -> None:
        """Give up this run: release the lock; the old dataset (if any) is untouched."""
        self.closed = True
        shutil.rmtree(self.staging / "work", ignore_errors=True)
        self._lock.release()

    def close(self, config: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict:
        """Finish the run: manifest, then replace the old dataset with the new one."""
        manifest = self._manifest(config, extra)
        shutil.rmtree(self.staging / "work", ignore_errors=True)
        staged_manifest = self.staging / MANIFEST
        tmp = self.staging / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str))
        os.replace(tmp, staged_manifest)
        self._write_card(manifest)
        self._swap_in(manifest, staged_manifest)
        self.closed = True
        self._lock.release()
        return manifest

    def _adopted(self) -> Iterator[dict]:
        for p in sorted((self.staging / "adopted").glob("*.json")):  # taken over from an earlier pass (adopt)
            yield json.loads(p.read_text())

    def _manifest(self, config: Mapping[str, Any] | None, extra: Mapping[str, Any] | None, prefix: str = "") -> dict:
        """The manifest of this run: every shard the tasks and this process wrote (paths relative to the
        output, under `prefix`), the stage counts, timings, config, versions."""
        files: dict[str, list[dict]] = {}
        nodes: Counter = Counter()
        fetches: dict[str, Counter] = {}  # the download reader's counts per host, by kind
        input_shards = late_duplicates = 0
        fetch_seconds = 0.0
        spans: list[dict] = []
        for r in self.shard_results():  # written by the shard tasks
            input_shards += 1
            fetch_seconds += float(r.get("fetch_seconds") or 0.0)
            if r.get("span"):
                spans.append({"shard_id": r["shard_id"], "node": r.get("node") or "driver", **r["span"]})
            nodes[r.get("node") or "driver"] += 1
            for f in r["files"]:
                files.setdefault(f["path"].split("/", 1)[0], []).append(f)
            for kind in ("requests_by_host", "retries_by_host", "blocked_by_host"):
                if kind in r:
                    fetches.setdefault(kind, Counter()).update(r[kind])
            late_duplicates += int(r.get("duplicate_urls_fetched") or 0)
        for adopted in self._adopted():
            files.setdefault(adopted["table"], []).extend(adopted["files"])
        for name, w in self.writers.items():  # written here, on the driver
            files.setdefault(name, []).extend(s.__dict__ for s in w.close())
        tables = {}
        for name, shards in files.items():
            shards = sorted(({**f, "path": prefix + f["path"]} for f in shards), key=lambda f: f["path"])
            tables[name] = {"rows": sum(f["rows"] for f in shards), "bytes": sum(f["bytes"] for f in shards), "shards": shards}
        for name in ("records", "samples", "rejects"):
            tables.setdefault(name, {"rows": 0, "bytes": 0, "shards": []})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tables": tables,
            "stages": {k: v.to_json() for k, v in self.stages.items()},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "wall_seconds": round(time.time() - self.started, 3),
            "config": dict(config or {}),
            "versions": _versions(),
        }
        if input_shards:  # where the work ran: input shards per node ("driver" = in this process)
            manifest["run"] = {"input_shards": input_shards, "resumed": self.resumed, "shards_by_node": dict(nodes)}
            if spans:
                manifest["run"]["tasks"] = task_figures(spans)
        if fetches:  # what the download sent, per host (most requested first)
            manifest["download"] = {
                "requests": sum(fetches.get("requests_by_host", Counter()).values()),
                **{kind: dict(c.most_common()) for kind, c in fetches.items()},
            }
            # duplicate URLs fetched before the shuffle that finds them was complete (curation/crawl/urls.py)
            manifest["download"]["duplicate_urls_fetched"] = late_duplicates
            # the fetch's own wall time, summed over shards (it runs beside the flow: the download stage's
            # seconds are the time the flow waited on it, plus turning its rows into records)
            manifest["download"]["fetch_seconds"] = round(fetch_seconds, 3)
        if extra:
            manifest.update(extra)
        return manifest

    def _write_card(self, manifest: dict) -> None:
        """The Hugging Face dataset card (curation/card.py), staged; replaces only a card of ours."""
        from curation.card import CARD, may_write_card, render_card

        if not may_write_card(self.out / CARD):
            log.warning("%s: a README.md this tool did not write is there; the dataset card is not written", self.out)
            return
        (self.staging / CARD).write_text(render_card(manifest, self.staging), encoding="utf-8")

    def _swap_in(self, manifest: dict, staged_manifest: Path) -> None:
        # The old manifest goes first, so that no reader trusts a directory that
        # is half old, half new; then the old shards this tool wrote; then the
        # new shards, and the new manifest last.
        old = self.out / MANIFEST
        if old.exists():
            old.unlink()
        for table in set(TABLE_SCHEMAS) | set(manifest["tables"]):
            d = self.out / table
            if d.is_dir():
                for p in d.iterdir():
                    if _OWN_SHARD.match(p.name):
                        p.unlink()
        for info in manifest["tables"].values():
            for shard in info["shards"]:
                dest = self.out / shard["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.staging / shard["path"], dest)
        card = self.staging / "README.md"
        if card.exists():
            os.replace(card, self.out / "README.md")
        os.replace(staged_manifest, old)
        shutil.rmtree(self.staging, ignore_errors=True)
        for table in TABLE_SCHEMAS:  # table folders this run left empty
            d = self.out / table
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


TASK_SPANS_LISTED = 256  # a run of at most this many input shards lists each task's span in its manifest


def task_figures(spans: list[dict]) -> dict:
    """Where the shard tasks' time went, from their spans (`curation.runner._run_shard`): summed wall,
    CPU (of the task's process: its threads included), model set-up and reader wait (a download's wait on
    the fetch), the span from the first start to the last end, and the worker processes; each task's
    own span too when there are few (a large run keeps its spans in the staging's shard results only)."""
    first = min(s["start"] for s in spans)
    last = max(s["start"] + s["wall"] for s in spans)
    out = {
        "tasks": len(spans),
        "processes": len({(s["node"], s["pid"]) for s in spans}),
        "span_seconds": round(last - first, 3),
        **{f"{k}_seconds": round(sum(s[k] for s in spans), 3) for k in ("wall", "cpu", "setup", "reader_wait")},
    }
    if len(spans) <= TASK_SPANS_LISTED:
        out["spans"] = [{**s, "start": round(s["start"] - first, 3)} for s in sorted(spans, key=lambda s: s["start"])]
    return out


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("qwen-vl-curation", "pyarrow", "ray", "duckdb", "open-clip-torch", "torch", "img2dataset", "tiktoken"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class Dataset:
    """Read side of a dataset directory, local or at an fsspec URL (`s3://bucket/prefix`); trusts only
    manifest-listed shards.

    Every shard a read touches is checked against the manifest: it must exist
    and hold the listed number of rows (from its Parquet footer). With
    `verify=True` every shard's sha256 is checked when the dataset is opened.
    `shard_paths` are Paths for a local dataset, URLs for one on object storage
    (read them with `curation.storage.fs`: `parquet_file`, `read_parquet`).
    """

    def __init__(self, path: Path | str, verify: bool = False):
        self.local = fs_.is_local(str(path))
        self.path: Path | str = Path(path) if self.local else str(path).rstrip("/")
        mpath = self.file(MANIFEST)
        if self.local and not self.path.is_dir():
            raise ManifestError(f"{self.path}: no such dataset directory")
        try:
            with fs_.open_file(mpath, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            if not self.local:
                self._remote_missing(mpath)
            raise ManifestError(f"{mpath}: missing; not a finished dataset directory") from None
        except InputError:
            raise
        except Exception as exc:  # a store's own errors: access denied, no such bucket
            raise ManifestError(fs_.describe_error(str(mpath), exc)) from None
        try:
            self.manifest = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{mpath}: unreadable manifest: {exc}") from exc
        self._checked: set[str] = set()
        if verify:
            self.verify()

    def _remote_missing(self, mpath: str) -> None:
        fs, root = fs_.filesystem(str(self.path))
        try:
            exists = fs.exists(root)
        except Exception as exc:
            raise ManifestError(fs_.describe_error(str(self.path), exc)) from None
        if not exists:
            raise ManifestError(f"{self.path}: no such dataset (nothing at this URL)")
        raise ManifestError(f"{mpath}: missing; not a finished dataset")

    def file(self, rel: str) -> Path | str:
        """The path (local) or URL (remote) of a file of the dataset, `rel` as the manifest lists it."""
        return self.path / rel if self.local else fs_.join(str(self.path), rel)

    def tables(self) -> list[str]:
        return list(self.manifest.get("tables", {}))

    def shards(self, table: str) -> list[dict]:
        info = self.manifest.get("tables", {}).get(table)
        return [] if info is None else list(info["shards"])

    def _check_rows(self, shard: dict) -> Path | str:
        path = self.file(shard["path"])
        if shard["path"] in self._checked:
            return path
        try:
            size = fs_.file_size(str(path))
        except FileNotFoundError:
            raise ShardError(f"{path}: shard listed in the manifest is missing") from None
        if shard.get("bytes") is not None and size != shard["bytes"]:
            raise ShardError(f"{path}: shard has {size} bytes, the manifest says {shard['bytes']}; it was truncated or replaced")
        try:
            rows = fs_.parquet_file(str(path)).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise ShardError(f"{path}: unreadable shard: {str(exc).splitlines()[0]}") from None
        if rows != shard["rows"]:
            raise ShardError(f"{path}: shard has {rows} rows, the manifest says {shard['rows']}")
        self._checked.add(shard["path"])
        return path

    def shard_paths(self, table: str) -> list[Path | str]:
        """The manifest-listed shards of `table`, each checked to exist with its row count."""
        return [self._check_rows(s) for s in self.shards(table)]

    def verify_shard(self, shard: dict) -> Path:
        """Check one manifest entry's file: present, its row count, its sha256."""
        path = self._check_rows(shard)
        digest = sha256_file(path) if self.local else _sha256_url(str(path))
        if digest != shard["sha256"]:
            raise ShardError(f"{path}: sha256 {digest[:16]}... differs from the manifest's {shard['sha256'][:16]}...")
        return path

    def verify(self) -> int:
        """Check every listed shard (rows, sha256); raise ShardError on the first mismatch."""
        n = 0
        for table in self.tables():
            for shard in self.shards(table):
                self.verify_shard(shard)
                n += 1
        return n

    def rows(self, table: str) -> int:
        return int(self.manifest.get("tables", {}).get(table, {}).get("rows", 0))

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        paths = self.shard_paths(table)
        schema = TABLE_SCHEMAS.get(table)
        if not paths:
            empty = schema.empty_table() if schema is not None else pa.table({})
            return empty.select(columns) if columns else empty
        tables = [fs_.read_parquet(str(p), columns=columns) for p in paths]
        return pa.concat_tables(tables)

    def iter_batches(self, table: str, batch_size: int = 1024, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The rows of `table`, shard by shard; samples whose images are stored once (an `images` table) come
        with their image bytes filled in by key, as self-contained rows."""
        from curation.image_table import fill_images

        for p in self.shard_paths(table):
            part = self.image_part(p) if table == "samples" and (columns is None or "images" in columns) else None
            for batch in fs_.parquet_file(str(p)).iter_batches(batch_size=batch_size, columns=columns):
                yield fill_images(batch, part)

    def image_part(self, samples_shard: Path | str):
        """The listed images part beside a samples shard (images stored once), or None."""
        from curation.image_table import IMAGES_TABLE, ImagePart

        name = Path(samples_shard).name
        for shard in self.shards(IMAGES_TABLE):
            if Path(shard["path"]).name == name:
                return ImagePart(self._check_rows(shard))
        return None

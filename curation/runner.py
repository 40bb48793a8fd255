"""The pipeline runner: `read -> stages -> sink`, one Ray task per input shard.

The only module of the project that imports Ray. Every command and job hands
it a `Pipeline`:

- `reader(shard)` yields Arrow batches of one input shard (URL rows that it
  downloads, record rows of a Parquet slice, ingest work rows); a reader that
  returns a dict adds its figures to the shard's result (the download's
  `requests_by_host`, merged into the manifest's `download` block);
- `steps`, in order: stages (plain classes, curation/runtime.py) and sinks.
  At a `Sink`, the rows still alive go to its table and the dropped rows to
  `rejects`; the alive rows flow on to the next steps (records -> build ->
  samples in one pass).

Where each part runs:

    driver       cuts the input into shards of N rows (ids that do not depend on
                 the worker count), submits one task per shard with a bounded
                 number in flight, records each finished shard, writes the
                 manifest last. It never holds image bytes.
    shard task   reads its shard, runs the stages inline (each set up once per
                 worker process), calls the actor pools for model stages, and
                 writes its own shards `TABLE/part-<shard>.parquet` (temporary
                 name, then rename) into the output's staging directory;
                 returns paths, rows, bytes, sha256 and stage counts.
    actor pool   model stages (GPU stages, or `pooled = True`): one model per
                 actor, restarted by Ray if its process dies, calls retried.

Resume: a finished shard is recorded as `staging/done/<shard>.json` (written
after its files are renamed); a resumed run skips those shards. A task whose
worker dies is retried by Ray and rewrites the same names, so a shard is
never listed twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import InputError
from curation.storage import fs as storage
from curation.storage.fs import parquet_file
from curation.runtime import Stage, scoped_env, split_rejects, stage_seconds, timed_call
from curation.image_table import IMAGES_TABLE, split_images
from curation.schema import (
    ANNOTATION_COLUMNS, ROW_GROUP_ROWS, TABLE_SCHEMAS, parquet_write_options, rejects_from_pylist, row_group_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    from curation.storage.dataset import DatasetWriter

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "InputShard",
    "Sink",
    "Pipeline",
    "init_ray",
    "api_server_offline",
    "fit_cpus",
    "cluster_gpus",
    "local_gpus",
    "ray_running",
    "stop_ray",
    "run_pipeline",
    "parquet_shards",
    "ParquetReader",
    "run_remote",
    "group_by_key",
    "fold_shards",
    "Beside",
    "read_part",
    "rewrite_part",
]

log = logging.getLogger(__name__)

DEFAULT_SHARD_ROWS = 10_000


# ---------------------------------------------------------------- Ray itself


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool | None = None) -> None:
    """Start Ray in-process (local) or join `address` / $RAY_ADDRESS.

    `quiet` (default: unless this process logs at DEBUG, as `curate -v` does)
    keeps the workers' own output and Ray's info lines off the driver.

    A new local Ray sends nothing off the machine: usage stats are off, and its
    API server process starts without a way out (`api_server_offline`).
    """
    import ray

    if ray.is_initialized():
        return
    if quiet is None:
        quiet = not logging.getLogger().isEnabledFor(logging.DEBUG)
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "include_dashboard": False,
        "log_to_driver": not quiet,
        "logging_level": logging.ERROR if quiet else logging.INFO,
    }
    if address:
        kwargs["address"] = address
        ray.init(**kwargs)
        return
    # a new local Ray, even when a cluster started on this machine is running
    kwargs["address"] = "local"
    kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    # keep workers quiet about the spare Ray features
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # keep idle workers (and the torch they imported) for the next shard instead of starting new ones
    os.environ.setdefault("RAY_num_workers_soft_limit", str(4 * int(kwargs["num_cpus"]) + 4))
    # a task's result goes to Ray's object store unless it is tiny: results are kept on the cluster
    # (`shuffle`), and the driver's own store would otherwise hold every small piece of a wide shuffle
    kwargs["_system_config"] = {"max_direct_call_object_size": 4096}
    with api_server_offline():
        ray.init(**kwargs)


# the proxy settings that `requests` (and urllib) read from the environment
_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")
_refusing_port: socket.socket | None = None


def _refusing_loopback_proxy() -> str:
    """http://127.0.0.1:PORT, a port this process holds bound and never listens on: every connection is refused."""
    global _refusing_port
    if _refusing_port is None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        _refusing_port = s
    return f"http://127.0.0.1:{_refusing_port.getsockname()[1]}"


@contextlib.contextmanager
def api_server_offline():
    """While Ray starts a head (`init_ray`, or `ray.cluster_utils.Cluster` in a test), its API server
    process gets a proxy that refuses every connection.

    Ray 2.x starts an API server with every new head; with `include_dashboard=False`
    it loads only `UsageStatsHead`, whose `run()` calls
    `usage_lib.get_cluster_config_to_report()` before it looks at
    RAY_USAGE_STATS_ENABLED. Unless ~/ray_bootstrap_config.yaml exists, that
    probes the cloud metadata services (http://169.254.169.254/...,
    http://metadata.google.internal/...) with `requests`, and a disabled-usage
    report can follow. No Ray setting stops it, so the process gets
    http(s)_proxy = a refusing loopback port (and no no_proxy): each request
    fails at once, on the machine. Only that process: the environment is set
    around Ray's `start_api_server` call and restored; the raylet and the
    workers keep the caller's environment. A Ray without that function is
    started as it is, with a warning.
    """
    import ray._private.services as services

    start = getattr(services, "start_api_server", None)
    if start is None:
        log.warning("this Ray (%s) has no services.start_api_server: its usage-stats head may probe the cloud "
                    "metadata address", getattr(services, "__file__", "?"))
        yield
        return
    proxy = _refusing_loopback_proxy()
    env: dict[str, str | None] = {**{v: proxy for v in _PROXY_VARIABLES}, **{v: None for v in _NO_PROXY_VARIABLES}}

    @functools.wraps(start)
    def start_offline(*args, **kwargs):
        with scoped_env(env):
            return start(*args, **kwargs)

    services.start_api_server = start_offline
    try:
        yield
    finally:
        services.start_api_server = start


def fit_cpus(requested: float, total: float) -> float:
    """CPUs to ask for per worker so that one worker never takes the whole cluster.

    An actor holding every CPU starves the tasks that feed it and the pipeline
    hangs with no error; leave at least one CPU (or half of a single CPU) for
    the rest of the pipeline.
    """
    if requested <= 0:
        return 0.0
    cap = total - 1 if total >= 2 else max(total / 2, 0.25)
    return float(min(requested, cap))


def cluster_gpus(address: str | None = None) -> float:
    """GPUs of the Ray cluster: the running one's, else the cluster at `address` (or $RAY_ADDRESS), joined;
    else this machine's (`local_gpus`), which a local Ray would find too, without starting one."""
    import sys

    named = address or os.environ.get("RAY_ADDRESS", "local") != "local"
    if "ray" not in sys.modules and not named:
        return local_gpus()
    import ray

    if not ray.is_initialized():
        if not named:
            return local_gpus()
        init_ray(address)
    return float(ray.cluster_resources().get("GPU", 0.0))


def ray_running() -> bool:
    """Whether this process has started or joined a Ray (without importing Ray to find out)."""
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def stop_ray() -> None:
    """Shut down the Ray this process started or joined, if any (Ray's own atexit hook does the same
    after a half-second pause for late error messages)."""
    if ray_running():
        import ray

        ray.shutdown()


def local_gpus() -> float:
    """NVIDIA GPUs of this machine, as its driver lists them, within $CUDA_VISIBLE_DEVICES."""
    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0.0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        found = min(found, len([d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")]))
    return float(found)


# ------------------------------------------------------------ the pipeline


@dataclass(frozen=True)
class InputShard:
    """One unit of work, resume and output naming: N rows of the input."""

    shard_id: int
    path: str  # a Parquet file
    row_groups: tuple[int, ...] | None = None  # a slice of it; None = the whole file
    rows: int = 0
    first_row: int = 0  # the input row number of its first row (in its file, for a URL list's shards)
    skip: int = 0  # rows of the first listed row group before the shard's first row
    label: str | None = None  # the file's label in a multi-file URL list (record ids SOURCE:LABEL:ROW)
    source_url: str | None = None  # the file the user named (a text list's shards read its Parquet copy)
    duplicates: str | None = None  # a `Beside` index folder that holds rows of this shard (e.g. duplicate URLs)
    checked: bool = False  # the `Beside` index was complete when the shard was submitted

    def identity(self) -> dict:
        """What the shard is, compared on resume: its file and row range."""
        return {"file": self.source_url or self.path, "first_row": self.first_row, "rows": self.rows}


@dataclass(frozen=True)
class Sink:
    """Alive rows -> `table`, dropped rows -> rejects; with `pack`, samples also packed per shard."""

    table: str
    pack: int | None = None
    format: str | None = None  # of packed sequences
    images_once: bool = False  # samples: each image's bytes once, in the images table (curation/image_table.py)


@dataclass
class Pipeline:
    reader: Callable[[InputShard], Iterator[pa.Table]]
    steps: Sequence[Stage | Sink]
    task_cpus: float = 1.0
    # an identity of what the pipeline does, compared on resume
    config: dict = field(default_factory=dict)

    def stage_names(self) -> list[str]:
        names: list[str] = []
        for s in self.steps:
            if isinstance(s, Stage) and s.name not in names:
                names.append(s.name)
        return names


def parquet_shards(files: Sequence[tuple[Path | str, int]], rows_per_shard: int = DEFAULT_SHARD_ROWS) -> list[InputShard]:
    """Input shards of about `rows_per_shard` rows over Parquet files, by whole row groups.

    `files` lists (path, rows) in input order; ids count shards in that order,
    so they depend on the input and `rows_per_shard` only.
    """
    if rows_per_shard <= 0:
        raise ValueError(f"rows per shard must be positive, got {rows_per_shard}")
    shards: list[InputShard] = []
    first = 0
    for path, _ in files:
        meta = parquet_file(str(path)).metadata
        group: list[int] = []
        n = 0
        for g in range(meta.num_row_groups):
            group.append(g)
            n += meta.row_group(g).num_rows
            if n >= rows_per_shard:
                shards.append(InputShard(len(shards), str(path), tuple(group), n, first))
                first += n
                group, n = [], 0
        if group:
            shards.append(InputShard(len(shards), str(path), tuple(group), n, first))
            first += n
    return shards


@dataclass(frozen=True)
class ParquetReader:
    """Batches of a Parquet input shard."""

    batch_size: int = 1024
    columns: tuple[str, ...] | None = None
    # with the input's files in order: each row also gets `_node` (int64), its file's index in the top
    # bits and its row in the file below (`node_id`): a number for the row that no shard size changes
    node_files: tuple[str, ...] | None = None

    def __call__(self, shard: InputShard | Sequence[InputShard]) -> Iterator[pa.Table]:
        if not isinstance(shard, InputShard):  # a group of shards, read one after the other
            for s in shard:
                yield from self(s)
            return
        f = parquet_file(shard.path)
        groups = list(shard.row_groups) if shard.row_groups is not None else list(range(f.num_row_groups))
        if not groups:
            return
        cols = list(self.columns) if self.columns else None
        node = None
        if self.node_files is not None:
            if groups != list(range(groups[0], groups[0] + len(groups))):
                raise ValueError(f"{shard.path}: row numbers need a shard of consecutive row groups")
            meta = f.metadata
            node = node_id(self.node_files.index(shard.path), sum(meta.row_group(g).num_rows for g in range(groups[0])))
        for rb in f.iter_batches(batch_size=self.batch_size, row_groups=groups, columns=cols):
            t = pa.Table.from_batches([rb])
            if node is not None:
                import numpy as np

                t = t.append_column("_node", pa.array(np.arange(node, node + t.num_rows, dtype=np.int64)))
                node += t.num_rows
            yield t


NODE_ROW_BITS = 40  # rows per file below 2^40, files below 2^23


def node_id(file_index: int, row: int) -> int:
    """The number of row `row` of the input's file `file_index` (the `_node` of `ParquetReader`)."""
    return (int(file_index) << NODE_ROW_BITS) | int(row)


def shard_nodes(shard: InputShard, files: Sequence[str]) -> int:
    """The `_node` of a shard's first row (its file's rows before its first row group counted from the footer)."""
    meta = parquet_file(shard.path).metadata
    first = shard.row_groups[0] if shard.row_groups else 0
    return node_id(list(files).index(shard.path), sum(meta.row_group(g).num_rows for g in range(first)))


# ------------------------------------------------------------ inside a shard task

# stages set up in this worker process, by the identity of their pickled settings
_SET_UP: dict[bytes, Stage] = {}


def _local_stage(stage: Stage) -> Stage:
    import pickle

    key = hashlib.sha256(pickle.dumps(stage)).digest()
    if key not in _SET_UP:
        stage.setup()
        _SET_UP[key] = stage
    return _SET_UP[key]


class _PartWriter:
    """One table's shard of one input shard: `.part-K.parquet.tmp`, renamed when complete.

    Batches are gathered into row groups of ROW_GROUP_ROWS rows (or ROW_GROUP_BYTES, if less), whatever
    the size of the batches the stages hand over: a shard read in batches of 64 rows would otherwise be
    150 row groups of 64 records and 150 of a few rejects.
    """

    def __init__(self, root: Path | str, table: str, shard_id: int):
        self.table = table
        self.schema = TABLE_SCHEMAS[table]
        self.name = f"part-{shard_id:05d}.parquet"
        self.local = storage.is_local(str(root))
        if self.local:
            self.final = Path(root) / table / self.name
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = self.final.with_name(f".{self.name}.tmp")
        else:  # object storage: written straight to its key; the upload completes (whole) on close, or never
            self.final = self.tmp = storage.join(str(root), table, self.name)
        self.writer: pq.ParquetWriter | None = None
        self.file: _HashingFile | None = None
        self.rows = 0
        self.pending: list[pa.Table] = []
        self.pending_rows = self.pending_bytes = 0

    def write(self, batch: pa.Table) -> None:
        if batch.num_rows == 0:
            return
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        size = row_group_rows(self.table, self.pending_rows, self.pending_bytes)
        if self.pending_rows >= size:
            self._flush(self.pending_rows - self.pending_rows % size, size)

    def _flush(self, rows: int, size: int = ROW_GROUP_ROWS) -> None:
        """Write the first `rows` pending rows in row groups of `size`; keep the rest."""
        if rows == 0:
            return
        if self.writer is None:
            self.file = _HashingFile(self.tmp)
            self.writer = pq.ParquetWriter(self.file, self.schema, **parquet_write_options(self.table))
        table = pa.concat_tables(self.pending)
        self.writer.write_table(table.slice(0, rows), row_group_size=size)
        rest = table.slice(rows)
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows, self.pending_bytes = rest.num_rows, rest.nbytes

    def close(self) -> dict | None:
        self._flush(self.pending_rows, row_group_rows(self.table, self.pending_rows, self.pending_bytes))
        if self.writer is None:
            return None
        self.writer.close()
        self.file.close()
        if self.local:
            os.replace(self.tmp, self.final)
        return {"path": f"{self.table}/{self.name}", "rows": self.rows, "bytes": self.file.size,
                "sha256": self.file.sha256.hexdigest()}


class _HashingFile:
    """A file written front to back (as Parquet is) that hashes its bytes on the way: the shard's
    sha256 without reading it back."""

    def __init__(self, path: Path | str):
        self._f = storage.open_file(str(path), "wb")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        self._f.close()


def read_part(staging: str | Path, info: dict | None, columns: list[str] | None = None,
              missing_ok: bool = False) -> pa.Table | None:
    """A part a shard task wrote into the staging (`info` from its result's files), or None (`missing_ok`:
    also when a rewrite that left no rows took it away)."""
    if info is None:
        return None
    url = storage.join(str(staging), info["path"])
    try:
        return storage.read_parquet(url, columns=columns)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise


def rewrite_part(staging: str | Path, table: str, shard_id: int, info: dict | None,
                 fn: Callable[[pa.Table], pa.Table], extra: pa.Table | None = None) -> dict | None:
    """Rewrite a shard's part of `table` as `fn(rows)` plus the `extra` rows whose record_id it does not hold
    yet (so a rewrite that was killed and is run again adds nothing twice); the part is replaced whole (a
    temporary name, then a rename). Returns its new file info (None: no rows, and no part)."""
    old = read_part(staging, info, missing_ok=True)
    rows = fn(old) if old is not None else TABLE_SCHEMAS[table].empty_table()
    if extra is not None and extra.num_rows:
        have = rows.column("record_id")
        extra = extra.filter(pc.invert(pc.is_in(extra.column("record_id"), have)))
        rows = pa.concat_tables([rows, extra.select(rows.column_names).cast(rows.schema)])
    part = _PartWriter(staging, table, shard_id)
    part.write(rows)
    out = part.close()
    if out is None and info is not None:
        storage.remove(storage.join(str(staging), info["path"]))
    return out


def _item_rejects(batch: pa.Table) -> pa.Table | None:
    """Rejects of single annotations (a box, a phrase) that a stage wrote as JSON into `item_rejects`."""
    if "item_rejects" not in batch.column_names:
        return None
    rows = [r for value in batch.column("item_rejects").to_pylist() if value for r in json.loads(value)]
    return rejects_from_pylist(rows) if rows else None


def _alive(batch: pa.Table) -> int:
    if "reject_stage" not in batch.column_names:
        return batch.num_rows
    return batch.column("reject_stage").null_count


def _run_shard(shard: InputShard, reader, steps, staging: str, pools: dict[int, list]) -> dict:
    """Everything of one input shard, inside its task; returns what the driver records."""
    from curation.console import ProgressNote

    started, cpu0 = time.time(), time.process_time()
    staging_path = Path(staging) if storage.is_local(staging) else staging  # a URL on object storage
    # the reader starts first, in its own thread (a download fetches while the models load), one batch ahead
    batches = _Prefetch(reader(shard))
    try:
        run = _Flow(shard, steps, staging_path, pools)
        setup = time.time() - started
        # rows per stage so far, for the driver's progress bars (local staging only: not a PUT every half second)
        note = ProgressNote(staging_path, shard.shard_id) if isinstance(staging_path, Path) else (lambda *a, **k: None)
        rows_in = 0
        waited = 0.0
        while True:  # a reader may return a dict of figures for the shard's result (the download's request counts)
            t0 = time.perf_counter()
            kind, batch = batches.get()
            waited += time.perf_counter() - t0
            if kind == "end":
                extra = batch if isinstance(batch, dict) else {}
                break
            rows_in += batch.num_rows
            run.flow(batch)
            note(rows_in, run.counts)
    finally:
        batches.close()
    result = run.finish(rows_in)
    result.update({k: v for k, v in extra.items() if k not in result})
    result["input"] = shard.identity()
    # where the task's time went: set-up (models), waiting on the reader (for a download: on the fetch,
    # which runs beside the flow), the rest in the stages and sinks; CPU of the whole process meanwhile
    result["span"] = {"start": round(started, 3), "wall": round(time.time() - started, 3),
                      "cpu": round(time.process_time() - cpu0, 3), "setup": round(setup, 3),
                      "reader_wait": round(waited, 3), "pid": os.getpid()}
    return result


class _Prefetch:
    """A reader's batches, made in a thread of their own at most `depth` ahead of the flow that takes them.

    `get()` gives ("batch", table) and, at the end, ("end", the generator's return value); an error of
    the reader is raised there. `close()` stops a reader still running at its next batch (the generator
    is closed in its thread, so its own clean-up runs there) without waiting for it.
    """

    def __init__(self, batches: Iterator[pa.Table], depth: int = 1):
        import queue
        import threading

        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(batches,), name="shard-reader", daemon=True)
        self._thread.start()

    def _produce(self, batches) -> None:
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration as end:
                    self._put(("end", end.value))
                    return
                if not self._put(("batch", batch)):
                    batches.close()
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the flow, raised there
            self._put(("error", exc))

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> tuple[str, Any]:
        kind, value = self._queue.get()
        if kind == "error":
            raise value
        return kind, value

    def close(self) -> None:
        import queue

        self._stop.set()  # a reader still running stops at its next batch (its generator closed there)
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass


class _Flow:
    """Runs batches of one shard through the steps, counting each stage and writing each sink."""

    def __init__(self, shard: InputShard, steps: Sequence[Stage | Sink], staging: Path | str, pools: dict[int, list]):
        self.shard, self.pools, self.staging = shard, pools, staging
        self.steps = [_local_stage(s) if isinstance(s, Stage) and i not in pools else s for i, s in enumerate(steps)]
        self.parts: dict[str, _PartWriter] = {}
        self.counts: dict[str, dict] = {}
        self.seconds: Counter = Counter()
        self.members: list[tuple[str, str, int]] = []
        self.by_task: Counter = Counter()
        self.annotations: Counter = Counter()
        self.image_keys: set[str] = set()  # images this shard's images part holds (images_once)
        self.calls = 0

    def _count(self, name: str) -> dict:
        return self.counts.setdefault(name, {"in": 0, "out": 0, "dropped": Counter()})

    def part(self, table: str) -> _PartWriter:
        if table not in self.parts:
            self.parts[table] = _PartWriter(self.staging, table, self.shard.shard_id)
        return self.parts[table]

    def call(self, i: int, stage: Stage, batch: pa.Table) -> pa.Table:
        """The stage on `batch`, in slices of at most its batch size (actor calls run side by side)."""
        size = max(1, stage.batch_size)
        slices = [batch.slice(k, size) for k in range(0, batch.num_rows, size)] or [batch]
        if i not in self.pools:
            outs = [timed_call(stage, b) for b in slices]
        else:
            import ray

            actors = self.pools[i]
            refs = []
            for b in slices:
                refs.append(actors[(self.shard.shard_id + self.calls) % len(actors)].call.remote(b))
                self.calls += 1
            outs = ray.get(refs)
        return outs[0] if len(outs) == 1 else pa.concat_tables(outs, promote_options="permissive")

    def flow(self, batch: pa.Table) -> None:
        prev = None
        for i, step in enumerate(self.steps):
            if isinstance(step, Sink):
                batch = self.sink(step, batch)
                prev = None
                continue
            alive_in = _alive(batch)
            batch = self.call(i, step, batch)
            c = self._count(step.name)
            if step.name != prev:  # consecutive stages of one name (clip: preprocess, score) count once
                c["in"] += alive_in
            else:
                c["out"] -= alive_in
            c["out"] += _alive(batch)
            prev = step.name

    def sink(self, sink: Sink, batch: pa.Table) -> pa.Table:
        self.seconds.update(stage_seconds(batch))
        items = _item_rejects(batch)
        kept, rejects = split_rejects(batch, TABLE_SCHEMAS[sink.table])
        if items is not None:
            rejects = pa.concat_tables([rejects, items])
        if sink.images_once and sink.table == "samples":
            kept, images = split_images(kept, self.image_keys)
            self.part(IMAGES_TABLE).write(images)
        self.part(sink.table).write(kept)
        self.part("rejects").write(rejects)
        for stage, reason in zip(rejects.column("stage").to_pylist(), rejects.column("reason").to_pylist()):
            self._count(stage)["dropped"][reason] += 1
        if sink.table == "records":
            for col in ANNOTATION_COLUMNS:
                self.annotations[col] += int(pc.sum(pc.list_value_length(kept.column(col))).as_py() or 0)
            self.annotations["text"] += kept.num_rows - kept.column("text").null_count
        if sink.table == "samples":
            tasks = kept.column("task").to_pylist()
            self.by_task.update(tasks)
            if sink.pack is not None:
                self.members.extend(zip(kept.column("sample_id").to_pylist(), tasks, kept.column("num_tokens").to_pylist()))
        return kept

    def finish(self, rows_in: int) -> dict:
        packing = None
        for step in self.steps:
            if isinstance(step, Sink) and step.pack is not None:
                packing = self.pack(step)
        files = [info for info in (p.close() for p in self.parts.values()) if info is not None]
        stages = {
            name: {"in": c["in"], "out": c["out"], "dropped": dict(c["dropped"]), "seconds": self.seconds.get(name, 0.0)}
            for name, c in self.counts.items()
        }
        return {"shard_id": self.shard.shard_id, "rows_in": rows_in, "files": files, "stages": stages,
                "samples_by_task": dict(self.by_task), "packing": packing, "annotations": dict(self.annotations)}

    def pack(self, sink: Sink) -> dict:
        from formats.packing import pack_sequences, sequences_table

        t0 = time.perf_counter()
        seqs = pack_sequences(self.members, sink.pack)
        self.part("sequences").write(sequences_table(seqs, sink.format))
        by_task: dict[str, dict] = {}
        for s in seqs:
            t = by_task.setdefault(s.task, {"sequences": 0, "samples": 0, "tokens": 0})
            t["sequences"] += 1
            t["samples"] += len(s.sample_ids)
            t["tokens"] += s.num_tokens
        c = self._count("pack")
        c["in"] += len(self.members)
        c["out"] += len(seqs)
        self.seconds["pack"] += time.perf_counter() - t0
        return by_task


def _shard_task(shard: InputShard, reader, steps, staging: str, pools: dict[int, list]) -> dict:
    """`_run_shard` as a Ray task: also says which node ran it."""
    import ray

    result = _run_shard(shard, reader, steps, staging, pools)
    result["node"] = ray.get_runtime_context().get_node_id()
    return result


class _PoolActor:
    """An actor of a model stage's pool: the stage rides in the class (pickled by value), set up once."""

    stage: Stage

    def __init__(self):
        self.error = None
        try:
            self.stage.setup()
        except InputError as exc:  # e.g. weights that cannot be loaded: every call says so, in one line
            self.error = exc

    def call(self, batch: pa.Table) -> pa.Table:
        if self.error is not None:
            raise self.error
        return timed_call(self.stage, batch)


# ------------------------------------------------------------ the driver


def _pooled(stage: Stage) -> bool:
    return stage.resources.gpus > 0 or bool(getattr(stage, "pooled", False))


def _make_pools(steps: Sequence[Stage | Sink], total_cpus: float, total_gpus: float) -> dict[int, list]:
    import ray

    pools: dict[int, list] = {}
    for i, step in enumerate(steps):
        if not isinstance(step, Stage) or not _pooled(step):
            continue
        gpus = step.resources.gpus
        if gpus > total_gpus:
            raise ValueError(f"stage {step.name!r} asks for {gpus} GPUs per worker; the cluster has {total_gpus:g}")
        cpus = fit_cpus(step.resources.cpus, total_cpus)
        # one actor per GPU share; on CPUs, half of them, the other half for the shard tasks that feed them
        size = int(total_gpus // gpus) if gpus else max(1, int((total_cpus / 2) // max(cpus, 1e-9)))
        size = max(1, min(size, getattr(step, "max_actors", None) or size))
        cls = type(f"{type(step).__name__}Actor", (_PoolActor,), {"stage": step})
        remote = ray.remote(cls).options(num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)
        pools[i] = [remote.remote() for _ in range(size)]
        log.info("stage %s: %d actor(s), %g CPU / %g GPU each", step.name, size, cpus, gpus)
    return pools


@dataclass
class Beside:
    """A hash shuffle over a pipeline's input shards, run on the cluster beside the pipeline itself
    (the duplicate-URL index of a download, `curation.crawl.urls`).

    - `keys(shard)`: a shard's key rows (a `key` int64 column and what the reduce needs), in map tasks of
      about `map_rows` rows (several shards each), cut into `partitions` parts by key;
    - `reduce(p, rows)`: partition p's rows (None when none came) -> {shard_id: n}, the rows it wrote
      for each shard (it writes them itself, into `folder`);
    - the merged counts are the index, `folder/index.json`, written by the driver (a resumed run finds it);
    - a shard submitted once the index is complete gets `checked`, and `duplicates = folder` if the index
      holds rows for it; with `fix`, shards start at once, and one that ran before the index was complete
      is corrected afterwards by `fix(result)` in a task (its new result); without `fix`, shards wait for
      the index.
    """

    keys: Callable[[InputShard], Iterator[pa.Table]]
    reduce: Callable[[int, pa.Table | None], dict]
    folder: str
    fix: Callable[[dict], dict] | None = None
    partitions: int | None = None
    map_rows: int = 500_000
    # a list of at most this many rows, all planned before the first map task was due, is indexed in the
    # driver (a bounded moment, no tasks to start: small jobs and the demo do not wait for workers)
    local_rows: int = 100_000

    def index_path(self) -> str:
        return storage.join(str(self.folder), "index.json")

    def load(self) -> dict[int, int] | None:
        try:
            saved = storage.read_json(self.index_path())
        except FileNotFoundError:
            return None
        return {int(k): int(v) for k, v in saved["rows_by_shard"].items()}

    def save(self, counts: dict[int, int], seconds: float | None = None) -> None:
        storage.write_json(self.index_path(), {"rows_by_shard": {str(k): v for k, v in sorted(counts.items())},
                                               "rows": sum(counts.values()), "seconds": seconds})

    def mark(self, shard: InputShard, index: dict[int, int] | None) -> InputShard:
        if index is None:
            return shard
        return dataclasses.replace(shard, checked=True, duplicates=self.folder if index.get(shard.shard_id) else None)


def _beside_map(keys, partitions: int, *shards: InputShard) -> list[pa.Table]:
    emitted = [t for s in shards for t in keys(s) if t is not None and t.num_rows]
    if not emitted:
        return [pa.table({"key": pa.array([], pa.int64())})] * partitions
    return _partition(pa.concat_tables(emitted, promote_options="permissive"), partitions)


def _beside_reduce(reduce, partition: int, *parts: pa.Table) -> dict:
    parts = tuple(t for t in parts if t.num_rows)
    rows = pa.concat_tables(parts, promote_options="permissive") if parts else None
    return {int(k): int(v) for k, v in reduce(partition, rows).items()}


def _beside_local(beside: Beside, shards: Sequence[InputShard], before: float = 0.0) -> dict[int, int]:
    t0 = time.monotonic()
    mapped = [_beside_map(beside.keys, 1, s) for s in shards]
    counts = _beside_reduce(beside.reduce, 0, *(m[0] for m in mapped))
    beside.save(counts, before + time.monotonic() - t0)
    return counts


def _check_resume(shard: InputShard, done: dict[int, dict | None]) -> None:
    before = done.get(shard.shard_id)
    if before is not None and before != shard.identity():
        raise InputError(
            f"input shard {shard.shard_id} was {before['file']} rows {before['first_row']}+{before['rows']} in the "
            f"interrupted run, now {shard.identity()['file']} rows {shard.first_row}+{shard.rows}: the input changed; "
            "rerun without --resume")


def run_pipeline(
    pipeline: Pipeline,
    shards: Iterable[InputShard],
    writer: "DatasetWriter",
    total_shards: int | None = None,
    executor: str = "ray",
    total_rows: int | None = None,
    beside: Beside | None = None,
) -> dict:
    """Run every input shard not yet done in `writer`'s staging; returns the merged results.

    `executor` "ray": one task per shard on the cluster (model stages in actor
    pools); "local": the same shard runs one after another in this process
    (small inputs, tests). Finished shards are recorded in the writer (its
    done markers) as they come, so a killed driver loses only the shards in flight.
    `shards` may be a generator (planning that streams): it is consumed as
    tasks are submitted. `total_rows` (the input's rows, when known) sizes the
    progress bars (`curation.console.ShardProgress`). `beside`: a shuffle over
    the same shards, run beside them (`Beside`).
    """
    from curation.console import ShardProgress

    if total_rows is None and isinstance(shards, Sequence):
        total_rows = sum(s.rows for s in shards)  # for the progress bars' totals and ETA
    rows_progress = ShardProgress(writer.staging, total_rows, pipeline.stage_names())
    done_before = writer.done_inputs()
    if executor == "local":
        shards = list(shards)
        index = None
        if beside is not None:
            index = beside.load()
            if index is None:
                index = _beside_local(beside, shards)
            for r in writer.shard_results():  # shards of an interrupted run that ran before the index
                if not r.get("duplicates_checked") and beside.fix is not None:
                    writer.add_shard(beside.fix(r) if index.get(int(r["shard_id"])) else {**r, "duplicates_checked": True})
        progress = _Progress(total_shards, len(done_before))
        for shard in shards:
            _check_resume(shard, done_before)
            if shard.shard_id not in done_before:
                shard = beside.mark(shard, index) if beside is not None else shard
                result = _run_shard(shard, pipeline.reader, pipeline.steps, str(writer.staging), {})
                result["duplicates_checked"] = True
                writer.add_shard(result)
                progress(result)
                rows_progress.finished(result)
        rows_progress.close()
        return writer.shard_summary(pipeline.stage_names())
    if executor != "ray":
        raise ValueError(f"unknown executor {executor!r}: ray or local")
    import ray

    resources = ray.cluster_resources()
    total_cpus = float(resources.get("CPU", 1.0))
    total_gpus = float(resources.get("GPU", 0.0))
    pools = _make_pools(pipeline.steps, total_cpus, total_gpus)
    pooled_cpus = sum(fit_cpus(pipeline.steps[i].resources.cpus, total_cpus) * len(a) for i, a in pools.items())
    task_cpus = fit_cpus(pipeline.task_cpus, total_cpus)
    slots = max(1, int(max(total_cpus - pooled_cpus, task_cpus) // max(task_cpus, 1e-9)))
    # no more than fit: a queued task would be started on a fresh worker (imports and all)
    # whenever a running one waits on an actor and hands its CPU back
    in_flight = slots
    # shard tasks spread over the nodes: each downloads, and no node's network card carries the job
    task = ray.remote(_shard_task).options(num_cpus=task_cpus, max_retries=3, retry_exceptions=False,
                                           scheduling_strategy="SPREAD")
    staging = str(writer.staging)
    progress = _Progress(total_shards, len(done_before))
    pending: dict[Any, InputShard] = {}
    it = iter(shards)
    exhausted = False
    queue: list[InputShard] = []  # planned, not yet submitted (metadata only)
    shuffle = _BesideRun(beside, writer, total_cpus) if beside is not None else None
    try:
        while True:
            # plan ahead: enough shards for the free slots, and, while the index is being made, for its maps
            while not exhausted and (len(queue) < in_flight or (shuffle is not None and shuffle.wants_input())):
                shard = next(it, None)
                if shard is None:
                    exhausted = True
                    if shuffle is not None:
                        shuffle.planned_all()
                    break
                _check_resume(shard, done_before)
                if shuffle is not None:
                    shuffle.add(shard)
                if shard.shard_id not in done_before:
                    queue.append(shard)
            may_start = shuffle is None or shuffle.index is not None or beside.fix is not None
            while may_start and queue and len(pending) < in_flight:
                shard = queue.pop(0)
                if shuffle is not None:
                    shard = beside.mark(shard, shuffle.index)
                pending[task.remote(shard, pipeline.reader, pipeline.steps, staging, pools)] = shard
            if shuffle is not None:
                for result in shuffle.poll():  # corrected shards, once the index is complete
                    writer.add_shard(result)
            if not pending and (exhausted and not queue) and (shuffle is None or shuffle.finished()):
                break
            waiting = list(pending) + (shuffle.refs() if shuffle is not None else [])
            if waiting:
                ray.wait(waiting, num_returns=1, timeout=0.5)
            rows_progress.poll()
            ready = ray.wait(list(pending), num_returns=len(pending), timeout=0)[0] if pending else []
            for ref in ready:
                pending.pop(ref)
                result = _get(ref)
                if shuffle is not None:
                    result = shuffle.finished_shard(result)
                writer.add_shard(result)
                progress(result)
                rows_progress.finished(result)
    finally:
        rows_progress.close()
        for ref in pending:
            ray.cancel(ref, force=True)
        if shuffle is not None:
            shuffle.cancel()
        for actors in pools.values():
            for a in actors:
                ray.kill(a)
    return writer.shard_summary(pipeline.stage_names())


class _BesideRun:
    """A `Beside` shuffle in flight on the driver: its map tasks as shards are planned, its reduce tasks
    when planning is done, the index when they are, and the corrections of shards that ran before it."""

    def __init__(self, beside: Beside, writer: "DatasetWriter", cpus: float):
        import ray

        self.beside, self.writer = beside, writer
        self.started = time.monotonic()
        self.index = beside.load()  # a resumed run's
        self.parts = beside.partitions or max(2, int(2 * cpus))
        # no CPU reserved: the shard tasks hold every slot while they wait on the network, and the index must
        # not queue behind them; this driver bounds how many of its tasks run at once instead (max_maps maps,
        # then the reduces)
        self.map_task = ray.remote(_beside_map).options(num_returns=self.parts, max_retries=3, num_cpus=0)
        self.reduce_task = ray.remote(_beside_reduce).options(max_retries=3, num_cpus=0)
        self.fix_task = ray.remote(_fix_task).options(max_retries=3, num_cpus=0) if beside.fix is not None else None
        self.batch: list[InputShard] = []
        self.batch_rows = 0
        self.maps: list[list] = []
        self.reduces: list = []
        self.max_maps = max(2, int(cpus))
        self.unchecked: list[dict] = []  # results of shards that ran before the index
        self.fixes: dict[Any, int] = {}
        if self.index is not None:  # resumed with the index: shards of the interrupted run still to correct
            self.unchecked = [r for r in writer.shard_results() if not r.get("duplicates_checked")]

    def wants_input(self) -> bool:
        import ray

        if self.index is not None or self.reduces:
            return False
        running = [m[0] for m in self.maps[-2 * self.max_maps:]]
        busy = len(running) - len(ray.wait(running, num_returns=len(running), timeout=0)[0]) if running else 0
        return busy < self.max_maps

    def add(self, shard: InputShard) -> None:
        if self.index is not None:
            return
        self.batch.append(shard)
        self.batch_rows += shard.rows
        if self.batch_rows >= self.beside.map_rows:
            self._flush()

    def _flush(self) -> None:
        if self.batch:
            refs = self.map_task.remote(self.beside.keys, self.parts, *self.batch)
            self.maps.append(refs if self.parts > 1 else [refs])
            self.batch, self.batch_rows = [], 0

    def planned_all(self) -> None:
        if self.index is not None:
            return
        if not self.maps and self.batch_rows <= self.beside.local_rows:  # a small list: here, at once
            counts = _beside_local(self.beside, self.batch, time.monotonic() - self.started)
            log.info("index in the driver (%d rows): %d rows for %d shard(s)", self.batch_rows, sum(counts.values()), len(counts))
            self.index, self.batch, self.batch_rows = counts, [], 0
            return
        self._flush()
        self.reduces = [self.reduce_task.remote(self.beside.reduce, p, *(m[p] for m in self.maps)) for p in range(self.parts)]
        self.maps = []  # the reduce tasks hold them now

    def refs(self) -> list:
        return list(self.reduces) + list(self.fixes)

    def poll(self) -> list[dict]:
        import ray

        if self.index is None and self.reduces and len(ray.wait(self.reduces, num_returns=len(self.reduces), timeout=0)[0]) == len(self.reduces):
            counts: Counter = Counter()
            for ref in self.reduces:
                counts.update(_get(ref))
            self.reduces = []
            self.beside.save(dict(counts), time.monotonic() - self.started)
            self.index = dict(counts)
            log.info("index beside the pipeline: %d rows for %d shard(s)", sum(counts.values()), len(counts))
        out = []
        if self.index is not None:
            while self.unchecked:
                r = self.unchecked.pop()
                if self.index.get(int(r["shard_id"])) and self.fix_task is not None:
                    self.fixes[self.fix_task.remote(self.beside.fix, r)] = int(r["shard_id"])
                else:
                    out.append({**r, "duplicates_checked": True})
        if self.fixes:
            ready, _ = ray.wait(list(self.fixes), num_returns=len(self.fixes), timeout=0)
            for ref in ready:
                self.fixes.pop(ref)
                out.append(_get(ref))
        return out

    def finished_shard(self, result: dict) -> dict:
        if result.get("duplicates_checked"):
            return result
        if self.index is not None and not self.index.get(int(result["shard_id"])):
            return {**result, "duplicates_checked": True}
        self.unchecked.append(result)
        return result

    def finished(self) -> bool:
        return self.index is not None and not self.unchecked and not self.fixes

    def cancel(self) -> None:
        import ray

        for ref in [*self.reduces, *self.fixes]:
            ray.cancel(ref, force=True)


def _fix_task(fix, result: dict) -> dict:
    return fix(result)


def _get(ref):
    """ray.get, with a user's error (InputError) raised on the driver as itself, in one line,
    from however deep in the shard task or the actor it calls it came."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc
        while isinstance(cause, ray.exceptions.RayTaskError) and cause.cause is not None:
            cause = cause.cause
        if isinstance(cause, InputError):
            raise InputError(str(cause)) from None
        raise


class _Progress:
    """Log lines on long work: shards and rows done, rate, every few seconds."""

    def __init__(self, total: int | None, skipped: int, every: float = 5.0):
        self.total, self.done, self.rows = total, skipped, 0
        self.t0 = self.last = time.time()
        self.every = every
        if skipped:
            log.info("resume: %d input shard(s) already done", skipped)

    def __call__(self, result: dict) -> None:
        self.done += 1
        self.rows += result["rows_in"]
        now = time.time()
        if now - self.last >= self.every or (self.total and self.done == self.total):
            self.last = now
            of = f"/{self.total}" if self.total else ""
            rate = self.rows / max(now - self.t0, 1e-9)
            log.info("shards %d%s done, %d rows (%.0f rows/s)", self.done, of, self.rows, rate)


def run_remote(fn: Callable[..., Any], *args, cpus: float = 1.0, gpus: float = 0.0) -> Any:
    """`fn(*args)` as one Ray task (a global step between two pipeline passes, e.g. k-means over the
    embeddings that the first pass wrote); returns its result. A GPU is asked for only when the cluster has one."""
    import ray

    init_ray()
    resources = ray.cluster_resources()
    gpus = gpus if float(resources.get("GPU", 0.0)) >= gpus else 0.0
    task = ray.remote(fn).options(num_cpus=fit_cpus(cpus, float(resources.get("CPU", 1.0))), num_gpus=gpus, max_retries=1)
    return ray.get(task.remote(*args))


# ------------------------------------------------------------ a distributed group-by


def _partition(table: pa.Table, parts: int) -> list[pa.Table]:
    """`table` cut into `parts` tables by a hash of its `key` column (stable across processes)."""
    if parts == 1 or table.num_rows == 0:
        return [table] + [table.slice(0, 0)] * (parts - 1)
    import numpy as np

    key = table.column("key")
    if pa.types.is_integer(key.type):
        h = key.to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        bucket = (h >> np.uint64(33)) % np.uint64(parts)
    else:
        bucket = np.array([int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "little") % parts
                           for k in key.to_pylist()], dtype=np.uint64)
    return _split(table, bucket.astype(np.int64), parts)


def _split(table: pa.Table, part, parts: int) -> list[pa.Table]:
    """`table` cut into `parts` tables, row i into part[i] (numpy ints), order kept within each."""
    import numpy as np

    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=parts)
    table = table.take(pa.array(order))
    out, start = [], 0
    for n in counts:
        out.append(table.slice(start, int(n)))
        start += int(n)
    return out


def _group_map(shard: InputShard, reader, emit, parts: int) -> list[pa.Table]:
    emitted = [emit(b) for b in reader(shard)]
    emitted = [t for t in emitted if t is not None and t.num_rows]
    if not emitted:
        return [pa.table({"key": pa.array([], pa.int64())})] * parts
    return _partition(pa.concat_tables(emitted, promote_options="permissive"), parts)


def _group_reduce(reduce, *parts: pa.Table) -> pa.Table:
    parts = tuple(t for t in parts if t.num_rows)
    if not parts:
        return reduce(None)
    return reduce(pa.concat_tables(parts, promote_options="permissive"))


# input rows per reduce partition of `group_by_key` when the rows outnumber the cluster's CPUs
GROUP_ROWS = 500_000


def group_by_key(
    shards: Sequence[InputShard],
    reader: Callable[[InputShard], Iterator[pa.Table]],
    emit: Callable[[pa.Table], pa.Table | None],
    reduce: Callable[[pa.Table | None], pa.Table],
    partitions: int | None = None,
    executor: str = "ray",
) -> list[pa.Table]:
    """A group-by as a hash shuffle over Ray tasks; returns the reduce results (keep them small).

    map (one task per input shard): `emit(batch)` turns the shard's batches
    into rows with a `key` column (int or string), which are cut into
    `partitions` parts by a hash of the key (default: one per CPU of the
    cluster, or one per GROUP_ROWS input rows if more; at most two per
    input shard). reduce (one task per partition):
    `reduce(table)` gets every row of its keys (all of one key land in one
    partition; `None` when none came) and returns a table, e.g. the pairs its
    groups make. The map outputs stay in Ray's object store; the driver only
    submits tasks and receives the reduce results. `executor="local"` runs the
    same functions in this process (tests, small inputs).
    """
    shards = list(shards)
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be positive, got {partitions}")
    if executor == "local":
        partitions = partitions or 1
        mapped = [_group_map(s, reader, emit, partitions) for s in shards]
        return [_group_reduce(reduce, *(m[p] for m in mapped)) for p in range(partitions)]
    if executor != "ray":
        raise ValueError(f"unknown executor {executor!r}: ray or local")
    import ray

    if not shards:
        return [reduce(None)]
    if partitions is None:
        # a reduce task per CPU of the cluster, more when the rows are many (about GROUP_ROWS each)
        rows = sum(s.rows for s in shards)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        partitions = max(1, min(2 * len(shards), max(cpus, -(-rows // GROUP_ROWS))))
    map_task = ray.remote(_group_map).options(num_returns=partitions, max_retries=3)
    reduce_task = ray.remote(_group_reduce).options(max_retries=3)
    mapped = [map_task.remote(s, reader, emit, partitions) for s in shards]
    if partitions == 1:
        mapped = [[m] for m in mapped]
    refs = [reduce_task.remote(reduce, *(m[p] for m in mapped)) for p in range(partitions)]
    return ray.get(refs)


# ------------------------------------------------------------ shuffles whose results stay on the cluster


def _cut(table: pa.Table, parts: int, ranges: Sequence[int] | None) -> list[pa.Table]:
    """`table` into `parts` by a hash of `key`, or by `ranges` (part i: keys from ranges[i - 1] up to ranges[i])."""
    if ranges is None:
        return _partition(table, parts)
    import numpy as np

    if table.num_rows == 0:
        return [table] * parts
    key = table.column("key").to_numpy()
    return _split(table, np.searchsorted(np.asarray(ranges, dtype=np.int64), key, side="right"), parts)


def _shuffle_map(source, reader, emit, parts: int, ranges, side=None) -> list[pa.Table]:
    if reader is not None:
        batches = list(reader(source))
    else:
        batches = [source] if source is not None and source.num_rows else []
    emitted = [emit(b) if side is None else emit(b, side) for b in batches]
    emitted = [t for t in emitted if t is not None and t.num_rows]
    if not emitted:
        return [pa.table({"key": pa.array([], pa.int64())})] * parts
    return _cut(pa.concat_tables(emitted, promote_options="permissive"), parts, ranges)


def _shuffle_reduce(reduce, part: int, *pieces: pa.Table) -> tuple[pa.Table, dict]:
    pieces = tuple(p for t in pieces for p in (t if isinstance(t, list) else [t]) if p.num_rows)  # one part: a list
    table = pa.concat_tables(pieces, promote_options="permissive") if pieces else None
    out, stats = reduce(table, part)
    return out, stats


def shuffle(
    sources: Sequence[Any],
    emit: Callable[..., pa.Table | None],
    reduce: Callable[[pa.Table | None, int], tuple[pa.Table, dict]],
    partitions: int | None = None,
    *,
    reader: Callable[[Any], Iterator[pa.Table]] | None = None,
    side: Sequence[Any] | None = None,
    ranges: Sequence[int] | None = None,
    executor: str = "ray",
) -> tuple[list[Any], list[dict]]:
    """A shuffle whose results stay where they were made: returns (their handles, the reduce tasks' stats).

    map (one task per source): the source's tables are `reader(source)` (an
    input shard, or a group of them) or the source itself (a handle that an
    earlier shuffle returned); `emit(table)`, or `emit(table, side[i])` with a
    table given to the i-th source only, makes rows with an int64 `key`,
    cut into `partitions` parts by a hash of the key, or by `ranges` (sorted
    keys: part i holds the keys from ranges[i - 1] to below ranges[i]).
    reduce (one task per part): `reduce(table or None, part)` returns (table,
    small dict of counts). The tables stay in Ray's object store (lost ones
    are made again from their lineage; a failed task is retried); the
    driver receives the counts only, and passes the handles to the next
    shuffle. `executor="local"`: the same functions in this process, the
    handles are the tables.
    """
    sources = list(sources)
    if ranges is not None:
        partitions = len(ranges) + 1
    if not partitions or partitions < 1:
        raise ValueError(f"partitions must be positive, got {partitions}")
    sides = list(side) if side is not None else [None] * len(sources)
    if len(sides) != len(sources):
        raise ValueError(f"{len(sides)} side tables for {len(sources)} sources")
    if executor == "local":
        mapped = [_shuffle_map(s, reader, emit, partitions, ranges, x) for s, x in zip(sources, sides)]
        done = [_shuffle_reduce(reduce, p, *(m[p] for m in mapped)) for p in range(partitions)]
        return [t for t, _ in done], [st for _, st in done]
    if executor != "ray":
        raise ValueError(f"unknown executor {executor!r}: ray or local")
    import ray

    map_task = ray.remote(_shuffle_map).options(num_returns=partitions, max_retries=3)
    reduce_task = ray.remote(_shuffle_reduce).options(num_returns=2, max_retries=3)
    mapped = [map_task.remote(s, reader, emit, partitions, ranges, x) for s, x in zip(sources, sides)]
    if partitions == 1:
        mapped = [[m] for m in mapped]
    done = [reduce_task.remote(reduce, p, *(m[p] for m in mapped)) for p in range(partitions)]
    return [t for t, _ in done], ray.get([st for _, st in done])


def cluster_cpus(executor: str = "ray") -> int:
    """The CPUs of the Ray cluster (1 for the local executor)."""
    if executor != "ray":
        return 1
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


# ------------------------------------------------------------ a distributed fold


def _fold_shard(shard, reader, fold, finish=None):
    value = None
    for batch in reader(shard):
        value = fold(batch, value)
    return finish(shard, value) if finish is not None else value


def fold_shards(shards: Sequence[Any], reader: Callable[[Any], Iterator[pa.Table]],
                fold: Callable[[pa.Table, Any], Any], combine: Callable[[Any, Any], Any],
                executor: str = "ray", in_flight: int | None = None,
                finish: Callable[[Any, Any], Any] | None = None) -> Any:
    """A small value over every row: `fold(batch, value)` over each shard's batches in a task (value starts as
    None), then `finish(shard, value)` in the task when given (e.g. it writes what the shard gathered to a
    file of its own and returns counts), the shards' values `combine`d on the driver as they come (None
    where a shard had no rows; at most `in_flight` tasks at once, by default 2 per CPU), so the driver
    holds one value and a few in transit: counts and histograms, never a column. A failed task is retried
    (a `finish` that writes must write whole files, so a retry writes the same)."""
    shards = list(shards)
    total = None
    if executor == "local":
        for s in shards:
            v = _fold_shard(s, reader, fold, finish)
            total = v if total is None else (total if v is None else combine(total, v))
        return total
    if executor != "ray":
        raise ValueError(f"unknown executor {executor!r}: ray or local")
    import ray

    task = ray.remote(_fold_shard).options(max_retries=3)
    limit = in_flight or 2 * cluster_cpus(executor)
    pending: list = []
    queue = iter(shards)
    for s in queue:
        pending.append(task.remote(s, reader, fold, finish))
        if len(pending) >= limit:
            break
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        v = ray.get(ready[0])
        total = v if total is None else (total if v is None else combine(total, v))
        nxt = next(queue, None)
        if nxt is not None:
            pending.append(task.remote(nxt, reader, fold, finish))
    return total

"""The dataset directory: Parquet shards per table, rejects, and the manifest.

    OUT/
      records/part-00000.parquet ...
      samples/part-00000.parquet ...
      rejects/part-00000.parquet ...
      manifest.json      written last and atomically

A shard is written under a temporary name and renamed when complete; the
manifest lists every complete shard with its rows, bytes and sha256, and is
itself written to a temporary file and renamed. Readers trust only the shards
the manifest lists, so a crash never exposes a half-written shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import InputError
from curation.schema import SCHEMA_VERSION, TABLE_SCHEMAS, conform

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "DEFAULT_ROW_GROUP_ROWS",
    "ShardInfo",
    "ShardWriter",
    "StageCounts",
    "DatasetWriter",
    "Dataset",
    "ManifestError",
]

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
DEFAULT_ROW_GROUP_ROWS = 1024
MANIFEST = "manifest.json"


class ManifestError(InputError):
    """The directory has no readable manifest."""


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the dataset directory
    rows: int
    bytes: int
    sha256: str


def _sha256_file(path: Path) -> str:
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
    ):
        if target_bytes <= 0:
            raise ValueError(f"target shard size must be positive, got {target_bytes}")
        self.root = Path(root)
        self.table = table
        self.schema = schema if schema is not None else TABLE_SCHEMAS[table]
        self.target_bytes = target_bytes
        self.row_group_rows = row_group_rows
        self.shards: list[ShardInfo] = []
        self._buffer: list[pa.Table] = []
        self._buffered_bytes = 0
        (self.root / table).mkdir(parents=True, exist_ok=True)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards) + sum(t.num_rows for t in self._buffer)

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
        name = f"part-{len(self.shards):05d}.parquet"
        final = self.root / self.table / name
        tmp = final.with_name(f".{name}.tmp")
        pq.write_table(table, tmp, row_group_size=self.row_group_rows, compression="zstd")
        os.replace(tmp, final)
        self.shards.append(
            ShardInfo(
                path=f"{self.table}/{name}",
                rows=table.num_rows,
                bytes=final.stat().st_size,
                sha256=_sha256_file(final),
            )
        )
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


class DatasetWriter:
    """Owns one output directory: a ShardWriter per table, stage counts, the manifest."""

    def __init__(self, out: Path | str, target_shard_bytes: int = DEFAULT_SHARD_BYTES, overwrite: bool = True):
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{self.out}: output directory is not empty")
            self._clear()
        self.out.mkdir(parents=True, exist_ok=True)
        self.target_shard_bytes = target_shard_bytes
        self.writers: dict[str, ShardWriter] = {}
        self.stages: dict[str, StageCounts] = {}
        self.timings: dict[str, float] = {}
        self.started = time.time()

    def _clear(self) -> None:
        # Remove what an earlier run left: the manifest first, so that a crash
        # half-way through leaves a directory no reader trusts.
        manifest = self.out / MANIFEST
        if manifest.exists():
            manifest.unlink()
        for table in TABLE_SCHEMAS:
            d = self.out / table
            if d.is_dir():
                for p in d.iterdir():
                    if p.name.endswith(".parquet") or p.name.endswith(".tmp"):
                        p.unlink()

    def writer(self, table: str) -> ShardWriter:
        if table not in self.writers:
            self.writers[table] = ShardWriter(self.out, table, target_bytes=self.target_shard_bytes)
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

    def close(self, config: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict:
        tables = {}
        for name, w in self.writers.items():
            shards = w.close()
            tables[name] = {
                "rows": sum(s.rows for s in shards),
                "bytes": sum(s.bytes for s in shards),
                "shards": [s.__dict__ for s in shards],
            }
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
        if extra:
            manifest.update(extra)
        tmp = self.out / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str))
        os.replace(tmp, self.out / MANIFEST)
        return manifest


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
    """Read side of a dataset directory; trusts only manifest-listed shards."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not self.path.is_dir():
            raise ManifestError(f"{self.path}: no such dataset directory")
        if not mpath.is_file():
            raise ManifestError(f"{mpath}: missing; not a finished dataset directory")
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{mpath}: unreadable manifest: {exc}") from exc

    def tables(self) -> list[str]:
        return list(self.manifest.get("tables", {}))

    def shard_paths(self, table: str) -> list[Path]:
        info = self.manifest.get("tables", {}).get(table)
        if info is None:
            return []
        return [self.path / s["path"] for s in info["shards"]]

    def rows(self, table: str) -> int:
        return int(self.manifest.get("tables", {}).get(table, {}).get("rows", 0))

    def schema(self, table: str) -> pa.Schema:
        return TABLE_SCHEMAS[table]

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        paths = self.shard_paths(table)
        schema = TABLE_SCHEMAS.get(table)
        if not paths:
            empty = schema.empty_table() if schema is not None else pa.table({})
            return empty.select(columns) if columns else empty
        tables = [pq.read_table(p, columns=columns) for p in paths]
        return pa.concat_tables(tables)

    def iter_batches(self, table: str, batch_size: int = 1024, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        for p in self.shard_paths(table):
            yield from pq.ParquetFile(p).iter_batches(batch_size=batch_size, columns=columns)


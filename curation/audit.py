"""Audit: DuckDB over a dataset directory, local or on object storage.

Views `records`, `samples`, `rejects` (and `sequences` when the build packed)
read exactly the shards that the manifest lists, so a half-written shard of a
crashed run is never seen. A listed shard that is missing, or whose rows or
size are not the manifest's, is an InputError naming the file, before DuckDB
reads it.

The connection reaches nothing else: DuckDB's external access is off except
for the listed shards (`allowed_paths`) and any paths the caller allows
(`allow`: files or directories, e.g. `curate sql --allow-path`); extensions
are neither installed nor loaded on demand (no `httpfs` fetched from the
internet for an `http://` path); and the configuration is locked, so a query
cannot `SET` its way out. `read_csv('/etc/passwd')` or `COPY ... TO '/tmp/x'`
is a permission error. A dataset at an fsspec URL (`s3://bucket/prefix`) is
read through that fsspec filesystem, registered with DuckDB
(`register_filesystem`; no `httpfs` extension); the same allow-list holds, so a
query reaches the dataset's listed objects and nothing else (no other bucket,
prefix, local file or URL).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from curation.storage.dataset import Dataset
from curation.errors import InputError
from curation.schema import TABLE_SCHEMAS

__all__ = ["check_shards", "connect", "query"]


def check_shards(ds: Dataset, tables: Iterable[str] | None = None) -> None:
    """InputError (ShardError) naming the first manifest-listed shard that is missing, or differs
    from the manifest in its row count or size; a footer and a stat per shard, no data read."""
    for table in tables if tables is not None else ds.tables():
        ds.shard_paths(table)


def _shard_error(ds: Dataset, exc: Exception) -> InputError | None:
    """DuckDB's read error as one line naming the shard at fault; None for an error of the query itself.

    DuckDB names the file when it cannot open it or finds no Parquet footer;
    when it does not (a damaged footer of the right size), each shard's footer
    is read with pyarrow to find the one at fault.
    """
    import duckdb

    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    shards = [p for table in TABLE_SCHEMAS for p in ds.shard_paths(table)]
    for p in shards:
        if str(p) in str(exc):
            return InputError(f"{p}: unreadable Parquet shard: {msg}")
    if isinstance(exc, (duckdb.ProgrammingError, duckdb.DataError)) or not (
        type(exc) is duckdb.Error or isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException, duckdb.InternalException))
    ):
        return None
    from curation.storage.fs import parquet_file

    for p in shards:
        try:
            parquet_file(str(p)).metadata
        except Exception as bad:  # noqa: BLE001 - whatever the footer parser raises, the file is at fault
            first = str(bad).strip().splitlines()[0] if str(bad).strip() else type(bad).__name__
            return InputError(f"{p}: unreadable Parquet shard: {first}")
    return InputError(f"{ds.path}: a shard is unreadable ({msg}); compare the shards with the sha256 in manifest.json")


def connect(path: Path | str, allow: Sequence[Path | str] = ()):
    """A locked-down DuckDB connection with one view per table of the dataset at `path`.

    It may read the dataset's listed shards and the files or directories in `allow`, nothing else.
    """
    return _connect(Dataset(path), allow)


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _locked_down(ds: Dataset, allow: Sequence[Path | str]):
    import duckdb

    shards = [str(p) for table in TABLE_SCHEMAS for p in ds.shard_paths(table)]
    dirs, files = [], list(shards)
    for a in allow:
        p = os.path.abspath(os.path.expanduser(str(a)))
        if os.path.isdir(p):
            dirs.append(p.rstrip("/") + "/")
        else:
            files.append(p)
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    if not ds.local:  # a dataset on object storage: DuckDB reads it through the same fsspec filesystem
        from curation.storage.fs import filesystem

        con.register_filesystem(filesystem(str(ds.path))[0])
    if files:
        con.execute(f"set allowed_paths = {_sql_list(files)}")
    if dirs:
        con.execute(f"set allowed_directories = {_sql_list(dirs)}")
    con.execute("set enable_external_access = false")
    con.execute("set lock_configuration = true")
    return con


def _connect(ds: Dataset, allow: Sequence[Path | str] = ()):
    import duckdb

    check_shards(ds, [t for t in TABLE_SCHEMAS if t in ds.tables()])
    con = _locked_down(ds, allow)
    for table in TABLE_SCHEMAS:
        paths = ds.shard_paths(table)
        if paths:
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
            try:
                con.execute(f"create view {table} as select * from read_parquet([{files}], union_by_name = true)")
            except duckdb.Error as exc:
                raise (_shard_error(ds, exc) or InputError(f"{ds.path}: cannot read the {table} shards: {str(exc).splitlines()[0]}")) from None
        elif table in ("records", "samples", "rejects"):
            con.register(f"_{table}_empty", TABLE_SCHEMAS[table].empty_table())
            con.execute(f"create view {table} as select * from _{table}_empty")
    return con


def query(path: Path | str, sql: str, allow: Sequence[Path | str] = ()):
    """(column names, rows) of `sql` over the dataset at `path` (reading nothing else but `allow`)."""
    import duckdb

    ds = Dataset(path)
    con = _connect(ds, allow)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall()
    except duckdb.PermissionException as exc:
        raise InputError(f"SQL refused: {str(exc).splitlines()[0]} (curate sql reads only the dataset's shards; "
                         "--allow-path PATH allows more)") from None
    except duckdb.Error as exc:
        raise (_shard_error(ds, exc) or InputError(f"SQL error: {str(exc).splitlines()[0]}")) from None
    return cols, rows

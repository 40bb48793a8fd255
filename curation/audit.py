"""Audit: DuckDB over a dataset directory.

Views `records`, `samples`, `rejects` (and `sequences` when the build packed)
read exactly the shards that the manifest lists, so a half-written shard of a
crashed run is never seen.
"""

from __future__ import annotations

from pathlib import Path

from curation.dataset import Dataset
from curation.errors import InputError
from curation.schema import TABLE_SCHEMAS

__all__ = ["connect", "query"]


def connect(path: Path | str):
    """A DuckDB connection with one view per table of the dataset at `path`."""
    import duckdb

    ds = Dataset(path)
    con = duckdb.connect()
    for table in TABLE_SCHEMAS:
        paths = ds.shard_paths(table)
        if paths:
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
            con.execute(f"create view {table} as select * from read_parquet([{files}], union_by_name = true)")
        elif table in ("records", "samples", "rejects"):
            con.register(f"_{table}_empty", TABLE_SCHEMAS[table].empty_table())
            con.execute(f"create view {table} as select * from _{table}_empty")
    return con


def query(path: Path | str, sql: str):
    """(column names, rows) of `sql` over the dataset at `path`."""
    import duckdb

    con = connect(path)
    try:
        cur = con.execute(sql)
    except duckdb.Error as exc:
        raise InputError(f"SQL error: {str(exc).splitlines()[0]}") from None
    cols = [d[0] for d in cur.description] if cur.description else []
    return cols, cur.fetchall()

"""URL lists as users have them: planned from metadata, read slice by slice, duplicates found on the cluster.

A URL list is one or more files (parquet, csv, tsv, jsonl), named as a file, a
folder, a glob or several of them, local or at any fsspec URL (`curation.storage.fs`).

**Planning** (`UrlList.shards`, on the driver) reads Parquet footers only, file
by file, lazily: input shards of about `rows_per_shard` rows are whole row
groups, or an even piece of a row group larger than that, never spanning two
files. Shard ids count shards in file order, so they depend on the list and
`rows_per_shard` only. A text file (csv, tsv, jsonl) is first turned into a
Parquet file of `rows_per_shard`-row groups in the staging folder by one task
(`text_to_parquet`): its rows are counted there, not on the driver. The driver
never holds a URL, a caption or a record id.

**Record ids**: `SOURCE:ROW` (row number from 0) for a list of one file;
`SOURCE:LABEL:ROW` for several, LABEL being the file's path relative to the
folder that holds them all, without its suffix (`curation.storage.fs.expand`);
`SOURCE:ID` with an id column, whatever the files. They depend on the files and
their rows, never on the workers or the shard size.

**Reading** (`read_slice`, inside a shard's task) opens the shard's file,
reads its rows' columns and gives the table the download uses: `record_id`,
`url`, `caption`, `meta` and annotation columns as JSON text.

**Duplicate URLs** (a shuffle over Ray tasks, `curation.runner.Beside`): each
map task reads the normalised URLs of a few shards (`url_keys`), hashed by
DuckDB's `hash` to partitions; each reduce task sorts its partition and marks
every row whose normalised URL an earlier row (in list order) has
(`mark_duplicates`), writing them to `STAGING/url-duplicates/part-P.parquet`
and returning counts per shard. Shards that start after that know their
duplicates and do not fetch them; `curate download` does not wait for it, and a
shard that finished before is corrected after (`fix_shard`): its duplicate rows
become `duplicate_url` rejects naming the earliest row, and the manifest counts
them as `duplicate_urls_fetched`. With an id column, the same shuffle finds ids
used twice (an input error naming both rows).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import InputError
from curation.schema import STRUCTURED_ANNOTATIONS
from curation.storage import fs as storage

__all__ = [
    "URL_LIST_FORMATS",
    "UrlColumns",
    "UrlList",
    "read_slice",
    "text_to_parquet",
    "url_keys",
    "mark_duplicates",
    "shard_duplicates",
    "fix_shard",
    "DUPLICATES_DIR",
    "read_url_list",
]

log = logging.getLogger(__name__)

URL_LIST_FORMATS = (".parquet", ".csv", ".tsv", ".jsonl")
DUPLICATES_DIR = "url-duplicates"  # in the output's staging: the reduce tasks' parts and index.json
# rows per shard of a map task of the duplicate shuffle (several shards per task: fewer objects)
MAP_ROWS = 500_000
TEXT_COUNT_BYTES = 8 << 20  # UrlList.fits counts the lines of a text file up to this size
FITS_MAX_FILES = 64  # and looks at no more files than this (a list of more parts is no small job)


@dataclass(frozen=True)
class UrlColumns:
    """Which columns of the list hold what, and the record ids' source."""

    source: str
    url_col: str = "url"
    caption_col: str | None = "caption"
    id_col: str | None = None

    def needed(self) -> list[str]:
        return [c for c in (self.url_col, self.caption_col, self.id_col) if c]


# ------------------------------------------------------------ files


def open_parquet(url: str) -> pq.ParquetFile:
    """A Parquet file at a local path or fsspec URL, footer read; InputError naming it when it cannot be."""
    try:
        if storage.is_local(url):
            return pq.ParquetFile(url)
        fs, path = storage.filesystem(url)
        return pq.ParquetFile(fs.open(path, "rb"))
    except (pa.ArrowInvalid, pa.ArrowIOError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise InputError(storage.describe_error(url, exc)) from None
        raise InputError(f"{url}: not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(storage.describe_error(url, exc)) from None


def _text_reader(url: str, suffix: str):
    """A streaming reader of a csv / tsv / jsonl file: batches of rows."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    fs, path = storage.filesystem(url)
    f = fs.open(path, "rb")
    if suffix == ".jsonl":
        return pajson.open_json(f)
    parse = pacsv.ParseOptions(delimiter="\t") if suffix == ".tsv" else None
    return pacsv.open_csv(f, parse_options=parse)


def text_to_parquet(url: str, out_url: str, rows_per_group: int) -> int:
    """A csv / tsv / jsonl URL list as one Parquet file of `rows_per_group`-row groups at `out_url` (in a task);
    returns its rows."""
    suffix = storage._suffix(url)
    try:
        reader = _text_reader(url, suffix)
        fs, path = storage.filesystem(out_url)
        fs.makedirs(storage.posixpath.dirname(path), exist_ok=True)
        rows = 0
        pending: list[pa.RecordBatch] = []
        n = 0
        with fs.open(path + ".tmp", "wb") as f:
            writer = pq.ParquetWriter(f, reader.schema)
            for batch in reader:
                pending.append(batch)
                n += batch.num_rows
                while n >= rows_per_group:
                    table = pa.Table.from_batches(pending)
                    writer.write_table(table.slice(0, rows_per_group), row_group_size=rows_per_group)
                    rest = table.slice(rows_per_group)
                    pending, n = rest.to_batches(), rest.num_rows
                    rows += rows_per_group
            if n:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=rows_per_group)
                rows += n
            writer.close()
        fs.mv(path + ".tmp", path)
        return rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{url}: unreadable {suffix[1:]} URL list: {str(exc).splitlines()[0]}") from None


def _schema(file: storage.InputFile) -> pa.Schema:
    if file.suffix == ".parquet":
        return open_parquet(file.url).schema_arrow
    try:
        return _text_reader(file.url, file.suffix).schema
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise InputError(storage.describe_error(file.url, exc)) from None
        raise InputError(f"{file.url}: unreadable {file.suffix[1:]} URL list: {str(exc).splitlines()[0]}") from None


def check_columns(url: str, names: Sequence[str], columns: UrlColumns) -> None:
    for role, col in (("URL", columns.url_col), ("caption", columns.caption_col), ("id", columns.id_col)):
        if col and col not in names:
            raise InputError(f"{url}: no {role} column {col!r} (columns: {', '.join(names)})")


class UrlList:
    """The files of a URL list and the input shards they make (`shards`); nothing of their rows."""

    def __init__(self, specs: Sequence[str] | str, columns: UrlColumns):
        self.columns = columns
        self.files = storage.expand(specs, URL_LIST_FORMATS, "URL list")

    def check(self) -> None:
        """The first file's columns (the others are checked as planning reaches them)."""
        first = self.files[0]
        check_columns(first.url, _schema(first).names, self.columns)

    def fits(self, limit: int) -> bool:
        """Whether the list has at most `limit` rows, from the Parquet files' footers (a text file: its lines,
        when it is small enough to count them here). Stops at the first file past the limit."""
        if len(self.files) > FITS_MAX_FILES:
            return False
        rows = 0
        for file in self.files:
            if file.suffix == ".parquet":
                rows += open_parquet(file.url).metadata.num_rows
            else:
                size = file.size if file.size is not None else storage.file_size(file.url)
                if size is None or size > TEXT_COUNT_BYTES:
                    return False
                with storage.open_file(file.url) as f:
                    rows += f.read().count(b"\n") + 1  # an upper bound: a header, a last line without its newline
            if rows > limit:
                return False
        return True

    def shards(self, rows_per_shard: int, staging: str, convert=None) -> Iterator["InputShard"]:
        """Input shards, file by file, from footers. `convert(fn, *args)` runs a text file's conversion
        (`text_to_parquet`) as a task (default: here)."""
        from curation.runner import InputShard

        if rows_per_shard <= 0:
            raise InputError(f"rows per shard must be positive, got {rows_per_shard}")
        convert = convert or (lambda fn, *args: fn(*args))
        k = 0
        for i, file in enumerate(self.files):
            url = file.url
            if file.suffix != ".parquet":
                url = storage.join(staging, "inputs", f"file-{i:05d}.parquet")
                convert(text_to_parquet, file.url, url, rows_per_shard)
            pf = open_parquet(url)
            check_columns(file.url, pf.schema_arrow.names, self.columns)
            meta = pf.metadata
            first = 0
            groups: list[int] = []
            n = 0

            def shard(groups, skip, rows, first):
                return InputShard(k, url, tuple(groups), rows, first, skip=skip, label=file.label, source_url=file.url)

            for g in range(meta.num_row_groups):
                size = meta.row_group(g).num_rows
                if size > rows_per_shard:  # a large row group: even pieces of it
                    if groups:
                        yield shard(groups, 0, n, first)
                        k, first, groups, n = k + 1, first + n, [], 0
                    pieces = -(-size // rows_per_shard)
                    for p in range(pieces):
                        lo, hi = size * p // pieces, size * (p + 1) // pieces
                        yield shard([g], lo, hi - lo, first + lo)
                        k += 1
                    first += size
                    continue
                groups.append(g)
                n += size
                if n >= rows_per_shard:
                    yield shard(groups, 0, n, first)
                    k, first, groups, n = k + 1, first + n, [], 0
            if groups and n:
                yield shard(groups, 0, n, first)
                k += 1


# ------------------------------------------------------------ one shard's rows


def read_columns(shard, columns: Sequence[str] | None) -> pa.Table:
    """Rows `shard.first_row ..` of the shard's file: its row groups, `shard.skip` rows in, `shard.rows` rows."""
    pf = open_parquet(shard.path)
    names = pf.schema_arrow.names
    cols = [c for c in columns if c in names] if columns is not None else None
    groups = list(shard.row_groups) if shard.row_groups is not None else list(range(pf.num_row_groups))
    skip, want = shard.skip, shard.rows
    parts: list[pa.RecordBatch] = []
    if groups:
        for rb in pf.iter_batches(batch_size=65_536, row_groups=groups, columns=cols):
            if skip >= rb.num_rows:
                skip -= rb.num_rows
                continue
            rb = rb.slice(skip, want)
            skip = 0
            parts.append(rb)
            want -= rb.num_rows
            if want <= 0:
                break
    schema = pf.schema_arrow if cols is None else pa.schema([pf.schema_arrow.field(c) for c in cols])
    return pa.Table.from_batches(parts, schema=schema)


def record_ids(shard, n: int, columns: UrlColumns, ids: pa.ChunkedArray | None = None) -> pa.Array:
    """The record ids of a shard's rows (see the module's docstring)."""
    if ids is not None:
        joined = pc.binary_join_element_wise(pa.scalar(columns.source), ids, ":")
        return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined
    rows = pc.cast(pa.array(np.arange(shard.first_row, shard.first_row + n, dtype=np.int64)), pa.string())
    prefix = f"{columns.source}:{shard.label}" if shard.label is not None else columns.source
    return pc.binary_join_element_wise(pa.scalar(prefix), rows, ":")


def _text(shard, table: pa.Table, col: str) -> pa.ChunkedArray:
    try:
        return pc.cast(table.column(col), pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{shard.source_url or shard.path}: column {col!r} of type {table.column(col).type} is not text: "
                         f"{str(exc).splitlines()[0]}") from None


def _ids(shard, table: pa.Table, columns: UrlColumns) -> pa.ChunkedArray | None:
    if not columns.id_col:
        return None
    ids = _text(shard, table, columns.id_col)
    if ids.null_count:
        first = pc.index(pc.is_null(ids), True).as_py()
        raise InputError(f"{shard.source_url or shard.path}: row {shard.first_row + first + 1}: column "
                         f"{columns.id_col!r} is empty ({ids.null_count} empty ids in rows "
                         f"{shard.first_row + 1}-{shard.first_row + table.num_rows})")
    return ids


def read_slice(shard, columns: UrlColumns) -> pa.Table:
    """The shard's rows as the download reads them: `record_id`, `url`, `caption`, `meta`, annotations (JSON)."""
    wanted = [*columns.needed(), "meta", *STRUCTURED_ANNOTATIONS]
    table = read_columns(shard, wanted)
    check_columns(shard.source_url or shard.path, table.column_names, columns)
    n = table.num_rows
    ids = record_ids(shard, n, columns, _ids(shard, table, columns))
    captions = _text(shard, table, columns.caption_col) if columns.caption_col else pa.nulls(n, pa.string())
    meta = _text(shard, table, "meta") if "meta" in table.column_names else pa.nulls(n, pa.string())
    out = {"record_id": ids, "url": _text(shard, table, columns.url_col), "caption": captions, "meta": meta}
    for col in STRUCTURED_ANNOTATIONS:  # a URL list may carry them as JSON or Arrow lists
        if col in table.column_names:
            out[col] = _annotation_json(shard, table, col)
    return pa.table(out)


def _annotation_json(shard, table: pa.Table, col: str) -> pa.Array:
    """An annotation column as JSON text (checked here, parsed after download)."""
    values = table.column(col).to_pylist()
    typ = table.column(col).type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        for i, v in enumerate(values):
            if v is None:
                continue
            where = f"{shard.source_url or shard.path}: row {shard.first_row + i + 1}, column {col!r}"
            try:
                parsed = json.loads(v)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: invalid JSON: {exc.msg}") from None
            if not isinstance(parsed, list):
                raise InputError(f"{where}: expected a JSON list")
        return pa.array(values, pa.string())
    return pa.array([json.dumps(v) if v is not None else None for v in values], pa.string())


# ------------------------------------------------------------ duplicates, as a shuffle

URL_KEY, ID_KEY = 0, 1


_DUCK: list = []  # one in-memory DuckDB per process: a connection costs 20 ms, a hash of 10k URLs 1 ms
_DUCK_LOCK = threading.Lock()


def _hash(kind: int, values: pa.Array) -> pa.Array:
    """A 64-bit hash of (kind, value), the same in every process of a job (DuckDB's `hash`)."""
    import duckdb

    with _DUCK_LOCK:
        if not _DUCK:
            _DUCK.append(duckdb.connect())
        t = pa.table({"v": values})
        h = _DUCK[0].sql(f"SELECT hash({int(kind)}, v) AS h FROM t").to_arrow_table().column(0)
    return pc.cast(h, pa.int64(), safe=False)


@dataclass(frozen=True)
class UrlKeys:
    """The map side of the duplicate shuffle: a shard's normalised URLs (and ids) as key rows."""

    columns: UrlColumns

    def __call__(self, shard) -> Iterator[pa.Table]:
        from curation.crawl.netpolicy import normalize_urls

        cols = [self.columns.url_col] + ([self.columns.id_col] if self.columns.id_col else [])
        table = read_columns(shard, cols)
        check_columns(shard.source_url or shard.path, table.column_names,
                      dataclasses.replace(self.columns, caption_col=None))
        n = table.num_rows
        ids = _ids(shard, table, self.columns)
        rids = record_ids(shard, n, self.columns, ids)
        urls = normalize_urls(_text(shard, table, self.columns.url_col))
        offsets = pa.array(np.arange(n, dtype=np.int32))
        parts = []
        valid = pc.and_(pc.is_valid(urls), pc.not_equal(pc.utf8_trim_whitespace(urls), ""))
        valid = pc.fill_null(valid, False)
        keyed = [(URL_KEY, urls, valid)]
        if ids is not None:
            keyed.append((ID_KEY, ids.combine_chunks(), None))
        for kind, values, mask in keyed:
            t = pa.table({"value": values, "offset": offsets, "record_id": rids})
            if mask is not None:
                t = t.filter(mask)
            t = t.append_column("key", _hash(kind, t.column("value")))
            t = t.append_column("kind", pa.array([kind] * t.num_rows, pa.int8()))
            t = t.append_column("shard_id", pa.array([shard.shard_id] * t.num_rows, pa.int32()))
            if kind == ID_KEY:  # where, for the error that names an id used twice
                t = t.append_column("row", pa.array(np.arange(shard.first_row, shard.first_row + n, dtype=np.int64)))
                t = t.append_column("file", pa.array([shard.source_url or shard.path] * n, pa.string()))
            parts.append(t)
        yield pa.concat_tables(parts, promote_options="permissive")


def mark_duplicates(rows: pa.Table | None) -> pa.Table:
    """Rows of one partition (key rows of every shard) -> one row per duplicate URL: `shard_id`,
    `record_id`, `duplicate_of` (the record of the earliest row with that normalised URL, in list order).
    An id used twice is an InputError naming both records."""
    import numpy as np

    empty = pa.table({"shard_id": pa.array([], pa.int32()), "record_id": pa.array([], pa.string()),
                      "duplicate_of": pa.array([], pa.string())})
    if rows is None or rows.num_rows == 0:
        return empty
    order = pc.sort_indices(rows, sort_keys=[("kind", "ascending"), ("value", "ascending"),
                                             ("shard_id", "ascending"), ("offset", "ascending")])
    rows = rows.take(order)
    kind = rows.column("kind").to_numpy()
    values = rows.column("value").combine_chunks()
    same = np.zeros(rows.num_rows, dtype=bool)
    if rows.num_rows > 1:
        eq = pc.equal(values.slice(1), values.slice(0, rows.num_rows - 1)).to_numpy(zero_copy_only=False)
        same[1:] = eq & (kind[1:] == kind[:-1])
    if not same.any():
        return empty
    starts = np.flatnonzero(~same)
    group_first = starts[np.cumsum(~same) - 1]  # for every row, the index of its group's first row
    dup = np.flatnonzero(same)
    rids = rows.column("record_id").combine_chunks()
    if (kind[dup] == ID_KEY).any():
        i = int(dup[kind[dup] == ID_KEY][0])
        j = int(group_first[i])
        row, file = rows.column("row"), rows.column("file")
        raise InputError(f"{file[i].as_py()}: row {row[i].as_py() + 1}: id {values[i].as_py()!r} is used twice "
                         f"(first in row {row[j].as_py() + 1} of {file[j].as_py()}); ids must be unique across the URL list")
    out = pa.table({
        "shard_id": rows.column("shard_id").take(pa.array(dup)),
        "record_id": rids.take(pa.array(dup)),
        "duplicate_of": rids.take(pa.array(group_first[dup])),
    })
    return out.take(pc.sort_indices(out, sort_keys=[("shard_id", "ascending"), ("record_id", "ascending")]))


@dataclass(frozen=True)
class DuplicatesReduce:
    """The reduce side: mark a partition's duplicates, write them to `folder`/part-P.parquet (sorted by
    shard, row groups of a few shards), return {shard_id: duplicates}."""

    folder: str

    def __call__(self, partition: int, rows: pa.Table | None) -> dict:
        out = mark_duplicates(rows)
        url = storage.join(self.folder, f"part-{partition:05d}.parquet")
        fs, path = storage.filesystem(url)
        fs.makedirs(storage.posixpath.dirname(path), exist_ok=True)
        with fs.open(path, "wb") as f:
            pq.write_table(out, f, row_group_size=8192)
        counts = pc.value_counts(out.column("shard_id")).to_pylist() if out.num_rows else []
        return {int(c["values"]): int(c["counts"]) for c in counts}


def shard_duplicates(folder: str, shard_id: int) -> pa.Table:
    """The duplicate rows of one shard (`record_id`, `duplicate_of`), from every partition's part."""
    fs, path = storage.filesystem(folder)
    files = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
    parts = []
    for p in files:
        url = p if storage.is_local(folder) else fs.unstrip_protocol(p)
        t = pq.read_table(url if storage.is_local(folder) else fs.open(p, "rb"),
                          filters=[("shard_id", "=", shard_id)], columns=["record_id", "duplicate_of"])
        if t.num_rows:
            parts.append(t)
    if not parts:
        return pa.table({"record_id": pa.array([], pa.string()), "duplicate_of": pa.array([], pa.string())})
    return pa.concat_tables(parts)


LATE_DETAIL = "same URL as {}, found after it was fetched"


def fix_shard(result: dict, staging: str, folder: str, stage: str = "download") -> dict:
    """A finished download shard whose duplicates were found after it ran: every row of a duplicate URL
    (a record, or a download reject) becomes a `duplicate_url` reject naming the earliest row; returns
    the shard's new result, its counts taken from the files written. Idempotent, so a correction that was
    killed is redone: the rejects part is rewritten first (a reject already there is not added twice),
    then the records part."""
    from curation.reasons import DUPLICATE_URL
    from curation.runner import read_part, rewrite_part
    from curation.schema import rejects_from_pylist

    shard_id = int(result["shard_id"])
    dups = shard_duplicates(folder, shard_id)
    if dups.num_rows == 0:
        return {**result, "duplicates_checked": True}
    of = dict(zip(dups.column("record_id").to_pylist(), dups.column("duplicate_of").to_pylist()))
    files = {f["path"].split("/", 1)[0]: f for f in result["files"]}

    def relabel(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for r in rows:
            if r["record_id"] in of and r["stage"] == stage and r["reason"] != DUPLICATE_URL:
                r["reason"], r["detail"] = DUPLICATE_URL, LATE_DETAIL.format(of[r["record_id"]])
        return rejects_from_pylist(rows) if rows else table

    records = read_part(staging, files.get("records"), ["record_id"], missing_ok=True)
    gone = [r for r in (records.column(0).to_pylist() if records is not None else []) if r in of]
    extra = rejects_from_pylist([{"record_id": r, "stage": stage, "reason": DUPLICATE_URL,
                                  "detail": LATE_DETAIL.format(of[r])} for r in gone]) if gone else None
    new = dict(files)
    new["rejects"] = rewrite_part(staging, "rejects", shard_id, files.get("rejects"), relabel, extra)
    if "records" in files:
        new["records"] = rewrite_part(staging, "records", shard_id, files["records"],
                                      lambda t: t.filter(pc.invert(pc.is_in(t.column("record_id"), pa.array(list(of))))))
    rejects = read_part(staging, new["rejects"], ["stage", "reason", "detail"])
    mine = rejects.filter(pc.equal(rejects.column("stage"), stage)) if rejects is not None else None
    dropped = {c["values"]: c["counts"] for c in pc.value_counts(mine.column("reason")).to_pylist()} if mine is not None else {}
    late = int(pc.sum(pc.ends_with(mine.column("detail"), "found after it was fetched")).as_py() or 0) if mine is not None else 0
    stages = json.loads(json.dumps(result["stages"]))
    s = stages.setdefault(stage, {"in": result["rows_in"], "out": 0, "dropped": {}, "seconds": 0.0})
    s["out"] = new["records"]["rows"] if new.get("records") else 0
    s["dropped"] = dict(sorted(dropped.items()))
    return {**result, "files": [f for f in new.values() if f is not None], "stages": stages,
            "duplicates_checked": True, "duplicate_urls_fetched": late}


def read_url_list(specs: Sequence[str] | str, source: str, url_col: str = "url", caption_col: str | None = "caption",
                  id_col: str | None = None, rows_per_shard: int = 1 << 20) -> pa.Table:
    """A whole (small) URL list in this process, with `duplicate_of`: what the shard tasks read, shard by
    shard, through the same planning, reading and duplicate marking. For tools and tests; jobs never
    hold a list (they plan with `UrlList`)."""
    import tempfile

    columns = UrlColumns(source, url_col, caption_col, id_col)
    urls = UrlList(specs, columns)
    urls.check()
    with tempfile.TemporaryDirectory(prefix="curate-urls-") as staging:
        shards = list(urls.shards(rows_per_shard, staging))
        parts = [read_slice(s, columns) for s in shards]
        keys = [t for s in shards for t in UrlKeys(columns)(s)]
    if not parts:
        return pa.table({"record_id": pa.array([], pa.string()), "url": pa.array([], pa.string()),
                         "caption": pa.array([], pa.string()), "meta": pa.array([], pa.string()),
                         "duplicate_of": pa.array([], pa.string())})
    table = pa.concat_tables(parts, promote_options="permissive")
    dups = mark_duplicates(pa.concat_tables(keys) if keys else None)
    of = dict(zip(dups.column("record_id").to_pylist(), dups.column("duplicate_of").to_pylist()))
    return table.append_column("duplicate_of", pa.array([of.get(r) for r in table.column("record_id").to_pylist()], pa.string()))

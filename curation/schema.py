"""The project's Arrow schemas, declared once.

Every writer passes one of these explicitly: a schema inferred from the first
batch breaks later shards when a nullable column happens to be all-null.

Tables
------
records   one image and every annotation of it (or one plain text document)
samples   one training example in one token format
rejects   one row per thing that left the flow, with the stage and the reason
sequences packed sequences of samples (same task), with member offsets
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "BOXES",
    "QA",
    "REGION",
    "SPAN",
    "GROUNDED_CAPTION",
    "OCR_ITEM",
    "RECORD_SCHEMA",
    "ANNOTATION_COLUMNS",
    "STRUCTURED_ANNOTATIONS",
    "MEASURE_FIELDS",
    "SAMPLE_SCHEMA",
    "REJECT_SCHEMA",
    "SEQUENCE_SCHEMA",
    "IMAGES_SCHEMA",
    "TABLE_SCHEMAS",
    "ROW_GROUP_ROWS",
    "ROW_GROUP_BYTES",
    "row_group_rows",
    "parquet_write_options",
    "REJECT_COLUMNS",
    "conform",
    "records_from_pylist",
    "rejects_from_pylist",
    "make_reject",
]

SCHEMA_VERSION = 1

# One box is 4 numbers: pixel x1, y1, x2, y2 in the record's width x height frame.
BOXES = pa.list_(pa.list_(pa.float64()))
QA = pa.struct([("question", pa.string()), ("answer", pa.string())])
REGION = pa.struct([("phrase", pa.string()), ("boxes", BOXES)])
SPAN = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("boxes", BOXES)])
GROUNDED_CAPTION = pa.struct([("text", pa.string()), ("spans", pa.list_(SPAN))])
# quad: 8 numbers, the four corners clockwise from top-left, pixels.
OCR_ITEM = pa.struct([("text", pa.string()), ("quad", pa.list_(pa.float64()))])

# Annotation list columns of a record, in schema order; every one but `captions`
# is a list of structs (what a URL list or a sidecar may carry as JSON).
ANNOTATION_COLUMNS: tuple[str, ...] = ("captions", "qa", "regions", "grounded_captions", "ocr")
STRUCTURED_ANNOTATIONS: tuple[str, ...] = ANNOTATION_COLUMNS[1:]

# Columns that filters measure. They are part of the record schema (null until
# measured) so that every shard has the same schema; filters add values, never
# remove columns.
MEASURE_FIELDS: list[pa.Field] = [
    pa.field("clip_score", pa.float32()),
    pa.field("phash", pa.int64()),
    # the L2-normalised CLIP image embedding, when asked (keep_embeddings); its length is the model's embed_dim
    pa.field("clip_embedding", pa.list_(pa.float32())),
]

RECORD_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("sha256", pa.string()),
        pa.field("captions", pa.list_(pa.string())),
        pa.field("qa", pa.list_(QA)),
        pa.field("regions", pa.list_(REGION)),
        pa.field("grounded_captions", pa.list_(GROUNDED_CAPTION)),
        pa.field("ocr", pa.list_(OCR_ITEM)),
        # a plain text document (the `text` task); records of documents have no image
        pa.field("text", pa.string()),
        pa.field("meta", pa.string()),
        *MEASURE_FIELDS,
    ]
)

IMAGE_REF = pa.struct(
    [
        ("key", pa.string()),
        ("image", pa.binary()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)
TURN = pa.struct([("from", pa.string()), ("value", pa.string())])

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("task", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("prompt", pa.string()),
        pa.field("target", pa.string()),
        pa.field("conversations", pa.list_(TURN)),
        pa.field("images", pa.list_(IMAGE_REF)),
        pa.field("num_tokens", pa.int32()),
        # carried measures, for audit
        pa.field("clip_score", pa.float32()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("meta", pa.string()),
    ]
)

SEQUENCE_SCHEMA = pa.schema(
    [
        pa.field("sequence_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("sample_ids", pa.list_(pa.string())),
        # token offset of each member inside the sequence, same order as sample_ids
        pa.field("offsets", pa.list_(pa.int32())),
        pa.field("num_tokens", pa.int32()),
    ]
)

# Images stored once, beside samples built with `images_once` (curation/image_table.py): the samples of
# samples/part-K.parquet reference these of images/part-K.parquet by key, with a null `image`.
IMAGES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("image", pa.binary()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
)

TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "records": RECORD_SCHEMA,
    "samples": SAMPLE_SCHEMA,
    "rejects": REJECT_SCHEMA,
    "sequences": SEQUENCE_SCHEMA,
    "images": IMAGES_SCHEMA,
}

# How the tables are written (every writer of a shard takes these).
ROW_GROUP_ROWS = 1024
ROW_GROUP_BYTES = 64 << 20  # a row group of records with large images closes earlier
# The images table (images stored once) is read by key, a row group at a time, by readers that keep one or two:
# its row groups stay small whatever the image size.
IMAGES_ROW_GROUP_BYTES = 4 << 20


def row_group_rows(table: str, rows: int, nbytes: int) -> int:
    """Rows per row group for `rows` rows of `table` taking `nbytes`: ROW_GROUP_ROWS, fewer for large rows."""
    limit = IMAGES_ROW_GROUP_BYTES if table == "images" else ROW_GROUP_BYTES
    return max(1, min(ROW_GROUP_ROWS, limit * rows // max(nbytes, 1)))
# A sample row carries its image's bytes, and the samples of one image are adjacent (a record's samples are
# built together), so a row group holds ~50 copies of each Visual Genome image. Parquet folds a column chunk's
# equal values into its dictionary page: each image's bytes are stored once per row group, and a reader that
# reads the column as a dictionary (formats.reader) gets them once. pyarrow checks the dictionary's size after
# each write batch and writes the rest of the chunk plain once it is over the limit; at its default (1 MiB,
# ~10 images of 100 KB) a VG row group's last images go plain, at this limit the whole chunk stays folded.
SAMPLE_DICTIONARY_PAGE_BYTES = 16 << 20


def parquet_write_options(table: str) -> dict[str, Any]:
    """Keyword arguments for `pq.ParquetWriter` / `pq.write_table` when writing a shard of `table`."""
    options: dict[str, Any] = {"compression": "zstd"}
    if table == "samples":
        options["dictionary_pagesize_limit"] = SAMPLE_DICTIONARY_PAGE_BYTES
    return options


# Columns a filter stage writes on rows it drops while they still flow through
# the pipeline; the sink routes such rows to the rejects table.
REJECT_COLUMNS: list[pa.Field] = [
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
]


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table` to `schema`; missing nullable columns become null.

    Raises ValueError naming the column when a non-nullable column is missing
    or a value cannot be cast.
    """
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if not col.type.equals(field.type):
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValueError(
                        f"column {field.name!r}: cannot cast {col.type} to {field.type}: {exc}"
                    ) from exc
            if not field.nullable and col.null_count:
                raise ValueError(f"column {field.name!r} has {col.null_count} null values")
            arrays.append(col)
        else:
            if not field.nullable:
                raise ValueError(f"missing required column {field.name!r}")
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def records_from_pylist(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a records table from dicts; absent keys are null, `meta` dicts become JSON."""
    fixed = []
    for row in rows:
        row = dict(row)
        if isinstance(row.get("meta"), (dict, list)):
            row["meta"] = json.dumps(row["meta"], sort_keys=True, ensure_ascii=False)
        fixed.append({f.name: row.get(f.name) for f in RECORD_SCHEMA})
    return pa.Table.from_pylist(fixed, schema=RECORD_SCHEMA)


def make_reject(
    record_id: str | None,
    stage: str,
    reason: str,
    detail: str | None = None,
    source: str | None = None,
    meta: str | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    if isinstance(meta, Mapping):
        meta = json.dumps(meta, sort_keys=True, ensure_ascii=False)
    return {
        "record_id": record_id,
        "source": source,
        "stage": stage,
        "reason": reason,
        "detail": detail,
        "meta": meta,
    }


def rejects_from_pylist(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{f.name: r.get(f.name) for f in REJECT_SCHEMA} for r in rows], schema=REJECT_SCHEMA
    )

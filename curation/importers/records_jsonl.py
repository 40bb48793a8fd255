"""`records-jsonl`: canonical records as JSON lines -> records, validated.

Each line is one record with the columns of RECORD_SCHEMA (`record_id` and
`source` required; `meta` an object or a JSON string). The image is not in
the line: `image_file` (or a string `image`) names it under `--images`. A line
whose columns do not fit the schema is rejected (`invalid_record`) with the
column at fault, and one whose `width`/`height` is not a positive whole number
(`invalid_size`, the value in the detail); boxes and texts are validated like
every importer's. Lines of
the same record_id merge (memory holds the records until the end).
"""

from __future__ import annotations

import json
from typing import Iterator

import pyarrow as pa

from curation.importers.base import INGEST_STAGE, Importer, Item, partial
from curation.importers.boxes import size_problem
from curation.importers.jsonstream import iter_jsonl
from curation.reasons import INVALID_RECORD, INVALID_SIZE
from curation.schema import ANNOTATION_COLUMNS, MEASURE_FIELDS, RECORD_SCHEMA, make_reject

__all__ = ["RecordsJsonl"]

_ALLOWED = {f.name for f in RECORD_SCHEMA} | {"image_file"}


class RecordsJsonl(Importer):
    kind = "records-jsonl"
    default_source = ""

    def read(self) -> Iterator[Item]:
        for path in self.paths:
            for n, row in iter_jsonl(path):
                self.items_read += 1
                where = f"line {n}"
                if not isinstance(row, dict):
                    yield self.reject(None, INVALID_RECORD, f"{where}: not a JSON object", path)
                    continue
                rid, source = row.get("record_id"), row.get("source")
                rid = rid if isinstance(rid, str) and rid.strip() else None
                extra = sorted(set(row) - _ALLOWED)
                if rid is None or not isinstance(source, str) or not source:
                    yield "reject", self._reject(rid, source, f"{where}: record_id and source are required strings", path)
                    continue
                if extra:
                    yield "reject", self._reject(rid, source, f"{where}: unknown columns {extra}", path)
                    continue
                not_lists = [k for k in ANNOTATION_COLUMNS if row.get(k) is not None and not isinstance(row[k], list)]
                if not_lists:
                    yield "reject", self._reject(rid, source, f"{where}: {not_lists[0]} must be a list", path)
                    continue
                meta = row.get("meta")
                if isinstance(meta, str):
                    try:
                        meta = json.loads(meta)
                    except json.JSONDecodeError:
                        yield "reject", self._reject(rid, source, f"{where}: meta is not JSON", path)
                        continue
                problem = size_problem(row.get("width"), row.get("height"))
                if problem:
                    yield "reject", self._reject(rid, source, f"{where}: {problem}", path, INVALID_SIZE)
                    continue
                image_file = row.get("image_file") or (row.get("image") if isinstance(row.get("image"), str) else None)
                check = {k: v for k, v in row.items() if k in _ALLOWED and k not in ("image", "image_file", "meta")}
                try:
                    pa.Table.from_pylist([check], schema=pa.schema([RECORD_SCHEMA.field(k) for k in check]))
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                    yield "reject", self._reject(rid, source, f"{where}: {str(exc).splitlines()[0]}", path)
                    continue
                fields = {k: row.get(k) for k in ("url", "width", "height", "text", *(f.name for f in MEASURE_FIELDS))}
                p = partial(rid, source, image_files=[image_file] if image_file else [], declared=True, meta=meta or {}, **fields)
                for k in ANNOTATION_COLUMNS:
                    p[k] = list(row.get(k) or [])
                p["refs"] = [f"{path.name}: {where}"]
                yield "record", p

    def _reject(self, rid, source, detail, path, reason: str = INVALID_RECORD) -> dict:
        return make_reject(rid, INGEST_STAGE, reason, f"{path.name}: {detail}", source=source)

"""`grit`: GRIT-style Parquet or JSON lines -> grounded captions.

A row has `caption`, `noun_chunks` (`[start, end, x1, y1, x2, y2, score]`,
box corners on the 0-1 scale), the original `width` and `height`, and `url`,
`key` / `id`. Chunks with the same character span become one span with all
their boxes; boxes are converted to pixels of `width` x `height`. A row with
no size cannot be converted and is rejected (`size_unknown`), never guessed;
one with a size that is not a positive whole number is rejected
(`invalid_size`).
Parquet is read one row group batch at a time and JSON lines one line at a
time: memory holds one batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from curation.importers.base import Importer, Item, open_parquet, partial
from curation.importers.boxes import as_numbers, normalised_to_pixels, size_problem
from curation.importers.jsonstream import iter_jsonl
from curation.reasons import BOX_MALFORMED, EMPTY_TEXT, INVALID_SIZE, SIZE_UNKNOWN

__all__ = ["Grit", "iter_rows"]


def iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(row number, row dict) from a Parquet file or JSON lines."""
    if path.suffix == ".parquet":
        n = 0
        for batch in open_parquet(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield n, row
    else:
        yield from iter_jsonl(path)


class Grit(Importer):
    kind = "grit"
    default_source = "grit"
    grouped = True

    def read(self) -> Iterator[Item]:
        for path in self.paths:
            for n, row in iter_rows(path):
                self.items_read += 1
                if not isinstance(row, dict):
                    yield self.reject(None, "invalid_annotation", f"row {n}: {row!r:.60} is not a JSON object", path)
                    continue
                ident = row.get("key") or row.get("id") or f"{path.stem}-{n}"
                where = f"row {n}"
                caption = row.get("caption")
                width, height = row.get("width"), row.get("height")
                if not isinstance(caption, str) or not caption.strip():
                    yield self.reject(ident, EMPTY_TEXT, f"{where}: no caption", path)
                    continue
                if width is None or height is None:
                    yield self.reject(ident, SIZE_UNKNOWN, f"{where}: no width/height to convert its 0-1 boxes", path)
                    continue
                problem = size_problem(width, height)
                if problem:
                    yield self.reject(ident, INVALID_SIZE, f"{where}: {problem} (size {width!r} x {height!r})", path)
                    continue
                width, height = int(width), int(height)
                spans: dict[tuple[int, int], list] = {}
                bad = None
                for chunk in row.get("noun_chunks") or []:
                    nums = as_numbers(list(chunk)[:6] if chunk is not None else None, 6)
                    if nums is None:
                        bad = f"noun chunk {chunk!r} is not [start, end, x1, y1, x2, y2, ...]"
                        break
                    start, end = int(nums[0]), int(nums[1])
                    spans.setdefault((start, end), []).append(normalised_to_pixels(nums[2:6], width, height))
                if bad:
                    yield self.reject(ident, BOX_MALFORMED, f"{where}: {bad}", path)
                    continue
                url = row.get("url")
                files = [f"{row['key']}.jpg"] if row.get("key") else []
                if url and url.rsplit("/", 1)[-1] not in files:
                    files.append(url.rsplit("/", 1)[-1])
                meta: dict[str, Any] = {}
                for k in ("clip_similarity_vitb32", "clip_similarity_vitl14"):
                    if row.get(k) is not None:
                        meta[k] = row[k]
                yield "record", partial(
                    self.rid(ident),
                    self.source,
                    width=width,
                    height=height,
                    url=url,
                    image_files=files,
                    declared=True,
                    grounded_captions=[{"text": caption, "spans": [{"start": s, "end": e, "boxes": b} for (s, e), b in spans.items()]}],
                    refs=[f"{path.name}: {where}"],
                    meta=meta,
                )

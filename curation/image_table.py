"""Images stored once: the `images` table beside the samples (layout (b) of README "Images stored once?").

By default a sample row carries its image's bytes in `images[].image`. Built
with `images_once` (`curate build --images-once`, `images_once = true` in a job
config), the sink of each input shard writes every image once, by key, into
`images/part-K.parquet` (columns `key`, `image`, `width`, `height`; the first
sample of an image brings its bytes) and the samples of `samples/part-K.parquet`
keep the key, width and height with a null `image`. Visual Genome has ~50
samples per image: every place the rows are decompressed (a reader, a
`datasets` cache) then holds each image once instead of 50 times.

A reader joins within one part: `ImagePart` indexes an images part's keys
(reading only the key column) and reads the row groups it is asked for, a few
at a time; `fill_images` puts the bytes back into a batch of samples, so
everything that reads samples through `Dataset.iter_batches` (export,
validate) sees self-contained rows either way.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["IMAGES_TABLE", "ImagePart", "fill_images", "split_images"]

IMAGES_TABLE = "images"


def _with_image(col: pa.ListArray, image: pa.Array) -> pa.ListArray:
    """`col` (list of image structs) with its `image` child replaced by `image` (aligned with col.values)."""
    structs = col.values
    children = structs.flatten()
    names = [f.name for f in structs.type]
    children[names.index("image")] = image
    new = pa.StructArray.from_arrays(children, fields=list(structs.type), mask=structs.is_null() if structs.null_count else None)
    return pa.ListArray.from_arrays(col.offsets, new, mask=col.is_null() if col.null_count else None)


def split_images(samples: pa.Table, seen: set[str]) -> tuple[pa.Table, pa.Table]:
    """(samples with null image bytes, the images of `samples` whose key is not in `seen`: key, image, width,
    height); `seen` is updated. A key without bytes in any row stays out of the images table."""
    from curation.schema import IMAGES_SCHEMA

    if samples.num_rows == 0 or "images" not in samples.column_names:
        return samples, IMAGES_SCHEMA.empty_table()
    i = samples.column_names.index("images")
    col = samples.column(i).combine_chunks()
    structs = col.values
    children = dict(zip([f.name for f in structs.type], structs.flatten()))
    keys, data = children["key"].to_pylist(), children["image"]
    valid = data.is_valid().to_pylist()
    live = np.zeros(len(structs), bool)  # elements the list array refers to (a slice may hold others)
    offsets = col.offsets.to_numpy()
    live[offsets[0]:offsets[-1]] = True
    take = []
    for j, (key, ok) in enumerate(zip(keys, valid)):
        if ok and live[j] and key is not None and key not in seen:
            seen.add(key)
            take.append(j)
    idx = pa.array(take, pa.int64())
    images = pa.table({"key": children["key"].take(idx), "image": data.take(idx),
                       "width": children["width"].take(idx), "height": children["height"].take(idx)}, schema=IMAGES_SCHEMA)
    stripped = samples.set_column(i, samples.schema.field(i), _with_image(col, pa.nulls(len(structs), data.type)))
    return stripped, images


class ImagePart:
    """The images part beside a samples part: its keys indexed, its row groups read on demand (a few kept)."""

    def __init__(self, path: Path | str, keep_row_groups: int = 2):
        from curation.storage.fs import parquet_file

        self.path = path
        self.file = parquet_file(str(path))
        self.where: dict[str, tuple[int, int]] = {}
        for g in range(self.file.num_row_groups):
            keys = self.file.read_row_group(g, columns=["key"]).column(0).to_pylist()
            self.where.update((k, (g, r)) for r, k in enumerate(keys))
        self.keep = keep_row_groups
        self.groups: OrderedDict[int, pa.Array] = OrderedDict()

    def _group(self, g: int) -> pa.Array:
        if g in self.groups:
            self.groups.move_to_end(g)
        else:
            self.groups[g] = self.file.read_row_group(g, columns=["image"]).column(0).combine_chunks()
            while len(self.groups) > self.keep:
                self.groups.popitem(last=False)
        return self.groups[g]

    def images(self, keys: list[str | None]) -> pa.Array:
        """The bytes of each key (null for a key this part does not hold), in the order given."""
        found = [self.where.get(k) if k is not None else None for k in keys]
        out: list[pa.Array] = []
        run_g, run_rows = None, []

        def flush():
            if run_rows:
                part = self._group(run_g) if run_g is not None else None
                out.append(part.take(pa.array(run_rows, pa.int64())) if part is not None
                           else pa.nulls(len(run_rows), pa.binary()))

        for hit in found:  # runs of one row group (samples of one image are adjacent)
            g, r = hit if hit is not None else (None, None)
            if g != run_g:
                flush()
                run_g, run_rows = g, []
            run_rows.append(r)
        flush()
        return pa.concat_arrays(out) if out else pa.array([], pa.binary())


def fill_images(batch: pa.RecordBatch | pa.Table, part: ImagePart | None) -> pa.RecordBatch | pa.Table:
    """`batch` of samples with each null `images[].image` taken from `part` by key (others left as they are)."""
    if part is None or "images" not in batch.column_names:
        return batch
    i = batch.column_names.index("images")
    col = batch.column(i)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    structs = col.values
    children = dict(zip([f.name for f in structs.type], structs.flatten()))
    data = children.get("image")
    if data is None or data.null_count == 0:  # image bytes not read, or all there
        return batch
    fetched = part.images([k if not ok else None for k, ok in zip(children["key"].to_pylist(), data.is_valid().to_pylist())])
    merged = pc.if_else(data.is_valid(), data, fetched.cast(data.type))
    new = _with_image(col, merged)
    if isinstance(batch, pa.RecordBatch):
        arrays = list(batch.columns)
        arrays[i] = new
        return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)
    return batch.set_column(i, batch.schema.field(i), new)

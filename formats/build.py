"""The build stage: records -> samples, rejected items flowing as reject rows.

`BuildSamples` is a Stage (no Ray import): `__call__(records)` returns one row
per sample with the SAMPLE_SCHEMA columns plus `meta` and the reject columns,
and one row per rejected item with `reject_stage = "build"`, a reason and a
detail, so that `curation.runtime.collect(..., ["build"], table="samples",
schema=SAMPLE_SCHEMA)` writes samples and rejects apart.

`build_samples(records, format=..., tasks=...)` does the same in-process and
returns (samples, rejects) tables.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import InputError
from curation.runtime import Resources, Stage, split_rejects
from curation.schema import ANNOTATION_COLUMNS, IMAGE_REF, SAMPLE_SCHEMA, TURN
from formats.tasks import FORMATS, Options, Rejected, Rendered, get_dialect, parse_tasks, render_counted, sample_id

__all__ = ["STAGE", "BUILD_COLUMNS", "sample_id", "BuildSamples", "build_samples"]

log = logging.getLogger(__name__)

STAGE = "build"
# what a sample needs from a record, besides the image bytes (taken by index)
_READ = ["record_id", "source", "width", "height", *ANNOTATION_COLUMNS, "text"]
BUILD_COLUMNS = [f.name for f in SAMPLE_SCHEMA] + ["meta", "reject_stage", "reject_reason", "reject_detail"]


class BuildSamples(Stage):
    """Records -> samples of one format (spec sections 4-5), rejects as flowing rows."""

    name = STAGE
    resources = Resources(cpus=1)
    batch_size = 512

    def __init__(
        self,
        format: str = "qwen-vl",
        tasks: str | Sequence[str] | None = None,
        rounding: str = "half_up",
        max_tokens: int | None = None,
        sft_max_turns: int = 8,
        min_pixels: int = 4 * 28 * 28,
        max_pixels: int = 16384 * 28 * 28,
    ):
        self.format = format
        self.tasks = parse_tasks(tasks)
        self.options = Options(rounding=rounding, sft_max_turns=sft_max_turns, min_pixels=min_pixels, max_pixels=max_pixels)
        if max_tokens is not None and max_tokens <= 0:
            raise InputError(f"max_tokens must be positive, got {max_tokens}")
        self.max_tokens = max_tokens
        if format not in FORMATS:
            raise InputError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        self._dialect = None

    def __getstate__(self) -> dict:
        # the dialect holds a tokenizer; ship the settings, rebuild on the worker
        state = dict(self.__dict__)
        state["_dialect"] = None
        return state

    def setup(self) -> None:
        if self._dialect is None:
            self._dialect = get_dialect(self.format, self.options)

    def render(self, record: dict[str, Any]) -> tuple[list[tuple[Rendered, int]], list[Rejected]]:
        """Samples of one record with their exact token counts, and its rejections."""
        self.setup()
        return render_counted(record, self._dialect, self.tasks, self.max_tokens)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.setup()
        names = batch.column_names
        rows = batch.select([c for c in _READ if c in names]).to_pylist()
        image = batch.column("image") if "image" in names else pa.nulls(batch.num_rows, pa.binary())
        has_image = pc.is_valid(image).to_pylist()
        for r, hi in zip(rows, has_image):
            r["image"] = b"" if hi else None  # presence only; bytes are taken by index below

        s_row: list[int] = []
        s_cols: dict[str, list] = {k: [] for k in ("sample_id", "task", "prompt", "target", "conversations", "num_tokens")}
        r_row: list[int] = []
        r_stage: list[str] = []
        r_reason: list[str] = []
        r_detail: list[str] = []
        # rows an earlier stage dropped keep flowing as they are: no samples, their reject kept
        dead = batch.select(["reject_stage", "reject_reason", "reject_detail"]).to_pylist() if "reject_stage" in names else None
        for i, rec in enumerate(rows):
            if dead is not None and dead[i]["reject_stage"] is not None:
                r_row.append(i)
                r_stage.append(dead[i]["reject_stage"])
                r_reason.append(dead[i]["reject_reason"])
                r_detail.append(dead[i]["reject_detail"])
                continue
            counted, rejected = self.render(rec)
            rid = rec["record_id"]
            for s, n in counted:
                s_row.append(i)
                s_cols["sample_id"].append(sample_id(rid, s.task, s.index))
                s_cols["task"].append(s.task)
                s_cols["prompt"].append(s.prompt)
                s_cols["target"].append(s.target)
                s_cols["conversations"].append(s.conversations)
                s_cols["num_tokens"].append(n)
            for rj in rejected:
                r_row.append(i)
                r_stage.append(STAGE)
                r_reason.append(rj.reason)
                r_detail.append(rj.detail)
        return _assemble(batch, self.format, s_row, s_cols, r_row, r_stage, r_reason, r_detail)


def _take(batch: pa.Table, name: str, idx: pa.Array, typ: pa.DataType) -> pa.Array:
    if name in batch.column_names:
        col = batch.column(name).take(idx)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        return col if col.type.equals(typ) else col.cast(typ)
    return pa.nulls(len(idx), typ)


def _assemble(batch, fmt, s_row, s_cols, r_row, r_stage, r_reason, r_detail) -> pa.Table:
    n_s, n_r = len(s_row), len(r_row)
    idx = pa.array(s_row + r_row, pa.int64())
    record_id = _take(batch, "record_id", idx, pa.string())
    source = _take(batch, "source", idx, pa.string())
    meta = _take(batch, "meta", idx, pa.string())
    clip = _take(batch, "clip_score", idx, pa.float32())

    # images: one {key, image, width, height} per sample of a record with an image
    s_idx = pa.array(s_row, pa.int64())
    img = _take(batch, "image", s_idx, pa.binary())
    valid = pc.is_valid(img).to_pylist()
    keep = pa.array([i for i, v in zip(s_row, valid) if v], pa.int64())
    values = pa.StructArray.from_arrays(
        [
            _take(batch, "record_id", keep, pa.string()),
            _take(batch, "image", keep, pa.binary()),
            _take(batch, "width", keep, pa.int32()),
            _take(batch, "height", keep, pa.int32()),
        ],
        fields=list(IMAGE_REF),
    )
    offsets, pos = [], 0
    for v in valid:
        offsets.append(pos if v else None)  # a null offset makes a null list (text documents)
        pos += 1 if v else 0
    offsets.append(pos)
    images = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)
    images = pa.concat_arrays([images.cast(pa.list_(IMAGE_REF)), pa.nulls(n_r, pa.list_(IMAGE_REF))])

    def strings(vals, pad=None):
        return pa.array(vals + [pad] * n_r, pa.string())

    nulls_s = [None] * n_s
    return pa.table(
        {
            "sample_id": strings(s_cols["sample_id"]),
            "record_id": record_id,
            "source": source,
            "task": strings(s_cols["task"]),
            "format": strings([fmt] * n_s),
            "prompt": strings(s_cols["prompt"]),
            "target": strings(s_cols["target"]),
            "conversations": pa.array(s_cols["conversations"] + [None] * n_r, pa.list_(TURN)),
            "images": images,
            "num_tokens": pa.array(s_cols["num_tokens"] + [None] * n_r, pa.int32()),
            "clip_score": clip,
            "meta": meta,
            "reject_stage": pa.array(nulls_s + r_stage, pa.string()),
            "reject_reason": pa.array(nulls_s + r_reason, pa.string()),
            "reject_detail": pa.array(nulls_s + r_detail, pa.string()),
        }
    )


def build_samples(records: pa.Table, format: str = "qwen-vl", tasks=None, **opts) -> tuple[pa.Table, pa.Table]:
    """Records -> (samples conformed to SAMPLE_SCHEMA, rejects), in this process."""
    stage = BuildSamples(format=format, tasks=tasks, **opts)
    stage.setup()
    parts = [stage(records.slice(i, stage.batch_size)) for i in range(0, max(records.num_rows, 1), stage.batch_size)]
    out = pa.concat_tables(parts) if parts else stage(records)
    return split_rejects(out, SAMPLE_SCHEMA)

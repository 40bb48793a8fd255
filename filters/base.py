"""A filter measures, then decides.

`measure(batch)` returns new columns (scores, hashes) for the rows it is given;
`decide(batch)` returns, per row, None to keep it or a `Drop(reason, detail)`.
The base class runs both only on rows that are still alive (no earlier stage
dropped them), marks newly dropped rows with `reject_stage` / `reject_reason`
/ `reject_detail`, and empties their image bytes so they travel light to the
sink, which routes them to the rejects table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from curation.runtime import Stage, ensure_reject_columns

__all__ = ["Drop", "Filter", "ensure_reject_columns", "mark_rejects"]


@dataclass(frozen=True)
class Drop:
    reason: str
    detail: str | None = None


def _set_column(batch: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    if name in batch.column_names:
        return batch.set_column(batch.column_names.index(name), name, values)
    return batch.append_column(name, values)


def mark_rejects(batch: pa.Table, stage: str, decisions: Sequence[Drop | None]) -> pa.Table:
    """Mark rows whose decision is a Drop; the batch must have only live rows."""
    if len(decisions) != batch.num_rows:
        raise ValueError(f"stage {stage!r}: {len(decisions)} decisions for {batch.num_rows} rows")
    batch = ensure_reject_columns(batch)
    if not any(decisions):
        return batch
    dropped = pa.array([d is not None for d in decisions])
    batch = _set_column(batch, "reject_stage", pa.array([stage if d else None for d in decisions], pa.string()))
    batch = _set_column(batch, "reject_reason", pa.array([d.reason if d else None for d in decisions], pa.string()))
    batch = _set_column(batch, "reject_detail", pa.array([d.detail if d else None for d in decisions], pa.string()))
    if "image" in batch.column_names:
        image = batch.column("image")
        batch = _set_column(batch, "image", pc.if_else(dropped, pa.scalar(None, image.type), image))
    return batch


class Filter(Stage):
    """Base of every filter. Subclasses set `name` and override measure/decide."""

    name = "filter"
    # columns this stage adds with measure(), with their types (nulls on dead rows)
    measures: Sequence[pa.Field] = ()
    # working columns this stage consumes and removes (e.g. preprocessed pixels)
    consumes: Sequence[str] = ()

    def measure(self, batch: pa.Table) -> dict[str, pa.Array]:
        return {}

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        return [None] * batch.num_rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = ensure_reject_columns(batch)
        alive_mask = pc.is_null(batch.column("reject_stage"))
        live = batch.filter(alive_mask)
        dead = batch.filter(pc.invert(alive_mask))
        if live.num_rows:
            for name, values in self.measure(live).items():
                field = next((f for f in self.measures if f.name == name), None)
                if field is not None and not values.type.equals(field.type):
                    values = values.cast(field.type)
                live = _set_column(live, name, values)
            live = mark_rejects(live, self.name, self.decide(live))
        for field in self.measures:
            if field.name not in live.column_names:
                live = _set_column(live, field.name, pa.nulls(live.num_rows, field.type))
            if field.name not in dead.column_names:
                dead = _set_column(dead, field.name, pa.nulls(dead.num_rows, field.type))
        out = pa.concat_tables([live, dead], promote_options="permissive") if dead.num_rows else live
        drop = [c for c in self.consumes if c in out.column_names]
        return out.drop_columns(drop) if drop else out

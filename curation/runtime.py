"""The stage contract: what every stage is, and the plain functions around it.

A stage is a plain class: `resources`, `batch_size`, `setup()` (load what it
needs once) and `__call__(batch: pyarrow.Table) -> pyarrow.Table`. Stages never
import Ray, so tests call them directly on a small table (`run_local`); the
pipeline runner (curation/runner.py, the one module that imports Ray) runs
them on a cluster.

Rows that a stage drops keep flowing with `reject_stage` / `reject_reason` /
`reject_detail` set (see filters/base.py); the sink routes them to the
rejects table (`split_rejects`), so nothing leaves the flow without a row.
Each stage call adds the wall time it took to the batch (`timed_call`), so a
stage's time is summed over every batch on every worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import REJECT_COLUMNS, REJECT_SCHEMA, RECORD_SCHEMA, conform

__all__ = [
    "Resources",
    "Stage",
    "SECONDS_PREFIX",
    "timed_call",
    "stage_seconds",
    "run_local",
    "ensure_reject_columns",
    "split_rejects",
    "scoped_env",
    "IMPORT_LOCK",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0


class Stage:
    """Base of every stage. Subclasses set `name` and implement `__call__`.

    The runner calls a stage inside each input shard's task, set up once per
    worker process; a stage that asks for GPUs, or sets `pooled = True` (a
    model worth loading in few processes), runs in an actor pool instead.
    """

    name: str = "stage"
    resources: Resources = Resources()
    batch_size: int = 256
    pooled: bool = False
    def setup(self) -> None:
        """Load models or other state once per worker (actor)."""

    def __call__(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} does not implement __call__")


# a flowing batch carries the wall time each stage spent on it in a column
# "<prefix><stage name>" (the time on its first row, 0 elsewhere), so the sums
# survive any re-batching between stages; the sink adds them up
SECONDS_PREFIX = "_seconds:"


def timed_call(stage: Stage, batch: pa.Table) -> pa.Table:
    """`stage(batch)`, with the wall time it took added to the batch's timing column."""
    if isinstance(batch, pa.RecordBatch):
        batch = pa.Table.from_batches([batch])
    t0 = time.perf_counter()
    out = stage(batch)
    elapsed = time.perf_counter() - t0
    # timing columns of earlier stages that the stage did not pass on (it made new rows)
    carried = {
        name: pc.sum(batch.column(name)).as_py() or 0.0
        for name in batch.column_names
        if name.startswith(SECONDS_PREFIX) and name not in out.column_names
    }
    own = SECONDS_PREFIX + stage.name
    carried[own] = carried.get(own, 0.0) + elapsed
    if out.num_rows == 0:
        return out
    for name, seconds in carried.items():
        first = pa.array([seconds] + [0.0] * (out.num_rows - 1), pa.float64())
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, pc.add(out.column(name), first))
        else:
            out = out.append_column(name, first)
    return out


def stage_seconds(batch: pa.Table) -> dict[str, float]:
    """{stage name: seconds} carried by a flowing batch."""
    return {
        name[len(SECONDS_PREFIX):]: float(pc.sum(batch.column(name)).as_py() or 0.0)
        for name in batch.column_names
        if name.startswith(SECONDS_PREFIX)
    }


def run_local(table: pa.Table, stages: Iterable[Stage]) -> pa.Table:
    """Run stages in this process, batch by batch (tests, small inputs, `preview`)."""
    for stage in stages:
        stage.setup()
        bs = max(1, stage.batch_size)
        parts = [timed_call(stage, table.slice(i, bs)) for i in range(0, table.num_rows, bs)] or [stage(table)]
        table = pa.concat_tables(parts, promote_options="permissive")
    return table


def ensure_reject_columns(batch: pa.Table) -> pa.Table:
    """Add the (null) reject columns a flowing batch carries, if missing."""
    for f in REJECT_COLUMNS:
        if f.name not in batch.column_names:
            batch = batch.append_column(f, pa.nulls(batch.num_rows, f.type))
    return batch


def split_rejects(batch: pa.Table, schema: pa.Schema = RECORD_SCHEMA) -> tuple[pa.Table, pa.Table]:
    """Split a flowing batch into (kept rows conformed to `schema`, reject rows)."""
    if "reject_stage" not in batch.column_names:
        return conform(batch, schema), REJECT_SCHEMA.empty_table()
    dropped = pc.is_valid(batch.column("reject_stage"))
    kept = batch.filter(pc.invert(dropped))
    gone = batch.filter(dropped)
    rejects = pa.table(
        {
            "record_id": gone.column("record_id") if "record_id" in gone.column_names else pa.nulls(gone.num_rows, pa.string()),
            "source": gone.column("source") if "source" in gone.column_names else pa.nulls(gone.num_rows, pa.string()),
            "stage": gone.column("reject_stage"),
            "reason": gone.column("reject_reason"),
            "detail": gone.column("reject_detail"),
            "meta": gone.column("meta") if "meta" in gone.column_names else pa.nulls(gone.num_rows, pa.string()),
        }
    )
    keep_cols = [c for c in kept.column_names if c not in {f.name for f in REJECT_COLUMNS}]
    return conform(kept.select(keep_cols), schema), conform(rejects, REJECT_SCHEMA)


# held while a package is imported with parts of it left out (img2dataset's downloader without its
# package, open_clip without the towers a model does not use: they put placeholders in sys.modules for
# the time of the import), and by imports in other threads that must not see those placeholders
IMPORT_LOCK = threading.RLock()


@contextlib.contextmanager
def scoped_env(values: "dict[str, str | None]"):
    """Set (or, for None, unset) environment variables for the duration of a block, then restore them."""
    before = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

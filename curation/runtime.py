"""The stage contract and the one Ray Data adapter.

A stage is a plain class: `resources`, `batch_size`, `setup()` (load what it
needs once) and `__call__(batch: pyarrow.Table) -> pyarrow.Table`. Stages never
import Ray, so tests call them directly on a small table.

`apply_stages` turns a list of stages into a Ray Data pipeline: stateless
stages run as tasks, stages with a `setup()` or GPUs as an actor pool, always
with an explicit batch size and Arrow batches. `init_ray` starts Ray locally
and quietly, or joins a cluster given `--ray-address` / `RAY_ADDRESS`.

Rows that a stage drops keep flowing with `reject_stage` / `reject_reason` /
`reject_detail` set (see filters/base.py); `collect` routes them to the
rejects table at the sink, so nothing leaves the flow without a row.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import REJECT_COLUMNS, REJECT_SCHEMA, RECORD_SCHEMA, conform

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

    from curation.dataset import DatasetWriter

__all__ = [
    "Resources",
    "Stage",
    "init_ray",
    "fit_cpus",
    "cluster_gpus",
    "apply_stages",
    "run_local",
    "ensure_reject_columns",
    "split_rejects",
    "collect",
    "Progress",
    "timed_call",
    "stage_seconds",
    "stream_stages",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0


class Stage:
    """Base of every stage. Subclasses set `name` and implement `__call__`."""

    name: str = "stage"
    resources: Resources = Resources()
    batch_size: int = 256
    def setup(self) -> None:
        """Load models or other state once per worker (actor)."""

    def __call__(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} does not implement __call__")

    @property
    def stateful(self) -> bool:
        return type(self).setup is not Stage.setup or self.resources.gpus > 0


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> None:
    """Start Ray in-process (local) or join `address` / $RAY_ADDRESS."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if quiet:
        # Ray Data reads this when it configures its loggers (at first execution)
        # (ERROR when not on a terminal: it would only say that progress bars are off)
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING" if sys.stderr.isatty() else "ERROR")
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "include_dashboard": False,
        "log_to_driver": not quiet,
        "logging_level": logging.ERROR if quiet else logging.INFO,
    }
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        # keep workers quiet about the spare Ray features
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(**kwargs)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    ctx.verbose_stats_logs = False
    try:
        ctx.print_on_execution_start = False
    except AttributeError:  # pragma: no cover - older Ray
        pass


def cluster_gpus() -> float:
    """GPUs in the Ray cluster (starting a local Ray if none is running)."""
    import ray

    init_ray()
    return float(ray.cluster_resources().get("GPU", 0.0))


def fit_cpus(requested: float, total: float) -> float:
    """CPUs to ask for per worker so that one worker never takes the whole cluster.

    An actor holding every CPU starves the read tasks that feed it and the
    pipeline hangs with no error; leave at least one CPU (or half of a single
    CPU) for the rest of the pipeline.
    """
    if requested <= 0:
        return 0.0
    cap = total - 1 if total >= 2 else max(total / 2, 0.25)
    return float(min(requested, cap))


# a flowing batch carries the wall time each stage spent on it in a column
# "<prefix><stage name>" (the time on its first row, 0 elsewhere), so the sums
# survive any re-batching between stages; collect() adds them up at the sink
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


class _StageActor:
    """Ray actor wrapper: one stage instance per actor, set up once."""

    stage: Stage

    def __init__(self):
        self.stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return timed_call(self.stage, batch)


def _call_stage(batch: pa.Table, stage: Stage) -> pa.Table:
    return timed_call(stage, batch)


def apply_stages(ds: "ray.data.Dataset", stages: Sequence[Stage]) -> "ray.data.Dataset":
    """Chain `stages` onto `ds` as Ray Data map_batches operators."""
    import ray
    from ray.data import ActorPoolStrategy

    resources = ray.cluster_resources()
    total_cpus = float(resources.get("CPU", 1.0))
    total_gpus = float(resources.get("GPU", 0.0))
    for stage in stages:
        cpus = fit_cpus(stage.resources.cpus, total_cpus)
        gpus = stage.resources.gpus
        if gpus > total_gpus:
            raise ValueError(f"stage {stage.name!r} asks for {gpus} GPUs per worker; the cluster has {total_gpus:g}")
        common = dict(batch_size=stage.batch_size, batch_format="pyarrow", num_cpus=cpus, zero_copy_batch=True)
        if stage.stateful:
            if gpus:
                fit = int(total_gpus // gpus)
            else:
                fit = int(max(total_cpus - 1, 1) // max(cpus, 1e-9))
            size = max(1, fit)
            # the stage rides in a class made for it (pickled by value), not in
            # constructor arguments that Ray would keep in the object store
            actor = type(f"{type(stage).__name__}Actor", (_StageActor,), {"stage": stage})
            ds = ds.map_batches(
                actor,
                compute=ActorPoolStrategy(min_size=1, max_size=size),
                num_gpus=gpus,
                **common,
            )
        else:
            ds = ds.map_batches(_call_stage, fn_args=(stage,), **common)
    return ds


def stream_stages(
    paths: Sequence[str | os.PathLike],
    stages: Sequence[Stage],
    preserve_order: bool = False,
    batch_size: int | None = None,
) -> Iterator[pa.Table]:
    """Parquet files -> `stages` on Ray -> Arrow batches on the driver.

    `preserve_order` keeps batches in file order whatever the worker timing;
    the Ray Data setting is changed only while this pipeline runs.
    """
    import ray.data

    if not paths:
        return
    options = ray.data.DataContext.get_current().execution_options
    before = options.preserve_order
    options.preserve_order = preserve_order
    try:
        ds = apply_stages(ray.data.read_parquet([str(p) for p in paths]), stages)
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=batch_size)
    finally:
        options.preserve_order = before


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


class Progress:
    """An `on_batch` callback for collect(): logs rows done every few seconds on long work."""

    def __init__(self, what: str, total: int | None = None, every: float = 5.0):
        self.what, self.total, self.every = what, total, every
        self.t0 = self.last = time.time()

    def __call__(self, done: int) -> None:
        now = time.time()
        if now - self.last >= self.every:
            self.last = now
            rate = done / max(now - self.t0, 1e-9)
            of = f"/{self.total}" if self.total else ""
            log.info("%s: %d%s rows (%.0f rows/s)", self.what, done, of, rate)


def collect(
    batches: Iterable[pa.Table],
    writer: "DatasetWriter",
    stage_names: Sequence[str],
    table: str = "records",
    schema: pa.Schema = RECORD_SCHEMA,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, Counter]:
    """Write flowing batches to `writer`: kept rows to `table`, dropped rows to rejects.

    Counts each stage in `stage_names` (in pipeline order): rows in, rows out
    and drops by reason; and every timed stage's seconds (summed batch wall
    time across workers). Returns (rows kept, Counter of (stage, reason)).
    """
    dropped: Counter = Counter()
    seconds: Counter = Counter()
    total = kept_rows = 0
    for batch in batches:
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        seconds.update(stage_seconds(batch))
        kept, rejects = split_rejects(batch, schema)
        writer.write(table, kept)
        writer.write("rejects", rejects)
        total += batch.num_rows
        kept_rows += kept.num_rows
        for stage, reason in zip(rejects.column("stage").to_pylist(), rejects.column("reason").to_pylist()):
            dropped[(stage, reason)] += 1
        if on_batch:
            on_batch(total)
    rows_in = total
    for name in stage_names:
        by_reason = {r: n for (s, r), n in dropped.items() if s == name}
        out = rows_in - sum(by_reason.values())
        writer.count_stage(name, rows_in, out, by_reason, seconds.pop(name, 0.0))
        rows_in = out
    for name, secs in seconds.items():  # timed stages counted by the caller (build)
        writer.count_stage(name, 0, 0, seconds=secs)
    return kept_rows, dropped

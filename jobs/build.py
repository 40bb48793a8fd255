"""Job: records → samples of one format (and packed sequences), into a DatasetWriter.

Used by `curate build` (records of another dataset directory) and by the
web-pairs job (its own records). Small inputs run in this process, batch by
batch; large ones through the Ray Data adapter, one build stage over the
record shards.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dataset import DatasetWriter
from curation.runtime import Progress, collect, timed_call
from curation.schema import SAMPLE_SCHEMA

__all__ = ["LOCAL_MAX_ROWS", "record_batches", "build_into"]

log = logging.getLogger(__name__)

# at most this many records run in-process under runner "auto"; more go through Ray
LOCAL_MAX_ROWS = 50_000


def _local_batches(paths: Sequence[Path], stage, batch_size: int) -> Iterator[pa.Table]:
    stage.setup()
    for p in paths:
        for rb in pq.ParquetFile(p).iter_batches(batch_size=batch_size):
            yield timed_call(stage, pa.Table.from_batches([rb]))


def _ray_batches(paths: Sequence[Path], stage, address: str | None) -> Iterator[pa.Table]:
    from curation.runtime import init_ray, stream_stages

    init_ray(address)
    # shards in record order, whatever the worker timing
    yield from stream_stages(paths, [stage], preserve_order=True)


def record_batches(
    paths: Sequence[Path], rows: int, stage, runner: str = "auto", ray_address: str | None = None
) -> tuple[Iterator[pa.Table], str]:
    """Flowing build output over record shards; returns (batches, runner used)."""
    use_ray = runner == "ray" or (runner == "auto" and rows > LOCAL_MAX_ROWS)
    if not paths:
        return iter(()), "local"
    if use_ray:
        return _ray_batches(paths, stage, ray_address), "ray"
    return _local_batches(paths, stage, stage.batch_size), "local"


def build_into(
    writer: DatasetWriter,
    record_paths: Sequence[Path],
    records_in: int,
    format: str = "qwen-vl",
    tasks: str | Sequence[str] | None = None,
    pack: int | None = None,
    rounding: str = "half_up",
    runner: str = "auto",
    ray_address: str | None = None,
    batch_size: int = 512,
) -> dict:
    """Build samples from record shards into `writer`; returns manifest extras (build, packing)."""
    from formats.build import BuildSamples
    from formats.packing import fill_ratio, pack_sequences, sequences_table

    stage = BuildSamples(format=format, tasks=tasks, rounding=rounding, max_tokens=pack)
    stage.batch_size = batch_size
    batches, used = record_batches(record_paths, records_in, stage, runner, ray_address)
    members: list[tuple[str, str, int]] = []
    by_task: Counter = Counter()

    def remember(stream: Iterator[pa.Table]) -> Iterator[pa.Table]:
        for b in stream:
            live = b.filter(pc.is_null(b.column("reject_stage"))).select(["sample_id", "task", "num_tokens"])
            tasks_col = live.column("task").to_pylist()
            by_task.update(tasks_col)
            if pack is not None:
                members.extend(zip(live.column("sample_id").to_pylist(), tasks_col, live.column("num_tokens").to_pylist()))
            yield b

    samples, dropped = collect(
        remember(batches), writer, [], table="samples", schema=SAMPLE_SCHEMA, on_batch=Progress("build (samples + rejects)")
    )
    # in: records; out: samples made; dropped: items rejected (a box, a phrase, a sample), by reason
    # (collect() has added the build stage's seconds: its batch wall time, summed over workers)
    writer.count_stage("build", records_in, samples, {r: n for (_, r), n in dropped.items()})
    extra: dict = {
        "build": {"records": records_in, "format": format, "tasks": list(stage.tasks), "runner": used,
                  "samples_by_task": dict(sorted(by_task.items()))}
    }
    if pack is not None:
        t1 = time.time()
        seqs = pack_sequences(members, pack)
        writer.write("sequences", sequences_table(seqs, format))
        writer.count_stage("pack", len(members), len(seqs), seconds=time.time() - t1)
        per_task = {}
        for task in sorted({s.task for s in seqs}):
            ts = [s for s in seqs if s.task == task]
            per_task[task] = {"sequences": len(ts), "samples": sum(len(s.sample_ids) for s in ts),
                              "fill_ratio": round(fill_ratio(ts, pack), 4)}
        extra["packing"] = {"max_tokens": pack, "sequences": len(seqs), "samples": len(members),
                            "fill_ratio": round(fill_ratio(seqs, pack), 4), "by_task": per_task}
    return extra

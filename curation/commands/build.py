"""`curate build IN --out DIR --format qwen-vl [--tasks a,b] [--pack N]`

Reads the records of the dataset directory IN (manifest-listed shards only),
renders samples of one format, and writes samples and rejects (and packed
sequences with `--pack`) to OUT with its manifest. Small inputs run in this
process, batch by batch; large ones (or `--runner ray`) through the Ray Data
adapter, one build stage over the record shards.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from curation.dataset import Dataset, DatasetWriter, ManifestError
from curation.errors import InputError
from curation.runtime import collect
from curation.schema import SAMPLE_SCHEMA

__all__ = ["add_arguments", "run", "build_dataset", "LOCAL_MAX_ROWS"]

log = logging.getLogger(__name__)

# at most this many records run in-process under --runner auto; more go through Ray
LOCAL_MAX_ROWS = 50_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    from formats.packing import DEFAULT_PACK
    from formats.tasks import FORMATS, TASKS

    p.add_argument("input", metavar="IN", help="dataset directory with records")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--format", default="qwen-vl", choices=FORMATS)
    p.add_argument("--tasks", default=None, help=f"comma-separated, from {','.join(TASKS)} (default: every pretraining task)")
    p.add_argument(
        "--pack", type=int, nargs="?", const=DEFAULT_PACK, default=None, metavar="N",
        help=f"pack samples of one task into sequences of at most N tokens (default N {DEFAULT_PACK})",
    )
    p.add_argument("--rounding", default="half_up", choices=("half_up", "floor"), help="0-999 grid rounding")
    p.add_argument("--runner", default="auto", choices=("auto", "local", "ray"), help="in-process or Ray Data")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    p.add_argument("--batch-size", type=int, default=512, help="records per batch")


def _local_batches(ds: Dataset, stage, batch_size: int) -> Iterator[pa.Table]:
    stage.setup()
    for rb in ds.iter_batches("records", batch_size=batch_size):
        yield stage(pa.Table.from_batches([rb]))


def _ray_batches(ds: Dataset, stage, batch_size: int, address: str | None) -> Iterator[pa.Table]:
    import ray.data

    from curation.runtime import apply_stages, init_ray

    init_ray(address)
    options = ray.data.DataContext.get_current().execution_options
    before = options.preserve_order
    options.preserve_order = True  # shards in record order, whatever the worker timing
    try:
        rd = ray.data.read_parquet([str(p) for p in ds.shard_paths("records")])
        rd = apply_stages(rd, [stage])
        yield from rd.iter_batches(batch_format="pyarrow", batch_size=None)
    finally:
        options.preserve_order = before


def build_dataset(
    input_dir: str,
    out: str,
    format: str = "qwen-vl",
    tasks: str | None = None,
    pack: int | None = None,
    rounding: str = "half_up",
    runner: str = "auto",
    ray_address: str | None = None,
    batch_size: int = 512,
) -> dict:
    """Records of `input_dir` -> samples (+ sequences) in `out`; returns the manifest."""
    from formats.build import BuildSamples
    from formats.packing import fill_ratio, pack_sequences, sequences_table

    try:
        ds = Dataset(input_dir)
    except ManifestError as exc:
        raise InputError(str(exc)) from None
    if batch_size <= 0:
        raise InputError(f"--batch-size must be positive, got {batch_size}")
    if pack is not None and pack <= 0:
        raise InputError(f"--pack must be positive, got {pack}")
    try:
        stage = BuildSamples(format=format, tasks=tasks, rounding=rounding, max_tokens=pack)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    stage.batch_size = batch_size
    use_ray = runner == "ray" or (runner == "auto" and ds.rows("records") > LOCAL_MAX_ROWS)
    batches = _ray_batches(ds, stage, batch_size, ray_address) if use_ray else _local_batches(ds, stage, batch_size)

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

    writer = DatasetWriter(out)
    t0 = time.time()
    kept, dropped = collect(remember(batches), writer, ["build"], table="samples", schema=SAMPLE_SCHEMA)
    writer.timings["build"] = time.time() - t0
    config = {
        "command": "build", "input": str(input_dir), "format": format, "tasks": list(stage.tasks),
        "pack": pack, "rounding": rounding, "runner": "ray" if use_ray else "local",
    }
    extra: dict = {"build": {"records": ds.rows("records"), "samples_by_task": dict(sorted(by_task.items()))}}
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
    return writer.close(config=config, extra=extra)


def run(args: argparse.Namespace) -> int:
    m = build_dataset(
        args.input, args.out, format=args.format, tasks=args.tasks, pack=args.pack, rounding=args.rounding,
        runner=args.runner, ray_address=args.ray_address, batch_size=args.batch_size,
    )
    t = m["tables"]
    st = m["stages"].get("build", {})
    print(f"build: {m['build']['records']} records -> {t['samples']['rows']} samples ({m['config']['format']}), "
          f"{t['rejects']['rows']} rejects -> {args.out}")
    print("  " + ", ".join(f"{k} {v}" for k, v in m["build"]["samples_by_task"].items()))
    for reason, n in sorted(st.get("dropped", {}).items(), key=lambda kv: -kv[1]):
        print(f"  rejected {n:>6}  {reason}")
    if "packing" in m:
        p = m["packing"]
        print(f"packed {p['samples']} samples into {p['sequences']} sequences of <= {p['max_tokens']} tokens, fill ratio {p['fill_ratio']:.3f}")
        for task, info in p["by_task"].items():
            print(f"  {task:<18} {info['sequences']:>6} sequences  fill {info['fill_ratio']:.3f}")
    return 0

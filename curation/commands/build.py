"""`curate build IN --out DIR --format qwen-vl [--tasks a,b] [--pack N] [--min-pixels P --max-pixels P]`

Reads the records of the dataset directory IN (manifest-listed shards only),
renders samples of one format, and writes samples and rejects (and packed
sequences with `--pack`) to OUT with its manifest, through the pipeline
runner: one task per input shard of `--shard-rows` records, each writing its
own shards (packed per shard). Small inputs run the same shards in this
process (`--runner local`, or `auto` under 50,000 records); large ones on Ray.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from curation.commands import add_output_arguments, check_out_dir, check_positive
from curation.storage.dataset import Dataset, DatasetWriter
from curation.errors import InputError
from curation.runner import DEFAULT_SHARD_ROWS

__all__ = ["add_arguments", "run", "build_dataset"]

EXAMPLES = """examples:
  curate build filtered --out samples                                     every pretraining task, Qwen-VL
  curate build filtered --out samples --format qwen2.5-vl --tasks caption,ref_grounding
  curate build filtered --out samples --pack 2048                         also packed sequences"""

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from formats.packing import DEFAULT_PACK
    from formats.tasks import FORMATS, TASKS
    from jobs.build import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

    p.add_argument("input", metavar="IN", help="dataset directory with records (from download, ingest, filter or run)")
    p.add_argument("--out", required=True, help="output dataset directory for samples (and sequences with --pack)")
    p.add_argument("--format", default="qwen-vl", choices=FORMATS, help="token format: Qwen-VL tags on the 0-999 grid, Qwen2-VL tags on the same grid, or Qwen2.5-VL absolute pixels")
    p.add_argument("--tasks", default=None, help=f"comma-separated, from {','.join(TASKS)} (default: every pretraining task)")
    p.add_argument(
        "--pack", type=int, nargs="?", const=DEFAULT_PACK, default=None, metavar="N",
        help=f"pack samples of one task into sequences of at most N tokens (default N {DEFAULT_PACK})",
    )
    p.add_argument("--rounding", default="half_up", choices=("half_up", "floor"), help="0-999 grid rounding of pixel coordinates")
    p.add_argument("--min-pixels", type=int, default=DEFAULT_MIN_PIXELS,
                   help=f"Qwen2-VL/2.5-VL smart_resize lower limit in pixels (default {DEFAULT_MIN_PIXELS}, the model files')")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"Qwen2-VL/2.5-VL smart_resize upper limit in pixels (default {DEFAULT_MAX_PIXELS}, the model files'); "
                        "train at the same limits")
    p.add_argument("--images-once", action="store_true",
                   help="store each image's bytes once per output shard, in an `images` table the samples reference "
                        "by key (for many samples per image, as Visual Genome's ~50; default: every sample row carries its bytes)")
    p.add_argument("--runner", default="auto", choices=("auto", "local", "ray"), help="auto: Ray for inputs of more than one input shard, else in this process; local: this process; ray: a Ray job")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    p.add_argument("--batch-size", type=int, default=512, help="records per batch")
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="records per input shard (unit of work, resume and output shard)")
    add_output_arguments(p)


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
    overwrite: bool = False,
    verify: bool = False,
    resume: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    images_once: bool = False,
) -> dict:
    """Records of `input_dir` -> samples (+ sequences) in `out`; returns the manifest.

    The stage is made here first so that a bad format or task list is an
    InputError before any output directory is touched.
    """
    from curation.runner import ParquetReader, Pipeline, init_ray, parquet_shards, run_pipeline
    from curation.storage.fs import canonical
    from jobs.build import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, LOCAL_MAX_ROWS, build_extra, build_steps

    ds = Dataset(input_dir, verify=verify)  # ManifestError, an InputError, when it is not a finished dataset
    check_positive("--batch-size", batch_size)
    check_positive("--pack", pack)
    check_positive("--shard-rows", shard_rows)
    min_pixels = DEFAULT_MIN_PIXELS if min_pixels is None else min_pixels
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    try:
        steps = build_steps(format, tasks, pack, rounding, batch_size, min_pixels, max_pixels, images_once)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    check_out_dir(out, object_storage=True)
    files = [(p, s["rows"]) for p, s in zip(ds.shard_paths("records"), ds.shards("records"))]
    used = "ray" if runner == "ray" or (runner == "auto" and ds.rows("records") > LOCAL_MAX_ROWS) else "local"
    config = {
        "command": "build", "input": str(input_dir), "format": format, "tasks": list(steps[0].tasks),
        "pack": pack, "rounding": rounding, "shard_rows": shard_rows,
        "min_pixels": min_pixels, "max_pixels": max_pixels, "images_once": images_once,
    }
    identity = {**config, "input": canonical(input_dir)}
    from curation.storage.objects import open_writer

    with open_writer(out, overwrite=overwrite, inputs=(input_dir,), resume=resume, config=identity) as writer:
        t0 = time.time()
        if used == "ray":
            init_ray(ray_address)
        summary = run_pipeline(Pipeline(ParquetReader(batch_size), steps), parquet_shards(files, shard_rows), writer,
                               executor=used)
        writer.timings["build"] = time.time() - t0
        return writer.close(config={**config, "runner": used}, extra=build_extra(writer, summary, steps, used))


def run(args: argparse.Namespace) -> int:
    m = build_dataset(
        args.input, args.out, format=args.format, tasks=args.tasks, pack=args.pack, rounding=args.rounding,
        runner=args.runner, ray_address=args.ray_address, batch_size=args.batch_size,
        overwrite=args.overwrite, verify=args.verify, resume=args.resume, shard_rows=args.shard_rows,
        min_pixels=args.min_pixels, max_pixels=args.max_pixels, images_once=args.images_once,
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

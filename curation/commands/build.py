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

from curation.audit import check_shards
from curation.commands import check_out_dir, check_positive
from curation.dataset import Dataset, DatasetWriter

__all__ = ["add_arguments", "run", "build_dataset"]

log = logging.getLogger(__name__)


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
    """Records of `input_dir` -> samples (+ sequences) in `out`; returns the manifest.

    The stage is made here first so that a bad format or task list is an
    InputError before any output directory is touched.
    """
    from formats.build import BuildSamples
    from jobs.build import build_into

    ds = Dataset(input_dir)  # ManifestError, an InputError, when it is not a finished dataset
    check_positive("--batch-size", batch_size)
    check_positive("--pack", pack)
    stage = BuildSamples(format=format, tasks=tasks, rounding=rounding, max_tokens=pack)
    check_shards(ds, ["records"])
    check_out_dir(out)
    writer = DatasetWriter(out)
    t0 = time.time()
    extra = build_into(
        writer, ds.shard_paths("records"), ds.rows("records"), format=format, tasks=stage.tasks, pack=pack,
        rounding=rounding, runner=runner, ray_address=ray_address, batch_size=batch_size,
    )
    writer.timings["build"] = time.time() - t0
    config = {
        "command": "build", "input": str(input_dir), "format": format, "tasks": list(stage.tasks),
        "pack": pack, "rounding": rounding, "runner": extra["build"]["runner"],
    }
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

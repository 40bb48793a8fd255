"""`curate demo [--out DIR]`: the whole flow offline on a generated corpus."""

from __future__ import annotations

import argparse
import time

__all__ = ["add_arguments", "run"]

EXAMPLES = """examples:
  curate demo                          240 generated images into demo-out, then a report: demo-out/report.html
  curate demo --out /tmp/d --images 1000 --seed 3
  curate demo --ray-address HEAD:6379  the same on a cluster (the output on storage every node sees)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-out", help="output dataset directory (default demo-out)")
    p.add_argument("--images", type=int, default=None, help="corpus size (default 240)")
    p.add_argument("--seed", type=int, default=None, help="corpus seed (default 0)")
    p.add_argument("--min-clip-score", type=float, default=None, help="CLIP threshold for the demo model (default 0.15)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    p.add_argument("--runner", default="auto", choices=("auto", "local", "ray"), help="auto: in this process when the input fits one input shard and no Ray is named or running, else Ray; local: this process; ray: a Ray job")
    p.add_argument("--shard-rows", type=int, default=None, help="URLs per input shard (default 10000: one shard)")
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace a non-empty output that is not an earlier demo's (an earlier demo's is always replaced)",
    )


def run(args: argparse.Namespace) -> int:
    from curation.commands import check_out_dir
    from curation.errors import InputError
    from jobs import demo

    if args.images is not None and args.images < 16:
        raise InputError(f"--images must be at least 16 (the demo plants faults among them), got {args.images}")
    if args.seed is not None and args.seed < 0:
        raise InputError(f"--seed must not be negative, got {args.seed}")
    check_out_dir(args.out)
    t0 = time.time()
    cfg = demo.default_config(
        out=args.out, images=args.images, seed=args.seed, min_clip_score=args.min_clip_score, ray_address=args.ray_address,
        shard_rows=args.shard_rows, runner=args.runner,
    )
    m = demo.run(cfg, overwrite=args.overwrite)
    tables, stages, clip = m["tables"], m["stages"], m["demo"]["clip"]
    print()
    print(f"demo: {m['demo']['images']} generated images served from loopback, seed {cfg.seed}")
    print("stage      in    out  dropped")
    for name, s in stages.items():
        print(f"{name:<8} {s['in']:>5} {s['out']:>5} {sum(s['dropped'].values()):>8}")
    print()
    print("\n".join(demo.summary_lines(cfg.out)))
    print()

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    print(
        f"CLIP filter (threshold {cfg.min_clip_score:.3f}) on planted swapped captions: "
        f"precision {pct(clip['precision'])}, recall {pct(clip['recall'])} "
        f"({clip['true_positives']}/{clip['swapped_reaching_clip']} swapped dropped, "
        f"{clip['false_positives']}/{clip['others_reaching_clip']} others dropped)"
    )
    if "dedup" in m["demo"]:
        d = m["demo"]["dedup"]
        print(
            f"dedup (pHash within {m['dedup']['max_hamming_distance']}) on planted copies: "
            f"precision {pct(d['precision'])}, recall {pct(d['recall'])} "
            f"({d['found']}/{d['copies_reaching_dedup']} copies dropped naming their source, {d['false_merges']} false merges; "
            + ", ".join(f"{k} {v}" for k, v in d["found_by_kind"].items()) + ")"
        )
    if "packing" in m:
        p = m["packing"]
        print(f"packed {p['samples']} samples into {p['sequences']} sequences of <= {p['max_tokens']} tokens, fill ratio {p['fill_ratio']:.3f}")
    print(
        f"records {tables['records']['rows']}, samples {tables['samples']['rows']}, rejects {tables['rejects']['rows']}"
    )
    from curation.report import write_report

    report, _ = write_report(cfg.out)
    print(f"wall time {time.time() - t0:.1f}s")
    print(f"output: {cfg.out}   try: curate sql {cfg.out} \"select stage, reason, count(*) from rejects group by all\"")
    print(f"report: {report}   (open it in a browser: plots, samples with their boxes drawn, rejects)")
    return 0

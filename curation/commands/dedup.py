"""`curate dedup IN --out DIR --exact --phash --semantic [--decontaminate X]`: drop duplicate records (jobs/dedup.py)."""

from __future__ import annotations

import argparse

from curation.commands import add_output_arguments
from curation.runner import DEFAULT_SHARD_ROWS

__all__ = ["add_arguments", "run"]

EXAMPLES = """examples:
  curate dedup filtered --out deduped --exact                     same image bytes or URL
  curate dedup filtered --out deduped --exact --phash             and perceptual near-duplicates (pHash within 4)
  curate dedup filtered --out deduped --phash --decontaminate eval-images/   and near-copies of evaluation images
  curate dedup scored --out deduped --semantic    SemDeDup (scored by curate filter ... --keep-embeddings)"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from filters.phash import DEFAULT_MAX_DISTANCE

    p.add_argument("input", metavar="IN", help="dataset directory with records")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--exact", action="store_true",
                   help="drop copies of the same image bytes (sha256) and of the same normalised URL")
    p.add_argument("--phash", action="store_true", help="drop perceptual near-duplicates (64-bit pHash within --max-distance)")
    p.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE,
                   help=f"largest pHash Hamming distance of near-duplicates (default {DEFAULT_MAX_DISTANCE}, measured: README)")
    p.add_argument("--decontaminate", default=None, metavar="FOLDER_OR_DATASET",
                   help="drop records whose image is a near-duplicate of an evaluation image in this folder or records dataset")
    p.add_argument("--semantic", action="store_true",
                   help="drop semantic duplicates (SemDeDup): k-means over the records' CLIP image embeddings (made by "
                        "`curate filter --keep-embeddings`), then within a cluster cosine similarity above --semantic-threshold")
    p.add_argument("--semantic-threshold", type=float, default=0.95,
                   help="cosine similarity above which two images are semantic duplicates (default 0.95)")
    p.add_argument("--semantic-clusters", type=int, default=None,
                   help="k-means clusters for --semantic (default: one per 1000 embedded records)")
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help=f"records per input shard (unit of work, resume and output shard; default {DEFAULT_SHARD_ROWS})")
    p.add_argument("--partitions", type=int, default=None, help="reduce partitions of the grouping's shuffle (default: one per cluster CPU, or per 500,000 records if more)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    add_output_arguments(p)


def run(args: argparse.Namespace) -> int:
    from curation.commands import check_out_dir, check_positive
    from jobs.dedup import DedupConfig, run as run_dedup

    check_positive("--shard-rows", args.shard_rows)
    check_positive("--partitions", args.partitions)
    check_out_dir(args.out, object_storage=True)
    kinds = (("exact", "url") if args.exact else ()) + (("phash",) if args.phash else ()) + (("semantic",) if args.semantic else ())
    cfg = DedupConfig(out=args.out, dedup=kinds, max_hamming_distance=args.max_distance, decontaminate=args.decontaminate,
                      semantic_threshold=args.semantic_threshold, semantic_clusters=args.semantic_clusters,
                      shard_rows=args.shard_rows, partitions=args.partitions, overwrite=args.overwrite, resume=args.resume,
                      ray_address=args.ray_address)
    m = run_dedup(cfg, args.input, verify=args.verify)
    rows_in = next(iter(m["stages"].values()), {}).get("in", 0)
    print(f"dedup: {rows_in} records -> {m['tables']['records']['rows']} kept -> {args.out}")
    for name, s in m["stages"].items():
        for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<13} {n:>6}  {reason}")
    return 0

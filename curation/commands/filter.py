"""`curate filter IN --out DIR`: measure and decide (basic checks, CLIP score)."""

from __future__ import annotations

import argparse

from curation.commands import add_output_arguments
from curation.runner import DEFAULT_SHARD_ROWS

__all__ = ["add_arguments", "run"]

EXAMPLES = """examples:
  curate filter raw --out filtered --filters basic                        basic checks only
  curate filter raw --out filtered --clip-model ViT-B-32 --clip-pretrained laion2b_s34b_b79k --min-clip-score 0.28
  curate filter raw --out filtered --clip-model ViT-L-14 --clip-checkpoint /models/ViT-L-14.pt --min-clip-score 0.3"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="dataset directory with records")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--min-side", type=int, default=32, help="drop images whose shorter side is below this many pixels")
    p.add_argument("--max-aspect-ratio", type=float, default=4.0, help="drop images whose long/short side ratio is above this")
    p.add_argument("--min-caption-words", type=int, default=2, help="drop pairs whose caption has fewer words")
    p.add_argument("--max-caption-chars", type=int, default=1000, help="drop pairs whose caption has more characters")
    p.add_argument("--clip-model", default=None, help="open_clip model name (e.g. ViT-B-32) or model-config JSON; none: no CLIP stage")
    p.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag (e.g. laion2b_s34b_b79k), its weights already in the Hugging Face cache; nothing is downloaded")
    p.add_argument("--clip-checkpoint", default=None, help="local checkpoint file instead of --clip-pretrained")
    p.add_argument("--min-clip-score", type=float, default=None, help="drop pairs whose CLIP score is below this (default: measure only, drop none)")
    p.add_argument("--clip-batch-size", type=int, default=64, help="images per CLIP batch")
    p.add_argument("--clip-gpus", type=float, default=None, help="GPUs per CLIP actor (default: 1 when the cluster has GPUs)")
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="records per input shard (unit of work, resume and output shard)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    p.add_argument("--filters", default="basic,clip", help="filters to run, in order (default basic,clip; clip needs --clip-model)")
    add_output_arguments(p)


def run(args: argparse.Namespace) -> int:
    from curation.commands import check_out_dir, check_positive
    from curation.errors import InputError
    from jobs.web_pairs import WebPairsConfig, filter_records

    if args.min_clip_score is not None and not args.clip_model:
        raise InputError("--min-clip-score needs --clip-model")
    check_positive("--shard-rows", args.shard_rows)
    check_positive("--clip-batch-size", args.clip_batch_size)
    if args.clip_gpus is not None and args.clip_gpus < 0:
        raise InputError(f"--clip-gpus must not be negative, got {args.clip_gpus}")
    check_out_dir(args.out)
    cfg = WebPairsConfig(
        urls="", out=args.out, min_side=args.min_side, max_aspect_ratio=args.max_aspect_ratio,
        min_caption_words=args.min_caption_words, max_caption_chars=args.max_caption_chars,
        clip_model=args.clip_model, clip_pretrained=args.clip_pretrained, clip_checkpoint=args.clip_checkpoint,
        min_clip_score=args.min_clip_score, clip_batch_size=args.clip_batch_size, clip_gpus=args.clip_gpus,
        shard_rows=args.shard_rows, ray_address=args.ray_address, overwrite=args.overwrite, resume=args.resume,
        filters=tuple(f.strip() for f in args.filters.split(",") if f.strip()),
    )
    m = filter_records(cfg, args.input, verify=args.verify)
    rows_in = next(iter(m["stages"].values()), {}).get("in", 0)
    print(f"filter: {rows_in} records -> {m['tables']['records']['rows']} kept -> {args.out}")
    for name, s in m["stages"].items():
        for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<8} {n:>6}  {reason}")
    return 0

"""`curate filter IN --out DIR`: measure and decide (basic checks, CLIP score)."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="dataset directory with records")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--min-side", type=int, default=32)
    p.add_argument("--max-aspect-ratio", type=float, default=4.0)
    p.add_argument("--min-caption-words", type=int, default=2)
    p.add_argument("--max-caption-chars", type=int, default=1000)
    p.add_argument("--clip-model", default=None, help="open_clip model name (e.g. ViT-B-32) or model-config JSON; none: no CLIP stage")
    p.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag (e.g. laion2b_s34b_b79k)")
    p.add_argument("--clip-checkpoint", default=None, help="local checkpoint file instead of a tag")
    p.add_argument("--min-clip-score", type=float, default=None, help="drop pairs scoring below this")
    p.add_argument("--clip-batch-size", type=int, default=64)
    p.add_argument("--clip-gpus", type=float, default=None, help="GPUs per CLIP actor (default: 1 when the cluster has GPUs)")
    p.add_argument("--shard-mb", type=int, default=256, help="target shard size")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from curation.audit import check_shards
    from curation.commands import check_out_dir, check_positive
    from curation.dataset import Dataset, DatasetWriter
    from curation.errors import InputError
    from curation.runtime import init_ray
    from filters import BasicFilter
    from jobs.web_pairs import WebPairsConfig, filter_step

    src = Dataset(args.input)  # ManifestError, an InputError, when it is not a finished dataset
    if args.min_clip_score is not None and not args.clip_model:
        raise InputError("--min-clip-score needs --clip-model")
    check_positive("--shard-mb", args.shard_mb)
    check_positive("--clip-batch-size", args.clip_batch_size)
    if args.clip_gpus is not None and args.clip_gpus < 0:
        raise InputError(f"--clip-gpus must not be negative, got {args.clip_gpus}")
    check_shards(src, ["records"])
    check_out_dir(args.out)
    cfg = WebPairsConfig(
        urls="", out=args.out, min_side=args.min_side, max_aspect_ratio=args.max_aspect_ratio,
        min_caption_words=args.min_caption_words, max_caption_chars=args.max_caption_chars,
        clip_model=args.clip_model, clip_pretrained=args.clip_pretrained, clip_checkpoint=args.clip_checkpoint,
        min_clip_score=args.min_clip_score, clip_batch_size=args.clip_batch_size, clip_gpus=args.clip_gpus,
        shard_mb=args.shard_mb, ray_address=args.ray_address,
    )
    BasicFilter(cfg.min_side, cfg.max_aspect_ratio, cfg.min_caption_words, cfg.max_caption_chars)  # options checked here
    if cfg.clip_model:
        from filters import ClipModelSpec

        ClipModelSpec(cfg.clip_model, cfg.clip_pretrained, cfg.clip_checkpoint).check()
    init_ray(cfg.ray_address)
    writer = DatasetWriter(cfg.out, target_shard_bytes=cfg.shard_mb * 1024 * 1024)
    filter_step(src.shard_paths("records"), src.rows("records"), cfg, writer)
    config = {"command": "filter", "input": args.input, **dataclasses.asdict(cfg)}
    config.pop("urls")
    m = writer.close(config=config)
    print(f"filter: {src.rows('records')} records -> {m['tables']['records']['rows']} kept -> {args.out}")
    for name, s in m["stages"].items():
        for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<8} {n:>6}  {reason}")
    return 0

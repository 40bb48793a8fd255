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
    p.add_argument("--clip-batch-size", type=int, default=None, help="images per CLIP batch (default: 256 per GPU, 64 on CPUs)")
    p.add_argument(
        "--clip-fast-decode", action="store_true",
        help="decode JPEGs at a reduced DCT scale still >= the model's input size (faster; changes scores slightly, off by default)",
    )
    p.add_argument("--clip-keep-fraction", type=float, default=None, metavar="F",
                   help="keep the top F (0 < F <= 1) of the records by CLIP score over the whole dataset, ties by record id "
                   "(DataComp keeps 0.3); scored first, then cut in a second pass; the cutoff is in the manifest")
    p.add_argument("--clip-keep-fraction-by-source", default=None, metavar="SRC=F,...",
                   help="a fraction of its own for these sources, cut over their own records (e.g. laion=0.3,cc3m=0.5)")
    p.add_argument("--keep-embeddings", action="store_true", help="keep the CLIP image embedding of each record (column clip_embedding)")
    p.add_argument("--semdedup", action="store_true", help="semantic dedup (SemDeDup): k-means over the CLIP image embeddings, "
                   "drop records whose cosine similarity to a kept one in their cluster is above --semdedup-threshold")
    p.add_argument("--semdedup-threshold", type=float, default=0.95, help="cosine similarity above which two images are duplicates")
    p.add_argument("--semdedup-clusters", type=int, default=None, help="k-means clusters (default: one per 1000 records)")
    p.add_argument("--clip-gpus", type=float, default=None, help="GPUs per CLIP actor (default: 1 when the cluster has GPUs)")
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="records per input shard (unit of work, resume and output shard)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    p.add_argument("--runner", default="auto", choices=("auto", "local", "ray"), help="auto: in this process when the input fits one input shard and no Ray is named or running, else Ray; local: this process; ray: a Ray job")
    p.add_argument("--filters", default="basic,clip", help="filters to run, in order (default basic,clip; clip needs --clip-model; "
                   "text: the Qwen-VL caption cleaning, filters/text.py)")
    p.add_argument("--text-scripts", default=None, help="text filter: comma-separated Unicode scripts allowed in captions "
                   "(default Latin,Han,Hiragana,Katakana,Hangul)")
    p.add_argument("--text-min-words", type=int, default=2, help="text filter: drop captions with fewer words")
    p.add_argument("--text-max-tokens", type=int, default=128, help="text filter: drop captions with more Qwen tokenizer tokens")
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
    check_out_dir(args.out, object_storage=True)
    by_source = _fractions_by_source(args.clip_keep_fraction_by_source) if args.clip_keep_fraction_by_source else None
    cfg = WebPairsConfig(
        urls="", out=args.out, min_side=args.min_side, max_aspect_ratio=args.max_aspect_ratio,
        min_caption_words=args.min_caption_words, max_caption_chars=args.max_caption_chars,
        clip_model=args.clip_model, clip_pretrained=args.clip_pretrained, clip_checkpoint=args.clip_checkpoint,
        min_clip_score=args.min_clip_score, clip_batch_size=args.clip_batch_size, clip_gpus=args.clip_gpus,
        clip_fast_decode=args.clip_fast_decode,
        shard_rows=args.shard_rows, ray_address=args.ray_address, runner=args.runner, overwrite=args.overwrite, resume=args.resume,
        filters=tuple(f.strip() for f in args.filters.split(",") if f.strip()),
        clip_keep_fraction=args.clip_keep_fraction, clip_keep_fraction_by_source=by_source,
        keep_embeddings=args.keep_embeddings, semdedup=args.semdedup, semdedup_threshold=args.semdedup_threshold,
        semdedup_clusters=args.semdedup_clusters,
        text_min_words=args.text_min_words, text_max_tokens=args.text_max_tokens,
        **({"text_scripts": tuple(s.strip() for s in args.text_scripts.split(",") if s.strip())} if args.text_scripts else {}),
    )
    m = filter_records(cfg, args.input, verify=args.verify)
    rows_in = next(iter(m["stages"].values()), {}).get("in", 0)
    print(f"filter: {rows_in} records -> {m['tables']['records']['rows']} kept -> {args.out}")
    if "semdedup" in m:
        d = m["semdedup"]
        print(f"  semdedup: {d['duplicates']} semantic duplicates among {d['embedded']} images ({d['clusters']} clusters, "
              f"cosine > {d['threshold']:g})")
    for group, c in (m.get("clip_keep_fraction") or {}).items():
        where = "all sources" if group == "*" else f"source {group}"
        print(f"  clip top {c['fraction']:g} of {where}: {c['kept']} of {c['scored']} scored, cutoff {c['threshold']}")
    for name, s in m["stages"].items():
        for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<8} {n:>6}  {reason}")
    return 0


def _fractions_by_source(text: str) -> dict[str, float]:
    """`laion=0.3,cc3m=0.5` -> {"laion": 0.3, "cc3m": 0.5}; InputError naming the bad item."""
    from curation.errors import InputError

    out: dict[str, float] = {}
    for item in (t.strip() for t in text.split(",")):
        name, eq, value = item.partition("=")
        try:
            if not (eq and name.strip()):
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"--clip-keep-fraction-by-source: expected SOURCE=FRACTION, got {item!r}") from None
    return out

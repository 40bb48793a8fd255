"""`curate download URLS --out DIR`: a URL list → records (and rejects), through img2dataset."""

from __future__ import annotations

import argparse

from curation.commands import add_fetch_arguments, add_output_arguments
from curation.runner import DEFAULT_SHARD_ROWS

__all__ = ["add_arguments", "run"]

EXAMPLES = """examples:
  curate download urls.parquet --out raw
  curate download laion-parts/ --out raw                 a folder of Parquet parts (ids web:PART-STEM:ROW)
  curate download 'parts/*.parquet' extra.csv --out raw  a glob and a file, read in that order
  curate download s3://corpus/urls/ --out raw            object storage (credentials: AWS_* variables, ~/.aws)
  curate download links.csv --out raw --url-col link --caption-col alt --id-col key
  curate download urls.parquet --out raw --shard-rows 5000 --resume      continue a run that was killed"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("urls", nargs="+", metavar="URLS",
                   help="URL list: files (.parquet, .csv, .tsv, .jsonl), folders of them, globs; local or any "
                        "fsspec URL (s3://, gs://, hf://, https://)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--source", default="web",
                   help="dataset name; record ids are SOURCE:ROW (one file), SOURCE:FILE:ROW (several), SOURCE:ID (--id-col)")
    p.add_argument("--url-col", default="url", help="column of the image URLs")
    p.add_argument("--caption-col", default="caption", help="column of the captions; '' for none")
    p.add_argument("--id-col", default=None, help="column of stable ids (default: row number)")
    p.add_argument("--threads", type=int, default=16, help="download threads per input shard's task")
    p.add_argument("--timeout", type=int, default=10, help="seconds per URL")
    add_fetch_arguments(p)
    p.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="URLs per input shard (unit of work, resume and output shard)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    p.add_argument("--runner", default="auto", choices=("auto", "local", "ray"), help="auto: in this process when the input fits one input shard and no Ray is named or running, else Ray; local: this process; ray: a Ray job")
    add_output_arguments(p, verify=False)


def run(args: argparse.Namespace) -> int:
    from curation.commands import check_out_dir, check_positive, fetch_settings
    from jobs.web_pairs import WebPairsConfig, download

    cfg = WebPairsConfig(
        urls=args.urls[0] if len(args.urls) == 1 else tuple(args.urls), out=args.out, source=args.source, url_col=args.url_col,
        caption_col=args.caption_col or None, id_col=args.id_col, threads=args.threads, timeout=args.timeout,
        shard_rows=args.shard_rows, ray_address=args.ray_address, runner=args.runner, overwrite=args.overwrite,
        resume=args.resume, **fetch_settings(args),
    )
    for option, value in (("--shard-rows", cfg.shard_rows), ("--threads", cfg.threads), ("--timeout", cfg.timeout),
                          ("--max-per-host", cfg.max_per_host)):
        check_positive(option, value)
    check_out_dir(cfg.out, object_storage=True)
    m = download(cfg)
    s = m["stages"]["download"]
    print(f"download: {s['in']} URLs -> {s['out']} records, {sum(s['dropped'].values())} rejects -> {args.out}")
    for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
        print(f"  {n:>6}  {reason}")
    return 0

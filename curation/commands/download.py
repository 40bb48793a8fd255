"""`curate download URLS --out DIR`: a URL list → records (and rejects), through img2dataset."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("urls", help="URL list: .parquet, .csv, .tsv or .jsonl")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--source", default="web", help="dataset name; record ids are SOURCE:ID")
    p.add_argument("--url-col", default="url")
    p.add_argument("--caption-col", default="caption", help="'' for none")
    p.add_argument("--id-col", default=None, help="column of stable ids (default: row number)")
    p.add_argument("--processes", type=int, default=1, help="img2dataset processes")
    p.add_argument("--threads", type=int, default=16, help="img2dataset threads per process")
    p.add_argument("--timeout", type=int, default=10, help="seconds per URL")
    p.add_argument("--shard-mb", type=int, default=256, help="target shard size")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")


def run(args: argparse.Namespace) -> int:
    from curation.commands import check_out_dir, check_positive
    from curation.dataset import DatasetWriter
    from curation.download import read_url_list
    from curation.runtime import init_ray
    from jobs.web_pairs import WebPairsConfig, download_step

    cfg = WebPairsConfig(
        urls=args.urls, out=args.out, source=args.source, url_col=args.url_col,
        caption_col=args.caption_col or None, id_col=args.id_col, processes=args.processes,
        threads=args.threads, timeout=args.timeout, shard_mb=args.shard_mb, ray_address=args.ray_address,
    )
    for option, value in (("--shard-mb", cfg.shard_mb), ("--processes", cfg.processes), ("--threads", cfg.threads), ("--timeout", cfg.timeout)):
        check_positive(option, value)
    read_url_list(cfg.urls, cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col)  # fail fast
    check_out_dir(cfg.out)
    init_ray(cfg.ray_address)
    writer = DatasetWriter(cfg.out, target_shard_bytes=cfg.shard_mb * 1024 * 1024)
    download_step(cfg, writer, [])
    m = writer.close(config={"command": "download", **dataclasses.asdict(cfg)})
    s = m["stages"]["download"]
    print(f"download: {s['in']} URLs -> {s['out']} records, {sum(s['dropped'].values())} rejects -> {args.out}")
    for reason, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
        print(f"  {n:>6}  {reason}")
    return 0

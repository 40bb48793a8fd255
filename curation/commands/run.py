"""`curate run JOB.toml`: a whole web-pairs job from a config file (see jobs/configs/)."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="JOB.toml", help="job config (keys of jobs.web_pairs.WebPairsConfig)")
    p.add_argument("--out", default=None, help="override the config's output directory")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    p.add_argument(
        "--overwrite", action="store_true", default=None,
        help="replace a non-empty output directory (as the config key overwrite = true)",
    )


def run(args: argparse.Namespace) -> int:
    from jobs import web_pairs
    from jobs.config import load_config

    cfg = load_config(args.config, web_pairs.WebPairsConfig, {"out": args.out, "ray_address": args.ray_address, "overwrite": args.overwrite})
    m = web_pairs.run(cfg)
    t = m["tables"]
    print(f"run: {t['records']['rows']} records, {t['samples']['rows']} samples, {t['rejects']['rows']} rejects -> {cfg.out}")
    for name, s in m["stages"].items():
        print(f"  {name:<8} in {s['in']:>7}  out {s['out']:>7}  dropped {sum(s['dropped'].values()):>6}")
    return 0

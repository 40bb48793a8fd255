"""`curate run JOB.toml`: a whole web-pairs job from a config file (see jobs/configs/)."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run", "check_config"]

EXAMPLES = """examples:
  curate run jobs/configs/web_pairs.example.toml
  curate run job.toml --out /data/run2 --resume
  RAY_ADDRESS=HEAD:6379 curate run job.toml"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="JOB.toml", help="job config (keys of jobs.web_pairs.WebPairsConfig)")
    p.add_argument("--out", default=None, help="override the config's output directory")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (else $RAY_ADDRESS or a local Ray)")
    p.add_argument(
        "--overwrite", action="store_true", default=None,
        help="replace a non-empty output directory (as the config key overwrite = true)",
    )
    p.add_argument(
        "--resume", action="store_true", default=None,
        help="continue an interrupted run of this config into its output: finished input shards are skipped (as resume = true)",
    )


def check_config(cfg, where: str = "config") -> None:
    """What the job would find wrong only late (the build runs after the download), checked first."""
    from curation.commands import check_out_dir, check_positive
    from curation.errors import InputError
    from formats.build import BuildSamples
    from jobs.build import check_pixel_limits

    try:
        for key in ("shard_rows", "task_cpus", "threads", "timeout", "clip_batch_size", "max_pixels"):
            check_positive(f"key {key!r}", getattr(cfg, key))
        BuildSamples(format=cfg.format, tasks=cfg.tasks, max_tokens=cfg.pack)  # format, task names, pack size
        from jobs.web_pairs import needs_two_passes

        needs_two_passes(cfg)  # keep fractions, semantic dedup settings
        try:
            check_pixel_limits(cfg.vision_min_pixels, cfg.vision_max_pixels)
        except ValueError as exc:
            raise InputError(str(exc).replace("min_pixels", "key 'vision_min_pixels'", 1).replace("max_pixels", "key 'vision_max_pixels'", 1)) from None
        check_out_dir(cfg.out, "key 'out'", object_storage=True)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from jobs import web_pairs
    from jobs.config import load_config

    cfg = load_config(args.config, web_pairs.WebPairsConfig, {"out": args.out, "ray_address": args.ray_address, "overwrite": args.overwrite, "resume": args.resume})
    check_config(cfg, args.config)
    args.out = cfg.out  # where the CLI keeps this run's third-party log
    m = web_pairs.run(cfg)
    t = m["tables"]
    print(f"run: {t['records']['rows']} records, {t['samples']['rows']} samples, {t['rejects']['rows']} rejects -> {cfg.out}")
    for name, s in m["stages"].items():
        print(f"  {name:<8} in {s['in']:>7}  out {s['out']:>7}  dropped {sum(s['dropped'].values()):>6}")
    return 0

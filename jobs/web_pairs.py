"""Job: web image-text pairs → filtered records → Qwen-VL samples.

The recipe, in order:

    read_url_list → img2dataset → FromImg2dataset → BasicFilter
        → ClipPreprocess → ClipScore → records + rejects
    records → BuildSamples (→ pack) → samples + rejects
    manifest.json

`curate run JOB.toml` runs it from a config file; `curate demo` runs it on a
generated corpus served from loopback.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from curation.dataset import DatasetWriter
from curation.download import DEFAULT_MAX_PIXELS, FromImg2dataset, read_url_list, run_img2dataset
from curation.errors import InputError
from curation.runtime import Progress, Stage, apply_stages, collect, init_ray
from jobs.build import build_into

__all__ = ["WebPairsConfig", "filter_stages", "download_step", "filter_step", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebPairsConfig:
    urls: str
    out: str
    source: str = "web"
    url_col: str = "url"
    caption_col: str | None = "caption"
    id_col: str | None = None
    # download (img2dataset)
    processes: int = 1
    threads: int = 16
    timeout: int = 10
    retries: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    # basic filter
    min_side: int = 32
    max_aspect_ratio: float = 4.0
    min_caption_words: int = 2
    max_caption_chars: int = 1000
    # CLIP filter; no model = no CLIP stage
    clip_model: str | None = None
    clip_pretrained: str | None = None
    clip_checkpoint: str | None = None
    min_clip_score: float | None = None
    clip_batch_size: int = 64
    clip_gpus: float | None = None  # None: 1 per actor when the cluster has GPUs
    # build
    format: str = "qwen-vl"
    tasks: tuple[str, ...] = ("caption",)
    pack: int | None = None
    # output and runtime
    shard_mb: int = 256
    ray_address: str | None = None
    work_dir: str | None = None


def filter_stages(cfg: WebPairsConfig) -> list[Stage]:
    """The filter stages of a config, in order (the model is checked here, on the driver)."""
    from filters import BasicFilter, ClipModelSpec, ClipPreprocess, ClipScore

    stages: list[Stage] = [
        BasicFilter(cfg.min_side, cfg.max_aspect_ratio, cfg.min_caption_words, cfg.max_caption_chars)
    ]
    if cfg.clip_model:
        spec = ClipModelSpec(cfg.clip_model, cfg.clip_pretrained, cfg.clip_checkpoint)
        spec.check()
        gpus = cfg.clip_gpus
        if gpus is None:
            import ray

            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
        pre = ClipPreprocess(spec, max_pixels=cfg.max_pixels)
        pre.batch_size = cfg.clip_batch_size
        stages += [pre, ClipScore(spec, cfg.min_clip_score, gpus=gpus, batch_size=cfg.clip_batch_size)]
    return stages


def _stage_names(stages: Iterable[Stage]) -> list[str]:
    names: list[str] = []
    for s in stages:
        if s.name not in names:
            names.append(s.name)
    return names


def _arrow_batches(ds, batch_size: int = 256) -> Iterator[pa.Table]:
    yield from ds.iter_batches(batch_format="pyarrow", batch_size=batch_size)


def download_step(cfg: WebPairsConfig, writer: DatasetWriter, stages: list[Stage]) -> int:
    """URL list → img2dataset → `stages` → records + rejects in `writer`; returns records kept."""
    import ray.data

    urls = read_url_list(cfg.urls, cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col)
    stages = [FromImg2dataset(cfg.source), *stages]
    with tempfile.TemporaryDirectory(prefix="curate-") as tmp:
        work = Path(cfg.work_dir) if cfg.work_dir else Path(tmp)
        t0 = time.time()
        log.info("download: %d URLs through img2dataset", urls.num_rows)
        shards = run_img2dataset(
            urls, work, processes=cfg.processes, threads=cfg.threads, timeout=cfg.timeout,
            retries=cfg.retries, max_pixels=cfg.max_pixels,
        )
        writer.timings["download"] = time.time() - t0
        t1 = time.time()
        log.info("stages: %s", " -> ".join(_stage_names(stages)))
        ds = apply_stages(ray.data.read_parquet([str(s) for s in shards]), stages)
        kept, _ = collect(_arrow_batches(ds), writer, _stage_names(stages), on_batch=Progress("records", urls.num_rows))
        writer.timings["records"] = time.time() - t1  # img2dataset rows -> records, through every filter
    return kept


def filter_step(record_paths: list[Path], rows: int, cfg: WebPairsConfig, writer: DatasetWriter) -> int:
    """Records shards → filter stages → records + rejects in `writer`; returns records kept."""
    import ray.data

    stages = filter_stages(cfg)
    t1 = time.time()
    log.info("stages: %s", " -> ".join(_stage_names(stages)))
    if not record_paths:
        for name in _stage_names(stages):
            writer.count_stage(name, 0, 0)
        return 0
    ds = apply_stages(ray.data.read_parquet([str(p) for p in record_paths]), stages)
    kept, _ = collect(_arrow_batches(ds), writer, _stage_names(stages), on_batch=Progress("filter", rows))
    writer.timings["filter"] = time.time() - t1
    return kept


def run(cfg: WebPairsConfig) -> dict:
    """Run the whole job; returns the manifest (also written to `cfg.out`)."""
    if cfg.shard_mb <= 0:
        raise InputError(f"shard_mb must be positive, got {cfg.shard_mb}")
    read_url_list(cfg.urls, cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col)  # fail fast on bad input
    init_ray(cfg.ray_address)
    stages = filter_stages(cfg)
    writer = DatasetWriter(cfg.out, target_shard_bytes=cfg.shard_mb * 1024 * 1024)
    kept = download_step(cfg, writer, stages)
    records = writer.writer("records")
    records.flush()
    t2 = time.time()
    extra = build_into(
        writer, [Path(cfg.out) / s.path for s in records.shards], kept, cfg.format, cfg.tasks, cfg.pack,
        runner="auto", ray_address=cfg.ray_address,
    )
    writer.timings["build"] = time.time() - t2
    config = {"job": "web_pairs", **dataclasses.asdict(cfg)}
    return writer.close(config=config, extra=extra)

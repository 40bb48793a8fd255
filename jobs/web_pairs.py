"""Job: web image-text pairs → filtered records → Qwen-VL samples.

The recipe, in order:

    read_url_list → img2dataset → FromImg2dataset → filters (basic, clip)
        → records + rejects
    records → BuildSamples (→ pack) → samples + rejects
    manifest.json

`curate run JOB.toml` runs it from a config file; `curate demo` runs it on a
generated corpus served from loopback.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from curation.dataset import DatasetWriter
from curation.download import DEFAULT_MAX_PIXELS, FromImg2dataset, read_url_list, run_img2dataset
from curation.errors import InputError
from curation.runtime import Progress, Stage, collect, init_ray, stream_stages
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
    # filters, in order (filters.FILTERS); "clip" runs only with a clip_model
    filters: tuple[str, ...] = ("basic", "clip")
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
    overwrite: bool = False  # replace a non-empty output (only once the new one is complete)
    ray_address: str | None = None


def filter_stages(cfg: WebPairsConfig) -> list[Stage]:
    """The filter stages of a config, in order (the CLIP model is checked here, on the driver)."""
    from filters import filter_stages as stages_of

    return stages_of(cfg.filters, cfg)


def _stage_names(stages: Iterable[Stage]) -> list[str]:
    names: list[str] = []
    for s in stages:
        if s.name not in names:
            names.append(s.name)
    return names


def open_output(cfg: WebPairsConfig, inputs: tuple[str, ...] = ()) -> DatasetWriter:
    if cfg.shard_mb <= 0:
        raise InputError(f"shard_mb must be positive, got {cfg.shard_mb}")
    return DatasetWriter(cfg.out, target_shard_bytes=cfg.shard_mb * 1024 * 1024, overwrite=cfg.overwrite, inputs=inputs)


def download_step(cfg: WebPairsConfig, writer: DatasetWriter, stages: list[Stage]) -> int:
    """URL list → img2dataset → `stages` → records + rejects in `writer`; returns records kept."""
    urls = read_url_list(cfg.urls, cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col)
    stages = [FromImg2dataset(cfg.source), *stages]
    names = _stage_names(stages)
    t0 = time.time()
    log.info("download: %d URLs through img2dataset", urls.num_rows)
    shards = run_img2dataset(
        urls, writer.work_dir / "download", processes=cfg.processes, threads=cfg.threads, timeout=cfg.timeout,
        retries=cfg.retries, max_pixels=cfg.max_pixels,
    )
    download_seconds = time.time() - t0
    writer.timings["download"] = download_seconds
    t1 = time.time()
    log.info("stages: %s", " -> ".join(names))
    if shards:
        kept, _ = collect(stream_stages(shards, stages), writer, names, on_batch=Progress("records", urls.num_rows))
    else:  # an empty URL list
        kept = 0
        for name in names:
            writer.count_stage(name, 0, 0)
    writer.count_stage("download", 0, 0, seconds=download_seconds)  # img2dataset's own time, beside its rows'
    writer.timings["records"] = time.time() - t1  # img2dataset rows -> records, through every filter
    return kept


def filter_step(record_paths: list[Path], rows: int, cfg: WebPairsConfig, writer: DatasetWriter) -> int:
    """Records shards → filter stages → records + rejects in `writer`; returns records kept."""
    stages = filter_stages(cfg)
    names = _stage_names(stages)
    t1 = time.time()
    log.info("stages: %s", " -> ".join(names))
    if not record_paths:
        return collect((), writer, names)[0]
    kept, _ = collect(stream_stages(record_paths, stages), writer, names, on_batch=Progress("filter", rows))
    writer.timings["filter"] = time.time() - t1
    return kept


def run(cfg: WebPairsConfig, writer: DatasetWriter | None = None) -> dict:
    """Run the whole job; returns the manifest (also written to `cfg.out`).

    The output is opened (locked, staged) here unless the caller hands in its
    writer; a failure leaves any old dataset in `cfg.out` as it was.
    """
    read_url_list(cfg.urls, cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col)  # fail fast on bad input
    with writer or open_output(cfg) as writer:
        init_ray(cfg.ray_address)
        stages = filter_stages(cfg)
        kept = download_step(cfg, writer, stages)
        records = writer.writer("records")
        records.flush()
        t2 = time.time()
        extra = build_into(
            writer, [writer.staged(s) for s in records.shards], kept, cfg.format, cfg.tasks, cfg.pack,
            runner="auto", ray_address=cfg.ray_address,
        )
        writer.timings["build"] = time.time() - t2
        config = {"job": "web_pairs", **dataclasses.asdict(cfg)}
        return writer.close(config=config, extra=extra)

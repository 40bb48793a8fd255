"""Job: web image-text pairs → filtered records → Qwen-VL samples, in one streaming pass.

The recipe, per input shard of the URL list (one Ray task each):

    img2dataset download → FromImg2dataset → filters (basic, clip)
        → records + rejects → BuildSamples (→ pack) → samples + rejects

With `dedup` stages (or `decontaminate`) in the config, dedup needs the whole
dataset, so the recipe runs in two passes (jobs/dedup.py):

    download → filters (+ phash) → records of a work dataset in the staging
    grouping on the cluster (exact keys, pHash bands) → decisions
    work records → Decontaminate → DedupDecide → records + rejects → build

`curate run JOB.toml` runs it from a config file; `curate demo` runs it on a
generated corpus served from loopback; `curate download` and `curate filter`
run its first half.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from curation.crawl import DEFAULT_DISALLOWED_HEADER_DIRECTIVES, DEFAULT_USER_AGENT_TOKEN, FetchPolicy
from curation.dataset import Dataset, DatasetWriter
from curation.download import DEFAULT_MAX_PIXELS, FromImg2dataset, Img2datasetReader, read_url_list, url_shards
from curation.errors import InputError
from curation.runner import DEFAULT_SHARD_ROWS, ParquetReader, Pipeline, Sink, init_ray, parquet_shards, run_pipeline
from curation.runtime import Stage
from filters.phash import DEFAULT_MAX_DISTANCE
from jobs.build import build_extra, build_steps

__all__ = ["WebPairsConfig", "fetch_policy", "filter_stages", "open_output", "download", "filter_records", "run"]

log = logging.getLogger(__name__)

# settings that do not change what a run produces: a resumed run may differ in them
RUNTIME_KEYS = ("out", "overwrite", "resume", "ray_address")


@dataclass(frozen=True)
class WebPairsConfig:
    urls: str
    out: str
    source: str = "web"
    url_col: str = "url"
    caption_col: str | None = "caption"
    id_col: str | None = None
    # download (img2dataset's engine, inside each shard's task; curation/crawl.py)
    threads: int = 16
    timeout: int = 10
    retries: int = 2  # on 429, 5xx, timeouts and resets, with exponential backoff
    retry_backoff: float = 1.0  # seconds before the first retry, doubled each time
    max_retry_wait: float = 30.0  # longest wait before a retry; a longer Retry-After means no retry
    max_per_host: int = 4  # requests in flight per host, per shard task
    user_agent_token: str = DEFAULT_USER_AGENT_TOKEN  # sent as TOKEN/VERSION (+CONTACT); X-Robots-Tag: TOKEN: ... applies
    crawler_contact: str | None = None  # a page or address for site owners: who crawls, how to opt out
    disallowed_header_directives: tuple[str, ...] = DEFAULT_DISALLOWED_HEADER_DIRECTIVES  # X-Robots-Tag opt-outs
    allow_private_network: bool = False  # fetch from loopback/private/link-local addresses too (demo, tests)
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
    clip_actors: bool | None = None  # None: an actor pool with GPUs, the model inside each shard task on CPUs
    # dedup over the whole dataset, after the filters (jobs/dedup.py): "exact" (image sha256), "url"
    # (normalised URL), "phash" (perceptual, within max_hamming_distance); decontaminate: eval images
    dedup: tuple[str, ...] = ()
    max_hamming_distance: int = DEFAULT_MAX_DISTANCE
    decontaminate: str | None = None  # a folder of eval images or a records dataset
    # build
    format: str = "qwen-vl"
    tasks: tuple[str, ...] = ("caption",)
    pack: int | None = None
    # input shards, output and runtime
    shard_rows: int = DEFAULT_SHARD_ROWS
    task_cpus: float = 1.0
    overwrite: bool = False  # replace a non-empty output (only once the new one is complete)
    resume: bool = False  # continue an interrupted run of the same config
    ray_address: str | None = None


def filter_stages(cfg: WebPairsConfig) -> list[Stage]:
    """The filter stages of a config, in order (the CLIP model is checked here, on the driver)."""
    from filters import filter_stages as stages_of

    return stages_of(cfg.filters, cfg)


def identity(cfg: WebPairsConfig, **extra) -> dict:
    """What a run produces depends on: the config without its runtime keys."""
    return {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_KEYS}, **extra}


def open_output(cfg: WebPairsConfig, inputs: tuple[str, ...] = (), **identity_extra) -> DatasetWriter:
    if cfg.shard_rows <= 0:
        raise InputError(f"shard_rows must be positive, got {cfg.shard_rows}")
    return DatasetWriter(cfg.out, overwrite=cfg.overwrite, inputs=inputs, resume=cfg.resume,
                         config=identity(cfg, **identity_extra))


def fetch_policy(cfg: WebPairsConfig) -> FetchPolicy:
    """How the download fetches (curation/crawl.py); a bad setting is an InputError naming it."""
    if cfg.retries < 0:
        raise InputError(f"retries must be >= 0, got {cfg.retries}")
    try:
        return FetchPolicy(
            allow_private_network=cfg.allow_private_network, user_agent_token=cfg.user_agent_token, contact=cfg.crawler_contact,
            disallowed_header_directives=tuple(cfg.disallowed_header_directives), max_per_host=cfg.max_per_host,
            backoff=cfg.retry_backoff, max_retry_wait=cfg.max_retry_wait,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _download_pipeline(cfg: WebPairsConfig, after: list) -> Pipeline:
    # batches of the CLIP batch size: scoring starts while the rest of the shard still downloads
    reader = Img2datasetReader(threads=cfg.threads, timeout=cfg.timeout, retries=cfg.retries, max_pixels=cfg.max_pixels,
                               batch_size=cfg.clip_batch_size, policy=fetch_policy(cfg))
    return Pipeline(reader, [FromImg2dataset(cfg.source, cfg.max_pixels), *after], task_cpus=cfg.task_cpus)


def _run_urls(cfg: WebPairsConfig, writer: DatasetWriter, pipeline: Pipeline) -> dict:
    urls = read_url_list(cfg.urls, cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col)
    log.info("%d URLs in %d input shard(s) of <= %d; stages: %s", urls.num_rows, math.ceil(urls.num_rows / cfg.shard_rows),
             cfg.shard_rows, " -> ".join(pipeline.stage_names()))
    shards = url_shards(urls, writer.staging, cfg.shard_rows, skip=writer.done_shards())
    return run_pipeline(pipeline, shards, writer, total_shards=math.ceil(urls.num_rows / cfg.shard_rows))


def download(cfg: WebPairsConfig) -> dict:
    """URL list → records + rejects (no filters); returns the manifest."""
    read_url_list(cfg.urls, cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col)  # fail fast on bad input
    fetch_policy(cfg)
    with open_output(cfg, job="download") as writer:
        init_ray(cfg.ray_address)
        _run_urls(cfg, writer, _download_pipeline(cfg, [Sink("records")]))
        return writer.close(config={"command": "download", **dataclasses.asdict(cfg)})


def filter_records(cfg: WebPairsConfig, input_dir: str, verify: bool = False) -> dict:
    """Records of the dataset `input_dir` → filter stages → records + rejects; returns the manifest."""
    src = Dataset(input_dir, verify=verify)
    files = [(p, s["rows"]) for p, s in zip(src.shard_paths("records"), src.shards("records"))]
    stages = filter_stages(cfg)  # a bad filter name or CLIP model fails here, before the output is touched
    with open_output(cfg, inputs=(input_dir,), job="filter", input=str(Path(input_dir).resolve())) as writer:
        init_ray(cfg.ray_address)
        pipeline = Pipeline(ParquetReader(batch_size=cfg.clip_batch_size), [*stages, Sink("records")], task_cpus=cfg.task_cpus)
        run_pipeline(pipeline, parquet_shards(files, cfg.shard_rows), writer)
        config = {"command": "filter", "input": input_dir, **dataclasses.asdict(cfg)}
        config.pop("urls")
        return writer.close(config=config)


def _run_with_dedup(cfg: WebPairsConfig, writer: DatasetWriter, build: list) -> tuple[dict, dict]:
    """Both passes of a job with dedup stages; returns the second pass's summary and manifest extras."""
    import pyarrow as pa

    from filters.phash import PHash
    from jobs.dedup import dedup_steps

    stages = filter_stages(cfg)
    if ("phash" in cfg.dedup or cfg.decontaminate) and not any(isinstance(s, PHash) for s in stages):
        stages.append(PHash(cfg.max_pixels))
    t0 = time.time()
    work = writer.staging / "filtered"
    if not (writer.resumed and (work / "manifest.json").is_file()):
        with DatasetWriter(work, overwrite=True, resume=writer.resumed, config=identity(cfg, part="filtered")) as first:
            _run_urls(cfg, first, _download_pipeline(cfg, [*stages, Sink("records")]))
            first.close()
    filtered = Dataset(work)
    for name, c in filtered.manifest["stages"].items():  # the first pass's counts and rejects join the output's
        writer.count_stage(name, c["in"], c["out"], c["dropped"], c["seconds"])
    for rb in filtered.iter_batches("rejects", batch_size=8192):
        writer.write("rejects", pa.Table.from_batches([rb]))
    files = [(p, s["rows"]) for p, s in zip(filtered.shard_paths("records"), filtered.shards("records"))]
    writer.timings["first_pass"] = time.time() - t0
    steps, figures = dedup_steps(files, cfg.dedup, cfg.max_hamming_distance, writer.work_dir, cfg.decontaminate,
                                 cfg.shard_rows)
    writer.timings["grouping"] = figures.get("grouping_seconds", 0.0)
    t0 = time.time()
    pipeline = Pipeline(ParquetReader(batch_size=cfg.clip_batch_size), [*steps, Sink("records"), *build],
                        task_cpus=cfg.task_cpus)
    summary = run_pipeline(pipeline, parquet_shards(files, cfg.shard_rows), writer)
    writer.timings["second_pass"] = time.time() - t0
    extra = {"dedup": figures}
    if "download" in filtered.manifest:
        extra["download"] = filtered.manifest["download"]
    return summary, extra


def run(cfg: WebPairsConfig, writer: DatasetWriter | None = None) -> dict:
    """Run the whole job; returns the manifest (also written to `cfg.out`).

    The output is opened (locked, staged) here unless the caller hands in its
    writer; a failure leaves any old dataset in `cfg.out` as it was, and the
    finished input shards in its staging directory for `resume`.
    """
    from jobs.dedup import check_settings

    read_url_list(cfg.urls, cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col)  # fail fast on bad input
    fetch_policy(cfg)
    check_settings(cfg.dedup, cfg.max_hamming_distance)
    with writer or open_output(cfg, job="web_pairs") as writer:
        init_ray(cfg.ray_address)
        t0 = time.time()
        build = build_steps(cfg.format, cfg.tasks, cfg.pack)
        extra: dict = {}
        if cfg.dedup or cfg.decontaminate:
            summary, extra = _run_with_dedup(cfg, writer, build)
        else:
            pipeline = _download_pipeline(cfg, [*filter_stages(cfg), Sink("records"), *build])
            summary = _run_urls(cfg, writer, pipeline)
        writer.timings["pipeline"] = time.time() - t0
        config = {"job": "web_pairs", **dataclasses.asdict(cfg)}
        return writer.close(config=config, extra={**extra, **build_extra(writer, summary, build, "ray")})

"""Job: web image-text pairs → filtered records → Qwen-VL samples, in one streaming pass.

The recipe, per input shard of the URL list (one Ray task each):

    img2dataset download → FromImg2dataset → filters (basic, clip)
        → records + rejects → BuildSamples (→ pack) → samples + rejects

With `clip_keep_fraction` (DataComp's top fraction by CLIP score) the records
are scored first, into a scratch dataset; the exact cutoff over every score
comes next; a second pass keeps the top fraction and builds the samples.

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
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from curation.crawl.fetch import DEFAULT_DISALLOWED_HEADER_DIRECTIVES, DEFAULT_USER_AGENT_TOKEN, FetchPolicy
from curation.storage import fs as storage
from curation.storage.dataset import Dataset, DatasetWriter
from curation.crawl.download import DEFAULT_MAX_PIXELS, FromImg2dataset, Img2datasetReader
from curation.crawl.urls import DUPLICATES_DIR, DuplicatesReduce, UrlColumns, UrlKeys, UrlList, fix_shard
from curation.errors import InputError
from curation.runner import (
    DEFAULT_SHARD_ROWS, Beside, ParquetReader, Pipeline, Sink, init_ray, parquet_shards, run_pipeline, run_remote,
)
from curation.runtime import Stage
from jobs.build import DEFAULT_MAX_PIXELS as DEFAULT_VISION_MAX_PIXELS
from jobs.build import DEFAULT_MIN_PIXELS as DEFAULT_VISION_MIN_PIXELS
from filters.phash import DEFAULT_MAX_DISTANCE
from jobs.build import build_extra, build_steps

__all__ = ["WebPairsConfig", "fetch_policy", "filter_stages", "needs_two_passes", "open_output", "download", "filter_records", "run"]

log = logging.getLogger(__name__)

# settings that do not change what a run produces: a resumed run may differ in them
# a URL list of at most this many rows has its duplicate URLs found in the driver, before the first shard
# (curation.runner.Beside.local_rows); a longer one by the shuffle on the cluster, beside the downloads
LOCAL_INDEX_ROWS = 100_000
CUTOFF_SHARD_ROWS = 1_000_000  # input rows per task of the CLIP top fraction's folds (two small columns)
RUNTIME_KEYS = ("out", "overwrite", "resume", "ray_address", "runner")
RUNNERS = ("auto", "local", "ray")


@dataclass(frozen=True)
class WebPairsConfig:
    urls: str | tuple[str, ...]  # a file, a folder, a glob, or several; local or any fsspec URL (curation/storage/fs.py)
    out: str
    source: str = "web"
    url_col: str = "url"
    caption_col: str | None = "caption"
    id_col: str | None = None
    # download (img2dataset's engine, inside each shard's task; curation/crawl/fetch.py)
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
    # text cleaning (filters/text.py), when "text" is in filters
    text_scripts: tuple[str, ...] = ("Latin", "Han", "Hiragana", "Katakana", "Hangul")
    text_min_words: int = 2
    text_max_tokens: int = 128  # of the format's Qwen tokenizer
    text_max_repeat: int = 5  # a character (not a digit) or word this many times in a row
    text_boilerplate: tuple[str, ...] | None = None  # None: filters.text.DEFAULT_BOILERPLATE
    # CLIP filter; no model = no CLIP stage
    clip_model: str | None = None
    clip_pretrained: str | None = None
    clip_checkpoint: str | None = None
    min_clip_score: float | None = None
    clip_batch_size: int | None = None  # None: 256 per GPU, 64 on CPUs
    clip_fast_decode: bool = False  # JPEGs decoded at a reduced DCT scale >= the model's input (changes pixels a little)
    clip_gpus: float | None = None  # None: 1 per actor when the cluster has GPUs
    clip_actors: bool | None = None  # None: an actor pool with GPUs, the model inside each shard task on CPUs
    # CLIP top fraction (filters/clip_fraction.py): keep the best-scoring fraction over the whole dataset, in a
    # second pass once every record is scored; by_source = {source: fraction} cuts those sources on their own
    clip_keep_fraction: float | None = None
    clip_keep_fraction_by_source: dict[str, float] | None = None
    # CLIP image embeddings: kept as the `clip_embedding` column; semantic dedup (filters/semdedup.py) in the
    # second pass: k-means over the embeddings, within a cluster drop cosine similarity above the threshold
    keep_embeddings: bool = False
    semdedup: bool = False
    semdedup_threshold: float = 0.95  # cosine similarity (SemDeDup's eps = 1 - threshold)
    semdedup_clusters: int | None = None  # None: one per 1000 embedded records
    # dedup over the whole dataset, after the filters (jobs/dedup.py): "exact" (image sha256), "url"
    # (normalised URL), "phash" (perceptual, within max_hamming_distance); decontaminate: eval images
    dedup: tuple[str, ...] = ()
    max_hamming_distance: int = DEFAULT_MAX_DISTANCE
    decontaminate: str | None = None  # a folder of eval images or a records dataset
    # build
    format: str = "qwen-vl"
    tasks: tuple[str, ...] = ("caption",)
    pack: int | None = None
    # Qwen2-VL / Qwen2.5-VL smart_resize limits the samples are built at (`curate build --min-pixels/--max-pixels`;
    # `max_pixels` above is the download's decompression-bomb limit, another thing)
    vision_min_pixels: int = DEFAULT_VISION_MIN_PIXELS
    vision_max_pixels: int = DEFAULT_VISION_MAX_PIXELS
    images_once: bool = False  # each image once per output shard in an `images` table (`curate build --images-once`)
    # input shards, output and runtime
    shard_rows: int = DEFAULT_SHARD_ROWS
    task_cpus: float = 1.0
    overwrite: bool = False  # replace a non-empty output (only once the new one is complete)
    resume: bool = False  # continue an interrupted run of the same config
    ray_address: str | None = None
    # "auto": in this process when the input fits one input shard (shard_rows), no Ray cluster is named
    # (ray_address, $RAY_ADDRESS) and none is running in this process: a small job starts in seconds, not
    # Ray's; "ray": a Ray job; "local": this process
    runner: str = "auto"


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
    from curation.storage.objects import open_writer

    return open_writer(cfg.out, overwrite=cfg.overwrite, inputs=inputs, resume=cfg.resume,
                       config=identity(cfg, **identity_extra))


def fetch_policy(cfg: WebPairsConfig) -> FetchPolicy:
    """How the download fetches (curation/crawl/fetch.py); a bad setting is an InputError naming it."""
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


def executor(cfg: WebPairsConfig, fits_one_shard: Callable[[int], bool]) -> str:
    """Where the job runs: "ray" or "local" (`runner`); `fits_one_shard(rows)`: whether the input has at most
    that many rows, found from metadata."""
    if cfg.runner not in RUNNERS:
        raise InputError(f"runner must be one of {', '.join(RUNNERS)}, got {cfg.runner!r}")
    if cfg.runner != "auto":
        return cfg.runner
    import os

    from curation.runner import ray_running

    if cfg.ray_address or os.environ.get("RAY_ADDRESS", "local") != "local" or ray_running():
        return "ray"
    return "local" if fits_one_shard(cfg.shard_rows) else "ray"


def _start(cfg: WebPairsConfig, used: str) -> None:
    if used == "ray":
        init_ray(cfg.ray_address)
    log.info("runner: %s", "Ray" if used == "ray" else "this process")


def _batch(cfg: WebPairsConfig) -> int:
    """Rows per batch the readers hand on: the CLIP batch size when one is set, else the CPU default."""
    from filters.clip_score import CPU_BATCH_SIZE

    return cfg.clip_batch_size or CPU_BATCH_SIZE


def url_list(cfg: WebPairsConfig) -> UrlList:
    """The config's URL list: its files listed and the first one's columns checked (fail fast, before any output)."""
    urls = UrlList([cfg.urls] if isinstance(cfg.urls, str) else list(cfg.urls),
                   UrlColumns(cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col))
    urls.check()
    return urls


def _download_pipeline(cfg: WebPairsConfig, after: list) -> Pipeline:
    # batches of the CLIP batch size: scoring starts while the rest of the shard still downloads
    reader = Img2datasetReader(threads=cfg.threads, timeout=cfg.timeout, retries=cfg.retries, max_pixels=cfg.max_pixels,
                               batch_size=_batch(cfg), policy=fetch_policy(cfg),
                               columns=UrlColumns(cfg.source, cfg.url_col, cfg.caption_col, cfg.id_col))
    return Pipeline(reader, [FromImg2dataset(cfg.source, cfg.max_pixels), *after], task_cpus=cfg.task_cpus)


def _run_urls(cfg: WebPairsConfig, writer: DatasetWriter, pipeline: Pipeline, urls: UrlList,
              correct_after: bool = False, used: str = "ray") -> dict:
    """The URL list's shards through `pipeline`, planned as they go (curation/crawl/urls.py), with the
    duplicate-URL shuffle beside them. `correct_after` (a download, records only): shards start at once
    and those that ran before the duplicates were known are corrected after; else they wait for them."""
    log.info("%d URL list file(s); input shards of <= %d rows; stages: %s", len(urls.files), cfg.shard_rows,
             " -> ".join(pipeline.stage_names()))
    staging = str(writer.staging)
    folder = storage.join(staging, DUPLICATES_DIR)
    fix = functools.partial(fix_shard, staging=staging, folder=folder) if correct_after else None
    beside = Beside(UrlKeys(urls.columns), DuplicatesReduce(folder), folder, fix=fix, local_rows=LOCAL_INDEX_ROWS)
    shards = urls.shards(cfg.shard_rows, staging, convert=run_remote if used == "ray" else None)
    return run_pipeline(pipeline, shards, writer, beside=beside, executor=used)


def download(cfg: WebPairsConfig) -> dict:
    """URL list → records + rejects (no filters); returns the manifest."""
    urls = url_list(cfg)  # fail fast on bad input
    fetch_policy(cfg)
    used = executor(cfg, urls.fits)
    with open_output(cfg, job="download") as writer:
        _start(cfg, used)
        _run_urls(cfg, writer, _download_pipeline(cfg, [Sink("records")]), urls, correct_after=True, used=used)
        return writer.close(config={"command": "download", **dataclasses.asdict(cfg), "runner": used})


def needs_two_passes(cfg: WebPairsConfig) -> bool:
    """Whether the job needs the whole dataset between its filters and the rest: a CLIP keep fraction,
    semantic dedup, dedup or decontamination (settings checked here too)."""
    from filters.clip_fraction import check_fractions
    from filters.semdedup import check_settings

    check_fractions(cfg.clip_keep_fraction, cfg.clip_keep_fraction_by_source)
    if cfg.semdedup:
        check_settings(cfg.semdedup_threshold, cfg.semdedup_clusters)
        if not cfg.clip_model or "clip" not in cfg.filters:
            raise InputError("semantic dedup needs the CLIP image embeddings: a clip_model (--clip-model) and the clip filter")
    if cfg.keep_embeddings and not cfg.clip_model:
        raise InputError("keep_embeddings (--keep-embeddings) needs a clip_model (--clip-model)")
    return (cfg.clip_keep_fraction is not None or bool(cfg.clip_keep_fraction_by_source) or cfg.semdedup
            or bool(getattr(cfg, "dedup", ())) or bool(getattr(cfg, "decontaminate", None)))


def _first_pass_stages(cfg: WebPairsConfig) -> list[Stage]:
    """The filters, plus the pHash measure when dedup or decontamination needs it and no filter makes it."""
    from filters.phash import PHash

    stages = filter_stages(cfg)
    if ("phash" in cfg.dedup or cfg.decontaminate) and not any(isinstance(s, PHash) for s in stages):
        stages.append(PHash(cfg.max_pixels))
    return stages


def _two_passes(cfg: WebPairsConfig, writer: DatasetWriter, first_pass: Callable[[DatasetWriter], object],
                after: list, used: str = "ray") -> tuple[dict, dict]:
    """Everything that needs the whole dataset, between two passes; returns (pass-2 summary, manifest extras).

    Pass 1 (`first_pass`) runs the filters into a scratch dataset in the output's staging (continued
    on resume). Between the passes, on the cluster or from small columns only (never image bytes):
    dedup's grouping (exact keys, pHash bands; `jobs.dedup`), semantic dedup (k-means over the CLIP
    embeddings in one Ray task), then the exact CLIP top-fraction cutoffs over the records that are
    not duplicates. Pass 2 reads the scratch records through Decontaminate, the dedup decisions,
    SemanticDedup and ClipTopFraction, then `after`. Pass 1's reject shards (linked, not read) and stage counts go into the
    output as if it were one pass. (A record dropped as eval overlap in pass 2 still counts in the
    top fraction's N: eval overlap is decided per record there.)
    """
    from filters.clip_fraction import ClipTopFraction, cutoffs_json, cutoffs_on_cluster
    from jobs.dedup import dedup_steps, node_reader

    from curation.storage.objects import open_writer

    scratch_dir = storage.join(str(writer.staging), "first-pass")
    t0 = time.time()
    if not (writer.resumed and storage.exists(storage.join(scratch_dir, "manifest.json"))):
        # a resumed run continues an interrupted first pass too (its finished shards are kept)
        with open_writer(scratch_dir, overwrite=True, resume=writer.resumed, config={"pass": "first"}) as scratch:
            first_pass(scratch)
            scratch.close(config={"pass": "first"})
    first = Dataset(scratch_dir)
    writer.timings["first_pass"] = time.time() - t0
    files = [(p, s["rows"]) for p, s in zip(first.shard_paths("records"), first.shards("records"))]
    extra: dict = {}
    steps: list = []
    kinds = tuple(cfg.dedup) + (("semantic",) if cfg.semdedup and "semantic" not in cfg.dedup else ())
    if kinds or cfg.decontaminate:
        steps, figures = dedup_steps(files, kinds, cfg.max_hamming_distance, writer.work_dir, cfg.decontaminate,
                                     cfg.shard_rows, semantic_threshold=cfg.semdedup_threshold,
                                     semantic_clusters=cfg.semdedup_clusters, keep_embeddings=cfg.keep_embeddings,
                                     executor=used)
        writer.timings["grouping"] = figures.get("grouping_seconds", 0.0)
        semantic = figures.pop("semantic", None)
        if cfg.dedup or cfg.decontaminate:
            extra["dedup"] = figures
        if semantic is not None:
            writer.timings["semdedup"] = semantic.pop("seconds")
            extra["semdedup"] = semantic
    if cfg.clip_keep_fraction is not None or cfg.clip_keep_fraction_by_source:
        # ranked on the cluster: the records that dedup drops (its decisions by row range) are not ranked
        exclude = [s.by_range for s in steps if getattr(s, "by_range", None) is not None]
        cutoffs = cutoffs_on_cluster(parquet_shards(files, max(cfg.shard_rows, CUTOFF_SHARD_ROWS)), [p for p, _ in files],
                                     cfg.clip_keep_fraction, cfg.clip_keep_fraction_by_source, exclude, executor=used)
        log.info("CLIP top fraction: %s", ", ".join(f"{k}: {c.kept} of {c.scored} (cutoff {c.clip_score})" for k, c in cutoffs.items()))
        extra["clip_keep_fraction"] = cutoffs_json(cutoffs)
        steps.append(ClipTopFraction(cutoffs))
    writer.adopt(first, "rejects")  # the first pass's reject shards, linked into the output as they are
    for name, c in first.manifest["stages"].items():
        writer.count_stage(name, c["in"], c["out"], c["dropped"], c["seconds"])
    t0 = time.time()
    pipeline = Pipeline(node_reader(steps, files, _batch(cfg)), [*steps, *after], task_cpus=cfg.task_cpus)
    summary = run_pipeline(pipeline, parquet_shards(files, cfg.shard_rows), writer, executor=used)
    writer.timings["second_pass"] = time.time() - t0
    if "download" in first.manifest:
        extra["download"] = first.manifest["download"]
    return summary, extra


def filter_records(cfg: WebPairsConfig, input_dir: str, verify: bool = False) -> dict:
    """Records of the dataset `input_dir` → filter stages → records + rejects; returns the manifest.

    With a CLIP keep fraction, dedup or semantic dedup, in two passes (`_two_passes`)."""
    src = Dataset(input_dir, verify=verify)
    files = [(p, s["rows"]) for p, s in zip(src.shard_paths("records"), src.shards("records"))]
    stages = filter_stages(cfg)  # a bad filter name or CLIP model fails here, before the output is touched
    two_pass = needs_two_passes(cfg)
    used = executor(cfg, lambda limit: src.rows("records") <= limit)
    with open_output(cfg, inputs=(input_dir,), job="filter", input=storage.canonical(input_dir)) as writer:
        _start(cfg, used)
        reader = ParquetReader(batch_size=_batch(cfg))
        shards = parquet_shards(files, cfg.shard_rows)
        extra = None
        first = Pipeline(reader, [*stages, Sink("records")], task_cpus=cfg.task_cpus)
        if two_pass:
            _, extra = _two_passes(cfg, writer, lambda w: run_pipeline(first, shards, w, executor=used), [Sink("records")], used)
        else:
            run_pipeline(first, shards, writer, executor=used)
        config = {"command": "filter", "input": input_dir, **dataclasses.asdict(cfg), "runner": used}
        config.pop("urls")
        return writer.close(config=config, extra=extra)


def run(cfg: WebPairsConfig, writer: DatasetWriter | None = None) -> dict:
    """Run the whole job; returns the manifest (also written to `cfg.out`).

    The output is opened (locked, staged) here unless the caller hands in its
    writer; a failure leaves any old dataset in `cfg.out` as it was, and the
    finished input shards in its staging directory for `resume`.
    """
    from jobs.dedup import check_settings

    urls = url_list(cfg)  # fail fast on bad input
    fetch_policy(cfg)
    check_settings(cfg.dedup, cfg.max_hamming_distance)
    used = executor(cfg, urls.fits)
    with writer or open_output(cfg, job="web_pairs") as writer:
        _start(cfg, used)
        t0 = time.time()
        build = build_steps(cfg.format, cfg.tasks, cfg.pack, min_pixels=cfg.vision_min_pixels,
                            max_pixels=cfg.vision_max_pixels, images_once=cfg.images_once)
        extra: dict = {}
        if needs_two_passes(cfg):  # filters first; dedup, semantic dedup, the top fraction; then build
            first = _download_pipeline(cfg, [*_first_pass_stages(cfg), Sink("records")])
            summary, extra = _two_passes(cfg, writer, lambda w: _run_urls(cfg, w, first, urls, used=used),
                                         [Sink("records"), *build], used)
        else:
            pipeline = _download_pipeline(cfg, [*filter_stages(cfg), Sink("records"), *build])
            summary = _run_urls(cfg, writer, pipeline, urls, used=used)
        writer.timings["pipeline"] = time.time() - t0
        config = {"job": "web_pairs", **dataclasses.asdict(cfg), "runner": used}
        return writer.close(config=config, extra={**extra, **build_extra(writer, summary, build, used)})

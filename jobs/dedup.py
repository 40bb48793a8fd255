"""Job: dedup a records dataset (exact copies, perceptual near-duplicates, eval-set overlap).

The recipe (`curate dedup IN --out OUT --exact --phash [--decontaminate X]`):

    1. measure   records without a `phash` -> PHash -> records (a work dataset in
                 the output's staging; skipped when every image has its phash)
    2. group     on the cluster, a shuffle (curation.runner.group_by_key):
                 exact keys (sha256, normalised URL) and pHash bands ->
                 pairs -> groups, the first record id of each kept
                 (filters/dedup_exact.py, filters/phash.py)
    3. decide    records -> Decontaminate -> DedupDecide -> records + rejects

The web-pairs job runs the same steps 2 and 3 between its filters and its
build when its config names `dedup` stages (jobs/web_pairs.py).
Semantic dedup (CLIP embeddings, issue 10 item 3) is one more kind of pair
for step 2: `dedup_pairs` is where it joins.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from curation.storage import fs as storage
from curation.storage.fs import canonical, parquet_file
from curation.storage.dataset import Dataset, DatasetWriter
from curation.errors import InputError
from curation.runner import (DEFAULT_SHARD_ROWS, ParquetReader, Pipeline, Sink, group_by_key, init_ray,
                             parquet_shards, run_pipeline)
from curation.runtime import Stage
from filters.dedup_exact import KEY_COLUMNS, DedupDecide, decide_duplicates, dedup_pairs_of_group, dedup_rows
from filters.phash import DEFAULT_MAX_DISTANCE, PHash, Decontaminate, band_layout, eval_hashes

__all__ = ["DEDUP_KINDS", "DedupConfig", "needs_phash", "dedup_pairs", "dedup_steps", "measure_phash", "run"]

log = logging.getLogger(__name__)

# the kinds of duplicate a config may name, in the order they are grouped; "semantic" (SemDeDup over the
# CLIP image embeddings of a `--keep-embeddings` run) is found in one task of its own, after the grouping
DEDUP_KINDS = ("exact", "url", "phash", "semantic")
RUNTIME_KEYS = ("out", "overwrite", "resume", "ray_address")


@dataclass(frozen=True)
class DedupConfig:
    out: str
    # "exact": same image bytes (sha256); "url": same normalised URL; "phash": perceptual near-duplicates
    dedup: tuple[str, ...] = ("exact", "url")
    max_hamming_distance: int = DEFAULT_MAX_DISTANCE
    decontaminate: str | None = None  # a folder of eval images or a records dataset
    semantic_threshold: float = 0.95  # "semantic": cosine similarity above which two images are duplicates
    semantic_clusters: int | None = None  # "semantic": k-means clusters (None: one per 1000 embedded records)
    shard_rows: int = DEFAULT_SHARD_ROWS
    task_cpus: float = 1.0
    batch_size: int = 256
    partitions: int | None = None  # of the grouping's shuffle; None: one per cluster CPU (curation.runner.group_by_key)
    overwrite: bool = False
    resume: bool = False
    ray_address: str | None = None


def check_settings(dedup: Sequence[str], max_hamming_distance: int) -> None:
    unknown = [k for k in dedup if k not in DEDUP_KINDS]
    if unknown:
        raise InputError(f"unknown dedup kind {unknown[0]!r} (known: {', '.join(DEDUP_KINDS)})")
    try:
        band_layout(max_hamming_distance)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def needs_phash(files: Sequence[Path | str]) -> bool:
    """Whether some record with image bytes lacks a `phash` (from the Parquet footers: null counts)."""
    for f in files:
        meta = parquet_file(str(f)).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        if "phash" not in names:
            return meta.num_rows > 0
        ph, im = names.index("phash"), names.index("image") if "image" in names else None
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            ph_stats = rg.column(ph).statistics
            im_nulls = rg.num_rows if im is None else (rg.column(im).statistics.null_count if rg.column(im).statistics else 0)
            if ph_stats is None or ph_stats.null_count > im_nulls:
                return True
    return False


def dedup_pairs(files: Sequence[tuple[Path | str, int]], dedup: Sequence[str], max_distance: int,
                shard_rows: int = DEFAULT_SHARD_ROWS, partitions: int | None = None, executor: str = "ray") -> list[pa.Table]:
    """The pairs of duplicate records among the records files, grouped on the cluster (step 2)."""
    shards = parquet_shards(files, shard_rows)
    present = set(parquet_file(str(files[0][0])).schema_arrow.names) if files else set()
    reader = ParquetReader(batch_size=8192, columns=tuple(c for c in KEY_COLUMNS if c in present))
    k = max_distance if "phash" in dedup and "phash" in present else None
    if not ("exact" in dedup or "url" in dedup or k is not None):
        return []
    # one shuffle for every kind: exact keys and pHash bands travel together, apart in each reduce
    emit = functools.partial(dedup_rows, by_image="exact" in dedup, by_url="url" in dedup, max_distance=k)
    reduce = functools.partial(dedup_pairs_of_group, max_distance=k)
    pairs = group_by_key(shards, reader, emit, reduce, partitions, executor)
    # semantic dedup (CLIP embeddings) joins here: its pairs in the same PAIR_SCHEMA
    return [p for p in pairs if p.num_rows]


GROUP_SHARD_ROWS = 250_000  # input rows per map task of the grouping (it reads four small columns)
KEY_ROWS_PER_PART = 2_000_000  # key rows (25 bytes each) per reduce task of the grouping
EDGE_ROWS_PER_PART = 4_000_000  # edges (16 bytes, each sent both ways) per task of a components round
MEMBER_ROWS_PER_PART = 1_000_000  # members of components (~60 bytes each) per task that decides them
WAVE_KEY_ROWS = 30_000_000  # key rows in the object store at once (0.75 GB): more go in waves of tables
MAX_ROUNDS = 64


def _driver_rss_mib() -> int:
    """This process's resident memory (Linux; 0 elsewhere): the figures show the driver holds counts only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def group_duplicates(files: Sequence[tuple[Path | str, int]], dedup: Sequence[str], max_distance: int, work_dir: str,
                     shard_rows: int = DEFAULT_SHARD_ROWS, partitions: int | None = None,
                     executor: str = "ray", crop_distance: int | None = None) -> tuple[DedupDecide | None, dict]:
    """Step 2 on the cluster (`curation.dedup`): key rows -> edges -> components -> decisions, written
    by row range under `work_dir`/dedup_decisions/; returns the stage that applies them and counts.
    `crop_distance`: with "phash", the crop hash (filters/crophash.py) is a second perceptual signal,
    matched within this distance (None: pHash alone)."""
    from curation.dedup import components, keys, leaders
    from curation.dedup.decisions import row_ranges
    from curation.runner import cluster_cpus, shuffle

    files = [(str(f), rows) for f, rows in files]
    present = set(parquet_file(files[0][0]).schema_arrow.names) if files else set()
    k = max_distance if "phash" in dedup and "phash" in present else None
    crop = crop_distance if k is not None and crop_distance is not None and "crop_hash" in present else None
    by_image, by_url = "exact" in dedup, "url" in dedup
    if not files or not (by_image or by_url or k is not None):
        return None, {}
    names = tuple(f for f, _ in files)
    total = sum(rows for _, rows in files)
    m = keys.choose_blocks(k, total) if k is not None else None
    crop_blocks = (crop, keys.choose_blocks(crop, total)) if crop is not None else None
    signals = keys.signal_tables(k, m, crop_blocks)
    n_tables = sum(len(keys.index_tables(dk, dm)) for _, dk, dm in signals)
    shards = parquet_shards(files, max(shard_rows, GROUP_SHARD_ROWS))
    columns = tuple(c for c in (*KEY_COLUMNS, "crop_hash") if c in present and (c != "crop_hash" or crop is not None))
    reader = ParquetReader(batch_size=65_536, columns=columns, node_files=names)
    cpus = cluster_cpus(executor)
    per_record = (2 if by_image or by_url else 0) + n_tables
    p = partitions or max(1, min(4 * len(shards), max(cpus, -(-total * per_record // KEY_ROWS_PER_PART))))
    figures: dict = {"records": total, "partitions": p, "blocks": m, "tables": n_tables,
                     "crop_distance": crop, "crop_blocks": crop_blocks[1] if crop_blocks else None}
    t0 = time.time()
    # the key rows in waves of tables, so that the object store holds about WAVE_KEY_ROWS of them at once
    waves = max(1, min(n_tables, -(-total * per_record // WAVE_KEY_ROWS)))
    edges, stats = [], []
    for w in range(waves):
        tables = tuple(range(w * n_tables // waves, (w + 1) * n_tables // waves)) if n_tables else None
        emit = functools.partial(keys.key_rows, by_image=by_image and w == 0, by_url=by_url and w == 0, k=k, m=m,
                                 tables=tables, crop=crop_blocks)
        got, st = shuffle(shards, emit, functools.partial(keys.bucket_edges, k=k, crop=crop), max(1, p // waves),
                          reader=reader, executor=executor)
        edges += got
        stats += st
    figures["waves"] = waves
    figures.update({"key_rows": sum(s["rows"] for s in stats), "pairs_checked": sum(s["checked"] for s in stats),
                    "edges": sum(s["edges"] for s in stats), "hot_buckets": sum(s["hot_buckets"] for s in stats),
                    "hot_rows": sum(s["hot_rows"] for s in stats), "keys_seconds": round(time.time() - t0, 3),
                    "keys_driver_rss_mib": _driver_rss_mib()})
    t0 = time.time()
    pe = partitions or max(cpus, -(-figures["edges"] * 2 // EDGE_ROWS_PER_PART))
    for rounds in range(1, MAX_ROUNDS + 1):
        edges, stats = shuffle(edges, components.large_star_rows, components.large_star, pe, executor=executor)
        if sum(s["unsettled"] for s in stats) == 0:
            break
        edges, _ = shuffle(edges, components.small_star_rows, components.small_star, pe, executor=executor)
    else:
        raise RuntimeError(f"dedup components did not settle in {MAX_ROUNDS} rounds")
    figures.update({"rounds": rounds, "components_seconds": round(time.time() - t0, 3),
                    "components_driver_rss_mib": _driver_rss_mib()})
    t0 = time.time()
    # the input's rows in ranges, a range per group of consecutive grouping shards
    groups, ranges = row_ranges(shards, names, p)
    labels, stats = shuffle(edges, components.label_rows, components.labels, ranges=ranges, executor=executor)
    figures.update({"members": sum(s["nodes"] for s in stats), "components": sum(s["components"] for s in stats)})
    # fewer tasks than the key rows had: only the records in components take part (and the driver holds a
    # handle per piece: sources x partitions)
    pm = partitions or max(cpus, -(-figures["members"] // MEMBER_ROWS_PER_PART))
    members, stats = shuffle(groups, leaders.member_rows,
                             functools.partial(leaders.decide_members, k=k, by_image=by_image, by_url=by_url, crop=crop),
                             pm, reader=reader,
                             side=labels, executor=executor)
    figures["largest_component"] = max((s["largest"] for s in stats), default=0)
    folder = storage.join(str(work_dir), "dedup_decisions")
    _, stats = shuffle(members, lambda t: t, functools.partial(leaders.write_decisions, folder=folder), ranges=ranges,
                       executor=executor)
    by_reason: dict = {}
    for s in stats:
        for r, n in s["by_reason"].items():
            by_reason[r] = by_reason.get(r, 0) + n
    figures.update({"duplicates": sum(s["duplicates"] for s in stats), "by_reason": by_reason,
                    "decide_seconds": round(time.time() - t0, 3), "decide_driver_rss_mib": _driver_rss_mib()})
    log.info("dedup grouping: %d records, %d key rows, %d pairs checked, %d edges, %d rounds, %d components, "
             "%d duplicates", total, figures["key_rows"], figures["pairs_checked"], figures["edges"], rounds,
             figures["components"], figures["duplicates"])
    # with semantic dedup after it, the stage leaves the rows' numbers for SemanticDedup (which drops them)
    return DedupDecide(folder=folder, ranges=ranges, keep_node="semantic" in dedup), figures


def node_reader(steps: Sequence[Stage], files: Sequence[tuple[Path | str, int]], batch_size: int) -> ParquetReader:
    """The reader of step 3: rows numbered when a step applies decisions by row range."""
    numbered = any(getattr(s, "by_range", None) is not None for s in steps)
    return ParquetReader(batch_size=batch_size, node_files=tuple(str(f) for f, _ in files) if numbered else None)


def dedup_steps(files: Sequence[tuple[Path | str, int]], dedup: Sequence[str], max_distance: int, work_dir: Path,
                decontaminate: str | None = None, shard_rows: int = DEFAULT_SHARD_ROWS, partitions: int | None = None,
                executor: str = "ray", semantic_threshold: float = 0.95,
                semantic_clusters: int | None = None, keep_embeddings: bool = True) -> tuple[list[Stage], dict]:
    """The stages of step 3 (decisions of step 2 in a work file) and figures for the manifest."""
    t0 = time.time()
    steps: list[Stage] = []
    figures: dict = {"kinds": list(dedup), "max_hamming_distance": max_distance}
    if decontaminate:
        evals = eval_hashes(decontaminate)
        steps.append(Decontaminate(evals, max_distance))
        figures["eval_images"] = evals.num_rows
    if any(k in dedup for k in ("exact", "url", "phash")):
        stage, grouping = group_duplicates(files, dedup, max_distance, str(work_dir), shard_rows, partitions, executor)
        if stage is not None:
            steps.append(stage)
        figures.update({"duplicates": grouping.get("duplicates", 0), "grouping": grouping,
                        "grouping_seconds": round(time.time() - t0, 3)})
    if "semantic" in dedup:
        steps.append(semantic_step(files, work_dir, semantic_threshold, semantic_clusters, figures, executor, keep_embeddings,
                                   shard_rows, partitions))
    return steps, figures


SEMANTIC_ROWS_PER_PART = 200_000  # embedded records (~2 KB each at 512 dims) per task that checks clusters
SAMPLE_SHARD_ROWS = 250_000  # input rows per task that counts the embeddings and samples them for k-means


def semantic_step(files: Sequence[tuple[Path | str, int]], work_dir: Path, threshold: float, clusters: int | None,
                  figures: dict, executor: str = "ray", keep_embeddings: bool = True,
                  shard_rows: int = DEFAULT_SHARD_ROWS, partitions: int | None = None, fit_rows: int | None = None) -> Stage:
    """SemDeDup over the records' `clip_embedding` column: k-means on one worker (a GPU when the cluster has
    one), then the records assigned to clusters and each cluster's pairs checked in a shuffle on the cluster,
    the duplicates written by row range as the other dedup kinds' decisions are (`curation.dedup.decisions`);
    the stage that drops what it found, naming the kept record. The driver holds counts."""
    from curation.dedup.decisions import row_ranges
    from curation.dedup.leaders import write_decisions
    from curation.runner import cluster_cpus, fold_shards, run_remote, shuffle
    from filters.semdedup import (SemanticDedup, assign_rows, check_settings, cluster_duplicates, combine_samples,
                                  fit_centroids, fit_stride, sample_finish, sample_fold)

    try:
        check_settings(threshold, clusters)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    files = [(str(f), rows) for f, rows in files]
    missing = (f"{files[0][0] if files else 'the input'}: semantic dedup needs the CLIP image embeddings: make the input "
               "with `curate filter ... --clip-model M --keep-embeddings` (or keep_embeddings = true in a job)")
    if files and "clip_embedding" not in parquet_file(str(files[0][0])).schema_arrow.names:
        raise InputError(missing)
    t0 = time.time()
    names = tuple(f for f, _ in files)
    # the k-means sample: every stride-th row of each file, gathered by tasks into files of the work dir
    sample = storage.join(str(work_dir), "semantic_sample")
    storage.remove(sample, recursive=True)  # a sample of an earlier run would mix in
    try:
        counted = fold_shards(parquet_shards(files, max(shard_rows, SAMPLE_SHARD_ROWS)),
                              ParquetReader(batch_size=4096, columns=("clip_embedding",), node_files=names),
                              functools.partial(sample_fold, stride=fit_stride(sum(r for _, r in files), clusters, fit_rows)),
                              combine_samples, executor=executor, finish=functools.partial(sample_finish, folder=sample))
    except ValueError as exc:  # embeddings of two lengths
        raise InputError(str(exc)) from None
    embedded = counted["embedded"] if counted else 0
    if embedded == 0 and any(rows for _, rows in files):  # the column is there, every value null
        raise InputError(missing)
    centroids = storage.join(str(work_dir), "semantic_centroids.npy")
    fit = (fit_centroids(sample, clusters, embedded, centroids) if executor == "local"
           else run_remote(fit_centroids, sample, clusters, embedded, centroids, 0, gpus=1.0))
    fit["embedded"] = embedded
    shards = parquet_shards(files, shard_rows)
    p = partitions or max(1, min(4 * max(1, len(shards)), max(cluster_cpus(executor),
                                                              -(-embedded // SEMANTIC_ROWS_PER_PART))))
    found, stats = [], []
    if embedded:
        reader = ParquetReader(batch_size=4096, columns=("record_id", "clip_embedding"), node_files=names)
        found, stats = shuffle(shards, functools.partial(assign_rows, centroids_path=centroids),
                               functools.partial(cluster_duplicates, threshold=threshold), p, reader=reader,
                               executor=executor)
    _, ranges = row_ranges(shards, names, p)
    folder = storage.join(str(work_dir), "semantic_decisions")
    _, written = shuffle(found, lambda t: t, functools.partial(write_decisions, folder=folder), ranges=ranges,
                         executor=executor)
    figures["semantic"] = {"threshold": threshold, "embedded": fit["embedded"], "clusters": fit["clusters"],
                           "fit_rows": fit["fit_rows"], "duplicates": sum(s["duplicates"] for s in written),
                           "largest_cluster": max((s["largest"] for s in stats), default=0), "device": fit["device"],
                           "seconds": round(time.time() - t0, 3)}
    return SemanticDedup(folder=folder, ranges=ranges, keep_embeddings=keep_embeddings)


def measure_phash(files: list[tuple[Path, int]], work: Path, cfg_identity: dict, resume: bool, shard_rows: int,
                  task_cpus: float, batch_size: int, executor: str = "ray") -> list[tuple[Path, int]]:
    """Step 1: a work dataset whose records all have their phash; returns its records files."""
    from curation.storage.objects import open_writer

    if resume and storage.exists(storage.join(str(work), "manifest.json")):
        done = Dataset(work)
    else:
        with open_writer(work, overwrite=True, resume=resume, config=cfg_identity) as writer:
            pipeline = Pipeline(ParquetReader(batch_size=batch_size), [PHash(), Sink("records")], task_cpus=task_cpus)
            run_pipeline(pipeline, parquet_shards(files, shard_rows), writer, executor=executor)
            writer.close()
        done = Dataset(work)
    return [(p, s["rows"]) for p, s in zip(done.shard_paths("records"), done.shards("records"))]


def run(cfg: DedupConfig, input_dir: str, verify: bool = False, executor: str = "ray") -> dict:
    """Dedup the records of `input_dir` into `cfg.out`; returns the manifest."""
    check_settings(cfg.dedup, cfg.max_hamming_distance)
    if not cfg.dedup and not cfg.decontaminate:
        raise InputError("nothing to do: name at least one of --exact, --phash, --semantic, --decontaminate")
    src = Dataset(input_dir, verify=verify)
    files = [(p, s["rows"]) for p, s in zip(src.shard_paths("records"), src.shards("records"))]
    identity = {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_KEYS},
                "job": "dedup", "input": canonical(input_dir)}
    from curation.storage.objects import open_writer

    with open_writer(cfg.out, overwrite=cfg.overwrite, inputs=(input_dir,), resume=cfg.resume, config=identity) as writer:
        if executor == "ray":
            init_ray(cfg.ray_address)
        t0 = time.time()
        if ("phash" in cfg.dedup or cfg.decontaminate) and needs_phash([f for f, _ in files]):
            files = measure_phash(files, storage.join(str(writer.staging), "measured"), identity, writer.resumed, cfg.shard_rows,
                                  cfg.task_cpus, cfg.batch_size, executor)
            writer.timings["phash"] = time.time() - t0
        steps, figures = dedup_steps(files, cfg.dedup, cfg.max_hamming_distance, writer.work_dir, cfg.decontaminate,
                                     cfg.shard_rows, cfg.partitions, executor, cfg.semantic_threshold, cfg.semantic_clusters)
        writer.timings["grouping"] = figures.get("grouping_seconds", 0.0)
        pipeline = Pipeline(node_reader(steps, files, cfg.batch_size), [*steps, Sink("records")], task_cpus=cfg.task_cpus)
        run_pipeline(pipeline, parquet_shards(files, cfg.shard_rows), writer, executor=executor)
        return writer.close(config={"command": "dedup", "input": input_dir, **dataclasses.asdict(cfg)},
                            extra={"dedup": figures})

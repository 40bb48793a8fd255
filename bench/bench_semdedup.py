"""Benchmark (not a test): the semantic dedup's global step (jobs/dedup.py `semantic_step`) on a local Ray.

Generated L2-normalised embeddings (--n rows of --dim values, in Parquet files of --file-rows rows, 2% planted
near copies) go through the global step three ways per run, interleaved: as it was (one task reads every
embedding, runs k-means over all of them and walks every cluster: the baseline), and as it is (k-means in
one task over a strided sample, then the assignment and the clusters in a shuffle of Ray tasks) with the
default sample (256 per cluster, filters.semdedup.fit_sample_rows) and with its cap set to --fit-rows. Reported: median wall time of
each, the embeddings the fit task holds, the duplicates found, and how many of the planted copies each finds
(recall; the planted copies are near-identical, so both should find them all).

    .venv/bin/python bench/bench_semdedup.py [--n 200000] [--dim 256] [--clusters 200] [--fit-rows 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def generate(root: Path, n: int, dim: int, file_rows: int, seed: int = 0) -> tuple[list[tuple[Path, int]], dict]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(8, n // 2000), dim)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, dim)).astype(np.float32)
    planted = rng.choice(n, n // 50, replace=False)
    x[planted] = x[(planted + 1) % n] + 0.001 * rng.normal(size=(len(planted), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"e:{i:09d}" for i in range(n)]
    # the smaller record id keeps: the copy at i (when i + 1 does not wrap), its source at i + 1 goes
    chained = set(planted.tolist())
    copies = {ids[i + 1]: ids[i] for i in planted if i + 1 < n and i + 1 not in chained}
    files = []
    for k, lo in enumerate(range(0, n, file_rows)):
        hi = min(n, lo + file_rows)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[lo:hi].reshape(-1)), dim)
        path = root / f"part-{k:05d}.parquet"
        pq.write_table(pa.table({"record_id": ids[lo:hi], "clip_embedding": emb.cast(pa.list_(pa.float32()))}), path)
        files.append((path, hi - lo))
    return files, copies


def one_task(files, threshold: float, clusters: int) -> dict:
    """The baseline, the step as it was before: one task reads every embedding, runs k-means over all of them
    and walks every cluster (the same functions, without the sample and the shuffle)."""
    import torch

    from filters.semdedup import _embeddings, kmeans, semantic_duplicates

    ids, chunks = [], []
    for path, _ in files:
        i, x = _embeddings(pq.read_table(path, columns=["record_id", "clip_embedding"]))
        ids += i
        chunks.append(x)
    x = torch.from_numpy(np.concatenate(chunks))
    with torch.inference_mode():
        _, labels = kmeans(x, clusters)
        dups = semantic_duplicates(ids, x, labels, threshold)
    return {"duplicates": {d: k for d, (k, _) in dups.items()}, "fit_rows": len(ids)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=200)
    ap.add_argument("--fit-rows", type=int, default=20_000)
    ap.add_argument("--file-rows", type=int, default=20_000)
    ap.add_argument("--threshold", type=float, default=0.99)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from curation.runner import init_ray, run_remote
    from jobs.dedup import semantic_step

    init_ray(num_cpus=2)
    out: dict = {"n": args.n, "dim": args.dim, "clusters": args.clusters}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files, copies = generate(root, args.n, args.dim, args.file_rows)
        times: dict[str, list[float]] = {"one task (baseline)": [], "default": [], "fit_rows": []}
        for _ in range(args.runs):
            t0 = time.perf_counter()
            base = run_remote(one_task, files, args.threshold, args.clusters)
            times["one task (baseline)"].append(time.perf_counter() - t0)
            out["one task (baseline)"] = {"fit_rows": base["fit_rows"], "fit_bytes": base["fit_rows"] * args.dim * 4,
                                          "duplicates": len(base["duplicates"]),
                                          "planted_found": sum(base["duplicates"].get(c) == o for c, o in copies.items()),
                                          "planted": len(copies)}
            for mode in ("default", "fit_rows"):
                figures: dict = {}
                t0 = time.perf_counter()
                semantic_step(files, root, args.threshold, args.clusters, figures, shard_rows=args.file_rows,
                              fit_rows=None if mode == "default" else args.fit_rows)
                times[mode].append(time.perf_counter() - t0)
                got = {r["record_id"]: r["kept"] for r in pq.read_table(root / "semantic_decisions").to_pylist()}
                fig = figures["semantic"]
                out[mode] = {"fit_rows": fig["fit_rows"], "fit_bytes": fig["fit_rows"] * args.dim * 4,
                             "duplicates": len(got), "planted_found": sum(got.get(c) == o for c, o in copies.items()),
                             "planted": len(copies)}
        for mode, ts in times.items():
            out[mode]["seconds_median"] = round(statistics.median(ts), 2)
            out[mode]["seconds"] = [round(t, 2) for t in ts]
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

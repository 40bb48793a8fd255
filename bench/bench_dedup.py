"""Benchmark: the perceptual-dedup grouping (multi-index hashing as a shuffle on Ray) against brute force.

    .venv/bin/python bench/bench_dedup.py --sizes 25000,100000 --runs 3
    .venv/bin/python bench/bench_dedup.py --distances --seeds 1,2,3

Grouping: N generated 64-bit hashes (uniform), 5% of them planted as near
copies of another (0..k+1 flipped bits, so some lie just beyond k), written
as Parquet input shards of 10,000 records; `jobs.dedup.dedup_pairs` groups
them (band rows -> hash shuffle over Ray tasks -> pairs within k) on a local
Ray, then `decide_duplicates` picks keepers. Reported per N: median seconds,
the driver's peak RSS, the peak RSS of one process running the same grouping
in-process (executor "local", a subprocess), and against brute force on a
sample of 2,000 records (every pair of a sampled record with all N, numpy):
recall and precision of the pairs. The baseline is brute force over all pairs
at 25k (numpy, in this process), measured in the same run.

`--distances`: the data behind the default k (filters/phash.py): on demo
corpora with planted near copies, the Hamming distance of each copy to its
source by variant, and how many pairs of different images lie within d.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARD_ROWS = 10_000


def planted_hashes(n: int, k: int, seed: int, fraction: float = 0.05):
    import numpy as np

    rng = np.random.default_rng(seed)
    h = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    copies = rng.choice(n, size=int(n * fraction), replace=False)
    for i in copies:
        j = int(rng.integers(0, n))
        mask = np.uint64(0)
        for b in rng.choice(64, size=int(rng.integers(0, k + 2)), replace=False):
            mask |= np.uint64(1) << np.uint64(int(b))
        h[i] = (h[j : j + 1].view(np.uint64) ^ mask).view(np.int64)[0]
    return h


def write_inputs(hashes, folder: Path) -> list[tuple[Path, int]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for start in range(0, len(hashes), SHARD_ROWS):
        part = hashes[start : start + SHARD_ROWS]
        t = pa.table({"record_id": [f"b:{i:07d}" for i in range(start, start + len(part))],
                      "phash": pa.array(part, pa.int64())})
        path = folder / f"part-{start // SHARD_ROWS:05d}.parquet"
        pq.write_table(t, path, row_group_size=SHARD_ROWS)
        files.append((path, len(part)))
    return files


def group(files, k: int, executor: str):
    from filters.dedup_exact import decide_duplicates
    from jobs.dedup import dedup_pairs

    pairs = dedup_pairs(files, ("phash",), k, shard_rows=SHARD_ROWS, executor=executor)
    return pairs, decide_duplicates(pairs, k)


def brute_sample(hashes, k: int, sample: int, seed: int):
    """Every pair (i, j) within k with i in a sample of `sample` records, by comparing i with all N."""
    import numpy as np

    from filters.phash import hamming_array

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(hashes), size=sample, replace=False)
    pairs = set()
    for i in idx:
        d = hamming_array(np.full(len(hashes), hashes[i]), hashes)
        for j in np.flatnonzero(d <= k):
            if j != i:
                pairs.add((min(i, j), max(i, j)))
    return set(int(i) for i in idx), pairs


def brute_all_seconds(hashes, k: int) -> float:
    import numpy as np

    from filters.phash import hamming_array

    t0 = time.perf_counter()
    pairs = 0
    for i in range(len(hashes) - 1):
        pairs += int(np.count_nonzero(hamming_array(hashes[i + 1 :], np.full(len(hashes) - i - 1, hashes[i])) <= k))
    return time.perf_counter() - t0


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def local_peak(folder: Path, k: int) -> dict:
    """The grouping in-process (executor local) in a fresh subprocess: seconds and its peak RSS (imports included)."""
    code = (
        "import json, resource, sys, time, pathlib; sys.path[:0] = [%r, %r]\n"
        "import pyarrow.parquet as pq\n"
        "from bench_dedup import group\n"
        "files = [(p, pq.ParquetFile(p).metadata.num_rows) for p in sorted(pathlib.Path(%r).glob('part-*.parquet'))]\n"
        "t = time.perf_counter(); pairs, d = group(files, %d, 'local')\n"
        "seconds = time.perf_counter() - t\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "print(json.dumps({'seconds': seconds, 'rss_mb': hwm / 1024}))\n"
    ) % (str(ROOT), str(ROOT / "bench"), str(folder), k)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_grouping(args) -> None:
    from curation.runner import init_ray

    init_ray(num_cpus=args.cpus)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base_hashes = planted_hashes(25_000, args.k, seed=1)
        baseline = brute_all_seconds(base_hashes, args.k)
        print(f"baseline: brute force over all pairs of 25,000 hashes: {baseline:.1f} s", flush=True)
        for n in args.sizes:
            hashes = planted_hashes(n, args.k, seed=n)
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            files = write_inputs(hashes, folder)
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                pairs, decisions = group(files, args.k, "ray")
                times.append(time.perf_counter() - t0)
            got = {(int(a[2:]), int(b[2:])) for t in pairs for a, b in zip(t.column("a").to_pylist(), t.column("b").to_pylist())}
            sample, truth = brute_sample(hashes, args.k, args.sample, seed=n)
            found = {p for p in got if p[0] in sample or p[1] in sample}
            recall = len(found & truth) / len(truth) if truth else 1.0
            precision = len(found & truth) / len(found) if found else 1.0
            local = local_peak(folder, args.k)
            row = {"n": n, "seconds": statistics.median(times), "runs": [round(t, 2) for t in times],
                   "pairs": len(got), "duplicates": decisions.num_rows, "sample_pairs": len(truth),
                   "recall": recall, "precision": precision, "driver_rss_mb": rss_mb(),
                   "local_seconds": local["seconds"], "local_rss_mb": local["rss_mb"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(f"| hashes | grouping on Ray, s (median of {args.runs}) | ratio to brute force at 25k | in one process, s | "
          f"peak RSS in one process | pairs within {args.k} | recall / precision vs brute force (sample) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['n']:,} | {r['seconds']:.2f} | {r['seconds'] / baseline:.3f} | {r['local_seconds']:.2f} | "
              f"{r['local_rss_mb']:.0f} MB | {r['pairs']:,} | {r['recall']:.3f} / {r['precision']:.3f} ({r['sample_pairs']} pairs) |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"\ntime x{b['seconds'] / a['seconds']:.2f} (Ray) and x{b['local_seconds'] / a['local_seconds']:.2f} (one process) "
              f"for x{b['n'] / a['n']:.0f} hashes; brute force would grow x{(b['n'] / a['n']) ** 2:.0f}")


def bench_distances(args) -> None:
    import numpy as np

    from curation.democorpus import generate_corpus
    from filters.phash import hamming, hamming_array, phash64

    by_variant: dict[str, list[int]] = {}
    other_pairs = np.zeros(65, np.int64)
    n_pairs = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            folder = Path(tmp) / str(seed)
            items = generate_corpus(folder, n=args.images, seed=seed, near_duplicates=args.images // 10)
            h = {it.item_id: phash64((folder / it.filename).read_bytes()) for it in items}
            for it in items:
                if it.planted == "near_duplicate":
                    by_variant.setdefault(it.variant, []).append(hamming(h[it.item_id], h[it.duplicate_of]))
            distinct = np.array([h[it.item_id] for it in items if it.planted is None and h[it.item_id] is not None], np.int64)
            for i in range(len(distinct) - 1):
                d = hamming_array(distinct[i + 1 :], np.full(len(distinct) - i - 1, distinct[i]))
                other_pairs += np.bincount(d, minlength=65)
                n_pairs += len(d)
    print(f"{len(args.seeds)} demo corpora of {args.images} images (seeds {args.seeds}), {args.images // 10} near copies each")
    print("| variant | copies | max distance | within 2 | within 4 | within 6 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for v, ds in sorted(by_variant.items()):
        ds = np.array(ds)
        print(f"| {v} | {len(ds)} | {ds.max()} | {np.mean(ds <= 2):.1%} | {np.mean(ds <= 4):.1%} | {np.mean(ds <= 6):.1%} |")
    cum = np.cumsum(other_pairs)
    print(f"pairs of different clean images: {n_pairs:,}; within 2: {cum[2]}, within 4: {cum[4]}, within 6: {cum[6]}, "
          f"within 8: {cum[8]}, within 10: {cum[10]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="25000,100000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--distances", action="store_true")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--images", type=int, default=240)
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.distances:
        bench_distances(args)
    else:
        bench_grouping(args)


if __name__ == "__main__":
    main()

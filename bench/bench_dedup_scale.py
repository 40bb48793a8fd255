"""Benchmark: dedup's grouping at corpus scale (curation/dedup through jobs.dedup.group_duplicates on Ray).

    .venv/bin/python bench/bench_dedup_scale.py --sizes 1000000,10000000 --runs 3

Synthetic records (record_id, a 64-hex sha256, a URL, a 64-bit pHash) in
Parquet files of 1M rows: 20% planted near copies (1-4 bits flipped from a
source, new sha256 and URL) and 5% exact copies (the source's sha256 and
pHash, another URL), in two distributions: uniform (sources drawn from all
records) and clustered (half of the near copies of 100 popular images, by
a Zipf law: the top one has about 4% of all records as copies). Each run is
a fresh subprocess with a fresh local Ray (2 CPUs): the whole grouping (key
rows, edges, components, leader decisions, decision files) with dedup =
exact, url, phash at k = 4. Reported: median wall seconds, CPU-seconds of
every process of the run (driver, raylet, workers) and busy cores, the
driver's peak RSS, the largest process's peak RSS (sampled every 0.2 s;
with and without shared memory, which is Ray's object store), the pHash
pairs checked per record, rounds, components and duplicates found, and the
recall of the planted copies (every planted copy must be dropped; the
sources may be dropped too where a copy came first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILE_ROWS = 1_000_000


def generate(n: int, clustered: bool, folder: Path, seed: int = 0) -> dict:
    """The records files; returns counts of what was planted."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    phash = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    sha = rng.integers(0, 2**63 - 1, size=(n, 4), dtype=np.int64)  # 4 x 64 bits = a sha256's 256
    kind = rng.choice(3, size=n, p=[0.75, 0.20, 0.05])  # 0 original, 1 near copy, 2 exact copy
    kind[:1000] = 0
    source = rng.integers(0, np.maximum(np.arange(n), 1))  # an earlier record
    if clustered:
        popular = rng.choice(1000, 100, replace=False)
        weights = 1.0 / np.arange(1, 101) ** 1.5
        pick = (kind == 1) & (rng.random(n) < 0.5)
        source[pick] = popular[rng.choice(100, int(pick.sum()), p=weights / weights.sum())]
    copies = np.flatnonzero(kind > 0)
    src = source[copies]
    while True:  # a copy of a copy: of the copy's own source (sources are earlier records), until an original
        bad = kind[src] != 0
        if not bad.any():
            break
        src[bad] = source[src[bad]]
    source[copies] = src
    near = copies[kind[copies] == 1]
    flips = rng.integers(1, 5, size=len(near))
    masks = np.zeros(len(near), np.uint64)
    for f in range(4):
        bit = rng.integers(0, 64, size=len(near)).astype(np.uint64)
        masks |= np.where(flips > f, np.uint64(1) << bit, np.uint64(0))
    phash[near] = (phash[source[near]].view(np.uint64) ^ masks).view(np.int64)
    exact = copies[kind[copies] == 2]
    phash[exact] = phash[source[exact]]
    sha[exact] = sha[source[exact]]
    files = []
    for f, start in enumerate(range(0, n, FILE_ROWS)):
        end = min(n, start + FILE_ROWS)
        ids = pa.array([f"syn:{i:010d}" for i in range(start, end)])
        hexes = pa.array(np.char.mod("%016x", sha[start:end].view(np.uint64)).reshape(-1, 4).tolist(), pa.list_(pa.string()))
        hexes = pa.compute.binary_join(hexes, "")
        urls = pa.array([f"http://img{i % 977}.example.com/p/{i}.jpg" for i in range(start, end)])
        t = pa.table({"record_id": ids, "sha256": hexes, "url": urls, "phash": pa.array(phash[start:end])})
        path = folder / f"part-{f:04d}.parquet"
        pq.write_table(t, path, row_group_size=65_536)
        files.append((str(path), end - start))
    planted = {"near": int(len(near)), "exact": int(len(exact))}
    np.save(folder / "copies.npy", copies)
    (folder / "files.json").write_text(json.dumps({"files": files, "planted": planted}))
    return planted


def _tree() -> list[int]:
    """This process and its descendants (Ray's GCS, raylet, workers), from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(d))
    out, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    f = stat[stat.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> tuple[int, int]:
    """(resident, resident less shared memory) in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "RssShmem", "RssFile")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmRSS", 0) - fields.get("RssShmem", 0) - fields.get("RssFile", 0)


def _split(pid: int) -> dict:
    """MiB of the process's resident memory by kind: anonymous, shared memory (Ray's object store), files."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("RssAnon", "RssShmem", "RssFile")):
            name, value = line.split(":")
            out[name] = int(value.split()[0]) // 1024
    return out


def _name(pid: int) -> str:
    """The process's title: Ray names its workers by the task they run (ray::shuffle_reduce ...)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")[:60]
    except OSError:
        return ""


def _phase(at: float, figures: dict) -> str:
    """The grouping's phase at `at` seconds from its start (phases run one after the other)."""
    end = 0.0
    for name in ("keys", "components", "decide"):
        end += figures.get(f"{name}_seconds", 0.0)
        if at <= end:
            return name
    return "decide"


def run_once(folder: Path) -> dict:
    """In this process: a fresh local Ray, the grouping, the figures."""
    import threading

    import numpy as np
    import pyarrow.parquet as pq

    from curation.runner import init_ray
    from jobs.dedup import group_duplicates

    meta = json.loads((folder / "files.json").read_text())
    files = [(f, n) for f, n in meta["files"]]
    init_ray(num_cpus=2)
    peak = {"rss": 0, "private": 0, "name": "", "at": 0.0, "private_name": "", "private_at": 0.0}
    t0 = time.time()
    stop = threading.Event()
    last_cpu: dict[int, float] = {}

    def sample():
        while not stop.is_set():
            for pid in _tree():
                try:
                    rss, private = _rss(pid)
                    last_cpu[pid] = _cpu(pid)
                except (OSError, ValueError):
                    continue
                if rss > peak["rss"]:
                    peak["rss"], peak["name"], peak["at"] = rss, _name(pid), time.time() - t0
                    peak["split"] = _split(pid)
                if private > peak["private"]:
                    peak["private"], peak["private_name"], peak["private_at"] = private, _name(pid), time.time() - t0
            stop.wait(0.2)

    time.sleep(2)  # Ray's workers up before the clock starts
    start_cpu = {}
    for pid in _tree():
        try:
            start_cpu[pid] = _cpu(pid)
        except OSError:
            pass
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    work = folder / "work"
    t0 = time.time()
    _, figures = group_duplicates(files, ("exact", "url", "phash"), 4, str(work))
    wall = time.time() - t0
    driver_hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith("VmHWM"))  # KiB, before the recall check below reads the decisions
    stop.set()
    th.join()
    for pid in _tree():
        try:
            last_cpu[pid] = _cpu(pid)
        except OSError:
            pass
    cpu = sum(c - start_cpu.get(pid, 0.0) for pid, c in last_cpu.items())  # a worker gone: its last sample
    dropped = set()
    for part in sorted((work / "dedup_decisions").glob("part-*.parquet")):
        dropped.update(int(r[4:]) for r in pq.read_table(part, columns=["record_id"]).column(0).to_pylist())
    copies = np.load(folder / "copies.npy")
    found = int(np.isin(copies, np.fromiter(dropped, np.int64, len(dropped))).sum())
    n = figures["records"]
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "busy_cores": round(cpu / wall, 2),
            "driver_peak_rss_mib": round(driver_hwm / 1024),
            "largest_process_peak_rss_mib": round(peak["rss"] / 2**20),
            "largest_process_peak_private_mib": round(peak["private"] / 2**20),
            "largest_process": peak["name"],
            "largest_process_phase": _phase(peak["at"], figures),
            "largest_process_split_mib": peak.get("split", {}),
            "largest_private_process": peak["private_name"],
            "largest_private_phase": _phase(peak["private_at"], figures),
            "pairs_checked_per_record": round(figures["pairs_checked"] / n, 2),
            "key_rows_per_record": round(figures["key_rows"] / n, 2),
            "recall_of_planted_copies": round(found / len(copies), 5),
            **{k: figures[k] for k in ("partitions", "blocks", "tables", "edges", "rounds", "members", "components",
                                       "largest_component", "duplicates", "hot_buckets", "keys_seconds", "waves",
                                       "keys_driver_rss_mib", "components_driver_rss_mib", "decide_driver_rss_mib",
                                       "components_seconds", "decide_seconds")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shapes", default="uniform,clustered")
    ap.add_argument("--data", default=None, help="where the generated files go (default: a temporary folder)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dedup_scale.json"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_once(Path(args.child))))
        return
    base = Path(args.data or tempfile.mkdtemp(prefix="dedup-scale-"))
    results = []
    for shape in args.shapes.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            folder = base / f"{shape}-{n}"
            if not (folder / "files.json").exists():
                t0 = time.time()
                generate(n, shape == "clustered", folder)
                print(f"generated {shape} {n:,} in {time.time() - t0:.0f} s", file=sys.stderr)
            runs = []
            for r in range(args.runs):
                out = subprocess.run([sys.executable, __file__, "--child", str(folder)], capture_output=True, text=True,
                                     cwd=ROOT)
                if out.returncode:
                    sys.exit(out.stderr[-3000:])
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{shape} {n:,} run {r + 1}: {runs[-1]}", file=sys.stderr)
            med = {k: statistics.median(x[k] for x in runs) if isinstance(runs[0][k], (int, float)) else runs[0][k]
                   for k in runs[0]}
            results.append({"shape": shape, "records": n, "runs": len(runs), "median": med, "all": runs})
    for shape in args.shapes.split(","):
        rows = [r for r in results if r["shape"] == shape]
        if len(rows) >= 2:
            a, b = rows[0]["median"], rows[-1]["median"]
            print(f"{shape}: {rows[-1]['records']:,} / {rows[0]['records']:,}: wall x{b['wall_s'] / a['wall_s']:.2f}, "
                  f"driver RSS x{b['driver_peak_rss_mib'] / a['driver_peak_rss_mib']:.2f}, largest process "
                  f"{b['largest_process_peak_rss_mib']} MiB ({b['largest_process_peak_private_mib']} private)")
    Path(args.out).write_text(json.dumps({"machine": f"{os.cpu_count()} cores", "results": results}, indent=1))


if __name__ == "__main__":
    main()

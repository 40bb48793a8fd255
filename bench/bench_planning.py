"""Benchmark: planning a download over a folder of Parquet URL files, at 200k, 2M and 20M URLs (issue #18).

    .venv/bin/python bench/bench_planning.py --sizes 200000 2000000 20000000 --runs 3

A folder of Parquet URL files per size (200k: 10 files of 20k rows; 2M: 10 of
200k; 20M: 20 of 1M; 5% of the URLs repeat an earlier one, across files), made
once into WORK/urls-N/ and reused. Every URL points at a loopback port that
refuses connections, so the downloads cost nearly nothing and what is measured
is the driver's planning. Each run starts `curate download FOLDER --out OUT
--allow-private-network` fresh (its own local Ray) and reports:

* first shard: seconds from the command's start until the first input shard is
  done (its marker in OUT/.curate/staging/done/), and the driver's peak RSS
  until then (VmHWM of the `curate` process, not its Ray workers);
* index: seconds until the duplicate-URL index (the shuffle over Ray tasks that
  runs beside the downloads) is complete (its index.json), the rows per second
  of the shuffle itself (its own seconds, from the runner's start of it, as
  index.json records them; Ray's start is not in them), and the machine's busy CPU-seconds (/proc/stat) and busy cores
  over that time; the driver's peak RSS then.

The run is then stopped (the downloads of 20M refused URLs are not the point).
Floors, measured in the same session: pyarrow reading the URL column of every
file (one process, `pq.read_table(columns=[url])` file by file, pyarrow's own
threads) and the footers alone (`UrlList.shards`, the driver's share).

Targets: at 10x the URLs, driver peak RSS <= 1.2x and time to the first shard
<= 1.5x. Prints a Markdown table; writes everything to `--json` (default
bench/results/planning.json). Medians of `--runs`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILES = {200_000: 10, 2_000_000: 10, 20_000_000: 20}
REPEAT = 0.05


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_urls(folder: Path, n: int, files: int, port: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    done = folder / "_DONE"
    if done.is_file() and json.loads(done.read_text()) == {"n": n, "files": files}:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=np.int64)
    repeat = rng.random(n) < REPEAT
    ids[repeat] = (rng.random(int(repeat.sum())) * np.maximum(ids[repeat], 1)).astype(np.int64)  # an earlier row
    per = n // files
    for f in range(files):
        lo, hi = f * per, n if f == files - 1 else (f + 1) * per
        k = pa.array(ids[lo:hi])
        host = pc.cast(pc.bit_wise_and(k, pa.scalar(63, pa.int64())), pa.string())
        url = pc.binary_join_element_wise(f"http://127.0.0.1:{port}/h", host, "/img/", pc.cast(k, pa.string()), ".jpg", "")
        cap = pc.binary_join_element_wise("a photo of thing ", pc.cast(k, pa.string()), "")
        pq.write_table(pa.table({"url": url, "caption": cap}), folder / f"part-{f:05d}.parquet", row_group_size=100_000)
    done.write_text(json.dumps({"n": n, "files": files}))
    return folder


def busy_jiffies() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + vals[4]
    return (sum(vals) - idle) / hz, sum(vals) / hz


def vm_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(urls: Path, out: Path, env: dict, first_only: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(ROOT / ".venv" / "bin" / "curate"), "download", str(urls), "--out", str(out),
           "--allow-private-network", "--retries", "0", "--timeout", "2"]
    busy0, _ = busy_jiffies()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    done = out / ".curate" / "staging" / "done"
    index = out / ".curate" / "staging" / "url-duplicates" / "index.json"
    first = first_rss = index_s = index_rss = busy = None
    try:
        while time.monotonic() - t0 < 1800:
            if proc.poll() is not None:
                raise SystemExit(f"curate download ended early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
            if first is None and done.is_dir() and any(done.glob("*.json")):
                first, first_rss = time.monotonic() - t0, vm_hwm(proc.pid)
            if index_s is None and index.is_file():
                index_s, index_rss = time.monotonic() - t0, vm_hwm(proc.pid)
                busy = busy_jiffies()[0] - busy0
            if first is not None and (index_s is not None or first_only):
                break
            time.sleep(0.05)
        else:
            raise SystemExit("curate download: no first shard / index in 30 minutes")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if first_only:
        return {"first_shard_s": first, "driver_rss_first_mib": first_rss}
    rows = json.loads(index.read_text())
    return {"first_shard_s": first, "driver_rss_first_mib": first_rss, "index_s": index_s,
            "driver_rss_index_mib": index_rss, "index_busy_cpu_s": busy, "index_busy_cores": busy / index_s,
            "index_own_s": rows["seconds"], "duplicates": rows["rows"]}


def floors(urls: Path) -> dict:
    import pyarrow.parquet as pq

    from curation.crawl.urls import UrlColumns, UrlList

    files = sorted(urls.glob("*.parquet"))
    t0 = time.monotonic()
    rows = sum(pq.read_table(f, columns=["url"]).num_rows for f in files)
    read_s = time.monotonic() - t0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        shards = sum(1 for _ in UrlList(str(urls), UrlColumns("web")).shards(10_000, tmp))
    return {"rows": rows, "pyarrow_read_url_s": read_s, "footers_s": time.monotonic() - t0, "shards": shards}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=sorted(FILES))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", str(Path(tempfile.gettempdir()) / "curate-bench-planning")))
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "planning.json"))
    ap.add_argument("--single-file", action="store_true",
                    help="one Parquet file per size (what the code before issue 18 could read): with --first-shard-only, "
                         "run from a checkout of that code (PYTHONPATH) for the before/after")
    ap.add_argument("--first-shard-only", action="store_true", help="stop each run at its first finished shard")
    args = ap.parse_args()
    work = Path(args.work)
    port = refused_port()
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    results = {}
    for n in args.sizes:
        files = 1 if args.single_file else FILES.get(n, max(1, n // 1_000_000))
        t0 = time.monotonic()
        urls = make_urls(work / (f"urls-{n}" + ("-single" if args.single_file else "")), n, files, port)
        print(f"{n:,} URLs in {files} files: ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        if args.single_file:
            urls = urls / "part-00000.parquet"
        runs = []
        for r in range(args.runs):
            res = one_run(urls, work / "out", env, args.first_shard_only)
            runs.append(res)
            print(f"  run {r + 1}: {json.dumps({k: round(v, 2) for k, v in res.items()})}", file=sys.stderr)
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        if args.first_shard_only:
            results[n] = {"files": files, "runs": runs, "median": med}
            print(f"{n:,} URLs, {files} file(s): first shard {med['first_shard_s']:.1f} s, driver peak RSS "
                  f"{med['driver_rss_first_mib']:.0f} MiB")
            continue
        floor = floors(urls)
        med["index_rows_per_s"] = n / med["index_own_s"]
        med["floor_rows_per_s"] = n / floor["pyarrow_read_url_s"]
        med["footers_rows_per_s"] = n / floor["footers_s"]
        results[n] = {"files": files, "floor": floor, "runs": runs, "median": med}
    shutil.rmtree(work / "out", ignore_errors=True)
    if args.first_shard_only:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"sizes": results, "cpus": os.cpu_count()}, indent=1))
        return 0
    base = results[min(results)]["median"]
    print("| URLs | files | first shard | driver peak RSS (first shard) | index complete | index rows/s "
          "| pyarrow URL column rows/s | index / floor | busy cores (index) | driver peak RSS (index) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, r in results.items():
        m = r["median"]
        print(f"| {n:,} | {r['files']} | {m['first_shard_s']:.1f} s ({m['first_shard_s'] / base['first_shard_s']:.2f}x) "
              f"| {m['driver_rss_first_mib']:.0f} MiB ({m['driver_rss_first_mib'] / base['driver_rss_first_mib']:.2f}x) "
              f"| {m['index_s']:.1f} s ({m['index_own_s']:.1f} s own) | {m['index_rows_per_s']:,.0f} | {m['floor_rows_per_s']:,.0f} "
              f"| {m['index_rows_per_s'] / m['floor_rows_per_s']:.3f} | {m['index_busy_cores']:.2f} "
              f"| {m['driver_rss_index_mib']:.0f} MiB |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"sizes": results, "cpus": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

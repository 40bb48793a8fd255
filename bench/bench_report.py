"""Benchmark: `curate report` on a demo output, against `curate sql` on the same dataset.

    .venv/bin/python bench/bench_report.py --runs 5 [--demo DIR]

Makes a demo output once (`curate demo`, unless --demo names one), then per
run, interleaved, each in a fresh process: (1) `curate sql DIR "select task,
count(*) from samples group by task"` (the baseline: process start, imports,
the DuckDB views and one query) and (2) `curate report DIR --out FILE` (every
query of the page, thumbnails, plots, writing the HTML). Prints medians, the
ratio, and the report's own seconds (as it prints them) and size.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(argv: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - t0, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--demo", default=None, help="an existing demo output (default: make one in a temporary folder)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    curate = [sys.executable, "-m", "curation.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        demo = args.demo or f"{tmp}/demo"
        if args.demo is None:
            subprocess.run(curate + ["demo", "--out", demo], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
        sql, report, inner, size = [], [], [], 0
        for _ in range(args.runs):
            sql.append(_timed(curate + ["sql", demo, "select task, count(*) from samples group by task"], env)[0])
            seconds, out = _timed(curate + ["report", demo, "--out", f"{tmp}/report.html"], env)
            report.append(seconds)
            inner.append(float(re.search(r", ([0-9.]+)s\)", out).group(1)))
            size = Path(f"{tmp}/report.html").stat().st_size
    ms, mr = statistics.median(sql), statistics.median(report)
    print(f"curate sql (baseline)   median {ms:.2f} s   runs {', '.join(f'{s:.2f}' for s in sql)}")
    print(f"curate report           median {mr:.2f} s   runs {', '.join(f'{s:.2f}' for s in report)}   ratio {mr / ms:.2f}")
    print(f"report's own seconds    median {statistics.median(inner):.2f} s   page {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

"""Benchmark: `curate demo` end to end against raw img2dataset on the same URLs.

    .venv/bin/python bench/bench_demo.py --runs 3

Each run, interleaved: (1) raw img2dataset alone downloads the demo corpus's
240 URLs from the loopback server (the baseline: what a user pays anyway);
(2) `curate demo` in a fresh process (img2dataset, Ray, basic and CLIP
filters, build, pack, manifest, audit). Prints medians and the ratio.
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

RAW = """
import sys, time
from pathlib import Path
from curation.democorpus import generate_corpus
from jobs.demo import serve_directory, write_url_list
if __name__ == "__main__":
    from img2dataset import download
    tmp = Path(sys.argv[1])
    items = generate_corpus(tmp / "www", n=240, seed=0)
    with serve_directory(tmp / "www") as base:
        urls = write_url_list(items, base, tmp / "urls.parquet")
        t0 = time.time()
        download(url_list=str(urls), input_format="parquet", url_col="url", caption_col="caption",
                 output_folder=str(tmp / "out"), output_format="parquet", processes_count=1, thread_count=16,
                 resize_mode="no", skip_reencode=True, enable_wandb=False, disallowed_header_directives=[])
        print("SECONDS", time.time() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable
    raw, demo, inner = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            # albumentations (imported by img2dataset) asks PyPI for its latest version unless told not to
            env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
            subprocess.run([py, "-c", RAW, tmp], capture_output=True, text=True, cwd=ROOT, check=True, env=env)
            raw.append(time.time() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            subprocess.run([str(Path(py).parent / "curate"), "demo", "--out", f"{tmp}/out"], capture_output=True,
                           text=True, check=True, cwd=ROOT)
            demo.append(time.time() - t0)
            inner.append(json.loads(Path(f"{tmp}/out/manifest.json").read_text())["timings"])
    r, d = statistics.median(raw), statistics.median(demo)
    print(f"{args.runs} runs, process wall time (median)")
    print("| what | seconds (median) | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| raw img2dataset, 240 demo URLs (baseline) | {r:.1f} | 1.00 |")
    print(f"| `curate demo` (download, filters, build, pack, audit) | {d:.1f} | {d / r:.2f} |")
    for key in inner[0]:
        print(f"| &nbsp;&nbsp;of which `{key}` | {statistics.median(t[key] for t in inner):.1f} | |")


if __name__ == "__main__":
    main()

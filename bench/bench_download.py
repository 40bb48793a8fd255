"""Benchmark: what the crawler's rules cost on a download (issue 9 asks for under 5%).

    .venv/bin/python bench/bench_download.py --images 300 --runs 7

One shard of N photo-like JPEGs (about 40 KB each) served from a loopback
server, downloaded in this process by img2dataset's own Downloader (16
threads, no resize, no re-encode, sha256, X-Robots-Tag check on) three ways,
interleaved run by run:

  plain     img2dataset's engine as it is (its urlopen, its retry loop)
  crawl     through `curation.crawl.fetch.fetching` with allow_private_network:
            the guarded opener (resolve once, connect to the checked list),
            redirect handler, bounded body reads, the tool's user agent,
            per-host slots (max_per_host = threads) and request counts
  checked   as `crawl`, and every address check computed as without the flag
            (url_refusal and address_allowed on each URL and resolved
            address), its refusal of loopback ignored so the images still come

Prints the median wall time and CPU time (of this process: the download and
the loopback server's threads) of each, and the ratios to `plain`. Loopback
only: the images come from 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would ask PyPI for its latest version


def make_site(folder: Path, n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        # noise: about 40 KB at quality 85, the size of a small web photo
        img = rng.integers(0, 256, (192, 256, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=85)
        (folder / f"{i:05d}.jpg").write_bytes(buf.getvalue())
        names.append(f"{i:05d}.jpg")
    return names


@contextlib.contextmanager
def checks_computed_but_loopback_allowed():
    """`checked`: the policy functions run in full on every URL and address; their answers are ignored."""
    import curation.crawl.fetch as crawl

    real_refusal, real_allowed = crawl.url_refusal, crawl.address_allowed
    crawl.url_refusal = lambda url, allow_private=False: (real_refusal(url, False), None)[1]
    crawl.address_allowed = lambda ip, allow_private=False: (real_allowed(ip, False), None)[1]
    try:
        yield
    finally:
        crawl.url_refusal, crawl.address_allowed = real_refusal, real_allowed


def download(shard_file: Path, n: int, way: str, threads: int) -> tuple[float, float, int]:
    from curation.crawl.fetch import FetchPolicy, fetching
    from curation.crawl.download import _CollectingWriter
    from img2dataset.downloader import Downloader
    from img2dataset.resizer import Resizer

    rows: list = []
    writer = type("Collect", (_CollectingWriter,), {"emit": staticmethod(rows.append)})
    downloader = Downloader(
        sample_writer_class=writer,
        resizer=Resizer(image_size=256, resize_mode="no", resize_only_if_bigger=False, encode_format="jpg", skip_reencode=True),
        thread_count=threads, save_caption=True, extract_exif=False, output_folder="memory://bench-stats",
        column_list=["url", "caption"], timeout=10, number_sample_per_shard=max(n, 10), oom_shard_count=5,
        compute_hash="sha256", verify_hash_type=None, encode_format="jpg", retries=0,
        user_agent_token="qwen-vl-curation", disallowed_header_directives=["noai", "noimageai", "noindex", "noimageindex"],
    )
    import fsspec

    mem = fsspec.filesystem("memory")
    with mem.open("/bench/urls.arrow", "wb") as f, open(shard_file, "rb") as src:
        f.write(src.read())
    policy = FetchPolicy(allow_private_network=True, max_per_host=threads)
    t0, c0 = time.perf_counter(), time.process_time()
    if way == "plain":
        downloader.download_shard((0, "memory://bench/urls.arrow"))
    elif way == "crawl":
        with fetching(policy):
            downloader.download_shard((0, "memory://bench/urls.arrow"))
    else:
        with checks_computed_but_loopback_allowed(), fetching(FetchPolicy(allow_private_network=False, max_per_host=threads)):
            downloader.download_shard((0, "memory://bench/urls.arrow"))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0  # cpu: this process, the server's threads included
    ok = sum(1 for r in rows if r is not None and r.get("status") == "success")
    return seconds, cpu, ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()

    import pyarrow as pa
    from jobs.demo import serve_directory

    ways = ("plain", "crawl", "checked")
    times: dict[str, list[float]] = {w: [] for w in ways}
    cpus: dict[str, list[float]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory() as tmp:
        www = Path(tmp) / "www"
        www.mkdir()
        names = make_site(www, args.images)
        size = sum((www / n).stat().st_size for n in names)
        with serve_directory(www) as base:
            urls = pa.table({"url": [f"{base}/{n}" for n in names], "caption": [f"image {i}" for i in range(len(names))]})
            shard_file = Path(tmp) / "urls.arrow"
            with pa.OSFile(str(shard_file), "wb") as f, pa.ipc.new_file(f, urls.schema) as w:
                w.write_table(urls)
            download(shard_file, len(names), "plain", args.threads)  # warm-up: imports, page cache
            for run in range(args.runs):
                for way in ways if run % 2 == 0 else reversed(ways):
                    seconds, cpu, ok = download(shard_file, len(names), way, args.threads)
                    if ok != len(names):
                        raise SystemExit(f"{way}: {ok} of {len(names)} images downloaded")
                    times[way].append(seconds)
                    cpus[way].append(cpu)
    print(f"{args.images} images ({size / len(names) / 1024:.0f} KB each on average), {args.threads} threads, "
          f"{args.runs} runs interleaved")
    print("| way | wall s (median) | images/s | wall ratio | CPU s (median) | CPU ratio | wall s per run |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    plain, plain_cpu = statistics.median(times["plain"]), statistics.median(cpus["plain"])
    for way in ways:
        m, c = statistics.median(times[way]), statistics.median(cpus[way])
        runs = ", ".join(f"{t:.2f}" for t in times[way])
        print(f"| {way} | {m:.2f} | {args.images / m:.0f} | {m / plain:.3f} | {c:.2f} | {c / plain_cpu:.3f} | {runs} |")


if __name__ == "__main__":
    main()

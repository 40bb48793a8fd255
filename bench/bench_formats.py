"""Benchmark (not a test): build + tokenize throughput of formats.build, one core.

Runs the BuildSamples stage in this process (one Python thread, so one core)
on generated records and reports samples per second, median of several runs,
for captions and for grounding (ref_grounding + grounded_caption), in each
format. Every sample is rendered and its exact token count computed.

    .venv/bin/python bench/bench_formats.py [--runs 7] [--records 2000] [--markdown bench/RESULTS-formats.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from curation.schema import records_from_pylist
from formats.build import BuildSamples

__all__ = ["make_records", "bench", "main"]

WORDS = "a man riding red motorcycle on dirt road near small wooden house with dog and two children playing".split()


def make_records(n: int, captions: int, regions: int, image_bytes: int):
    rows = []
    blob = b"\xff\xd8\xff" + bytes(image_bytes - 3)
    for i in range(n):
        def sentence(k: int) -> str:
            return " ".join(WORDS[(i * 7 + k * 3 + j) % len(WORDS)] for j in range(8 + (i + k) % 6)).capitalize() + "."

        rows.append(
            {
                "record_id": f"bench/{i:08d}.jpg",
                "source": "bench",
                "image": blob,
                "width": 640,
                "height": 480,
                "captions": [sentence(k) for k in range(captions)],
                "regions": [
                    {"phrase": " ".join(WORDS[(i + k + j) % len(WORDS)] for j in range(3)),
                     "boxes": [[10 + k * 7, 20 + k * 5, 200 + k * 11.5, 300 + k * 3.25]]}
                    for k in range(regions)
                ],
            }
        )
    return records_from_pylist(rows)


def bench(records, fmt: str, tasks: str, runs: int) -> tuple[float, float, int]:
    """(median samples/s of wall time, median samples/s of this process's CPU time, samples per run)."""
    stage = BuildSamples(format=fmt, tasks=tasks)
    stage.setup()  # tokenizer loaded once, outside the timing (as on a worker)
    stage(records.slice(0, 8))  # warm-up
    wall, cpu, n = [], [], 0
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for i in range(0, records.num_rows, stage.batch_size):
            n += stage(records.slice(i, stage.batch_size)).num_rows
        wall.append(n / (time.perf_counter() - t0))
        cpu.append(n / (time.process_time() - c0))
    return statistics.median(wall), statistics.median(cpu), n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--image-bytes", type=int, default=30_000, help="size of each record's (fake) image")
    ap.add_argument("--markdown", default=None, help="write the results table here")
    args = ap.parse_args(argv)
    caps = make_records(args.records, captions=5, regions=0, image_bytes=args.image_bytes)
    grounds = make_records(args.records, captions=0, regions=5, image_bytes=args.image_bytes)
    rows = []
    for fmt in ("qwen-vl", "qwen2-vl", "qwen2.5-vl"):
        for name, recs, tasks in (("caption", caps, "caption"), ("grounding", grounds, "ref_grounding,grounded_caption")):
            wall, cpu, n = bench(recs, fmt, tasks, args.runs)
            rows.append((fmt, name, n, wall, cpu))
            print(f"{fmt:<11} {name:<10} {n:>7} samples/run  median {wall:>9,.0f} samples/s wall, {cpu:>9,.0f} per CPU-second")
    lines = [
        "### Formats: build + tokenize throughput (one core)",
        "",
        f"`bench/bench_formats.py --runs {args.runs} --records {args.records}`: the BuildSamples stage in one process",
        "(render every sample and count its tokens exactly with the tiktoken BPE), median of "
        f"{args.runs} runs; records of 640x480 with {args.image_bytes // 1000} KB image bytes each (copied into every",
        "sample's `images`). Captions: 5 per record; grounding: 5 one-box regions per record, each giving a",
        "`ref_grounding` and a `grounded_caption` sample.",
        "",
        "Wall-clock rates depend on what else the shared machine runs; the CPU-time rate (samples per",
        "CPU-second of the one benchmark process) is the one-core figure.",
        "",
        "| format | tasks | samples per run | samples/s, wall (median) | samples per CPU-second (median) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {fmt} | {name} | {n:,} | {wall:,.0f} | {cpu:,.0f} |" for fmt, name, n, wall, cpu in rows]
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs shared with other work, "
        f"Python {platform.python_version()}.",
    ]
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

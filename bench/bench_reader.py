"""Benchmark (not a test): the training-side reader, and where image bytes should live (issue 11).

Part 1 - reader throughput on the demo's packed sequences (the demo corpus, built with the demo's tasks and
`--pack 2048`), one core (torch and the reader in this process, one thread): samples/s and sequences/s with
every image decoded to its Qwen-VL 448x448 tensor, median of --runs; the baseline measured in the same run is
the same reader with images off (tokenize + labels only).

Part 2 - images stored once? A Visual-Genome-like set: --images JPEGs (500x375, VG's common size), 50 grounding
samples per image, written two ways through Parquet (zstd, row groups of 1024 rows, as ShardWriter writes):

  (a) self-contained rows: every sample row carries its image bytes (the schema today);
  (b) samples reference images by key; the images are stored once in an `images` table of the same shard
      group (part-K beside part-K), and a reader joins within the part.

Measured: bytes on disk; reader memory per row group (Arrow bytes held after reading one row group, (b) plus
the part's images table) against the unique image bytes of that row group; reader throughput (samples/s with
images decoded, a decode per row for (a), one per unique image for (b)); the Hugging Face `datasets` Arrow
cache of each layout (load_dataset("parquet", ...) into a fresh cache directory).

    .venv/bin/python bench/bench_reader.py [--runs 5] [--images 40] [--json bench/results/reader.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["main"]


def _demo_dataset(root: Path) -> Path:
    from curation.commands.build import build_dataset
    from curation.democorpus import write_clean_records

    build_dataset(str(write_clean_records(root, n=240, seed=0)), str(root / "demo"), tasks="caption,vqa,ref_grounding,grounded_caption,ocr",
                  pack=2048, runner="local")
    return root / "demo"


def reader_throughput(path: Path, runs: int) -> dict:
    from formats.reader import QwenVLReader

    out: dict = {}
    for label, images in (("tokens only (baseline)", False), ("images decoded", True)):
        rates, cpu_rates, seq_cpu_rates = [], [], []
        for _ in range(runs):
            r = QwenVLReader(path, table="sequences", seed=0, images=images)
            t0, c0 = time.perf_counter(), time.process_time()
            samples = seqs = 0
            for ex in r:
                seqs += 1
                samples += len(ex["seq_lens"])
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            rates.append(samples / dt)
            cpu_rates.append(samples / dc)
            seq_cpu_rates.append(seqs / dc)
        # per CPU-second of this one-thread process: the one-core figure, whatever else loads the machine
        out[label] = {"samples_per_cpu_s": round(statistics.median(cpu_rates), 1),
                      "sequences_per_cpu_s": round(statistics.median(seq_cpu_rates), 2),
                      "samples_per_s_wall": round(statistics.median(rates), 1), "samples": samples, "sequences": seqs}
    out["ratio"] = round(out["images decoded"]["samples_per_cpu_s"] / out["tokens only (baseline)"]["samples_per_cpu_s"], 3)
    return out


# --- part 2 ---------------------------------------------------------------------------------------------


def _jpeg(i: int, size: tuple[int, int] = (500, 375)) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    # smooth content with some texture: compresses like a photo (tens of KB), not like noise
    base = rng.integers(0, 255, (15, 20, 3), dtype=np.uint8)
    im = Image.fromarray(base).resize(size, Image.BICUBIC)
    noise = Image.fromarray(rng.integers(0, 40, (size[1], size[0], 3), dtype=np.uint8))
    im = Image.blend(im, noise, 0.15)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _layouts(n_images: int, per_image: int, size: tuple[int, int] = (500, 375)):
    from curation.schema import SAMPLE_SCHEMA

    from formats.tokenizer import get_tokenizer

    tok = get_tokenizer("qwen-vl")
    images = [_jpeg(i, size) for i in range(n_images)]
    rows_a, rows_b = [], []
    for i, data in enumerate(images):
        key = f"vg:{i}"
        for j in range(per_image):
            base = {"sample_id": f"{i:06d}-{j:03d}", "record_id": key, "source": "vg", "task": "ref_grounding", "format": "qwen-vl",
                    "prompt": f"<img>{key}</img><ref>region {j} of image {i}</ref>", "target": "<box>(1,2),(300,400)</box><|endoftext|>",
                    "num_tokens": 0}
            base["num_tokens"] = tok.count(base["prompt"] + base["target"])
            rows_a.append({**base, "images": [{"key": key, "image": data, "width": size[0], "height": size[1]}]})
            rows_b.append({**base, "images": [{"key": key, "image": None, "width": size[0], "height": size[1]}]})
    a = pa.Table.from_pylist(rows_a, schema=SAMPLE_SCHEMA)
    b = pa.Table.from_pylist(rows_b, schema=SAMPLE_SCHEMA)
    imgs = pa.table({"key": [f"vg:{i}" for i in range(n_images)], "image": images, "width": [size[0]] * n_images, "height": [size[1]] * n_images})
    return a, b, imgs, sum(len(x) for x in images)


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _read_a(path: Path) -> tuple[int, int, int]:
    """(samples, peak Arrow bytes of a row group, unique image bytes of that row group) with images decoded."""
    from formats.images import qwen_vl_pixels

    pf = pq.ParquetFile(path)
    n = peak = uniq = 0
    for g in range(pf.num_row_groups):
        before = pa.total_allocated_bytes()
        t = pf.read_row_group(g)
        held = pa.total_allocated_bytes() - before
        rows = t.to_pylist()
        u = {r["images"][0]["key"]: len(r["images"][0]["image"]) for r in rows}
        if held > peak:
            peak, uniq = held, sum(u.values())
        for r in rows:
            qwen_vl_pixels(r["images"][0]["image"])  # what a self-contained row costs: a decode per sample
            n += 1
        del t, rows
    return n, peak, uniq


def _read_b(path: Path, images_path: Path) -> tuple[int, int, int]:
    from formats.images import qwen_vl_pixels

    pf = pq.ParquetFile(path)
    n = peak = uniq = 0
    before = pa.total_allocated_bytes()
    imgs = pq.read_table(images_path)
    by_key = dict(zip(imgs.column("key").to_pylist(), range(imgs.num_rows)))
    images_held = pa.total_allocated_bytes() - before
    for g in range(pf.num_row_groups):
        before = pa.total_allocated_bytes()
        t = pf.read_row_group(g, columns=["sample_id", "prompt", "target", "images"])
        held = pa.total_allocated_bytes() - before
        rows = t.to_pylist()
        keys = {r["images"][0]["key"] for r in rows}
        decoded = {k: qwen_vl_pixels(imgs.column("image")[by_key[k]].as_py()) for k in keys}  # one decode per image
        if held + images_held > peak:
            # (b) holds the part's images table: its unique image bytes are every image of the part
            peak, uniq = held + images_held, sum(len(x) for x in imgs.column("image").to_pylist())
        n += len(rows)
        del t, rows, decoded
    return n, peak, uniq


def reader_memory(a: pa.Table, work: Path, images_once: bool = False) -> dict:
    """What QwenVLReader holds over the VG-like samples as the project writes them (DatasetWriter; with
    `images_once`, split as `--images-once` splits them: layout (b)), image bytes read but not decoded (the
    rows as they leave its shuffle buffer of 256): the peak, sampled at every row, of Arrow's allocated bytes
    plus Python's (tracemalloc), against the unique image bytes of one row group of samples; and Python's
    peak between samples."""
    import tracemalloc

    from curation.storage.dataset import DatasetWriter
    from curation.image_table import split_images
    from formats.reader import QwenVLReader

    unique = 0
    for batch in a.to_batches(max_chunksize=1024):  # the row groups DatasetWriter writes
        t = batch.column("images").flatten()
        keys, data = t.field("key").to_pylist(), t.field("image")
        unique = max(unique, sum(len(data[keys.index(k)].as_py()) for k in set(keys)))
    out = work / ("b-dataset" if images_once else "a-dataset")
    with DatasetWriter(out) as w:
        if images_once:
            samples, images = split_images(a, set())
            w.write("samples", samples)
            w.write("images", images)
        else:
            w.write("samples", a)
        w.close()
    shard_bytes = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    r = QwenVLReader(out, buffer_size=256)
    arrow0 = pa.total_allocated_bytes()
    tracemalloc.start()
    held = arrow_held = n = 0
    try:
        for row in r._shuffled(r._rows(0, r.total_rows), 0):
            assert row["images"][0]["image"]  # the bytes are there (joined by key with images_once)
            arrow_now = pa.total_allocated_bytes() - arrow0
            held, arrow_held = max(held, arrow_now + tracemalloc.get_traced_memory()[0]), max(arrow_held, arrow_now)
            n += 1
        py_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {"rows": n, "shard_bytes": shard_bytes, "unique_image_bytes_per_row_group": unique,
            "peak_held_bytes": held, "peak_arrow_held_bytes": arrow_held, "peak_python_bytes": py_peak,
            "ratio": round(held / unique, 2)}


def _hf_cache(files: list[Path], cache: Path) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    load_dataset("parquet", data_files=[str(f) for f in files], split="train", cache_dir=str(cache))
    return _dir_bytes(cache)


def images_once(n_images: int, per_image: int, runs: int, work: Path, size: tuple[int, int] = (500, 375)) -> dict:
    a, b, imgs, unique = _layouts(n_images, per_image, size)
    pa_dir, pb_dir = work / "a", work / "b"
    for d in (pa_dir, pb_dir):
        (d / "samples").mkdir(parents=True)
    pq.write_table(a, pa_dir / "samples" / "part-00000.parquet", row_group_size=1024, compression="zstd")
    pq.write_table(b, pb_dir / "samples" / "part-00000.parquet", row_group_size=1024, compression="zstd")
    (pb_dir / "images").mkdir()
    pq.write_table(imgs, pb_dir / "images" / "part-00000.parquet", row_group_size=1024, compression="zstd")
    res: dict = {"images": n_images, "samples_per_image": per_image, "samples": a.num_rows, "unique_image_bytes": unique,
                 "disk_bytes": {"a": _dir_bytes(pa_dir), "b": _dir_bytes(pb_dir)}}
    rates = {"a": [], "b": []}
    mem = {}
    for _ in range(runs):
        t0 = time.process_time()
        n, peak, uniq = _read_a(pa_dir / "samples" / "part-00000.parquet")
        rates["a"].append(n / (time.process_time() - t0))
        mem["a"] = {"peak_row_group_bytes": peak, "unique_image_bytes_held": uniq, "ratio": round(peak / uniq, 2)}
        t0 = time.process_time()
        n, peak, uniq = _read_b(pb_dir / "samples" / "part-00000.parquet", pb_dir / "images" / "part-00000.parquet")
        rates["b"].append(n / (time.process_time() - t0))
        mem["b"] = {"peak_row_group_bytes": peak, "unique_image_bytes_held": uniq, "ratio": round(peak / uniq, 2)}
    res["reader_memory"] = mem
    res["reader_memory"]["QwenVLReader over (a)"] = reader_memory(a, work)
    res["reader_memory"]["QwenVLReader over (b), --images-once"] = reader_memory(a, work, images_once=True)
    res["reader_samples_per_cpu_s"] = {k: round(statistics.median(v), 1) for k, v in rates.items()}
    res["datasets_cache_bytes"] = {
        "a": _hf_cache([pa_dir / "samples" / "part-00000.parquet"], work / "hf-a"),
        "b": _hf_cache([pb_dir / "samples" / "part-00000.parquet"], work / "hf-b")
        + _hf_cache([pb_dir / "images" / "part-00000.parquet"], work / "hf-b-images"),
    }
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--images", type=int, default=40, help="VG-like images (50 samples each)")
    ap.add_argument("--image-size", default="500x375", help="WxH of the VG-like JPEGs (VG's images are 500 or 800 wide)")
    ap.add_argument("--memory-only", action="store_true", help="part 2's QwenVLReader memory only (no throughput, no datasets)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = {"cpu": os.cpu_count(), "torch_threads": torch.get_num_threads()}
        size = tuple(int(v) for v in args.image_size.lower().split("x"))
        if args.memory_only:
            a, _, _, _ = _layouts(args.images, 50, size)
            print(json.dumps({"a": reader_memory(a, root), "b (--images-once)": reader_memory(a, root, images_once=True)}, indent=1))
            return 0
        out["reader"] = reader_throughput(_demo_dataset(root), args.runs)
        print(json.dumps(out["reader"], indent=1))
        out["images_once"] = images_once(args.images, 50, args.runs, root / "vg", size)
        print(json.dumps(out["images_once"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

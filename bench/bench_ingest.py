"""Benchmark (not a test): `curate ingest --kind vg-regions` on a synthetic Visual Genome.

    .venv/bin/python bench/bench_ingest.py [--images 100000] [--regions 50] [--runs 3] [--work DIR]

Writes a synthetic `region_descriptions.json` + `image_data.json` of IMAGES
images with REGIONS regions each (full Visual Genome: 108,077 images, 5.4 M
regions, about 50 per image), and, for the image side, one small placeholder
JPEG per image. Then runs each mode RUNS times, each in a fresh process, and
reports the median records/s and regions/s, and the peak memory:

- `annotations`: no `--images` (records keep the annotated size; the image
  stage only checks sizes, in process): the importer, merger and writer alone.
- `images`: `--images DIR`, the image side as a Ray job on a local Ray of
  `--num-cpus` CPUs (reading, hashing and measuring every image).

Peak memory is the driver's peak RSS (`ru_maxrss`) and, sampled every 0.2 s,
the peak of the summed RSS of the driver and all its descendants (Ray's
raylet, GCS and workers included).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHRASES = ["a man riding a bike", "the clock is green", "white clouds in blue sky", "a red car parked", "tree with green leaves", "a sign on the building"]


def generate(work: Path, n_images: int, n_regions: int, with_images: bool) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    rd, idata = work / "region_descriptions.json", work / "image_data.json"
    rng = random.Random(0)
    sizes = [(rng.choice([64, 80, 96]), rng.choice([48, 64, 72])) for _ in range(n_images)]
    if not rd.exists():
        with open(idata, "w") as f:
            json.dump([{"width": w, "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{i + 1}.jpg", "height": h, "image_id": i + 1, "coco_id": None, "flickr_id": None} for i, (w, h) in enumerate(sizes)], f)
        region_id = 0
        with open(str(rd) + ".tmp", "w") as f:
            f.write("[")
            for i, (w, h) in enumerate(sizes):
                regions = []
                for _ in range(n_regions):
                    region_id += 1
                    x, y = rng.randrange(0, w - 8), rng.randrange(0, h - 8)
                    regions.append({"region_id": region_id, "width": rng.randrange(2, w - x), "height": rng.randrange(2, h - y), "image_id": i + 1, "phrase": rng.choice(PHRASES), "y": y, "x": x})
                f.write(("," if i else "") + json.dumps({"regions": regions, "id": i + 1}))
            f.write("]")
        os.replace(str(rd) + ".tmp", rd)
    images = work / "images"
    if with_images and not (images / "done").exists():
        from PIL import Image

        images.mkdir(exist_ok=True)
        cache: dict = {}
        for i, (w, h) in enumerate(sizes):
            if (w, h) not in cache:
                import io

                buf = io.BytesIO()
                Image.new("RGB", (w, h), (90, 120, 150)).save(buf, format="JPEG", quality=30)
                cache[(w, h)] = buf.getvalue()
            (images / f"{i + 1}.jpg").write_bytes(cache[(w, h)])
        (images / "done").write_text("ok")
    return {"region_descriptions": rd, "image_data": idata, "images": images, "bytes": rd.stat().st_size + idata.stat().st_size}


def _tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of pid and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            ppid = int(parts[1])
            pages = int(parts[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
        rss[int(d)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def one_run(files: dict, out: Path, mode: str, num_cpus: int) -> dict:
    """Run ingest in a fresh process; return its timing, counts and peak memory."""
    code = f"""
import json, resource, sys, time
from pathlib import Path
from curation.commands.ingest import ingest
t = time.time()
m = ingest({{"vg-regions": [Path({str(files['region_descriptions'])!r}), Path({str(files['image_data'])!r})]}}, {str(out)!r},
           images={str(files['images']) if mode == 'images' else None!r}, use_ray={mode == 'images'}, num_cpus={num_cpus})
wall = time.time() - t
print(json.dumps({{"wall": wall, "records": m["ingest"]["records"], "regions": m["ingest"]["annotations"]["regions"],
                  "rejects": sum(m["ingest"]["rejects"].values()), "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "timings": m["timings"]}}))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.2)
    out_text = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"ingest run failed ({proc.returncode}): {out_text[-2000:]}")
    result = json.loads(out_text.strip().splitlines()[-1])
    result["tree_peak_rss"] = peak
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--regions", type=int, default=50, help="regions per image")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="annotations,images")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--work", default="/tmp/bench-ingest")
    args = ap.parse_args()
    modes = args.modes.split(",")
    work = Path(args.work) / f"vg-{args.images}x{args.regions}"
    t0 = time.time()
    files = generate(work, args.images, args.regions, "images" in modes)
    print(f"synthetic input: {args.images} images, {args.images * args.regions} regions, {files['bytes'] / 1e6:.0f} MB of JSON ({time.time() - t0:.0f} s to make)", flush=True)
    report = {"images": args.images, "regions_per_image": args.regions, "json_bytes": files["bytes"], "num_cpus": args.num_cpus, "cpus_on_machine": os.cpu_count(), "modes": {}}
    for mode in modes:
        runs = []
        for i in range(args.runs):
            r = one_run(files, work / f"out-{mode}", mode, args.num_cpus)
            runs.append(r)
            print(f"{mode} run {i + 1}: {r['wall']:.1f} s, {r['records'] / r['wall']:.0f} records/s, driver peak {r['driver_peak_rss'] / 2**20:.0f} MiB, all processes peak {r['tree_peak_rss'] / 2**20:.0f} MiB", flush=True)
        report["modes"][mode] = {
            "runs": runs,
            "median_wall_s": statistics.median(r["wall"] for r in runs),
            "median_records_per_s": statistics.median(r["records"] / r["wall"] for r in runs),
            "median_regions_per_s": statistics.median(r["regions"] / r["wall"] for r in runs),
            "median_driver_peak_mib": statistics.median(r["driver_peak_rss"] for r in runs) / 2**20,
            "median_tree_peak_mib": statistics.median(r["tree_peak_rss"] for r in runs) / 2**20,
        }
    print(json.dumps({k: v for k, v in report.items() if k != "modes"} | {"modes": {m: {k: v for k, v in d.items() if k != "runs"} for m, d in report["modes"].items()}}, indent=1))
    (work / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

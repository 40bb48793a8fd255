"""Benchmark: the web-pairs job end to end against img2dataset + a bare open_clip loop (issue #8).

    .venv/bin/python bench/bench_pipeline.py --images 2000 --runs 3 --shard-rows 500

A seeded corpus of photo-like JPEGs (longest side 320-1280 px, aspect 3:4 to
16:9, quality 75-95, generated once into WORK/corpus-v2-N-seed0/ and reused)
with one caption each is served from loopback by a ThreadingHTTPServer
(`jobs.demo.serve_directory`) for the whole benchmark. Each run, interleaved,
every process fresh:

* (a) baseline: `img2dataset.download` alone at the settings its README advises
      (processes = the machine's cores, 32 threads each; `--processes`,
      `--threads`) with the output the project asks of it (Parquet, no resize,
      no re-encode, sha256, no EXIF, `--shard-rows` URLs per shard);
* (1) subject:  `curate run JOB.toml` (download -> basic -> CLIP with the
      shipped demo model -> caption samples -> pack 2048 -> shards), with a
      CLIP threshold of -1 so that no pair is dropped by score;
* (b) baseline: a bare open_clip loop over (a)'s output (PIL decode, open_clip's
      eval preprocess, encode_image + encode_text in batches of 64, 2 torch
      threads, the same demo model);
* (2) subject:  `curate download URLS --out DIR` (the download stage alone);
* (3) subject:  `curate run` on 4N URLs (the same images, each URL 4 times
      with distinct `?k=` query strings): the driver's peak RSS against (1)'s;
* (4) subject:  `curate run` on the first 10 URLs: the fixed cost of a job
      (imports, start-up, model load, shutdown).

Targets: (1) wall <= 0.8 x ((a) + (b)); (2) throughput >= 0.95 x (a)'s;
(3) driver peak RSS at 4N <= 1.2 x at N. Wall times are whole processes
(imports, Ray's start, model load included) measured by this script; ratios
are medians of the per-run ratios. Each process tree's CPU seconds are printed
beside its wall, and its mean busy cores (CPU seconds / wall; the machine's
busy CPU seconds from /proc/stat over the same wall beside it). Driver peak RSS is the `ru_maxrss` of the
`curate` process itself (not its Ray workers); "all processes" is the summed
RSS of it and its descendants, sampled every 0.25 s.

Prints a Markdown table and writes everything to `--json`
(default bench/results/pipeline.json). `--keep` keeps the last run's outputs
in WORK for inspection; `--profile` adds one `curate run` sampled by py-spy
(CPU samples of the driver and every Ray process) with Ray's task timeline,
both summarised into the JSON (raw files in WORK/profile/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_CLIP = ROOT / "jobs" / "assets" / "demo-clip"
MIN_SIDE, MAX_SIDE = 320, 1280  # the longest side of the corpus' images
SUBJECTS = ("img2dataset", "curate_run", "bare_clip", "curate_download", "curate_run_4n", "curate_run_10")

NOUNS = ["dog", "cat", "bicycle", "mountain", "harbour", "teapot", "lighthouse", "market", "garden", "train",
         "bridge", "kitchen", "forest", "street", "beach", "library", "violin", "tractor", "castle", "river"]
ADJECTIVES = ["red", "blue", "old", "small", "bright", "quiet", "busy", "wooden", "green", "misty",
              "sunny", "dark", "golden", "snowy", "crowded", "empty"]
PLACES = ["at dawn", "in the rain", "under a grey sky", "near the sea", "in the city", "at night",
          "in autumn", "on a summer day", "in the countryside", "seen from above"]


# ------------------------------------------------------------------ the corpus


def _image(rng, sigma: float):
    """A photo-like image (longest side MIN_SIDE-MAX_SIDE, landscape or portrait): a smooth colour field,
    mid-scale texture and grain."""
    import numpy as np
    from PIL import Image

    side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    other = int(side / float(rng.uniform(4 / 3, 16 / 9)))
    width, height = (side, other) if rng.random() < 0.7 else (other, side)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    mid = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(mid).resize((width, height), Image.BILINEAR), dtype=np.float32)
    grain = rng.normal(0.0, sigma, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(0.7 * base + 0.3 * texture + grain, 0, 255).astype(np.uint8))


def make_corpus(work: Path, n: int, seed: int = 0) -> Path:
    """WORK/corpus-N-seedS/: N JPEGs and captions.parquet (file, caption); generated once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = work / f"corpus-v2-{n}-seed{seed}"
    if (folder / "captions.parquet").is_file():
        return folder
    (folder / "www").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files, captions = [], []
    t0 = time.time()
    for i in range(n):
        name = f"{i:06d}.jpg"
        path = folder / "www" / name
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            _image(rng, sigma=float(rng.uniform(2.0, 7.0))).save(tmp, "JPEG", quality=int(rng.integers(75, 96)))
            os.replace(tmp, path)
        files.append(name)
        captions.append(f"a photo of a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(PLACES)}")
        if (i + 1) % 500 == 0:
            print(f"corpus: {i + 1}/{n} images ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    pq.write_table(pa.table({"file": files, "caption": captions}), folder / "captions.parquet")
    return folder


def write_url_list(corpus: Path, base_url: str, path: Path, copies: int = 1, first: int | None = None) -> int:
    """url, caption: every image (or the `first` ones) `copies` times (copy k > 0 as `?k=K`: a distinct URL,
    the same file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(corpus / "captions.parquet").slice(0, first).to_pydict()
    urls, caps = [], []
    for k in range(copies):
        for f, c in zip(t["file"], t["caption"]):
            urls.append(f"{base_url}/{f}" + (f"?k={k}" if k else ""))
            caps.append(c)
    pq.write_table(pa.table({"url": urls, "caption": caps}), path)
    return len(urls)


# ------------------------------------------------------ children (fresh processes)


def child_img2dataset(urls: str, out: str, shard_rows: str, threads: str, processes: str) -> None:
    """img2dataset alone, with the settings of curation/crawl/download.py (run_img2dataset, Img2datasetReader)."""
    from curation.images import DEFAULT_MAX_PIXELS

    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(DEFAULT_MAX_PIXELS)
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    from img2dataset import download

    download(
        url_list=urls, input_format="parquet", url_col="url", caption_col="caption", output_folder=out,
        output_format="parquet", processes_count=int(processes), thread_count=int(threads), number_sample_per_shard=int(shard_rows),
        resize_mode="no", skip_reencode=True, encode_format="jpg", timeout=10, retries=0,
        max_image_area=float(DEFAULT_MAX_PIXELS), extract_exif=False, compute_hash="sha256", enable_wandb=False,
        disallowed_header_directives=[], incremental_mode="incremental",
    )


def child_bare_clip(folder: str, result: str, threads: str = "2") -> None:
    """A plain open_clip loop over img2dataset's Parquet output: what a user would write."""
    import io

    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    from filters.clip_score import ClipModelSpec, load_clip

    torch.set_num_threads(int(threads))
    spec = ClipModelSpec(str(DEMO_CLIP / "DemoCLIP-Tiny.json"), checkpoint=str(DEMO_CLIP / "demo_clip.pt"))
    model, preprocess, tokenizer = load_clip(spec)
    scores: list[float] = []

    def flush(images, texts):
        with torch.inference_mode():
            img = model.encode_image(torch.stack(images), normalize=True)
            txt = model.encode_text(tokenizer(texts), normalize=True)
            scores.extend((img * txt).sum(-1).tolist())

    images, texts = [], []
    for shard in sorted(Path(folder).glob("*.parquet")):
        f = pq.ParquetFile(shard)
        for rb in f.iter_batches(batch_size=256, columns=["jpg", "caption", "status"]):
            for data, caption, status in zip(*(rb.column(i).to_pylist() for i in range(3))):
                if status != "success" or data is None:
                    continue
                with Image.open(io.BytesIO(data)) as im:
                    images.append(preprocess(im.convert("RGB")))
                texts.append(caption or "")
                if len(images) == 64:
                    flush(images, texts)
                    images, texts = [], []
    if images:
        flush(images, texts)
    Path(result).write_text(json.dumps({"scored": len(scores)}))


def child_curate(rss_file: str, *argv: str, timeline: str | None = None) -> int:
    """The `curate` CLI in this process, ended as the command ends (`curation.cli.exit_now`); its own peak
    RSS (ru_maxrss) written to `rss_file` at exit; with `timeline`, Ray's task timeline (chrome trace)
    written there before Ray shuts down."""
    import atexit
    import resource

    atexit.register(lambda: Path(rss_file).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
    from curation.cli import exit_now, main

    rc = main(list(argv))
    if timeline is not None:
        import ray

        if ray.is_initialized():
            ray.timeline(filename=timeline)
    exit_now(rc)
    return rc


def child_curate_timeline(rss_file: str, timeline: str, *argv: str) -> int:
    return child_curate(rss_file, *argv, timeline=timeline)


CHILDREN = {"img2dataset": child_img2dataset, "bare_clip": child_bare_clip, "curate": child_curate,
            "curate_timeline": child_curate_timeline}


# ------------------------------------------------------------- the driver side


def _tree(pid: int, cpu: dict[int, float], largest: dict | None = None) -> int:
    """Summed RSS (bytes) of pid and its descendants, from /proc; their CPU seconds so far go into `cpu`,
    and the largest RSS of any one of them so far into `largest["rss"]`."""
    children: dict[int, list[int]] = {}
    stat: dict[int, tuple[int, float]] = {}
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(parts[1]), []).append(int(d))
        stat[int(d)] = (int(parts[21]) * page, (int(parts[11]) + int(parts[12])) / tick)
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        if p in stat:
            total += stat[p][0]
            cpu[p] = max(cpu.get(p, 0.0), stat[p][1])
            if largest is not None:
                largest["rss"] = max(largest.get("rss", 0), stat[p][0])
        stack.extend(children.get(p, []))
    return total


def _machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - v[4]) / tick, sum(v) / tick


def run_child(name: str, *args: str, log: Path, spy: Path | None = None) -> dict:
    """This script as `_child NAME ARGS` in a fresh process.

    Returns its wall seconds, the peak summed RSS of it and its descendants,
    their CPU seconds (sampled every 0.25 s) and the whole machine's busy CPU
    seconds meanwhile (the rest is other people's load on a shared machine).
    """
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
           "NO_ALBUMENTATIONS_UPDATE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           # a fresh local Ray per run, never another session's cluster recorded in /tmp/ray/ray_current_cluster
           "RAY_ADDRESS": "local"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", name, *args]
    busy0, _ = _machine_cpu()
    t0 = time.perf_counter()
    cpu: dict[int, float] = {}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        spying = None
        if spy is not None:  # CPU samples only (no --idle), of the driver and every process it starts
            exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spying = subprocess.Popen([exe, "record", "--pid", str(proc.pid), "--subprocesses", "--format", "raw",
                                       "--rate", "50", "--nonblocking", "--output", str(spy)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tree_peak = 0
        largest: dict = {}
        while proc.poll() is None:
            tree_peak = max(tree_peak, _tree(proc.pid, cpu, largest))
            time.sleep(0.25)
    wall = time.perf_counter() - t0
    if spying is not None:  # py-spy writes its file on SIGINT
        spying.send_signal(signal.SIGINT)
        spying.wait(timeout=120)
    busy = _machine_cpu()[0] - busy0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}); last lines of {log}:\n" + "".join(open(log).readlines()[-30:]))
    return {"seconds": wall, "tree_peak_rss": tree_peak, "largest_process_peak_rss": largest.get("rss", 0),
            "cpu_seconds": round(sum(cpu.values()), 1),
            "machine_busy_cpu_seconds": round(busy, 1), "processes": len(cpu),
            "busy_cores": round(sum(cpu.values()) / wall, 2), "machine_busy_cores": round(busy / wall, 2)}


def job_toml(path: Path, urls: Path, out: Path, shard_rows: int, threads: int) -> Path:
    path.write_text(
        f"""urls = {str(urls)!r}
out = {str(out)!r}
source = "bench"
shard_rows = {shard_rows}
threads = {threads}
timeout = 10
allow_private_network = true   # the corpus is served from loopback
max_per_host = {threads}       # one host serves everything: as many requests at once as img2dataset's threads
filters = ["basic", "clip"]
clip_model = {str(DEMO_CLIP / 'DemoCLIP-Tiny.json')!r}
clip_checkpoint = {str(DEMO_CLIP / 'demo_clip.pt')!r}
min_clip_score = -1.0      # cosine >= -1: CLIP runs on every pair, drops none
clip_batch_size = 64
format = "qwen-vl"
tasks = ["caption"]
pack = 2048
"""
    )
    return path


def curate(argv: list[str], tmp: Path, log: Path, out: Path, profile: Path | None = None) -> dict:
    rss = tmp / "driver_rss"
    if profile is None:
        r = run_child("curate", str(rss), *argv, log=log)
    else:
        r = run_child("curate_timeline", str(rss), str(profile / "timeline.json"), *argv, log=log,
                      spy=profile / "py-spy.folded")
    r["driver_peak_rss"] = int(rss.read_text()) if rss.is_file() else None
    m = json.loads((out / "manifest.json").read_text())
    r["stages"] = {k: {"in": v["in"], "out": v["out"], "dropped": sum(v["dropped"].values()),
                       "seconds": round(v.get("seconds", 0.0), 2)} for k, v in m["stages"].items()}
    r["timings"] = {k: round(v, 2) for k, v in m.get("timings", {}).items()}
    r["tables"] = {k: v["rows"] for k, v in m["tables"].items()}
    r["manifest_wall_seconds"] = m.get("wall_seconds")
    r["run"] = m.get("run")  # the shard tasks' spans (curation/storage/dataset.py: task_figures)
    r["fetch_seconds"] = (m.get("download") or {}).get("fetch_seconds")
    first = next(iter(m["stages"].values()), {})
    if r["tables"]["records"] != first.get("in"):  # the corpus has no faults and the threshold drops none
        raise SystemExit(f"{out}: {r['tables']['records']} records of {first.get('in')} URLs; "
                         f"rejects: {dict((k, v['dropped']) for k, v in m['stages'].items())}")
    return r


def _success_rows(folder: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    n = 0
    for f in folder.glob("*.parquet"):
        n += pc.sum(pc.equal(pq.read_table(f, columns=["status"]).column("status"), "success")).as_py() or 0
    return n


def one_run(i: int, args, urls: Path, urls4: Path, urls10: Path, n: int, work: Path) -> dict:
    tmp = work / f"run-{i}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    res: dict = {}
    sr, th = str(args.shard_rows), str(args.threads)

    res["img2dataset"] = run_child("img2dataset", str(urls), str(tmp / "i2d"), sr, th, str(args.processes),
                                   log=tmp / "img2dataset.log")
    res["img2dataset"]["ok"] = _success_rows(tmp / "i2d")
    print(f"run {i}: (a) img2dataset {res['img2dataset']['seconds']:.1f} s ({res['img2dataset']['ok']}/{n} ok)", flush=True)

    job = job_toml(tmp / "job.toml", urls, tmp / "run", args.shard_rows, args.threads)
    res["curate_run"] = curate(["run", str(job)], tmp, tmp / "curate_run.log", tmp / "run")
    shutil.rmtree(tmp / "run")
    print(f"run {i}: (1) curate run {res['curate_run']['seconds']:.1f} s ({res['curate_run']['busy_cores']} busy cores), "
          f"stages {res['curate_run']['stages']}", flush=True)

    res["bare_clip"] = run_child("bare_clip", str(tmp / "i2d"), str(tmp / "bare.json"), str(args.bare_threads),
                                 log=tmp / "bare_clip.log")
    res["bare_clip"]["scored"] = json.loads((tmp / "bare.json").read_text())["scored"]
    shutil.rmtree(tmp / "i2d")
    print(f"run {i}: (b) bare open_clip loop {res['bare_clip']['seconds']:.1f} s ({res['bare_clip']['scored']} scored)", flush=True)

    res["curate_download"] = curate(["download", str(urls), "--out", str(tmp / "dl"), "--shard-rows", sr, "--threads", th,
                                     "--allow-private-network", "--max-per-host", th],
                                    tmp, tmp / "curate_download.log", tmp / "dl")
    shutil.rmtree(tmp / "dl")
    print(f"run {i}: (2) curate download {res['curate_download']['seconds']:.1f} s", flush=True)

    if not args.no_4n and i < args.runs_4n:
        job4 = job_toml(tmp / "job4.toml", urls4, tmp / "run4", args.shard_rows, args.threads)
        res["curate_run_4n"] = curate(["run", str(job4)], tmp, tmp / "curate_run_4n.log", tmp / "run4")
        shutil.rmtree(tmp / "run4")
        print(f"run {i}: (3) curate run 4N {res['curate_run_4n']['seconds']:.1f} s, driver peak "
              f"{res['curate_run_4n']['driver_peak_rss'] / 2**20:.0f} MiB (N: {res['curate_run']['driver_peak_rss'] / 2**20:.0f} MiB)",
              flush=True)
    job10 = job_toml(tmp / "job10.toml", urls10, tmp / "run10", args.shard_rows, args.threads)
    res["curate_run_10"] = curate(["run", str(job10)], tmp, tmp / "curate_run_10.log", tmp / "run10")
    print(f"run {i}: (4) curate run, 10 URLs {res['curate_run_10']['seconds']:.1f} s", flush=True)
    if not args.keep:
        shutil.rmtree(tmp)
    return res


def profile_run(args, urls: Path, work: Path) -> dict:
    """One extra `curate run`: py-spy CPU samples of every process, Ray's task timeline, a summary of both."""
    prof = work / "profile"
    shutil.rmtree(prof, ignore_errors=True)
    prof.mkdir(parents=True)
    job = job_toml(prof / "job.toml", urls, prof / "run", args.shard_rows, args.threads)
    r = curate(["run", str(job)], prof, prof / "curate_run.log", prof / "run", profile=prof)
    shutil.rmtree(prof / "run")
    r["cpu_by_process"] = _folded_summary(prof / "py-spy.folded") if (prof / "py-spy.folded").is_file() else None
    r["timeline"] = _timeline_summary(prof / "timeline.json") if (prof / "timeline.json").is_file() else None
    r["files"] = str(prof)
    return r


# functions whose inclusive samples the profile summary reports (substrings of py-spy's frame names)
PROFILED = ("_find_and_load", "download_shard", "Resizer.__call__", "FromImg2dataset.__call__", "decoded_size",
            "BasicFilter", "ClipPreprocess.measure", "Image.resize", "ClipScore.measure", "load_clip", "BuildSamples",
            "_Flow.sink", "ParquetWriter", "_sha256", "_Flow.call")


def _folded_summary(path: Path, rate: int = 50) -> dict:
    """py-spy raw samples, per process: seconds sampled on CPU, and inclusive seconds of the PROFILED functions.

    Processes: the driver, each Ray worker by pid and role (shard task, pool actor), the rest of Ray by script.
    """
    import collections
    import re

    total: collections.Counter = collections.Counter()
    inclusive: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    roles: dict[str, set] = collections.defaultdict(set)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        procs = [p for p in parts if p.startswith("process ")]
        m = re.match(r'process (\d+):"(.*)"', procs[-1]) if procs else None
        pid, cmd = (m.group(1), m.group(2)) if m else ("?", "?")
        if "_child curate" in cmd:
            kind = "driver"
        elif "default_worker.py" in cmd:
            kind = f"worker {pid}"
        else:
            kind = "ray " + (cmd.split("ray/", 1)[1].split()[0] if "ray/" in cmd else cmd.split()[0].rsplit("/", 1)[-1])
        frames = ";".join(p for p in parts if not p.startswith("process "))
        n = int(count)
        total[kind] += n
        if "_shard_task" in frames:
            roles[kind].add("shard task")
        if "_PoolActor" in frames or "ClipScore" in frames:
            roles[kind].add("pool actor")
        for name in PROFILED:
            if name in frames:
                inclusive[kind][name] += n
    out = {}
    for kind, n in total.most_common():
        label = f"{kind} ({', '.join(sorted(roles[kind]))})" if roles[kind] else kind
        out[label] = {"seconds": round(n / rate, 1),
                      "inclusive": {k: round(v / rate, 1) for k, v in inclusive[kind].most_common()}}
    return out


def _timeline_summary(path: Path) -> dict:
    """Ray's chrome trace: busy seconds per task/actor method, and the span from first to last event."""
    import collections

    events = [e for e in json.loads(path.read_text()) if e.get("ph") == "X"]
    busy: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for e in events:
        busy[e["name"]] += e.get("dur", 0) / 1e6
        count[e["name"]] += 1
    start = min((e["ts"] for e in events), default=0)
    end = max((e["ts"] + e.get("dur", 0) for e in events), default=0)
    return {"span_seconds": round((end - start) / 1e6, 2),
            "busy_seconds": {k: [round(v, 2), count[k]] for k, v in busy.most_common(20)}}


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict], n: int, scale: int) -> dict:
    per = {s: [r[s] for r in runs if s in r] for s in SUBJECTS}
    sec = {s: [x["seconds"] for x in v] for s, v in per.items()}
    base = [a + b for a, b in zip(sec["img2dataset"], sec["bare_clip"])]
    s = {
        "seconds": {k: _med(v) for k, v in sec.items() if v},
        "seconds_per_run": sec,
        "baseline_a_plus_b": _med(base),
        "ratio_run_to_a_plus_b": _med([c / b for c, b in zip(sec["curate_run"], base)]),
        # the same in CPU seconds of each process tree: what a saturated machine pays
        "cpu_ratio_run_to_a_plus_b": _med([c["cpu_seconds"] / (a["cpu_seconds"] + b["cpu_seconds"]) for c, a, b in
                                           zip(per["curate_run"], per["img2dataset"], per["bare_clip"])]),
        "cpu_ratio_download_to_img2dataset": _med([d["cpu_seconds"] / a["cpu_seconds"] for d, a in
                                                   zip(per["curate_download"], per["img2dataset"])]),
        # throughput ratio: URLs/s of curate download over URLs/s of img2dataset
        "ratio_download_throughput": _med([a / d for a, d in zip(sec["img2dataset"], sec["curate_download"])]),
        "driver_peak_rss": {k: _med([x.get("driver_peak_rss") for x in per[k]]) for k in ("curate_run", "curate_download", "curate_run_4n") if per[k]},
        "tree_peak_rss": {k: _med([x["tree_peak_rss"] for x in v]) for k, v in per.items() if v},
        "largest_process_peak_rss": {k: _med([x.get("largest_process_peak_rss") for x in v]) for k, v in per.items() if v},
        "cpu_seconds": {k: _med([x["cpu_seconds"] for x in v]) for k, v in per.items() if v},
        "machine_busy_cpu_seconds": {k: _med([x["machine_busy_cpu_seconds"] for x in v]) for k, v in per.items() if v},
        "busy_cores": {k: _med([x["cpu_seconds"] / x["seconds"] for x in v]) for k, v in per.items() if v},
        "machine_busy_cores": {k: _med([x["machine_busy_cpu_seconds"] / x["seconds"] for x in v]) for k, v in per.items() if v},
        "stage_seconds": {k: {st: _med([x["stages"][st]["seconds"] for x in per[k]]) for st in per[k][0]["stages"]}
                          for k in ("curate_run", "curate_download", "curate_run_4n") if per[k]},
        "timings": {k: {t: _med([x["timings"].get(t) for x in per[k]]) for t in per[k][0]["timings"]}
                    for k in ("curate_run", "curate_download", "curate_run_4n") if per[k]},
    }
    runs_tasks = [(x.get("run") or {}).get("tasks") for x in per["curate_run"]]
    if all(runs_tasks):  # where the shard tasks' time went (curation/storage/dataset.py: task_figures)
        keys = ("tasks", "processes", "span_seconds", "wall_seconds", "cpu_seconds", "setup_seconds", "reader_wait_seconds")
        s["curate_run_tasks"] = {k: _med([t[k] for t in runs_tasks]) for k in keys}
        s["curate_run_tasks"]["fetch_seconds"] = _med([x.get("fetch_seconds") for x in per["curate_run"]])
        s["curate_run_tasks"]["outside_tasks_seconds"] = _med([x["seconds"] - t["span_seconds"]
                                                               for x, t in zip(per["curate_run"], runs_tasks)])
    if per["curate_run_4n"]:
        s["ratio_rss_4n_to_n"] = _med([b["driver_peak_rss"] / a["driver_peak_rss"] for a, b in zip(per["curate_run"], per["curate_run_4n"])])
        s["ratio_seconds_per_url_4n_to_n"] = _med([b["seconds"] / (scale * a["seconds"]) for a, b in zip(per["curate_run"], per["curate_run_4n"])])
    s["targets"] = {
        "run_le_0.8x_a_plus_b": s["ratio_run_to_a_plus_b"] <= 0.8,
        "run_busy_cores_ge_1.7": s["busy_cores"]["curate_run"] >= 1.7,
        "fixed_cost_10_urls_le_5s": s["seconds"]["curate_run_10"] <= 5.0,
        "download_ge_0.95x_img2dataset": s["ratio_download_throughput"] >= 0.95,
    }
    if "ratio_rss_4n_to_n" in s:
        s["targets"]["driver_rss_4n_le_1.2x_n"] = s["ratio_rss_4n_to_n"] <= 1.2
    return s


def table(s: dict, n: int, scale: int) -> str:
    sec, mib = s["seconds"], lambda b: f"{b / 2**20:.0f}"
    ok = lambda b: "met" if b else "**missed**"  # noqa: E731
    t = s["targets"]
    lines = [
        "| what | median | ratio | target |",
        "| --- | ---: | ---: | --- |",
        f"| (a) img2dataset alone, {n} URLs | {sec['img2dataset']:.1f} s | | |",
        f"| (b) bare open_clip loop over (a)'s output | {sec['bare_clip']:.1f} s | | |",
        f"| (a) + (b), baseline of (1) | {s['baseline_a_plus_b']:.1f} s | 1.00 | |",
        f"| (1) `curate run` (download, basic, CLIP, caption build, pack 2048) | {sec['curate_run']:.1f} s | "
        f"{s['ratio_run_to_a_plus_b']:.2f} x (a)+(b) (CPU s: {s['cpu_ratio_run_to_a_plus_b']:.2f} x) | "
        f"<= 0.80: {ok(t['run_le_0.8x_a_plus_b'])} |",
        f"| (2) `curate download`, {n} URLs | {sec['curate_download']:.1f} s | "
        f"{s['ratio_download_throughput']:.2f} x (a)'s URLs/s (CPU s: {s['cpu_ratio_download_to_img2dataset']:.2f} x (a)'s) | "
        f">= 0.95: {ok(t['download_ge_0.95x_img2dataset'])} |",
    ]
    if "ratio_rss_4n_to_n" in s:
        d = s["driver_peak_rss"]
        lines += [
            f"| (3) `curate run` driver peak RSS, {n} URLs | {mib(d['curate_run'])} MiB | 1.00 | |",
            f"| (3) `curate run` driver peak RSS, {scale * n} URLs | {mib(d['curate_run_4n'])} MiB | "
            f"{s['ratio_rss_4n_to_n']:.2f} x at {n} | <= 1.20: {ok(t['driver_rss_4n_le_1.2x_n'])} |",
            f"| `curate run`, {scale * n} URLs (wall) | {sec['curate_run_4n']:.1f} s | "
            f"{s['ratio_seconds_per_url_4n_to_n']:.2f} x s/URL at {n} | |",
        ]
    lines += [
        f"| (1) `curate run` mean busy cores (its CPU s / wall) | {s['busy_cores']['curate_run']:.2f} | | "
        f">= 1.70: {ok(t['run_busy_cores_ge_1.7'])} |",
        f"| (4) `curate run`, 10 URLs: the fixed cost of a job | {sec['curate_run_10']:.1f} s | | "
        f"<= 5.0 s: {ok(t['fixed_cost_10_urls_le_5s'])} |",
    ]
    lines += ["", "| process | wall s | CPU s (it and its children) | busy cores | machine busy CPU s meanwhile (cores) | "
              "peak RSS, all its processes | peak RSS, its largest process |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k in SUBJECTS:
        if k in sec:
            lines.append(f"| {k} | {sec[k]:.1f} | {s['cpu_seconds'][k]:.1f} | {s['busy_cores'][k]:.2f} | "
                         f"{s['machine_busy_cpu_seconds'][k]:.1f} ({s['machine_busy_cores'][k]:.2f}) | "
                         f"{mib(s['tree_peak_rss'][k])} MiB | {mib(s['largest_process_peak_rss'][k] or 0)} MiB |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        return CHILDREN[sys.argv[2]](*sys.argv[3:]) or 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300, help="N: images and URLs of the corpus")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shard-rows", type=int, default=150, help="URLs per input shard (curate) and per img2dataset shard")
    ap.add_argument("--threads", type=int, default=32, help="download threads (both; img2dataset's per process)")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="img2dataset's processes (a)")
    ap.add_argument("--bare-threads", type=int, default=2, help="torch threads of the bare open_clip loop (b)")
    ap.add_argument("--scale", type=int, default=4, help="the memory check's second size: SCALE x N URLs")
    ap.add_argument("--no-4n", action="store_true", help="skip (3), the run on SCALE x N URLs")
    ap.add_argument("--runs-4n", type=int, default=1_000_000, metavar="K", help="(3) in the first K runs only (default: every run)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "qwen-vl-bench-pipeline"),
                    help="work folder (the corpus is cached here)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "pipeline.json"))
    ap.add_argument("--keep", action="store_true", help="keep each run's outputs and logs in WORK/run-K")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one `curate run`: py-spy (pip install py-spy) and Ray's timeline into WORK/profile/")
    args = ap.parse_args()

    from jobs.demo import serve_directory

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    corpus = make_corpus(work, args.images)
    sizes = [p.stat().st_size for p in (corpus / "www").glob("*.jpg")]
    print(f"corpus: {len(sizes)} JPEGs, longest side {MIN_SIDE}-{MAX_SIDE} px, {min(sizes) // 1024}-{max(sizes) // 1024} KB "
          f"(median {statistics.median(sizes) // 1024} KB), {sum(sizes) / 2**20:.0f} MiB; ready in {time.time() - t0:.0f} s",
          flush=True)
    runs: list[dict] = []
    profile = None
    with serve_directory(corpus / "www") as base:
        urls = work / f"urls-{args.images}.parquet"
        urls4 = work / f"urls-{args.images}x{args.scale}.parquet"
        n = write_url_list(corpus, base, urls)
        write_url_list(corpus, base, urls4, copies=args.scale)
        urls10 = work / "urls-10.parquet"
        write_url_list(corpus, base, urls10, first=10)
        for i in range(args.runs):
            runs.append(one_run(i, args, urls, urls4, urls10, n, work))
        if args.profile:
            profile = profile_run(args, urls, work)
    s = summarize(runs, n, args.scale) if runs else None
    if s:
        print()
        print(f"{args.runs} runs, {n} URLs, shard_rows {args.shard_rows}, {os.cpu_count()} CPUs; img2dataset at "
              f"{args.processes} processes x {args.threads} threads, curate at {args.threads} threads; medians")
        print(table(s, n, args.scale))
        if "curate_run_tasks" in s:
            t = s["curate_run_tasks"]
            print(f"curate_run tasks: {t['tasks']} shard tasks on {t['processes']} worker processes, span {t['span_seconds']:.1f} s "
                  f"(the rest of the wall, {t['outside_tasks_seconds']:.1f} s: start-up, Ray, manifest, shutdown); summed over "
                  f"tasks: wall {t['wall_seconds']:.1f} s, CPU {t['cpu_seconds']:.1f} s ({t['cpu_seconds'] / t['span_seconds']:.2f} "
                  f"cores over the span), model set-up {t['setup_seconds']:.1f} s, waiting on the fetch {t['reader_wait_seconds']:.1f} s; "
                  f"the fetch's own wall {t['fetch_seconds']:.1f} s")
        for k in ("curate_run", "curate_run_4n", "curate_download"):
            if k in s["stage_seconds"]:
                print(f"{k}: stage seconds (summed over shard tasks) {s['stage_seconds'][k]}; timings {s['timings'][k]}")
    if profile:
        print(f"\nprofiled `curate run`: {profile['seconds']:.1f} s wall, {profile['cpu_seconds']:.1f} CPU s; files in {profile['files']}")
        for kind, v in (profile["cpu_by_process"] or {}).items():
            print(f"  {kind}: {v['seconds']} s sampled on CPU; of which {v['inclusive']}")
        if profile["timeline"]:
            print(f"  Ray timeline: span {profile['timeline']['span_seconds']} s; busy {profile['timeline']['busy_seconds']}")
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform, "python": sys.version.split()[0]},
        "args": vars(args), "urls": n, "corpus": {"images": len(sizes), "bytes": sum(sizes), "min": min(sizes), "max": max(sizes),
                                                    "median": statistics.median(sizes)},
        "summary": s, "runs": runs, "profile": profile,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

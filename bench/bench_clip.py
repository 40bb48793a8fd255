"""Benchmark: the CLIP stage against a bare open_clip loop on the same images.

    .venv/bin/python bench/bench_clip.py --model ViT-S-32 --images 256 --runs 3

Three ways to score the same JPEGs (demo corpus) with the same model:

* bare:   a plain loop a user would write: decode, open_clip preprocess,
          encode_image / encode_text in batches (the baseline);
* stages: ClipPreprocess + ClipScore called in-process (run_local);
* ray:    the same stages through the pipeline runner on a local Ray, as a job runs
          them (shard tasks decode; the model in each shard task on CPUs, in an
          actor pool on GPUs or with --actors).

Weights are random (throughput does not depend on them; none can be
downloaded here). Prints images/s medians and each way's ratio to the bare
loop measured in the same run.

Images (`--source`): `demo` (the demo corpus's small JPEGs), `photos` (photo-sized
1024x768 JPEGs of 100-300 KB, bench_pipeline's generator, cached in $TMPDIR), or
`photos256` (the same, stored at 256 px on the short side). `--fast-decode` runs the
stages with `ClipPreprocess(fast_decode=True)` (the bare loop stays exact).

On a GPU machine, `--gpus 1` puts the model on the GPU in every way (the
scoring actor asks Ray for one GPU; bf16 autocast, pinned buffers) and samples
`nvidia-smi` utilisation while each way runs, e.g. one short call:

    .venv/bin/python bench/bench_clip.py --model ViT-B-32 --source photos --images 2048 --gpus 1 --threads 8 --runs 2
    .venv/bin/python bench/bench_clip.py --model ViT-B-32 --source photos256 --images 2048 --gpus 1 --threads 8 --runs 2

`--deviation` instead measures what `--fast-decode` changes: the demo CLIP model's
scores on the demo corpus, exact against draft decoding (mean and max absolute
difference, decisions flipped at the demo's threshold):

    .venv/bin/python bench/bench_clip.py --deviation --images 2000
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-S-32", help="open_clip name or model-config JSON")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None, help="default: 256 with --gpus, else 64")
    ap.add_argument("--source", choices=("demo", "photos", "photos256"), default="demo", help="which JPEGs (see above)")
    ap.add_argument("--fast-decode", action="store_true", help="the stages decode JPEGs with PIL's draft")
    ap.add_argument("--deviation", action="store_true", help="score deviation of --fast-decode on the demo (see above)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every way")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-stages", action="store_true", help="skip the in-process way")
    ap.add_argument("--actors", action="store_true", help="the runner way scores in an actor pool even on CPUs")
    ap.add_argument("--gpus", type=float, default=0.0, help="GPUs for the scoring stage (and the bare loop)")
    args = ap.parse_args()
    if args.deviation:
        return deviation(args)
    args.batch_size = args.batch_size or (256 if args.gpus else 64)

    import open_clip
    import torch
    from PIL import Image

    import pyarrow.parquet as pq

    from curation.storage.dataset import DatasetWriter
    from curation.runner import ParquetReader, Pipeline, Sink, init_ray, parquet_shards, run_pipeline
    from curation.runtime import run_local
    from curation.schema import records_from_pylist
    from filters.clip_score import ClipModelSpec, ClipPreprocess, ClipScore, resolve_model_name

    import os

    # the runner's shard tasks use as many torch threads as CPUs they hold (1 each here), as in a real job;
    # the bare loop and the in-process stages use --threads
    torch.set_num_threads(args.threads)
    name = resolve_model_name(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-clip-"))
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    ckpt = tmp / "random.pt"
    torch.save(model.state_dict(), ckpt)
    spec = ClipModelSpec(args.model, checkpoint=str(ckpt))

    table = corpus_table(args.source, args.images, tmp)
    n = table.num_rows

    device = "cuda" if args.gpus and torch.cuda.is_available() else "cpu"
    if args.gpus and device == "cpu":
        raise SystemExit("--gpus given but torch sees no CUDA device")

    def bare() -> None:
        m, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(ckpt), device=device)
        m.eval()
        tok = open_clip.get_tokenizer(name)
        rows = table.to_pylist()
        for i in range(0, n, args.batch_size):
            chunk = rows[i : i + args.batch_size]
            x = torch.stack([preprocess(Image.open(io.BytesIO(r["image"]))) for r in chunk]).to(device)
            t = tok([r["captions"][0] for r in chunk]).to(device)
            with torch.inference_mode():
                a = m.encode_image(x, normalize=True)
                b = m.encode_text(t, normalize=True)
                (a * b).sum(-1).cpu()

    def stages() -> None:
        pre = ClipPreprocess(spec, fast_decode=args.fast_decode)
        pre.batch_size = args.batch_size
        os.environ["CURATE_TORCH_THREADS"] = str(args.threads)
        try:
            run_local(table, [pre, ClipScore(spec, None, gpus=args.gpus, batch_size=args.batch_size)])
        finally:
            del os.environ["CURATE_TORCH_THREADS"]

    records = tmp / "records.parquet"
    pq.write_table(table, records, row_group_size=args.batch_size)

    def ray_way() -> None:
        """The stages through the pipeline runner: shard tasks decode; the model in an actor pool."""
        pre = ClipPreprocess(spec, fast_decode=args.fast_decode)
        pre.batch_size = args.batch_size
        # as a job runs it: an actor pool with GPUs, the model inside each shard task on CPUs (--actors: a pool anyway)
        score = ClipScore(spec, None, gpus=args.gpus, batch_size=args.batch_size, pooled=True if args.actors else None)
        with DatasetWriter(tmp / "out", overwrite=True) as w:
            run_pipeline(Pipeline(ParquetReader(args.batch_size), [pre, score, Sink("records")]),
                         parquet_shards([(records, n)], max(args.batch_size, n // 4)), w)
            assert w.close()["tables"]["records"]["rows"] == n

    ways = {"bare": bare} if args.skip_stages else {"bare": bare, "stages": stages}
    if not args.skip_ray:
        init_ray(num_cpus=os.cpu_count())
        ways["ray"] = ray_way
    results: dict[str, list[float]] = {k: [] for k in ways}
    util: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.runs):
        for k, fn in ways.items():  # interleaved, so drift hits every way alike
            sampler = GpuSampler() if device == "cuda" else None
            t0 = time.perf_counter()
            fn()
            results[k].append(n / (time.perf_counter() - t0))
            if sampler:
                util[k].extend(sampler.stop())
    base = statistics.median(results["bare"])
    print(f"model {name}, {n} {args.source} images ({table.column('image').nbytes / n / 1e3:.0f} KB each), "
          f"batch {args.batch_size}, torch threads {args.threads}, device {device}, fast decode {args.fast_decode}, "
          f"{args.runs} runs")
    print("| way | images/s (median) | ratio to bare loop | GPU utilisation % (median, max) |")
    print("| --- | ---: | ---: | ---: |")
    for k, v in results.items():
        med = statistics.median(v)
        u = f"{statistics.median(util[k]):.0f}, {max(util[k]):.0f}" if util[k] else "n/a"
        print(f"| {k} | {med:.1f} | {med / base:.2f} | {u} |")


def corpus_table(source: str, n: int, tmp: Path):
    """Records with image bytes and one caption each, from the demo corpus or photo-sized JPEGs."""
    import io as _io

    import pyarrow.parquet as pq
    from PIL import Image

    from curation.democorpus import generate_corpus
    from curation.schema import records_from_pylist

    rows = []
    if source == "demo":
        items = generate_corpus(tmp / "www", n=n, seed=3)
        for it in items:
            if it.planted not in ("corrupt", "tiny"):
                rows.append({"record_id": it.item_id, "source": "bench", "image": (tmp / "www" / it.filename).read_bytes(),
                             "width": it.width, "height": it.height, "captions": [it.caption]})
        return records_from_pylist(rows)
    from bench_pipeline import make_corpus

    work = Path(tempfile.gettempdir()) / "qwen-vl-bench-pipeline"
    folder = make_corpus(work, n)
    caps = pq.read_table(folder / "captions.parquet").to_pydict()
    for i, (f, c) in enumerate(zip(caps["file"], caps["caption"])):
        data = (folder / "www" / f).read_bytes()
        im = Image.open(_io.BytesIO(data))
        w, h = im.size
        if source == "photos256":
            im = im.resize((round(w * 256 / min(w, h)), round(h * 256 / min(w, h))), Image.BICUBIC)
            buf = _io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            data, (w, h) = buf.getvalue(), im.size
        rows.append({"record_id": f"bench:{i}", "source": "bench", "image": data, "width": w, "height": h, "captions": [c]})
    return records_from_pylist(rows)


def deviation(args) -> None:
    """The demo CLIP model's scores on the demo corpus: exact preprocessing against --fast-decode."""
    import numpy as np

    from curation.runtime import run_local
    from filters.clip_score import ClipModelSpec, ClipPreprocess, ClipScore
    from jobs.demo import DEMO_CLIP_DIR, DemoConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-clip-dev-"))
    spec = ClipModelSpec(str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"), checkpoint=DemoConfig.clip_checkpoint)
    table = corpus_table("demo", args.images, tmp)
    thr = DemoConfig.min_clip_score
    scores = {}
    for fast in (False, True):
        out = run_local(table, [ClipPreprocess(spec, fast_decode=fast), ClipScore(spec, None)])
        scores[fast] = out.column("clip_score").to_numpy(zero_copy_only=False).astype(float)
    diff = np.abs(scores[True] - scores[False])
    ok = ~np.isnan(diff)
    flips = int(((scores[True][ok] < thr) != (scores[False][ok] < thr)).sum())
    print(f"score deviation, {int(ok.sum())} demo images: mean {diff[ok].mean():.4f}, median {np.median(diff[ok]):.4f}, "
          f"max {diff[ok].max():.4f}; correlation {np.corrcoef(scores[True][ok], scores[False][ok])[0, 1]:.5f}; "
          f"decisions flipped at {thr}: {flips} of {int(ok.sum())}")


class GpuSampler:
    """Samples `nvidia-smi` GPU utilisation every 0.2 s in a thread until stop()."""

    def __init__(self):
        import threading

        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import subprocess

        while not self._stop.wait(0.2):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5,
                ).stdout
                self.values.extend(float(x) for x in out.split())
            except (OSError, ValueError, subprocess.SubprocessError):
                return

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.values


if __name__ == "__main__":
    main()

"""Benchmark: the CLIP stage against a bare open_clip loop on the same images.

    .venv/bin/python bench/bench_clip.py --model ViT-S-32 --images 256 --runs 3

Three ways to score the same JPEGs (demo corpus) with the same model:

* bare:   a plain loop a user would write: decode, open_clip preprocess,
          encode_image / encode_text in batches (the baseline);
* stages: ClipPreprocess + ClipScore called in-process (run_local);
* ray:    the same stages through the pipeline runner on a local Ray (shard tasks
          decode, the model in an actor pool).

Weights are random (throughput does not depend on them; none can be
downloaded here). Prints images/s medians and each way's ratio to the bare
loop measured in the same run.

On a GPU machine, `--gpus 1` puts the model on the GPU in every way (the
scoring actor asks Ray for one GPU) and samples `nvidia-smi` utilisation
while each way runs:

    .venv/bin/python bench/bench_clip.py --model ViT-B-32 --images 4096 --batch-size 256 --gpus 1 --threads 4
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
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every way")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--gpus", type=float, default=0.0, help="GPUs for the scoring stage (and the bare loop)")
    args = ap.parse_args()

    import open_clip
    import torch
    from PIL import Image

    from curation.democorpus import generate_corpus
    import pyarrow.parquet as pq

    from curation.dataset import DatasetWriter
    from curation.runner import ParquetReader, Pipeline, Sink, init_ray, parquet_shards, run_pipeline
    from curation.runtime import run_local
    from curation.schema import records_from_pylist
    from filters.clip_score import ClipModelSpec, ClipPreprocess, ClipScore, resolve_model_name

    import os

    os.environ["CURATE_TORCH_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    name = resolve_model_name(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-clip-"))
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    ckpt = tmp / "random.pt"
    torch.save(model.state_dict(), ckpt)
    spec = ClipModelSpec(args.model, checkpoint=str(ckpt))

    items = generate_corpus(tmp / "www", n=args.images, seed=3)
    items = [it for it in items if it.planted not in ("corrupt", "tiny")]
    table = records_from_pylist(
        [
            {"record_id": it.item_id, "source": "bench", "image": (tmp / "www" / it.filename).read_bytes(),
             "width": it.width, "height": it.height, "captions": [it.caption]}
            for it in items
        ]
    )
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
        pre = ClipPreprocess(spec)
        pre.batch_size = args.batch_size
        run_local(table, [pre, ClipScore(spec, None, gpus=args.gpus, batch_size=args.batch_size)])

    records = tmp / "records.parquet"
    pq.write_table(table, records, row_group_size=args.batch_size)

    def ray_way() -> None:
        """The stages through the pipeline runner: shard tasks decode; the model in an actor pool."""
        pre = ClipPreprocess(spec)
        pre.batch_size = args.batch_size
        score = ClipScore(spec, None, gpus=args.gpus, batch_size=args.batch_size, pooled=True)
        with DatasetWriter(tmp / "out", overwrite=True) as w:
            run_pipeline(Pipeline(ParquetReader(args.batch_size), [pre, score, Sink("records")]),
                         parquet_shards([(records, n)], max(args.batch_size, n // 4)), w)
            assert w.close()["tables"]["records"]["rows"] == n

    ways = {"bare": bare, "stages": stages}
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
    print(f"model {name}, {n} images, batch {args.batch_size}, torch threads {args.threads}, "
          f"device {device}, {args.runs} runs")
    print("| way | images/s (median) | ratio to bare loop | GPU utilisation % (median, max) |")
    print("| --- | ---: | ---: | ---: |")
    for k, v in results.items():
        med = statistics.median(v)
        u = f"{statistics.median(util[k]):.0f}, {max(util[k]):.0f}" if util[k] else "n/a"
        print(f"| {k} | {med:.1f} | {med / base:.2f} | {u} |")


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

"""Benchmark: the CLIP stage against a bare open_clip loop on the same images.

    .venv/bin/python bench/bench_clip.py --model ViT-S-32 --images 256 --runs 3

Three ways to score the same JPEGs (demo corpus) with the same model:

* bare:   a plain loop a user would write: decode, open_clip preprocess,
          encode_image / encode_text in batches (the baseline);
* stages: ClipPreprocess + ClipScore called in-process (run_local);
* ray:    the same stages through the Ray Data adapter on a local Ray.

Weights are random (throughput does not depend on them; none can be
downloaded here). Prints images/s medians and each way's ratio to the bare
loop measured in the same run.
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
    args = ap.parse_args()

    import open_clip
    import pyarrow as pa
    import torch
    from PIL import Image

    from curation.democorpus import generate_corpus
    from curation.runtime import apply_stages, init_ray, run_local
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

    def bare() -> None:
        m, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(ckpt))
        m.eval()
        tok = open_clip.get_tokenizer(name)
        rows = table.to_pylist()
        for i in range(0, n, args.batch_size):
            chunk = rows[i : i + args.batch_size]
            x = torch.stack([preprocess(Image.open(io.BytesIO(r["image"]))) for r in chunk])
            t = tok([r["captions"][0] for r in chunk])
            with torch.inference_mode():
                a = m.encode_image(x, normalize=True)
                b = m.encode_text(t, normalize=True)
                (a * b).sum(-1)

    def stages() -> None:
        pre = ClipPreprocess(spec)
        pre.batch_size = args.batch_size
        run_local(table, [pre, ClipScore(spec, None, batch_size=args.batch_size)])

    def ray_way() -> None:
        import ray.data

        pre = ClipPreprocess(spec)
        pre.batch_size = args.batch_size
        ds = apply_stages(ray.data.from_arrow(table), [pre, ClipScore(spec, None, batch_size=args.batch_size)])
        rows = sum(b.num_rows for b in ds.iter_batches(batch_format="pyarrow", batch_size=None))
        assert rows == n

    ways = {"bare": bare, "stages": stages}
    if not args.skip_ray:
        init_ray(num_cpus=os.cpu_count())
        ways["ray"] = ray_way
    results: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.runs):
        for k, fn in ways.items():  # interleaved, so drift hits every way alike
            t0 = time.perf_counter()
            fn()
            results[k].append(n / (time.perf_counter() - t0))
    base = statistics.median(results["bare"])
    print(f"model {name}, {n} images, batch {args.batch_size}, torch threads {args.threads}, {args.runs} runs")
    print("| way | images/s (median) | ratio to bare loop |")
    print("| --- | ---: | ---: |")
    for k, v in results.items():
        med = statistics.median(v)
        print(f"| {k} | {med:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()

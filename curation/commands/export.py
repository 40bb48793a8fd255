"""`curate export DIR --to qwen-vl-json|llama-factory|ms-swift --out PATH [--tasks a,b]`

Writes the samples of DIR as one JSON file (a list) in the chosen layout and
each referenced image once under `PATH_STEM_images/` next to it; the JSON
references the images by absolute path, so the file loads as-is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from curation.errors import InputError

__all__ = ["add_arguments", "run", "export_dataset"]

EXAMPLES = """examples:
  curate export samples --to qwen-vl-json --out train.json
  curate export samples --to llama-factory --out lf/data.json --tasks caption,vqa"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="dataset directory with samples")
    from formats.export import EXPORTS

    p.add_argument("--to", required=True, choices=EXPORTS, help="layout: Qwen-VL finetune JSON, LLaMA-Factory sharegpt or ms-swift messages")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--tasks", default=None, help="only these tasks, comma-separated (default: every task)")
    p.add_argument("--verify", action="store_true", help="check every shard's sha256 against the manifest first")


def export_dataset(path: str, to: str, out: str, tasks: str | None = None, verify: bool = False) -> dict[str, int]:
    """Write the export; returns counts (written, skipped text-only, images)."""
    import pyarrow as pa

    from curation.commands import check_out_dir
    from curation.dataset import Dataset
    from formats.export import EXPORTS, image_suffix
    from formats.tasks import parse_tasks
    from formats.tokenizer import MAX_KEY_BYTES

    convert = EXPORTS[to]
    ds = Dataset(path, verify=verify)  # ManifestError, an InputError, when it is not a finished dataset
    wanted = set(parse_tasks(tasks)) if tasks else None
    ds.shard_paths("samples")  # each listed shard present, with its rows and size
    out_path = Path(out).resolve()
    if out_path.is_dir():
        raise InputError(f"--out {out}: is a directory; give the JSON file to write")
    check_out_dir(out_path.parent, "--out")
    img_dir = out_path.parent / f"{out_path.stem}_images"
    img_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    counts = {"written": 0, "skipped_text_only": 0, "images": 0}

    def image_path(key: str) -> str:
        if key not in written:
            raise InputError(f"{path}: image key {key!r} is not in its row's images; run curate validate")
        return written[key]

    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for rb in ds.iter_batches("samples", batch_size=512):
            for row in pa.Table.from_batches([rb]).to_pylist():
                if wanted and row["task"] not in wanted:
                    continue
                for im in row.get("images") or []:
                    if im["key"] not in written:
                        if im.get("image") is None:
                            raise InputError(f"{path}: sample {row['sample_id']}: image {im['key']!r} has no bytes")
                        name = hashlib.sha256(im["key"].encode()).hexdigest()[:20] + image_suffix(im["image"])
                        (img_dir / name).write_bytes(im["image"])
                        written[im["key"]] = str(img_dir / name)
                        counts["images"] += 1
                        if to == "qwen-vl-json" and len(written[im["key"]].encode()) > MAX_KEY_BYTES:
                            raise InputError(f"{img_dir}: image paths exceed {MAX_KEY_BYTES} bytes; export to a shorter path")
                try:
                    item = convert(row, image_path)
                except ValueError as exc:
                    raise InputError(f"{path}: {exc}") from None
                if item is None:
                    counts["skipped_text_only"] += 1
                    continue
                f.write(("\n" if counts["written"] == 0 else ",\n") + json.dumps(item, ensure_ascii=False))
                counts["written"] += 1
        f.write("\n]\n")
    os.replace(tmp, out_path)
    return counts


def run(args: argparse.Namespace) -> int:
    c = export_dataset(args.dir, args.to, args.out, args.tasks, verify=args.verify)
    print(
        f"export {args.to}: {c['written']} samples -> {args.out}, {c['images']} images beside it"
        + (f", {c['skipped_text_only']} text-only samples skipped" if c["skipped_text_only"] else "")
    )
    return 0

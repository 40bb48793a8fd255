"""`curate export DIR --to qwen-vl-json|llama-factory|ms-swift --out PATH [--tasks a,b]`

Writes the samples of DIR as one JSON file (a list) in the chosen layout and
each referenced image once under `PATH_STEM_images/` next to it; the JSON
references the images by absolute path, so the file loads as-is. Beside it:

- `PATH_STEM.README.md`: what was exported, from which dataset, the format
  and the `min_pixels` / `max_pixels` its samples were built with, and the
  trainer settings that keep boxes right;
- for `llama-factory`, `dataset_info.json` in the same folder (LLaMA-Factory's
  `dataset_dir`) with the entry `PATH_STEM` (an existing file keeps its other
  entries), so `--dataset PATH_STEM --dataset_dir FOLDER` trains on it as is.
"""

from __future__ import annotations

import argparse
import functools
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
    from curation.storage.dataset import Dataset
    from formats.export import EXPORTS, image_suffix
    from formats.tasks import parse_tasks
    from formats.tokenizer import MAX_KEY_BYTES

    ds = Dataset(path, verify=verify)  # ManifestError, an InputError, when it is not a finished dataset
    build = ds.manifest.get("build") or {}
    limits = {"min_pixels": int(build.get("min_pixels") or 4 * 28 * 28), "max_pixels": int(build.get("max_pixels") or 16384 * 28 * 28)}
    convert = functools.partial(EXPORTS[to], **limits) if to == "ms-swift" else EXPORTS[to]
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
    if to == "llama-factory":
        _register_llama_factory(out_path)
    _write_readme(out_path, to, path, ds.manifest, limits, counts)
    return counts


def _register_llama_factory(out_path: Path) -> None:
    """Add (or replace) the export's entry in the folder's dataset_info.json; other entries stay."""
    from formats.export import llama_factory_entry

    info_path = out_path.parent / "dataset_info.json"
    info: dict = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{info_path}: not a readable dataset_info.json ({exc}); move it away or fix it") from None
        if not isinstance(info, dict):
            raise InputError(f"{info_path}: expected a JSON object of dataset entries")
    info[out_path.stem] = llama_factory_entry(out_path.name)
    tmp = info_path.with_name(f".{info_path.name}.tmp")
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, info_path)


def _write_readme(out_path: Path, to: str, source: str, manifest: dict, limits: dict, counts: dict) -> None:
    build = manifest.get("build") or {}
    fmt = build.get("format") or (manifest.get("config") or {}).get("format") or "?"
    lines = [
        f"# {out_path.name}: `curate export --to {to}`",
        "",
        f"{counts['written']} samples of `{Path(source).resolve()}` (format `{fmt}`), {counts['images']} images in "
        f"`{out_path.stem}_images/` referenced by absolute path.",
        "",
        f"Built with min_pixels {limits['min_pixels']} and max_pixels {limits['max_pixels']} (Qwen2-VL / Qwen2.5-VL smart_resize).",
        "",
    ]
    if to == "llama-factory":
        lines += [f"Registered as `{out_path.stem}` in `dataset_info.json` here: "
                  f"`llamafactory-cli train ... --dataset {out_path.stem} --dataset_dir {out_path.parent}`."]
        if fmt == "qwen2.5-vl":
            lines += ["Qwen2.5-VL boxes in the text are pixels of the image resized at the limits above: train with "
                      f"`image_min_pixels {limits['min_pixels']}` and `image_max_pixels {limits['max_pixels']}`."]
    elif to == "ms-swift":
        lines += ["Every grounding and OCR sample carries `objects` (`ref`, `bbox` in pixels of the stored image, "
                  "`bbox_type: real`), so ms-swift rescales the boxes to the `MAX_PIXELS` it trains at."]
        if fmt == "qwen2.5-vl":
            lines += ["Qwen2.5-VL answers are JSON with `<bbox>` / `<ref-object>` inside: train with "
                      "`QWENVL_BBOX_FORMAT=new` so ms-swift writes them back as `[x1, y1, x2, y2]` and the plain label."]
    else:
        lines += ["The `finetune.py` JSON of QwenLM/Qwen-VL: `--data_path` this file."]
    lines.append("")
    out_path.with_name(f"{out_path.stem}.README.md").write_text("\n".join(lines), encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    c = export_dataset(args.dir, args.to, args.out, args.tasks, verify=args.verify)
    print(
        f"export {args.to}: {c['written']} samples -> {args.out}, {c['images']} images beside it"
        + (f", {c['skipped_text_only']} text-only samples skipped" if c["skipped_text_only"] else "")
    )
    return 0

"""Check (not a test): the LLaMA-Factory and ms-swift exports load with the real tools, where installed.

Builds the demo corpus (every task, qwen2-vl and qwen2.5-vl), exports both layouts, then

- LLaMA-Factory (`llamafactory`): parses `dataset_info.json` with its own dataset-list parser and converts
  every row with its sharegpt converter (the `aligner`), which checks roles against the declared tags and
  images against the `<image>` placeholders;
- ms-swift (`swift`): loads the JSON with `swift.llm.load_dataset`, whose preprocessor checks
  `messages` / `images` / `objects`.

A tool that is not installed is reported as such (neither is a dependency of this project: both pull
their own torch and transformers pins). Prints one line per tool and layout; exit 1 if a load failed.

    .venv/bin/python bench/bench_exports.py [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


def _build(root: Path, fmt: str) -> Path:
    from curation.commands.build import build_dataset
    from curation.democorpus import write_clean_records

    if not (root / "records").exists():
        write_clean_records(root, n=32, seed=1)
    out = root / fmt
    build_dataset(str(root / "records"), str(out), format=fmt, tasks="caption,vqa,ref_grounding,grounded_caption,ocr,sft",
                  runner="local")
    return out


def _llama_factory(json_path: Path) -> str:
    if importlib.util.find_spec("llamafactory") is None:
        return "not installed"
    from llamafactory.data.parser import get_dataset_list

    (attr,) = get_dataset_list([json_path.stem], str(json_path.parent))
    rows = json.loads(json_path.read_text())
    from llamafactory.data.converter import get_dataset_converter

    class _Args:  # the data arguments the converter reads
        dataset_dir = str(json_path.parent)
        media_dir = str(json_path.parent)

    convert = get_dataset_converter(attr.formatting, attr, _Args())
    bad = 0
    for row in rows:
        out = convert(row)
        bad += int(not out["_prompt"] or not out["_response"])
    return f"loaded {len(rows)} rows, {bad} without prompt/response"


def _ms_swift(json_path: Path) -> str:
    if importlib.util.find_spec("swift") is None:
        return "not installed"
    from swift.llm import load_dataset

    train, _ = load_dataset([str(json_path)], split_dataset_ratio=0)
    with_objects = sum(1 for r in train if (r.get("objects") or {}).get("bbox"))
    return f"loaded {len(train)} rows, {with_objects} with objects"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="keep the exports here (default: a temporary folder)")
    args = ap.parse_args(argv)
    from curation.commands.export import export_dataset

    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for fmt in ("qwen2-vl", "qwen2.5-vl"):
            ds = _build(root, fmt)
            for to, check in (("llama-factory", _llama_factory), ("ms-swift", _ms_swift)):
                path = root / f"exp-{fmt}" / f"{to.replace('-', '_')}_{fmt.replace('.', '')}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                export_dataset(str(ds), to, str(path))
                try:
                    result = check(path)
                except Exception as exc:  # noqa: BLE001 - report any failure of the real tool
                    result, failed = f"FAILED: {type(exc).__name__}: {exc}", True
                print(f"{to:<14} {fmt:<11} {result}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

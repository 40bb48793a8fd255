"""The dataset card: README.md of a dataset directory, in the Hugging Face `datasets` convention.

`DatasetWriter.close` writes it beside the manifest, so every command's output
has one. Its YAML header holds

- `configs`: one config per table with shards (`records`, `samples`,
  `sequences`, `images`, `rejects`), its `data_files` the manifest's shard paths (exact
  paths, so that `datasets` reads the same shards the manifest lists and never
  a stray file); `samples` is the default config;
- `dataset_info`: each config's features, from the table's Arrow schema, with
  the encoded image columns (`records.image`, `samples.images[].image`,
  `images.image`) typed
  `image`, so `load_dataset(DIR, "samples")` decodes them to PIL images with
  no extra code.

`datasets` itself is not needed to write the card (tests load it with the
real package). A README.md in the directory that this tool did not write is
left alone (the card is then not written, with a warning).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from curation.schema import TABLE_SCHEMAS

__all__ = ["CARD", "MARKER", "IMAGE_COLUMNS", "features_yaml", "render_card", "may_write_card"]

log = logging.getLogger(__name__)

CARD = "README.md"
MARKER = "<!-- dataset card written by qwen-vl-curation; rewritten on every run -->"
# encoded image bytes, by table: paths of field names (a list's items are entered transparently)
IMAGE_COLUMNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "records": (("image",),), "samples": (("images", "image"),), "images": (("image",),),
}
_ORDER = ("samples", "sequences", "images", "records", "rejects")
_PRIMITIVE = {
    pa.string(): "string", pa.large_string(): "large_string", pa.binary(): "binary", pa.large_binary(): "large_binary",
    pa.bool_(): "bool", pa.int8(): "int8", pa.int16(): "int16", pa.int32(): "int32", pa.int64(): "int64",
    pa.float16(): "float16", pa.float32(): "float32", pa.float64(): "float64",
}


def _type(t: pa.DataType, path: tuple[str, ...], images: tuple[tuple[str, ...], ...]) -> Any:
    """`datasets`' YAML form of a type: a dtype string, a list of named fields (struct) or {"list": ...}."""
    if pa.types.is_struct(t):
        return [{"name": f.name, **_body(f.type, path + (f.name,), images)} for f in t]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": _type(t.value_type, path, images)}
    if path in images and (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        return "image"
    try:
        return _PRIMITIVE[t]
    except KeyError:
        raise ValueError(f"column {'.'.join(path)}: no dataset-card type for {t}") from None


def _body(t: pa.DataType, path: tuple[str, ...], images) -> dict:
    v = _type(t, path, images)
    if isinstance(v, str):
        return {"dtype": v}
    if isinstance(v, list):
        return {"struct": v}
    return v


def features_yaml(schema: pa.Schema, table: str) -> list[dict]:
    """A table's features as `datasets` writes them in a card's `dataset_info`."""
    images = IMAGE_COLUMNS.get(table, ())
    return [{"name": f.name, **_body(f.type, (f.name,), images)} for f in schema]


def _shard_schema(root: Path, shards: list[dict], table: str) -> pa.Schema:
    if table in TABLE_SCHEMAS:
        return TABLE_SCHEMAS[table]
    from curation.storage.fs import join, parquet_file

    return parquet_file(join(str(root), shards[0]["path"])).schema_arrow


def render_card(manifest: Mapping[str, Any], root: Path) -> str:
    """The card's text for a manifest whose shard paths are relative to `root` (to read unknown schemas)."""
    import yaml

    tables = manifest.get("tables", {})
    names = [t for t in _ORDER if tables.get(t, {}).get("shards")] + sorted(
        t for t in tables if t not in _ORDER and tables[t].get("shards"))
    configs, infos = [], []
    for name in names:
        shards = tables[name]["shards"]
        cfg: dict[str, Any] = {"config_name": name, "data_files": [{"split": "train", "path": [s["path"] for s in shards]}]}
        if name == "samples":
            cfg["default"] = True
        configs.append(cfg)
        infos.append({"config_name": name, "features": features_yaml(_shard_schema(root, shards, name), name)})
    header = yaml.safe_dump({"configs": configs, "dataset_info": infos}, sort_keys=False, allow_unicode=True)
    build = manifest.get("build") or {}
    cfg = manifest.get("config") or {}
    lines = ["---", header.rstrip("\n"), "---", MARKER, "", "# Qwen-VL training data (qwen-vl-curation)", ""]
    lines.append("| table | rows | shards |")
    lines.append("| --- | --- | --- |")
    for name, info in tables.items():
        lines.append(f"| {name} | {info['rows']} | {len(info['shards'])} |")
    lines.append("")
    if build:
        lines.append(f"Samples in the `{build.get('format')}` token format, tasks {', '.join(build.get('tasks') or [])}.")
        if build.get("images_once"):
            lines.append("Each image is stored once, in `images` (`key`, `image`, `width`, `height`; the shard of the same name "
                         "as the samples'); a sample's `images[].image` is null: join on `images[].key`. "
                         "`QwenVLReader` and `curate export` do the join.")
        if "min_pixels" in build:
            lines.append(f"Qwen2-VL / Qwen2.5-VL images sized by smart_resize with min_pixels {build['min_pixels']} "
                         f"and max_pixels {build['max_pixels']}: train at the same limits.")
        lines.append("")
    if "packing" in manifest:
        lines.append(f"Packed sequences of at most {manifest['packing']['max_tokens']} tokens (`sequences`, members by sample id).")
        lines.append("")
    lines += [
        "Load a table with Hugging Face `datasets` (images decode to PIL images):",
        "",
        "```python",
        "from datasets import load_dataset",
        'samples = load_dataset("THIS_DIRECTORY", "samples", split="train")',
        "```",
        "",
        "or feed a training loop with `formats.reader.QwenVLReader(THIS_DIRECTORY)`. `manifest.json` lists",
        "every shard with its rows, bytes and sha256 (`curate validate` checks them), the settings of the run",
        f"(command {cfg.get('command') or cfg.get('job') or '?'}) and every stage's counts; `rejects` says why",
        "each dropped item was dropped.",
        "",
    ]
    return "\n".join(lines)


def may_write_card(path: Path) -> bool:
    """Whether `path` is absent or a card this tool wrote (so it may be replaced)."""
    if not path.exists():
        return True
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False

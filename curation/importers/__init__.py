"""Importers: one module per kind of annotation source, behind one registry.

Each importer is a small reader over the annotation file(s) that yields
partial records and rejects (see `curation.importers.base`); `curate ingest`
merges them, validates them and runs the image side as a Ray job
(`curation.importers.images.LoadImages`).

Adding a kind = one module here, one line in IMPORTERS, one test file.
"""

from __future__ import annotations

import importlib

from curation.errors import InputError

__all__ = ["IMPORTERS", "get_importer", "kinds"]

# kind -> "module:Class" (imported when used)
IMPORTERS: dict[str, str] = {
    "records-jsonl": "records_jsonl:RecordsJsonl",
    "coco-captions": "coco_captions:CocoCaptions",
    "coco-instances": "coco_instances:CocoInstances",
    "refcoco": "refcoco:RefCoco",
    "vg-regions": "vg_regions:VgRegions",
    "vg-qa": "vg_qa:VgQa",
    "vqav2": "vqav2:VqaV2",
    "textvqa": "textvqa:TextVqa",
    "textcaps": "textcaps:TextCaps",
    "grit": "grit:Grit",
    "ocr-jsonl": "ocr_jsonl:OcrJsonl",
    "image-folder": "image_folder:ImageFolder",
    "img2dataset": "img2dataset:Img2Dataset",
}


def kinds() -> list[str]:
    return list(IMPORTERS)


def get_importer(kind: str):
    """The importer class of `kind`; InputError naming the known kinds otherwise."""
    if kind not in IMPORTERS:
        raise InputError(f"unknown kind {kind!r}; known kinds: {', '.join(IMPORTERS)}")
    module, cls = IMPORTERS[kind].split(":")
    return getattr(importlib.import_module(f"curation.importers.{module}"), cls)

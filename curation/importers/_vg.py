"""Visual Genome: `image_data.json` as declarations, and telling the files apart."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from curation.errors import InputError
from curation.importers.base import Item, need_field, need_object, partial
from curation.importers.jsonstream import iter_array, peek_first

__all__ = ["split_vg_files", "vg_declarations"]


def split_vg_files(paths: Sequence[Path], key: str, kind: str) -> tuple[list[Path], list[Path]]:
    """(image_data files, annotation files whose elements carry `key`), by their first element."""
    image_data, annotations = [], []
    for p in paths:
        shape, first = peek_first(p)
        if shape == "array" and first is not None and not isinstance(first, dict):
            raise InputError(f"{p}: not a Visual Genome file (its first element is not a JSON object)")
        if shape != "array":
            raise InputError(f"{p}: not a Visual Genome file (expected a top-level array)")
        if first is None or key in first:
            annotations.append(p)
        elif "image_id" in first and "width" in first:
            image_data.append(p)
        else:
            raise InputError(f"{p}: neither image_data.json nor a file of {key!r} entries")
    if not image_data:
        raise InputError(f"{kind}: give Visual Genome image_data.json beside the annotation file (it holds the image sizes)")
    if not annotations:
        raise InputError(f"{kind}: no file of {key!r} entries among the sources")
    return image_data, annotations


def vg_declarations(paths: Sequence[Path], rid, source: str) -> Iterator[Item]:
    for path in paths:
        for img in iter_array(path):
            image_id = need_field(need_object(img, path, "an image_data entry"), "image_id", path, "image_data entry")
            url = img.get("url")
            name = url.rsplit("/", 1)[-1] if url else f"{image_id}.jpg"
            meta = {k: img[k] for k in ("coco_id", "flickr_id") if img.get(k) is not None}
            yield "record", partial(rid(image_id), source, width=img.get("width"), height=img.get("height"), url=url, image_files=[name], declared=True, meta=meta)

"""COCO annotation files: the `images` list as declarations, shared by the COCO-based kinds."""

from __future__ import annotations

from typing import Any

from curation.importers.base import partial

__all__ = ["coco_image_partial"]


def coco_image_partial(rid: str, source: str, image: dict[str, Any]) -> dict:
    """Declaration of one entry of a COCO `images` list (size and file name from the file)."""
    return partial(
        rid,
        source,
        width=image.get("width"),
        height=image.get("height"),
        url=image.get("coco_url") or image.get("flickr_url"),
        image_files=[image["file_name"]] if image.get("file_name") else [f"{int(image['id']):012d}.jpg"],
        declared=True,
    )

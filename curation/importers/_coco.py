"""COCO annotation files: the `images` list as declarations, shared by the COCO-based kinds."""

from __future__ import annotations

from typing import Any

from curation.importers.base import partial

__all__ = ["coco_image_partial"]


def _default_name(image_id: Any) -> str:
    """COCO 2017 names an image by its zero-padded integer id."""
    return f"{image_id:012d}.jpg" if isinstance(image_id, int) else f"{image_id}.jpg"


def coco_image_partial(rid: str, source: str, image: dict[str, Any]) -> dict:
    """Declaration of one entry of a COCO `images` list (size and file name from the file)."""
    return partial(
        rid,
        source,
        width=image.get("width"),
        height=image.get("height"),
        url=image.get("coco_url") or image.get("flickr_url"),
        image_files=[image["file_name"]] if image.get("file_name") else [_default_name(image.get("id"))],
        declared=True,
    )

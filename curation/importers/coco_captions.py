"""`coco-captions`: COCO `captions_*.json` -> records with captions.

Streams the file's top-level members; memory holds the `images` declarations
and, until the end of the file, the captions grouped by image (COCO does not
order annotations by image).
"""

from __future__ import annotations

from typing import Iterator

from curation.importers._coco import coco_image_partial
from curation.importers.base import Importer, Item, partial
from curation.importers.jsonstream import iter_members
from curation.reasons import INVALID_ANNOTATION

__all__ = ["CocoCaptions"]


class CocoCaptions(Importer):
    kind = "coco-captions"
    default_source = "coco"

    def read(self) -> Iterator[Item]:
        for path in self.paths:
            for key, value in iter_members(path):
                if key == "images":
                    yield "record", coco_image_partial(self.rid(value["id"]), self.source, value)
                elif key == "annotations":
                    self.items_read += 1
                    if "caption" not in value or "image_id" not in value:
                        yield self.reject(value.get("image_id"), INVALID_ANNOTATION, f"annotation {value.get('id')} has no caption or image_id", path)
                        continue
                    yield "record", partial(
                        self.rid(value["image_id"]),
                        self.source,
                        captions=[value["caption"]],
                        refs=[f"{path.name}: caption {value.get('id')}"],
                    )

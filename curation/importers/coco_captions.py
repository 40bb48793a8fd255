"""`coco-captions`: COCO `captions_*.json` -> records with captions.

Streams the file's top-level members; memory holds the `images` declarations
and, until the end of the file, the captions grouped by image (COCO does not
order annotations by image).
"""

from __future__ import annotations

from typing import Iterator

from curation.importers._coco import coco_image_partial
from curation.importers.base import Importer, Item, need_field, need_object, partial
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
                    image_id = need_field(need_object(value, path, "an entry of 'images'"), "id", path, "image")
                    yield "record", coco_image_partial(self.rid(image_id), self.source, value)
                elif key == "annotations":
                    self.items_read += 1
                    if not isinstance(value, dict):
                        yield self.reject(None, "invalid_annotation", f"annotation {value!r:.60} is not a JSON object", path)
                        continue
                    if "caption" not in value or "image_id" not in value:
                        yield self.reject(value.get("image_id"), INVALID_ANNOTATION, f"annotation {value.get('id')} has no caption or image_id", path)
                        continue
                    yield "record", partial(
                        self.rid(value["image_id"]),
                        self.source,
                        captions=[value["caption"]],
                        refs=[f"{path.name}: caption {value.get('id')}"],
                    )

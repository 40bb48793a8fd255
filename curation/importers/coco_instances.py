"""`coco-instances`: COCO `instances_*.json` -> regions, one per category present in an image.

The phrase is the category name and the region holds all its boxes in that
image, converted from `[x, y, w, h]` to `[x1, y1, x2, y2]` pixels. A category
with any invalid box is rejected as a whole. Streams the file; memory holds
the declarations and the boxes grouped by image and category (categories come
after the annotations in COCO files, so names are resolved at the end).
Segmentation polygons are read past, never kept.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterator

from curation.importers._coco import coco_image_partial
from curation.importers.base import Importer, Item, need_field, need_object, partial
from curation.importers.boxes import xywh_to_xyxy
from curation.importers.jsonstream import iter_members
from curation.reasons import CATEGORY_UNKNOWN, INVALID_ANNOTATION

__all__ = ["CocoInstances"]


class CocoInstances(Importer):
    kind = "coco-instances"
    default_source = "coco"

    def read(self) -> Iterator[Item]:
        for path in self.paths:
            categories: dict[Any, str] = {}
            # image_id -> category_id -> [(annotation id, box, iscrowd)]
            boxes: dict[Any, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
            for key, value in iter_members(path):
                if key == "images":
                    image_id = need_field(need_object(value, path, "an entry of 'images'"), "id", path, "image")
                    yield "record", coco_image_partial(self.rid(image_id), self.source, value)
                elif key == "categories":
                    need_object(value, path, "an entry of 'categories'")
                    categories[need_field(value, "id", path, "category")] = need_field(value, "name", path, "category")
                elif key == "annotations":
                    self.items_read += 1
                    if not isinstance(value, dict):
                        yield self.reject(None, "invalid_annotation", f"annotation {value!r:.60} is not a JSON object", path)
                        continue
                    if "bbox" not in value or "image_id" not in value or "category_id" not in value:
                        yield self.reject(value.get("image_id"), INVALID_ANNOTATION, f"annotation {value.get('id')} lacks bbox, image_id or category_id", path)
                        continue
                    bbox = value["bbox"]
                    box = xywh_to_xyxy(*bbox) if isinstance(bbox, list) and len(bbox) == 4 else None
                    boxes[value["image_id"]][value["category_id"]].append((value.get("id"), box if box is not None else bbox, value.get("iscrowd", 0)))
            for image_id, by_cat in boxes.items():
                regions, refs, crowd = [], [], []
                for cat_id, anns in by_cat.items():
                    name = categories.get(cat_id)
                    if name is None:
                        for ann_id, _, _ in anns:
                            yield self.reject(image_id, CATEGORY_UNKNOWN, f"annotation {ann_id}: category {cat_id} is not in the file's categories", path)
                        continue
                    regions.append({"phrase": name, "boxes": [b for _, b, _ in anns]})
                    refs.extend(f"{path.name}: instance {ann_id} ({name})" for ann_id, _, _ in anns)
                    if any(c for _, _, c in anns):
                        crowd.append(name)
                if regions:
                    meta = {"crowd_regions": crowd} if crowd else {}
                    yield "record", partial(self.rid(image_id), self.source, regions=regions, refs=refs, meta=meta)

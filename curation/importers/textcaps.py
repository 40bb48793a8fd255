"""`textcaps`: TextCaps JSON -> captions.

Each item of `data` is one caption (`caption_str`) of one image; its
`reference_strs` repeat the image's other captions, so only `caption_str` is
taken (taking both would duplicate every caption). Items are grouped by image
in memory until the end of the file.
"""

from __future__ import annotations

from typing import Iterator

from curation.importers.base import Importer, Item, partial
from curation.importers.jsonstream import iter_members
from curation.reasons import INVALID_ANNOTATION

__all__ = ["TextCaps"]


class TextCaps(Importer):
    kind = "textcaps"
    default_source = "textcaps"

    def read(self) -> Iterator[Item]:
        for path in self.paths:
            for key, item in iter_members(path):
                if key != "data":
                    continue
                if not isinstance(item, dict):
                    self.items_read += 1
                    yield self.reject(None, "invalid_annotation", f"item {item!r:.60} of 'data' is not a JSON object", path)
                    continue
                image_id = item.get("image_id")
                if image_id is None:
                    self.items_read += 1
                    yield self.reject(None, INVALID_ANNOTATION, f"caption {item.get('caption_id')} has no image_id", path)
                    continue
                files = [f"{image_id}.jpg"]
                if item.get("image_path") and item["image_path"] not in files:
                    files.append(item["image_path"])
                p = partial(
                    self.rid(image_id),
                    self.source,
                    width=item.get("image_width"),
                    height=item.get("image_height"),
                    url=item.get("flickr_original_url"),
                    image_files=files,
                    declared=True,
                )
                if "caption_str" in item:  # the test split has no captions
                    self.items_read += 1
                    p["captions"] = [item["caption_str"]]
                    p["refs"] = [f"{path.name}: caption {item.get('caption_id')}"]
                yield "record", p

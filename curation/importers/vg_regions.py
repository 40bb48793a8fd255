"""`vg-regions`: Visual Genome `region_descriptions.json` + `image_data.json` -> regions.

One region per region description: its phrase and its one box, converted from
`x, y, width, height` to `[x1, y1, x2, y2]` pixels of the size image_data.json
gives. The file lists regions grouped by image, so records stream out one image
at a time: memory holds the image_data table (a few dozen bytes per image) and
one image's regions, whatever the size of the file.
"""

from __future__ import annotations

from typing import Iterator

from curation.importers._vg import split_vg_files, vg_declarations
from curation.importers.base import Importer, Item, partial
from curation.importers.boxes import xywh_to_xyxy
from curation.importers.jsonstream import iter_array
from curation.reasons import INVALID_ANNOTATION

__all__ = ["VgRegions"]


class VgRegions(Importer):
    kind = "vg-regions"
    default_source = "vg"
    grouped = True

    def read(self) -> Iterator[Item]:
        image_data, files = split_vg_files(self.paths, "regions", self.kind)
        yield from vg_declarations(image_data, self.rid, self.source)
        for path in files:
            for entry in iter_array(path):
                if not isinstance(entry, dict):
                    self.items_read += 1
                    yield self.reject(None, "invalid_annotation", f"entry {entry!r:.60} is not a JSON object", path)
                    continue
                image_id = entry.get("id", entry.get("image_id"))
                regions, refs = [], []
                for r in entry.get("regions") or ():
                    self.items_read += 1
                    if not isinstance(r, dict):
                        yield self.reject(image_id, "invalid_annotation", f"region {r!r:.60} is not a JSON object", path)
                        continue
                    box = xywh_to_xyxy(r.get("x"), r.get("y"), r.get("width"), r.get("height"))
                    regions.append({"phrase": r.get("phrase"), "boxes": [box if box is not None else [r.get(k) for k in ("x", "y", "width", "height")]]})
                    refs.append(f"{path.name}: region {r.get('region_id')}")
                if image_id is None:
                    for ref in refs:
                        yield self.reject(None, INVALID_ANNOTATION, f"{ref} belongs to an entry without an image id", None)
                    continue
                if regions:
                    yield "record", partial(self.rid(image_id), self.source, regions=regions, refs=refs)

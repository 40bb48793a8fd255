"""`ocr-jsonl`: JSON lines of an image and its text items -> OCR items.

    {"image": "scans/p1.png", "width": 800, "height": 600,
     "items": [{"text": "EXIT", "quad": [x1, y1, x2, y2, x3, y3, x4, y4]},
               {"text": "42", "box": [x1, y1, x2, y2]}]}

A line may also hold one item (`image`, `text`, `quad` or `box`). Quads are
pixel corners clockwise from top-left; a box becomes the quad
(x1,y1),(x2,y1),(x2,y2),(x1,y2). `width`/`height` are optional: without them
the size comes from the image. The record id is `SOURCE:` + `id`, else the
image path. Lines of one image merge (memory holds the items until the end).
"""

from __future__ import annotations

from typing import Iterator

from curation.importers.base import Importer, Item, partial
from curation.importers.boxes import as_numbers, box_to_quad
from curation.importers.jsonstream import iter_jsonl
from curation.reasons import BOX_MALFORMED, BOX_MISSING, INVALID_ANNOTATION

__all__ = ["OcrJsonl"]


class OcrJsonl(Importer):
    kind = "ocr-jsonl"
    default_source = "ocr"

    def read(self) -> Iterator[Item]:
        for path in self.paths:
            for n, line in iter_jsonl(path):
                if not isinstance(line, dict) or not isinstance(line.get("image"), str):
                    self.items_read += 1
                    yield self.reject(None, INVALID_ANNOTATION, f"line {n}: expected an object with an 'image' path", path)
                    continue
                ident = line.get("id") or line["image"]
                items = line.get("items")
                if items is None and "text" in line:
                    items = [line]
                if items is not None and not isinstance(items, list):
                    self.items_read += 1
                    yield self.reject(ident, "invalid_annotation", f"line {n}: 'items' is {type(items).__name__}, expected a list", path)
                    continue
                ocr, refs = [], []
                for i, item in enumerate(items or []):
                    self.items_read += 1
                    ref = f"{path.name}: line {n} item {i}"
                    if not isinstance(item, dict):
                        yield self.reject(ident, "invalid_annotation", f"{ref}: {item!r:.60} is not a JSON object", None)
                        continue
                    if "quad" in item:
                        quad = item["quad"]
                    elif "box" in item:
                        box = as_numbers(item["box"], 4)
                        if box is None:
                            yield self.reject(ident, BOX_MALFORMED, f"{ref}: box {item['box']!r}", None)
                            continue
                        quad = box_to_quad(box)
                    else:
                        yield self.reject(ident, BOX_MISSING, f"{ref}: item has neither 'quad' nor 'box'", None)
                        continue
                    ocr.append({"text": item.get("text"), "quad": quad})
                    refs.append(ref)
                yield "record", partial(
                    self.rid(ident),
                    self.source,
                    width=line.get("width"),
                    height=line.get("height"),
                    image_files=[line["image"]],
                    declared=True,
                    ocr=ocr,
                    refs=refs,
                )

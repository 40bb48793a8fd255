"""`image-folder`: a folder of images with optional same-name sidecars -> records with captions.

    photos/dog.jpg  photos/dog.txt   (the whole text, stripped, is one caption)
    photos/cat.png  photos/cat.json  ({"caption": "..."} or {"captions": [...]},
                                      and optionally qa / regions / ocr /
                                      grounded_captions in the canonical shape;
                                      other keys go to meta)

The record id is `SOURCE:` + the path inside the folder without its
extension; the image file is the folder's own, so `--images` is not needed.
An image with no sidecar (or an empty one) has nothing to train on and is
rejected (`no_annotations`). The folder is walked in sorted order and each
image is read only in the image stage: memory holds nothing per image.
"""

from __future__ import annotations

import json
from typing import Iterator

from curation.importers.base import Importer, Item, partial
from curation.reasons import INVALID_ANNOTATION
from curation.schema import STRUCTURED_ANNOTATIONS

__all__ = ["ImageFolder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class ImageFolder(Importer):
    kind = "image-folder"
    image_files = True  # records name their image files under the folder (read by the image stage)
    default_source = "folder"
    grouped = True
    own_images = True
    folders = True

    def __init__(self, paths, source=None):
        super().__init__(paths, source)
        from curation.errors import InputError

        for p in self.paths:
            if not p.is_dir():
                raise InputError(f"{p}: kind image-folder reads a folder of images")

    def read(self) -> Iterator[Item]:
        for root in self.paths:
            for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
                rel = path.relative_to(root)
                ident = rel.with_suffix("").as_posix()
                p = partial(self.rid(ident), self.source, image_files=[str(path.resolve())], declared=True)
                txt, js = path.with_suffix(".txt"), path.with_suffix(".json")
                if txt.is_file():
                    caption = txt.read_text(encoding="utf-8", errors="replace").strip()
                    self.items_read += 1
                    p["captions"].append(caption)
                    p["refs"].append(txt.name)
                if js.is_file():
                    try:
                        side = json.loads(js.read_text(encoding="utf-8"))
                    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                        self.items_read += 1
                        yield self.reject(ident, INVALID_ANNOTATION, f"{rel.with_suffix('.json')}: not JSON: {exc}", None)
                        side = None
                    if isinstance(side, dict):
                        caps = side.get("captions") or ([side["caption"]] if isinstance(side.get("caption"), str) else [])
                        self.items_read += len(caps)
                        p["captions"].extend(caps)
                        for k in STRUCTURED_ANNOTATIONS:
                            if isinstance(side.get(k), list):
                                self.items_read += len(side[k])
                                p[k] = list(side[k])
                        p["width"], p["height"] = side.get("width"), side.get("height")
                        p["meta"] = {k: v for k, v in side.items() if k not in ("caption", "captions", "width", "height", *STRUCTURED_ANNOTATIONS)}
                        p["refs"].append(js.name)
                yield "record", p

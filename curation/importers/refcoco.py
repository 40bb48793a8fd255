"""`refcoco`: RefCOCO / RefCOCO+ / RefCOCOg `refs(unc).p` (or its JSON form) + `instances.json` -> regions.

One region per referring sentence: the sentence (`sent`) is the phrase and the
referred object's box (from `instances.json`, `[x, y, w, h]`) its one box.
The split of the image (train / val / testA / testB / test; RefCOCO splits
by image) is kept in `meta.refcoco_split`, so that evaluation images can be
held out. The pickle is read with an unpickler that builds only plain
containers (no code runs from the file). Memory holds the instances' images
and boxes (a few dozen bytes per annotation) and the refs list.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Iterator

from curation.storage.fs import as_path
from curation.errors import InputError
from curation.importers._coco import coco_image_partial
from curation.importers.base import Importer, Item, need_field, need_object, partial
from curation.importers.boxes import xywh_to_xyxy
from curation.importers.jsonstream import iter_array, iter_members, peek_first
from curation.reasons import BOX_UNKNOWN

__all__ = ["RefCoco", "load_refs_pickle"]


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: only plain lists, dicts, strings and numbers")


def load_refs_pickle(path: Path) -> list[dict]:
    try:
        with as_path(path).open("rb") as f:
            refs = _PlainUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:  # what malformed pickle data raises
        raise InputError(f"{path}: not a readable refs pickle: {exc}") from exc
    if not isinstance(refs, list):
        raise InputError(f"{path}: a refs pickle holds a list, found {type(refs).__name__}")
    return refs


class RefCoco(Importer):
    kind = "refcoco"
    default_source = "coco"

    def _split(self) -> tuple[list[Path], list[Path]]:
        refs, instances = [], []
        for p in self.paths:
            if p.suffix in (".p", ".pkl", ".pickle"):
                refs.append(p)
                continue
            shape, first = peek_first(p)
            if shape == "array":
                refs.append(p)
            elif shape == "object":
                instances.append(p)
        if not refs or not instances:
            raise InputError("refcoco: give the refs file (refs(unc).p or its JSON form) and instances.json")
        return refs, instances

    def read(self) -> Iterator[Item]:
        ref_files, inst_files = self._split()
        boxes: dict[Any, tuple[Any, Any]] = {}  # ann_id -> (image_id, bbox)
        for path in inst_files:
            for key, value in iter_members(path):
                if key == "images":
                    image_id = need_field(need_object(value, path, "an entry of 'images'"), "id", path, "image")
                    yield "record", coco_image_partial(self.rid(image_id), self.source, value)
                elif key == "annotations":
                    need_object(value, path, "an entry of 'annotations'")
                    boxes[need_field(value, "id", path, "annotation")] = (need_field(value, "image_id", path, "annotation"), value.get("bbox"))
        for path in ref_files:
            refs = load_refs_pickle(path) if path.suffix in (".p", ".pkl", ".pickle") else iter_array(path)
            for ref in refs:
                if not isinstance(ref, dict):
                    self.items_read += 1
                    yield self.reject(None, "invalid_annotation", f"ref {ref!r:.60} is not a JSON object", path)
                    continue
                sentences = ref.get("sentences") or []
                self.items_read += len(sentences)
                ann = boxes.get(ref.get("ann_id"))
                if ann is None:
                    for s in sentences:
                        yield self.reject(ref.get("image_id"), BOX_UNKNOWN, f"ref {ref.get('ref_id')} sentence {s.get('sent_id')}: annotation {ref.get('ann_id')} is not in instances.json", path)
                    continue
                image_id, bbox = ann
                box = xywh_to_xyxy(*bbox) if isinstance(bbox, list) and len(bbox) == 4 else None
                regions = [{"phrase": s.get("sent", s.get("raw")), "boxes": [box if box is not None else bbox]} for s in sentences]
                if regions:
                    yield "record", partial(
                        self.rid(image_id),
                        self.source,
                        regions=regions,
                        refs=[f"{path.name}: ref {ref.get('ref_id')} sentence {s.get('sent_id')}" for s in sentences],
                        meta={"refcoco_split": ref.get("split")} if ref.get("split") else {},
                    )

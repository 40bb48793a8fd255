"""The image side of ingest: the `LoadImages` stage and the working table it reads.

Merged records travel as rows of WORK_SCHEMA: the record columns plus
`image_files` (candidate file names under `--images`, in order) and
`item_rejects` (JSON list of annotation rejects the stage produced). For each
row the stage

- finds the image (the row's own bytes, else the first candidate file under
  one of the image roots; names that climb out of a root are not followed),
- checks it with `curation.images.decoded_size`: the header under a pixel
  limit, then a full decode (a JPEG at 1/8 scale), so that a truncated or
  corrupt file is rejected here and not in the CLIP stage,
- sets `image`, `sha256`, `width`, `height` from the image,
- scales boxes and quads when the annotation gave a different size of the same
  aspect ratio (a resized copy of the image); rejects the record
  (`size_mismatch`) when the aspect ratio differs,
- checks the boxes against the image frame when the annotation gave no size,
- marks the row as a reject (`image_missing`, `image_unreadable`,
  `not_an_image`, `image_truncated`, `image_too_large`, `size_mismatch`,
  `size_unknown`, `annotations_rejected`; see curation/reasons.py) with the
  reason.

Without image roots (no `--images`) the record keeps the annotation's size
and URL and no bytes. The stage never imports Ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from curation.images import DEFAULT_MAX_PIXELS, ImageRejected, decoded_size
from curation.importers.base import ANNOTATION_LISTS, count_items, validate_record
from curation.importers.boxes import scale_boxes
from curation.reasons import ANNOTATIONS_REJECTED, IMAGE_MISSING, IMAGE_UNREADABLE, SIZE_MISMATCH, SIZE_UNKNOWN, check_reason
from curation.runtime import Resources, Stage
from curation.schema import ANNOTATION_COLUMNS, RECORD_SCHEMA, REJECT_COLUMNS

__all__ = [
    "WORK_SCHEMA",
    "IMAGES_STAGE",
    "LoadImages",
    "partial_to_row",
    "image_size",
]

log = logging.getLogger(__name__)

IMAGES_STAGE = "images"
WORK_SCHEMA = pa.schema(
    list(RECORD_SCHEMA)
    + [pa.field("image_files", pa.list_(pa.string())), pa.field("item_rejects", pa.string())]
    + REJECT_COLUMNS
)
_ASPECT_TOLERANCE = 0.01


def partial_to_row(p: dict) -> dict[str, Any]:
    """A finished partial as a row of WORK_SCHEMA."""
    row = {f.name: p.get(f.name) for f in RECORD_SCHEMA}
    meta = p.get("meta")
    row["meta"] = json.dumps(meta, sort_keys=True, ensure_ascii=False) if meta else None
    row["image_files"] = list(p.get("image_files") or [])
    row["item_rejects"] = None
    for f in REJECT_COLUMNS:
        row[f.name] = None
    return row


def image_size(data: bytes, max_pixels: int) -> tuple[int, int] | tuple[None, str, str]:
    """(width, height) of an image that decodes fully, or (None, reason, detail)."""
    try:
        return decoded_size(data, max_pixels)
    except ImageRejected as exc:
        return None, exc.reason, exc.detail


def _conform_work(batch: pa.Table) -> pa.Table:
    """The batch with exactly WORK_SCHEMA's columns and types (reject columns added when missing)."""
    if batch.schema.equals(WORK_SCHEMA):
        return batch
    from curation.schema import conform

    return conform(batch, WORK_SCHEMA)


def _has_geometry(row: dict) -> bool:
    return bool(row.get("regions") or row.get("grounded_captions") or row.get("ocr"))


def _scale_record(row: dict, sx: float, sy: float) -> None:
    row["regions"] = [dict(r, boxes=[scale_boxes(b, sx, sy) for b in r["boxes"]]) for r in row.get("regions") or []]
    row["grounded_captions"] = [
        dict(g, spans=[dict(s, boxes=[scale_boxes(b, sx, sy) for b in s["boxes"]]) for s in g["spans"]])
        for g in row.get("grounded_captions") or []
    ]
    row["ocr"] = [dict(o, quad=scale_boxes(o["quad"], sx, sy)) for o in row.get("ocr") or []]


class LoadImages(Stage):
    """Read each record's image: bytes, sha256, size from the header; rejects with reasons."""

    name = IMAGES_STAGE
    resources = Resources(cpus=1)
    batch_size = 64

    def __init__(self, roots: Sequence[Path | str] = (), max_pixels: int = DEFAULT_MAX_PIXELS):
        self.roots = [Path(r).resolve() for r in roots]
        self.max_pixels = int(max_pixels)
        # set when the images were fetched from a URL prefix: record_id -> URL, record_id -> download error
        self.urls: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        # and the reason of a fetch the crawler's rules refused (unsafe_file_name, blocked_address, opted_out)
        self.error_reasons: dict[str, str] = {}
        if self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")

    def _find(self, names: Sequence[str]) -> Path | None:
        for root in self.roots:
            for name in names:
                path = Path(name) if Path(name).is_absolute() else root / name
                try:
                    resolved = path.resolve()
                except OSError:
                    continue
                if not resolved.is_relative_to(root):
                    continue
                if resolved.is_file():
                    return resolved
        return None

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = _conform_work(batch)
        fast = self._fast(batch)
        if fast is not None:
            return fast
        # Some row needs its annotations rewritten (scaled, or checked against
        # the image frame): the whole batch goes row by row.
        rows = batch.to_pylist()
        for row in rows:
            if row.get("reject_stage") is None:
                self._load(row)
        return pa.Table.from_pylist(rows, schema=WORK_SCHEMA)

    def _fast(self, batch: pa.Table) -> pa.Table | None:
        """Column-wise path for the common case: no annotation needs rewriting. None otherwise."""
        import pyarrow.compute as pc

        n = batch.num_rows
        col = {c: batch.column(c).to_pylist() for c in ("record_id", "image", "image_files", "width", "height", "reject_stage", "url")}
        geometry = [False] * n
        items = [0] * n
        for c in ANNOTATION_COLUMNS:
            lengths = pc.fill_null(pc.list_value_length(batch.column(c)), 0).to_pylist()
            items = [a + b for a, b in zip(items, lengths)]
            if c in ("regions", "grounded_captions", "ocr"):
                geometry = [g or b > 0 for g, b in zip(geometry, lengths)]
        texts = batch.column("text").to_pylist()
        image, sha, width, height = list(col["image"]), [None] * n, list(col["width"]), list(col["height"])
        url = list(col["url"])
        stage = list(col["reject_stage"])
        reason = batch.column("reject_reason").to_pylist()
        detail = batch.column("reject_detail").to_pylist()
        for i in range(n):
            if stage[i] is not None:
                continue
            row = {"record_id": col["record_id"][i], "image": col["image"][i], "image_files": col["image_files"][i],
                   "width": col["width"][i], "height": col["height"][i], "n": items[i] + (1 if texts[i] else 0), "geometry": geometry[i]}
            out = self._outcome(row)
            if out is None:
                return None
            if out[0] == "drop":
                stage[i], reason[i], detail[i], image[i] = IMAGES_STAGE, out[1], out[2], None
                continue
            if out[0] == "keep":
                continue
            _, data, w, h, new_url = out
            image[i], sha[i], width[i], height[i] = data, hashlib.sha256(data).hexdigest(), w, h
            if new_url:
                url[i] = new_url
        updates = {
            "image": pa.array(image, pa.binary()), "sha256": pa.array(sha, pa.string()),
            "width": pa.array(width, pa.int32()), "height": pa.array(height, pa.int32()), "url": pa.array(url, pa.string()),
            "reject_stage": pa.array(stage, pa.string()), "reject_reason": pa.array(reason, pa.string()), "reject_detail": pa.array(detail, pa.string()),
        }
        for name, values in updates.items():
            batch = batch.set_column(batch.schema.get_field_index(name), WORK_SCHEMA.field(name), values)
        return batch

    def _outcome(self, row: dict):
        """("drop", reason, detail) | ("keep",) | ("image", bytes, w, h, url) | None (needs the row path)."""
        n = row["n"]
        data = row["image"]
        names = row["image_files"] or []
        rid = row["record_id"]
        new_url = None
        if data is None and self.roots:
            path = self._find(names)
            if path is None:
                if rid in self.errors:
                    return "drop", self._fetch_reason(rid), f"{self.urls.get(rid) or self.fetch_name(names)}: {self.errors[rid]} ({n} annotations)"
                return "drop", IMAGE_MISSING, f"none of {names} under {', '.join(str(r) for r in self.roots)} ({n} annotations)"
            try:
                data = path.read_bytes()
            except OSError as exc:
                return "drop", IMAGE_UNREADABLE, f"{path}: {exc.strerror or exc} ({n} annotations)"
            new_url = self.urls.get(rid)
        ann_w, ann_h = row["width"], row["height"]
        if data is None:
            if (ann_w is None or ann_h is None) and row["geometry"]:
                return "drop", SIZE_UNKNOWN, f"no image and no size in the annotation to place its boxes ({n} annotations)"
            return ("keep",)
        size = image_size(data, self.max_pixels)
        if size[0] is None:
            return "drop", size[1], f"{names[0] if names else 'image bytes'}: {size[2]} ({n} annotations)"
        w, h = size
        if ann_w and ann_h and (ann_w, ann_h) != (w, h):
            return None  # scale or size_mismatch: row path
        if not (ann_w and ann_h) and row["geometry"]:
            return None  # boxes to check against the image frame: row path
        return "image", data, w, h, new_url

    def _fetch_reason(self, rid: str) -> str:
        return check_reason(self.error_reasons.get(rid, IMAGE_MISSING))

    @staticmethod
    def fetch_name(names) -> str:
        return repr(names[0]) if names else "(no file name)"

    def _drop(self, row: dict, reason: str, detail: str) -> None:
        row["reject_stage"], row["reject_reason"], row["reject_detail"] = IMAGES_STAGE, reason, detail
        row["image"] = None

    def _load(self, row: dict) -> None:
        n = count_items(row)
        data = row.get("image")
        names = row.get("image_files") or []
        if data is None and self.roots:
            path = self._find(names)
            rid = row["record_id"]
            if path is None:
                if rid in self.errors:
                    self._drop(row, self._fetch_reason(rid), f"{self.urls.get(rid) or self.fetch_name(names)}: {self.errors[rid]} ({n} annotations)")
                    return
                where = ", ".join(str(r) for r in self.roots)
                self._drop(row, IMAGE_MISSING, f"none of {names} under {where} ({n} annotations)")
                return
            if rid in self.urls:
                row["url"] = self.urls[rid]
            try:
                data = path.read_bytes()
            except OSError as exc:
                self._drop(row, IMAGE_UNREADABLE, f"{path}: {exc.strerror or exc} ({n} annotations)")
                return
        ann_w, ann_h = row.get("width"), row.get("height")
        if data is None:
            if (ann_w is None or ann_h is None) and _has_geometry(row):
                self._drop(row, SIZE_UNKNOWN, f"no image and no size in the annotation to place its boxes ({n} annotations)")
            return
        size = image_size(data, self.max_pixels)
        if size[0] is None:
            self._drop(row, size[1], f"{names[0] if names else 'image bytes'}: {size[2]} ({n} annotations)")
            return
        w, h = size
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        if ann_w and ann_h and (ann_w, ann_h) != (w, h):
            sx, sy = w / ann_w, h / ann_h
            if abs(sx - sy) > _ASPECT_TOLERANCE * max(sx, sy):
                self._drop(row, SIZE_MISMATCH, f"annotation says {ann_w}x{ann_h}, the image is {w}x{h} ({n} annotations)")
                return
            _scale_record(row, sx, sy)
            meta["annotation_size"] = [ann_w, ann_h]
        elif not (ann_w and ann_h) and _has_geometry(row):
            # The annotation gave no frame: boxes are checked against the image now.
            checked, rejects = validate_record(row, stage=IMAGES_STAGE, width=w, height=h)
            if rejects:
                for k in ANNOTATION_LISTS:
                    row[k] = checked[k]
                row["item_rejects"] = json.dumps(rejects, ensure_ascii=False)
                if count_items(row) == 0:
                    self._drop(row, ANNOTATIONS_REJECTED, f"all {len(rejects)} annotations of the image were rejected")
                    return
        row["image"] = data
        row["sha256"] = hashlib.sha256(data).hexdigest()
        row["width"], row["height"] = w, h
        row["meta"] = json.dumps(meta, sort_keys=True, ensure_ascii=False) if meta else None


def item_rejects(batch: pa.Table) -> list[dict]:
    """The annotation rejects that LoadImages wrote into `item_rejects`."""
    if "item_rejects" not in batch.column_names:
        return []
    out: list[dict] = []
    for value in batch.column("item_rejects").to_pylist():
        if value:
            out.extend(json.loads(value))
    return out

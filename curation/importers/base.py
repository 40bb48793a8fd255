"""What every importer shares: the reader contract, partial records, merging, validation.

An importer reads annotation files and yields items, in file order:

    ("record", partial)   annotations of one image, or the declaration of an image
    ("reject", reject)    an annotation that cannot become part of a record, with the reason

A *partial* is a plain dict with the record columns it knows (`record_id`,
`source`, `width`, `height`, `url`, `captions`, `qa`, `regions`, ...), plus:

    image_files   candidate file names of the image under `--images`, in order
    declared      True when the partial comes from the file's list of images
                  (COCO `images`, Visual Genome `image_data.json`) or names its
                  image and size itself; annotations of an image that nothing
                  declares become `image_unknown` rejects
    refs          one short reference per annotation ("caption 38"), for reject details

`Merger` joins the partials of one record_id across files (captions, QA and
regions of one COCO image end in one record) and `validate_record` turns
invalid annotations into rejects with reasons, never fixing them. A record
whose annotated size is invalid (-640, 0, 2.5, "640", NaN, 1e30) is rejected
as a whole (`invalid_size`, the value in the detail). Reasons are those of
`curation.reasons`.
"""

from __future__ import annotations

import abc
import json
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

from curation.storage.fs import as_path
from curation.errors import InputError
from curation.importers.boxes import box_problem, quad_problem, size_problem
from curation.reasons import (
    BOX_MISSING,
    EMPTY_TEXT,
    IMAGE_UNKNOWN,
    INVALID_SIZE,
    INVALID_SPAN,
    NO_ANNOTATIONS,
    SIZE_CONFLICT,
)
from curation.schema import ANNOTATION_COLUMNS, make_reject

__all__ = [
    "ANNOTATION_LISTS",
    "INGEST_STAGE",
    "Importer",
    "Item",
    "partial",
    "count_items",
    "merge_into",
    "Merger",
    "validate_record",
    "need_object",
    "need_field",
    "open_parquet",
]

INGEST_STAGE = "ingest"
ANNOTATION_LISTS = ANNOTATION_COLUMNS  # one declaration, in curation/schema.py
Item = tuple[str, dict]


def partial(record_id: str, source: str, **fields: Any) -> dict:
    """A partial record; list columns default to empty, `meta` to a dict."""
    p: dict[str, Any] = {
        "record_id": record_id,
        "source": source,
        "url": None,
        "image": None,
        "width": None,
        "height": None,
        "captions": [],
        "qa": [],
        "regions": [],
        "grounded_captions": [],
        "ocr": [],
        "text": None,
        "meta": {},
        "image_files": [],
        "declared": False,
        "refs": [],
    }
    p.update(fields)
    return p


def count_items(p: dict) -> int:
    """Annotations in a partial: list entries plus a text document."""
    return sum(len(p.get(k) or ()) for k in ANNOTATION_LISTS) + (1 if p.get("text") else 0)


def _json_excerpt(value: Any, n: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= n else text[: n - 1] + "…"


def need_object(value: Any, path: Path, what: str) -> dict:
    """`value` when it is a JSON object; otherwise an InputError naming the file (the file's structure is wrong)."""
    if not isinstance(value, dict):
        raise InputError(f"{path}: {what} is not a JSON object: {_json_excerpt(value)}")
    return value


def need_field(obj: dict, key: str, path: Path, what: str) -> Any:
    """`obj[key]` of an element the file's structure requires; InputError naming the file and the element otherwise."""
    if key not in obj:
        raise InputError(f"{path}: {what} {_json_excerpt(obj)} has no {key!r}")
    return obj[key]


def open_parquet(path: Path):
    """A pyarrow ParquetFile; InputError naming the file when it is not readable Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path) if isinstance(path, Path) else pq.ParquetFile(path.open("rb"))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}") from exc


def _merge_meta(a: dict, b: dict) -> dict:
    for k, v in b.items():
        if k not in a:
            a[k] = v
        elif isinstance(a[k], list) and isinstance(v, list):
            a[k] = a[k] + v
    return a


def merge_into(a: dict, b: dict) -> dict:
    """Merge partial `b` into `a` (same record_id). Sizes that disagree are noted, never chosen."""
    for k in ANNOTATION_LISTS:
        if b.get(k):
            a[k] = list(a.get(k) or []) + list(b[k])
    a["refs"] = list(a.get("refs") or []) + list(b.get("refs") or [])
    if b.get("text"):
        a["text"] = b["text"] if not a.get("text") else a["text"] + "\n" + b["text"]
    for k in ("url", "image"):
        if a.get(k) is None and b.get(k) is not None:
            a[k] = b[k]
    if b.get("width") is not None and b.get("height") is not None:
        if a.get("width") is None or a.get("height") is None:
            a["width"], a["height"] = b["width"], b["height"]
        elif (a["width"], a["height"]) != (b["width"], b["height"]):  # compared as given: no int() of bad values
            a.setdefault("size_conflict", []).append([b["width"], b["height"]])
    for name in b.get("image_files") or ():
        if name not in a["image_files"]:
            a["image_files"] = list(a["image_files"]) + [name]
    a["declared"] = bool(a.get("declared") or b.get("declared"))
    a["meta"] = _merge_meta(dict(a.get("meta") or {}), b.get("meta") or {})
    return a


def _short(text: Any, n: int = 60) -> str:
    s = str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def _size_reject(p: dict, width: Any, height: Any, stage: str) -> dict | None:
    """An `invalid_size` reject of the whole record when `width` x `height` is invalid, else None."""
    problem = size_problem(width, height)
    if problem is None:
        return None
    image = f"{p['image_files'][0]}: " if p.get("image_files") else ""
    detail = f"{image}{problem} (size {width!r} x {height!r}; {count_items(p)} annotations)"
    return make_reject(p["record_id"], stage, INVALID_SIZE, detail, source=p["source"])


def _dropped_whole(p: dict) -> dict:
    return dict(p, **{k: [] for k in ANNOTATION_LISTS}, text=None)


def validate_record(
    p: dict, stage: str = INGEST_STAGE, width: int | None = None, height: int | None = None
) -> tuple[dict, list[dict]]:
    """Drop invalid annotations from a partial; return (partial, one reject per dropped annotation).

    An invalid annotated size (the partial's own `width`/`height`) drops the
    whole record with one `invalid_size` reject; a valid one is made an int
    (640.0 -> 640). A region (or grounded caption, or OCR item) with any
    invalid box is dropped as a whole. The outside-the-image check uses
    `width` x `height`, by default the partial's own size, and is skipped
    when no size is known yet.
    """
    bad_size = _size_reject(p, p.get("width"), p.get("height"), stage)
    if bad_size is not None:
        return _dropped_whole(p), [bad_size]
    p = dict(p, **{k: int(p[k]) for k in ("width", "height") if p.get(k) is not None})
    width = p.get("width") if width is None else width
    height = p.get("height") if height is None else height
    rid, source = p["record_id"], p["source"]
    rejects: list[dict] = []

    def reject(reason: str, detail: str) -> None:
        rejects.append(make_reject(rid, stage, reason, detail, source=source))

    captions = []
    for c in p.get("captions") or ():
        if not isinstance(c, str) or not c.strip():
            reject(EMPTY_TEXT, f"caption {c!r}")
        else:
            captions.append(c)
    qa = []
    for item in p.get("qa") or ():
        q, a = item.get("question"), item.get("answer")
        if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip():
            reject(EMPTY_TEXT, f"question {_short(q)!r} answer {_short(a)!r}")
        else:
            qa.append(item)
    regions = []
    for r in p.get("regions") or ():
        phrase, boxes = r.get("phrase"), r.get("boxes") or []
        if not isinstance(phrase, str) or not phrase.strip():
            reject(EMPTY_TEXT, f"region phrase {phrase!r}")
            continue
        if not boxes:
            reject(BOX_MISSING, f"region {_short(phrase)!r} has no box")
            continue
        problems = [(b, box_problem(b, width, height)) for b in boxes]
        bad = [(b, why) for b, why in problems if why]
        if bad:
            reject(bad[0][1], f"region {_short(phrase)!r}: box {bad[0][0]} ({len(bad)} of {len(boxes)} boxes invalid, frame {width}x{height})")
            continue
        regions.append(r)
    grounded = []
    for g in p.get("grounded_captions") or ():
        text = g.get("text")
        if not isinstance(text, str) or not text.strip():
            reject(EMPTY_TEXT, f"grounded caption {text!r}")
            continue
        why = None
        for s in g.get("spans") or ():
            if not (0 <= int(s["start"]) < int(s["end"]) <= len(text)):
                why = (INVALID_SPAN, f"span {s['start']}:{s['end']} of a {len(text)}-character caption")
                break
            if not s.get("boxes"):
                why = (BOX_MISSING, f"span {text[s['start']:s['end']]!r} has no box")
                break
            bad = [(b, box_problem(b, width, height)) for b in s["boxes"]]
            bad = [(b, w) for b, w in bad if w]
            if bad:
                why = (bad[0][1], f"span {text[s['start']:s['end']]!r}: box {bad[0][0]} (frame {width}x{height})")
                break
        if why:
            reject(why[0], f"grounded caption {_short(text)!r}: {why[1]}")
            continue
        grounded.append(g)
    ocr = []
    for o in p.get("ocr") or ():
        text = o.get("text")
        if not isinstance(text, str) or not text.strip():
            reject(EMPTY_TEXT, f"OCR item {text!r}")
            continue
        why = quad_problem(o.get("quad"), width, height)
        if why:
            reject(why, f"OCR item {_short(text)!r}: quad {o.get('quad')} (frame {width}x{height})")
            continue
        ocr.append(o)
    p = dict(p, captions=captions, qa=qa, regions=regions, grounded_captions=grounded, ocr=ocr)
    return p, rejects


class Importer(abc.ABC):
    """Base of every importer: `kind`, the default `source` name, and `read()`."""

    kind: ClassVar[str] = ""
    default_source: ClassVar[str] = ""
    # Each record's annotations arrive together, after every declaration: the
    # merger can emit a record as soon as it arrives (streaming, bounded memory).
    grouped: ClassVar[bool] = False
    # The sources bring their own images (a folder, img2dataset shards).
    own_images: ClassVar[bool] = False
    # Sources may be folders rather than files.
    folders: ClassVar[bool] = False

    def __init__(self, paths: Sequence[Path | str], source: str | None = None):
        self.paths = [as_path(p) for p in paths]  # local paths, or UPaths of fsspec URLs (s3://, hf://, ...)
        if not self.paths:
            raise InputError(f"{self.kind}: no source files given")
        for p in self.paths:
            if not p.exists():
                raise InputError(f"{p}: no such file or directory")
            if p.is_dir() and not self.folders:
                raise InputError(f"{p}: is a directory; kind {self.kind} reads annotation files")
        self.source = source or self.default_source
        # annotations read (captions, questions, region phrases, instance boxes, ...)
        self.items_read = 0

    def rid(self, image_id: Any) -> str:
        return f"{self.source}:{image_id}"

    @abc.abstractmethod
    def read(self) -> Iterator[Item]:
        """Yield ("record", partial record) and ("reject", reject row) items."""

    def reject(self, image_id: Any, reason: str, detail: str, path: Path | None = None) -> Item:
        prefix = f"{path.name}: " if path is not None else ""
        rid = self.rid(image_id) if image_id is not None else None
        return "reject", make_reject(rid, INGEST_STAGE, reason, prefix + detail, source=self.source)


class Merger:
    """Joins partials by record_id; emits finished records and the rejects of merging.

    Declarations (partials with no annotations) wait in a table until their
    annotations come. In streaming mode (one `grouped` importer) a record is
    finished as soon as its annotations arrive, so memory holds only the
    declarations; otherwise every partial is held until `finish()`.
    """

    def __init__(self, streaming: bool = False):
        self.streaming = streaming
        self.waiting: dict[str, dict] = {}  # declared, no annotations yet
        self.open: dict[str, dict] = {}  # with annotations (non-streaming)
        self.done: set[str] = set()  # emitted (streaming), to catch a record that comes back
        self.counts: Counter = Counter()

    def add(self, p: dict) -> Iterator[Item]:
        rid = p["record_id"]
        if count_items(p) == 0:
            if rid in self.open:
                merge_into(self.open[rid], p)
            elif rid in self.waiting:
                merge_into(self.waiting[rid], p)
            else:
                self.waiting[rid] = p
            return
        if rid in self.waiting:
            p = merge_into(self.waiting.pop(rid), p)
        if self.streaming:
            if rid in self.done:
                raise InputError(f"{rid}: annotations of one image are not together; this kind expects them grouped")
            self.done.add(rid)
            yield from self._finish_one(p)
        elif rid in self.open:
            merge_into(self.open[rid], p)
        else:
            self.open[rid] = p

    def finish(self) -> Iterator[Item]:
        for p in self.open.values():
            yield from self._finish_one(p)
        self.open = {}
        for rid, p in self.waiting.items():
            self.counts[NO_ANNOTATIONS] += 1
            yield "reject", make_reject(rid, INGEST_STAGE, NO_ANNOTATIONS, "the image is listed but no annotation refers to it", source=p["source"])
        self.waiting = {}

    def _finish_one(self, p: dict) -> Iterator[Item]:
        rid, source = p["record_id"], p["source"]
        if not p.get("declared"):
            refs = p.get("refs") or [f"annotation {i}" for i in range(count_items(p))]
            self.counts[IMAGE_UNKNOWN] += len(refs)
            for ref in refs:
                yield "reject", make_reject(rid, INGEST_STAGE, IMAGE_UNKNOWN, f"{ref}: the image is not in the annotation file's list of images", source=source)
            return
        # an invalid size, the record's own or one that conflicts with it, before the conflict itself
        for w, h in [(p.get("width"), p.get("height")), *(p.get("size_conflict") or ())]:
            bad_size = _size_reject(p, w, h, INGEST_STAGE)
            if bad_size is not None:
                self.counts[INVALID_SIZE] += 1
                yield "reject", bad_size
                return
        if p.get("size_conflict"):
            n = count_items(p)
            self.counts[SIZE_CONFLICT] += n
            detail = f"annotation files disagree on the size: {p['width']}x{p['height']} and " + ", ".join(f"{w}x{h}" for w, h in p["size_conflict"])
            yield "reject", make_reject(rid, INGEST_STAGE, SIZE_CONFLICT, f"{detail} ({n} annotations)", source=source)
            return
        p, rejects = validate_record(p)
        for r in rejects:
            self.counts[r["reason"]] += 1
            yield "reject", r
        if count_items(p) == 0:
            return
        self.counts["records"] += 1
        yield "record", p

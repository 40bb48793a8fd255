"""A deterministic synthetic image-text corpus for the offline demo and tests.

Images are simple coloured shapes on grey textured backgrounds, with 0-2 short
rendered words. Every image comes with what the rest of the flow wants to
measure against: a true caption, VQA pairs, region boxes and OCR quads, all in
pixels of the stored image. Some items carry a planted fault, labelled in
``DemoItem.planted``, so that filters can be checked against ground truth:

``swapped_caption``  the caption is another image's caption that does not
                     describe this image (``true_caption`` keeps the real one)
``corrupt``          a truncated JPEG, or an HTML error page saved as ``.jpg``
``tiny``             a valid JPEG with 16-24 px sides
``duplicate``        an exact byte copy of an earlier item's file, with its caption
``near_duplicate``   (only with ``near_duplicates=N``) a copy of an earlier clean item that
                     differs a little: ``variant`` says how (``jpeg_quality`` re-encoded at
                     quality 60, ``resize`` 10% smaller, ``crop`` 2% of each side's length
                     cut off, ``caption`` the same pixels re-saved with a JPEG comment and
                     another wording of the caption); annotations follow the pixels

``duplicate_of`` names the source item of both kinds of copy; the source comes
earlier in id order, so a dedup that keeps the first id keeps the source.

Conventions
-----------
* Boxes are ``[x1, y1, x2, y2]`` with ``x2``/``y2`` exclusive (PIL's
  ``getbbox``), so ``x2 - x1`` is the width in pixels.
* OCR quads are 8 numbers, the corners clockwise from top-left.
* Shapes lie inside the centred square of a non-square image, so a centre
  crop (the usual CLIP preprocessing) keeps every shape the caption names.
* The same ``seed`` gives byte-identical files.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLORS",
    "SHAPES",
    "BACKGROUNDS",
    "PLANTED_KINDS",
    "NEAR_DUPLICATE_VARIANTS",
    "DemoItem",
    "generate_corpus",
    "clean_record_rows",
    "write_clean_records",
    "sample_pair",
]

# Saturated colours, far from each other and from the grey backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30),
    "green": (20, 170, 50),
    "blue": (30, 60, 230),
    "yellow": (245, 225, 20),
    "orange": (250, 130, 0),
    "purple": (130, 30, 180),
    "pink": (255, 105, 190),
    "cyan": (0, 210, 225),
}
# Outlines that stay distinct at CLIP resolution (a hexagon reads as a circle at 64 px).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
# background kind -> adjective used in captions
BACKGROUNDS: dict[str, str] = {
    "noise": "noisy",
    "stripes": "striped",
    "gradient": "gradient",
    "checker": "checkered",
}
PLANTED_KINDS: tuple[str, ...] = ("swapped_caption", "corrupt", "tiny", "duplicate")
NEAR_DUPLICATE_VARIANTS: tuple[str, ...] = ("jpeg_quality", "resize", "crop", "caption")

_WORDS = ("SALE", "OPEN", "EXIT", "STOP", "cat", "hello", "demo", "42", "7", "2024", "A1", "ok")
_JPEG_QUALITY = 90
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n"
)


@dataclass
class DemoItem:
    """One generated image and its annotations (pixels of the stored image)."""

    item_id: str
    filename: str
    caption: str
    true_caption: str
    qa: list[dict] = field(default_factory=list)
    regions: list[dict] = field(default_factory=list)
    ocr: list[dict] = field(default_factory=list)
    width: int = 0
    height: int = 0
    planted: str | None = None
    duplicate_of: str | None = None  # the source item of a duplicate or near_duplicate
    variant: str | None = None  # how a near_duplicate differs from its source


@dataclass
class _Shape:
    shape: str
    color: str
    cx: float
    cy: float
    r: float  # half of the bounding square's side
    box: list[float] | None = None  # exact pixel box, filled when drawn


@dataclass
class _Text:
    text: str
    x: int
    y: int
    size: int
    fill: tuple[int, int, int]
    quad: list[float] | None = None


@dataclass
class _Scene:
    width: int
    height: int
    background: str
    shapes: list[_Shape]
    texts: list[_Text]
    template: int


# ---------------------------------------------------------------- sampling


def _sample_scene(rng: np.random.Generator) -> _Scene:
    if rng.random() < 0.6:
        width = height = int(rng.integers(192, 385))
    else:
        width, height = (int(v) for v in rng.integers(192, 385, size=2))
    side = min(width, height)
    # the centred square: shapes stay inside it so a centre crop keeps them
    ox, oy = (width - side) / 2.0, (height - side) / 2.0
    background = str(rng.choice(list(BACKGROUNDS)))
    n_shapes = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    kinds = rng.choice(len(SHAPES), size=n_shapes, replace=False)
    colors = rng.choice(len(COLORS), size=n_shapes, replace=False)
    color_names = list(COLORS)
    shapes: list[_Shape] = []
    margin = 4.0
    for k, c in zip(kinds, colors):
        for _ in range(60):
            r = side * float(rng.uniform(0.11, 0.19 if n_shapes == 3 else 0.22))
            cx = ox + float(rng.uniform(r + margin, side - r - margin))
            cy = oy + float(rng.uniform(r + margin, side - r - margin))
            if all(math.hypot(cx - s.cx, cy - s.cy) > (r + s.r) * 1.1 + 3 for s in shapes):
                shapes.append(_Shape(SHAPES[int(k)], color_names[int(c)], cx, cy, r))
                break
    if not shapes:  # cannot happen for the sizes above; keep the scene valid anyway
        shapes.append(_Shape(SHAPES[int(kinds[0])], color_names[int(colors[0])], width / 2, height / 2, side * 0.2))
    texts: list[_Text] = []
    n_texts = int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2]))
    for _ in range(n_texts):
        word = str(rng.choice(_WORDS))
        size = int(rng.integers(14, 25))
        fill = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
        for _ in range(30):
            x = int(rng.integers(2, max(3, width - size * len(word) * 0.7 - 2)))
            y = int(rng.integers(2, max(3, height - size * 1.3 - 2)))
            tw, th = size * 0.7 * len(word), size * 1.3
            if all(
                x + tw < s.cx - s.r - 2 or x > s.cx + s.r + 2 or y + th < s.cy - s.r - 2 or y > s.cy + s.r + 2
                for s in shapes
            ) and all(abs(y - t.y) > th or x + tw < t.x or x > t.x + t.size * 0.7 * len(t.text) for t in texts):
                texts.append(_Text(word, x, y, size, fill))
                break
    return _Scene(width, height, background, shapes, texts, int(rng.integers(0, 4)))


# ---------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, kind: str, width: int, height: int) -> np.ndarray:
    lo, hi = sorted(int(v) for v in rng.integers(60, 190, size=2))
    if hi - lo < 30:
        lo, hi = max(40, lo - 20), min(210, hi + 20)
    tint = rng.integers(-8, 9, size=3)
    if kind == "noise":
        base = float(rng.integers(lo, hi + 1))
        g = base + 22.0 * rng.standard_normal(size=(height, width), dtype=np.float32)
    elif kind == "stripes":
        period = int(rng.integers(10, 36))
        xx = np.arange(width)[None, :]
        yy = np.arange(height)[:, None]
        coord = [xx + 0 * yy, yy + 0 * xx, xx + yy, xx - yy][int(rng.integers(0, 4))]
        g = np.where((coord // (period // 2)) % 2 == 0, lo, hi)
    elif kind == "gradient":
        angle = float(rng.uniform(0, 2 * math.pi))
        xx = np.arange(width, dtype=np.float32)[None, :] * math.cos(angle)
        yy = np.arange(height, dtype=np.float32)[:, None] * math.sin(angle)
        t = xx + yy
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        g = lo + (hi - lo) * t
    elif kind == "checker":
        cell = int(rng.integers(12, 33))
        xx = np.arange(width)[None, :] // cell
        yy = np.arange(height)[:, None] // cell
        g = np.where((xx + yy) % 2 == 0, lo, hi)
    else:
        raise ValueError(f"unknown background kind: {kind!r}")
    grey = np.clip(g, 8, 247).astype(np.int16)
    return (grey[:, :, None] + tint.astype(np.int16)[None, None, :]).astype(np.uint8)


def _shape_mask_draw(draw: ImageDraw.ImageDraw, s: _Shape, fill) -> None:
    cx, cy, r = s.cx, s.cy, s.r
    if s.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif s.shape == "square":
        q = r * 0.85
        draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
    elif s.shape == "triangle":
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        draw.polygon(pts, fill=fill)
    elif s.shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=fill)
    elif s.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)], fill=fill)
    elif s.shape == "cross":  # a plus sign
        w = r * 0.36
        pts = [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
            (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
            (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w),
        ]
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape: {s.shape!r}")


def _render(scene: _Scene, rng: np.random.Generator) -> Image.Image:
    """Draw the scene; fills in exact shape boxes and text quads."""
    arr = _background(rng, scene.background, scene.width, scene.height)
    image = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        # draw the mask locally (fast), then paste it at its offset
        x0, y0 = int(math.floor(s.cx - s.r)) - 2, int(math.floor(s.cy - s.r)) - 2
        side = int(math.ceil(2 * s.r)) + 5
        mask = Image.new("L", (side, side), 0)
        local = _Shape(s.shape, s.color, s.cx - x0, s.cy - y0, s.r)
        _shape_mask_draw(ImageDraw.Draw(mask), local, 255)
        bx1, by1, bx2, by2 = mask.getbbox()
        s.box = [float(bx1 + x0), float(by1 + y0), float(bx2 + x0), float(by2 + y0)]
        image.paste(COLORS[s.color], (x0, y0, x0 + side, y0 + side), mask)
    for t in scene.texts:
        font = ImageFont.load_default(size=t.size)
        x1, y1, x2, y2 = draw.textbbox((t.x, t.y), t.text, font=font)
        draw.text((t.x, t.y), t.text, fill=t.fill, font=font)
        t.quad = [float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]
    return image


# ---------------------------------------------------------------- text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe_shapes(shapes: list[_Shape]) -> str:
    parts = [f"{_article(s.color)} {s.color} {s.shape}" for s in shapes]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _caption(scene: _Scene, order: list[int] | None = None) -> str:
    shapes = [scene.shapes[i] for i in (order or range(len(scene.shapes)))]
    things = _describe_shapes(shapes)
    bg = BACKGROUNDS[scene.background]
    template = scene.template
    if template == 0:
        return f"{things} on a {bg} background"
    if template == 1:
        return f"a picture of {things} on a {bg} background"
    if template == 2:
        return f"a {bg} background with {things}"
    return f"{things}, {bg} background"


def _qa(scene: _Scene, rng: np.random.Generator) -> list[dict]:
    qa = [{"question": "How many shapes are there?", "answer": str(len(scene.shapes))}]
    for s in scene.shapes:
        qa.append({"question": f"What color is the {s.shape}?", "answer": s.color})
    present = {(s.color, s.shape) for s in scene.shapes}
    s = scene.shapes[int(rng.integers(0, len(scene.shapes)))]
    qa.append({"question": f"What shape is {s.color}?", "answer": s.shape})
    absent_shapes = [k for k in SHAPES if k not in {x.shape for x in scene.shapes}]
    k = absent_shapes[int(rng.integers(0, len(absent_shapes)))]
    c = list(COLORS)[int(rng.integers(0, len(COLORS)))]
    qa.append({"question": f"Is there a {c} {k}?", "answer": "yes" if (c, k) in present else "no"})
    qa.append({"question": "What kind of background is it?", "answer": BACKGROUNDS[scene.background]})
    if len(scene.texts) == 1:
        qa.append({"question": "What does the text say?", "answer": scene.texts[0].text})
    return qa


def _shape_key(scene: _Scene) -> frozenset:
    return frozenset((s.color, s.shape) for s in scene.shapes)


# ---------------------------------------------------------------- public API


def sample_pair(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One fresh random (image, true caption) pair from the corpus distribution.

    ``rng`` is a ``numpy.random.Generator``; the pair depends only on its state.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    scene = _sample_scene(rng)
    image = _render(scene, rng)
    order = [int(i) for i in rng.permutation(len(scene.shapes))]
    return image, _caption(scene, order)


def _encode_jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


def _fault_counts(n: int) -> dict[str, int]:
    few = max(1, round(n / 80))
    counts = {"swapped_caption": round(0.15 * n), "corrupt": few, "tiny": few, "duplicate": few}
    if sum(counts.values()) > n // 2:
        raise ValueError(f"n={n} is too small for the planted faults; use n >= 16")
    return counts


def generate_corpus(out_dir: str | os.PathLike, n: int = 240, seed: int = 0, near_duplicates: int = 0) -> list[DemoItem]:
    """Write ``n`` demo images into ``out_dir`` and return their items.

    About 15% of the items have a swapped caption and about n/80 each are
    corrupt, tiny or duplicates (see the module docstring); with
    ``near_duplicates=N``, N clean items are then replaced by near copies of
    other, earlier clean items (the variants in turn). Deterministic in
    ``seed``: the same seed writes byte-identical files.
    """
    if n < 16:
        raise ValueError(f"n must be at least 16, got {n}")
    if near_duplicates < 0:
        raise ValueError(f"near_duplicates must not be negative, got {near_duplicates}")
    os.makedirs(out_dir, exist_ok=True)
    master = np.random.default_rng([seed, 7919])
    counts = _fault_counts(n)
    order = [int(i) for i in master.permutation(n)]
    planted: dict[int, str] = {}
    pos = 0
    for kind in PLANTED_KINDS:
        for i in order[pos : pos + counts[kind]]:
            planted[i] = kind
        pos += counts[kind]

    scenes: list[_Scene] = []
    items: list[DemoItem] = []
    blobs: list[bytes] = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = _sample_scene(rng)
        image = _render(scene, rng)
        caption = _caption(scene)
        kind = planted.get(i)
        width, height = scene.width, scene.height
        regions = [{"phrase": f"the {s.color} {s.shape}", "boxes": [list(s.box)]} for s in scene.shapes]
        ocr = [{"text": t.text, "quad": list(t.quad)} for t in scene.texts]
        if kind == "tiny":
            width, height = (int(v) for v in rng.integers(16, 25, size=2))
            sx, sy = width / scene.width, height / scene.height
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            for reg in regions:
                x1, y1, x2, y2 = reg["boxes"][0]
                reg["boxes"] = [[math.floor(x1 * sx), math.floor(y1 * sy), math.ceil(x2 * sx), math.ceil(y2 * sy)]]
                reg["boxes"] = [[float(v) for v in reg["boxes"][0]]]
            ocr = []  # unreadable at this size
        blob = _encode_jpeg(image)
        if kind == "corrupt":
            if sum(1 for j in range(i) if planted.get(j) == "corrupt") % 2 == 0:
                blob = blob[: len(blob) * 2 // 5]  # header intact, scan data cut
            else:
                blob = _HTML_ERROR_PAGE
                width = height = 0
        scenes.append(scene)
        blobs.append(blob)
        items.append(
            DemoItem(
                item_id=f"demo-{i:05d}",
                filename=f"demo-{i:05d}.jpg",
                caption=caption,
                true_caption=caption,
                qa=_qa(scene, rng),
                regions=regions,
                ocr=ocr,
                width=width,
                height=height,
                planted=kind,
            )
        )

    clean = [i for i in range(n) if i not in planted]
    for i in range(n):
        kind = planted.get(i)
        if kind == "swapped_caption":
            key = _shape_key(scenes[i])
            donors = [j for j in clean if _shape_key(scenes[j]) != key]
            j = donors[int(master.integers(0, len(donors)))]
            items[i].caption = items[j].true_caption
        elif kind == "duplicate":
            j = clean[int(master.integers(0, len(clean)))]
            if j > i:  # the source comes first in id order (no extra draw: the other faults stay as they were)
                earlier = [c for c in clean if c < i] or clean
                j = earlier[j % len(earlier)]
            src = items[j]
            items[i].duplicate_of = src.item_id
            blobs[i] = blobs[j]
            items[i].caption = src.caption
            items[i].true_caption = src.true_caption
            items[i].qa = [dict(x) for x in src.qa]
            items[i].regions = [{"phrase": r["phrase"], "boxes": [list(b) for b in r["boxes"]]} for r in src.regions]
            items[i].ocr = [{"text": o["text"], "quad": list(o["quad"])} for o in src.ocr]
            items[i].width, items[i].height = src.width, src.height

    if near_duplicates:
        _plant_near_duplicates(items, blobs, scenes, clean, near_duplicates, seed)
    for item, blob in zip(items, blobs):
        with open(os.path.join(out_dir, item.filename), "wb") as f:
            f.write(blob)
    return items


def _scaled(regions: list[dict], ocr: list[dict], scale: float, dx: float, dy: float, w: int, h: int):
    """Boxes and quads of an image cropped by (dx, dy) then scaled by `scale`, clipped to w x h."""

    def fx(x):
        return float(min(max((x - dx) * scale, 0.0), w))

    def fy(y):
        return float(min(max((y - dy) * scale, 0.0), h))

    new_regions = [{"phrase": r["phrase"], "boxes": [[fx(b[0]), fy(b[1]), fx(b[2]), fy(b[3])] for b in r["boxes"]]}
                   for r in regions]
    new_ocr = [{"text": o["text"], "quad": [fx(v) if k % 2 == 0 else fy(v) for k, v in enumerate(o["quad"])]} for o in ocr]
    return new_regions, new_ocr


def _plant_near_duplicates(items: list[DemoItem], blobs: list[bytes], scenes: list, clean: list[int], m: int, seed: int) -> None:
    """Replace `m` clean items (ids past the first quarter) by near copies of earlier clean items."""
    rng = np.random.default_rng([seed, 4099])
    used = {i for i, it in enumerate(items) if it.duplicate_of is not None}
    used |= {int(it.duplicate_of.split("-")[-1]) for it in items if it.duplicate_of is not None}
    free = [i for i in clean if i not in used]
    late = [i for i in free if i >= len(items) // 4]
    if m > len(late) // 2:
        raise ValueError(f"near_duplicates={m} is too many for {len(items)} items")
    targets = sorted(int(t) for t in rng.choice(late, size=m, replace=False))
    sources_used: set[int] = set()
    for k, i in enumerate(targets):
        pool = [j for j in free if j < i and j not in targets and j not in sources_used]
        j = pool[int(rng.integers(0, len(pool)))]
        sources_used.add(j)
        variant = NEAR_DUPLICATE_VARIANTS[k % len(NEAR_DUPLICATE_VARIANTS)]
        src = items[j]
        with Image.open(io.BytesIO(blobs[j])) as im:
            image = im.convert("RGB")
        w, h = image.size
        regions = [{"phrase": r["phrase"], "boxes": [list(b) for b in r["boxes"]]} for r in src.regions]
        ocr = [{"text": o["text"], "quad": list(o["quad"])} for o in src.ocr]
        caption = src.caption
        buf = io.BytesIO()
        if variant == "jpeg_quality":
            image.save(buf, format="JPEG", quality=60)
        elif variant == "resize":
            w2, h2 = round(w * 0.9), round(h * 0.9)
            image.resize((w2, h2), Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=_JPEG_QUALITY)
            regions, ocr = _scaled(regions, ocr, w2 / w, 0, 0, w2, h2)
            w, h = w2, h2
        elif variant == "crop":
            dx, dy = round(w * 0.01), round(h * 0.01)
            w2, h2 = w - 2 * dx, h - 2 * dy
            image.crop((dx, dy, dx + w2, dy + h2)).save(buf, format="JPEG", quality=_JPEG_QUALITY)
            regions, ocr = _scaled(regions, ocr, 1.0, dx, dy, w2, h2)
            w, h = w2, h2
        else:  # the same pixels, other bytes (a comment), another wording of the caption
            buf.write(blobs[j][:2] + b"\xff\xfe\x00\x0bnear copy" + blobs[j][2:])
            caption = _caption(replace(scenes[j], template=(scenes[j].template + 1) % 4))
        blobs[i] = buf.getvalue()
        items[i] = DemoItem(item_id=items[i].item_id, filename=items[i].filename, caption=caption, true_caption=caption,
                            qa=[dict(x) for x in src.qa], regions=regions, ocr=ocr, width=w, height=h,
                            planted="near_duplicate", duplicate_of=src.item_id, variant=variant)


def clean_record_rows(out_dir: str | os.PathLike, n: int, seed: int) -> list[dict]:
    """The clean items of `generate_corpus(out_dir, n, seed)` (no planted fault) as canonical record rows
    with their image bytes: records as the demo's filters would pass them, without a download (tests, benchmarks)."""
    out = Path(out_dir)
    return [
        {"record_id": f"demo:{it.item_id}", "source": "demo", "image": (out / it.filename).read_bytes(),
         "width": it.width, "height": it.height, "captions": [it.caption], "qa": it.qa, "regions": it.regions, "ocr": it.ocr}
        for it in generate_corpus(out, n=n, seed=seed) if it.planted is None
    ]


def write_clean_records(root: str | os.PathLike, n: int, seed: int) -> Path:
    """`clean_record_rows` of a corpus generated in ROOT/www, written as the records dataset ROOT/records
    (returned): the input of a build, for tests and benchmarks."""
    from curation.storage.dataset import DatasetWriter
    from curation.schema import records_from_pylist

    root = Path(root)
    with DatasetWriter(root / "records") as w:
        w.write("records", records_from_pylist(clean_record_rows(root / "www", n=n, seed=seed)))
        w.close()
    return root / "records"

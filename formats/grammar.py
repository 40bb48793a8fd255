"""Reparse samples with the format's grammar (what `curate validate` checks).

`check_sample(row, fmt)` returns a list of problems (empty when the sample is
sound), each a one-line message; the caller prefixes the sample id. Checks:

- tags balanced and never nested (`<img>`, `<ref>`, `<box>`, `<quad>`, or the
  Qwen2 `<|vision_start|>`, `<|object_ref_start|>`, `<|box_start|>`,
  `<|quad_start|>` pairs); no stray special token inside a tag;
- boxes `(x1,y1),(x2,y2)` and quads of four points on the 0-999 grid, no
  leading zeros, x1 < x2 and y1 < y2, quads of non-zero area; Qwen2.5-VL
  `bbox_2d` values inside the resized image;
- Qwen-VL image keys 1-255 UTF-8 bytes and present in the row's `images`
  (with bytes); Qwen2 image tags as many as the row's images;
- pretraining samples end with one `<|endoftext|>`; SFT conversations follow
  section 5 and render to exactly `prompt + target`;
- the text is in Unicode NFC form (the Qwen tokenizer normalizes to it);
- `num_tokens` equals a recount with the format's tokenizer.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, Mapping, Sequence

from formats.coords import box_to_quad, grid_to_pixel, image_pad_count, resized_to_pixel, smart_resize
from formats.tasks import EOS, FORMATS, render_chatml
from formats.tokenizer import MAX_KEY_BYTES, QWEN2_VL_SPECIALS, QWEN_VL_SPECIALS, get_tokenizer

__all__ = ["check_text", "check_sample", "parse_box", "parse_quad", "find_shapes", "shapes_in_pixels"]

_NUM = r"(0|[1-9]\d{0,2})"
_POINT = rf"\({_NUM},{_NUM}\)"
_BOX_RE = re.compile(rf"{_POINT},{_POINT}")
_QUAD_RE = re.compile(rf"{_POINT},{_POINT},{_POINT},{_POINT}")

_PAIRS = {
    "qwen-vl": {"<img>": "</img>", "<ref>": "</ref>", "<box>": "</box>", "<quad>": "</quad>"},
    "qwen2-vl": {
        "<|vision_start|>": "<|vision_end|>",
        "<|object_ref_start|>": "<|object_ref_end|>",
        "<|box_start|>": "<|box_end|>",
        "<|quad_start|>": "<|quad_end|>",
    },
}
_PAIRS["qwen2.5-vl"] = _PAIRS["qwen2-vl"]
_KIND = {
    "<img>": "img", "<ref>": "ref", "<box>": "box", "<quad>": "quad",
    "<|vision_start|>": "img", "<|object_ref_start|>": "ref", "<|box_start|>": "box", "<|quad_start|>": "quad",
}


def _special_re(specials) -> re.Pattern:
    return re.compile("(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")")


_SPLIT = {"qwen-vl": _special_re(QWEN_VL_SPECIALS), "qwen2-vl": _special_re(QWEN2_VL_SPECIALS)}
_SPLIT["qwen2.5-vl"] = _SPLIT["qwen2-vl"]
_BBOX_JSON = re.compile(r'"bbox_2d":\s*\[([^\]]*)\]')


def parse_box(content: str) -> tuple[int, int, int, int]:
    """`(x1,y1),(x2,y2)` -> ints; ValueError naming the content when malformed or invalid."""
    m = _BOX_RE.fullmatch(content)
    if not m:
        raise ValueError(f"box {content!r} is not (x1,y1),(x2,y2) with values 0-999 and no leading zeros")
    x1, y1, x2, y2 = (int(g) for g in m.groups())
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {content!r}: {'x2 <= x1' if x2 <= x1 else 'y2 <= y1'}")
    return x1, y1, x2, y2


def parse_quad(content: str) -> tuple[int, ...]:
    m = _QUAD_RE.fullmatch(content)
    if not m:
        raise ValueError(f"quad {content!r} is not four points (x,y) with values 0-999 and no leading zeros")
    q = tuple(int(g) for g in m.groups())
    n = 4
    area2 = sum(q[2 * i] * q[2 * ((i + 1) % n) + 1] - q[2 * ((i + 1) % n)] * q[2 * i + 1] for i in range(n))
    if area2 == 0:
        raise ValueError(f"quad {content!r} has zero area")
    return q


def _check_content(kind: str, content: str, fmt: str, keys: Sequence[str], problems: list[str]) -> None:
    try:
        if kind == "box":
            parse_box(content)
        elif kind == "quad":
            parse_quad(content)
        elif kind == "ref":
            if not content.strip():
                problems.append("empty <ref>")
        elif kind == "img" and fmt == "qwen-vl":
            n = len(content.encode("utf-8"))
            if n == 0:
                problems.append("empty image key")
            elif n > MAX_KEY_BYTES:
                problems.append(f"image key of {n} UTF-8 bytes > {MAX_KEY_BYTES}")
            elif content not in keys:
                problems.append(f"image key {content!r} not in the row's images")
        elif kind == "img" and content != "<|image_pad|>":
            problems.append(f"image tag holds {content!r}, expected one <|image_pad|>")
    except ValueError as exc:
        problems.append(str(exc))


def check_text(text: str, fmt: str, image_keys: Sequence[str] = ()) -> tuple[list[str], int]:
    """Grammar problems of one sample text, and how many image tags it has."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    pairs = _PAIRS[fmt]
    closers = {v: k for k, v in pairs.items()}
    problems: list[str] = []
    open_tag: str | None = None
    content: list[str] = []
    images = 0
    for i, piece in enumerate(_SPLIT[fmt].split(text)):
        if not i % 2:  # plain text
            if open_tag is not None:
                content.append(piece)
            continue
        if piece in pairs:
            if open_tag is not None:
                problems.append(f"unbalanced {open_tag}: {piece} before {pairs[open_tag]} (tags never nest)")
            open_tag, content = piece, []
        elif piece in closers:
            if open_tag != closers[piece]:
                where = f"inside {open_tag}" if open_tag else "without an opening tag"
                problems.append(f"unbalanced {piece} {where}")
                open_tag = None
                continue
            kind = _KIND[open_tag]
            images += kind == "img"
            _check_content(kind, "".join(content), fmt, image_keys, problems)
            open_tag = None
        elif open_tag == "<|vision_start|>" and piece == "<|image_pad|>":
            content.append(piece)
        elif open_tag is not None:
            problems.append(f"special token {piece} inside {open_tag}")
        elif piece in ("<imgpad>", "<|image_pad|>"):
            problems.append(f"{piece} outside an image tag")
    if open_tag is not None:
        problems.append(f"unbalanced {open_tag}: never closed")
    return problems, images


def _check_json_boxes(text: str, images: Sequence[Mapping[str, Any]], problems: list[str], limits: Mapping[str, int]) -> None:
    if not images:
        return
    rh, rw = smart_resize(images[0]["height"], images[0]["width"], **limits)
    for m in _BBOX_JSON.finditer(text):
        try:
            x1, y1, x2, y2 = (int(v) for v in m.group(1).split(","))
        except ValueError:
            problems.append(f"bbox_2d [{m.group(1)}] is not four integers")
            continue
        if not (0 <= x1 < x2 <= rw - 1 and 0 <= y1 < y2 <= rh - 1):
            problems.append(f"bbox_2d [{m.group(1)}] outside the {rw}x{rh} resized image or x2 <= x1 or y2 <= y1")


def check_sample(
    row: Mapping[str, Any], fmt: str | None = None, min_pixels: int | None = None, max_pixels: int | None = None
) -> list[str]:
    """Every problem of one sample row (SAMPLE_SCHEMA dict).

    `min_pixels` / `max_pixels`: the smart_resize limits the samples were built with (the manifest's
    `build` section); None = the model files' defaults.
    """
    limits = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    fmt = fmt or row.get("format")
    if fmt not in FORMATS:
        return [f"unknown format {fmt!r}"]
    problems: list[str] = []
    images = row.get("images") or []
    keys = [im.get("key") for im in images]
    for im in images:
        if im.get("image") is None:
            problems.append(f"image {im.get('key')!r} has no bytes")
    text = (row.get("prompt") or "") + (row.get("target") or "")
    found, n_images = check_text(text, fmt, keys)
    problems += found
    if not unicodedata.is_normalized("NFC", text):
        problems.append("text is not in Unicode NFC form (the Qwen tokenizer would change it)")
    if fmt != "qwen-vl" and n_images != len(images):
        problems.append(f"{n_images} image tags for {len(images)} images in the row")
    if fmt == "qwen2.5-vl":
        _check_json_boxes(text, images, problems, limits)
    task = row.get("task")
    if task == "sft":
        from formats.sft import check_conversation

        conv = row.get("conversations")
        try:
            check_conversation(conv or [])
            if render_chatml(conv) != text:
                problems.append("prompt + target differ from the ChatML rendering of conversations")
        except ValueError as exc:
            problems.append(f"conversation: {exc}")
    elif not text.endswith(EOS) or text.count(EOS) != 1:
        problems.append(f"text must end with one {EOS}")
    try:
        tok = get_tokenizer(fmt)
        pads = None
        if fmt != "qwen-vl" and images:
            pads = [image_pad_count(im["height"], im["width"], **limits) for im in images]
        n = tok.count(text, pads)
        if row.get("num_tokens") != n:
            problems.append(f"num_tokens {row.get('num_tokens')} != {n} counted")
    except ValueError as exc:
        if not problems:
            problems.append(f"cannot count tokens: {exc}")
    return problems


def _json_objects(text: str):
    """Every JSON object in `text` (Qwen2.5-VL answers), outermost first, in order."""
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i != -1:
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(value, dict):
            yield value
        i = text.find("{", end)


def find_shapes(text: str, fmt: str) -> list[dict[str, Any]]:
    """Every box and quad that a sample's text (`prompt + target`) encodes, in order.

    Each is `{"kind": "box" | "quad", "label": PHRASE or None, "values": ints}`:
    grid values (0-999) for Qwen-VL and Qwen2-VL, pixels of the resized image
    for Qwen2.5-VL (its `bbox_2d` answers; a `text_content` answer is the box
    around an OCR quad). The label is the `<ref>` phrase the shape follows
    (or the JSON `label` / `text_content`). Malformed shapes are skipped
    (`check_text` reports them).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    shapes: list[dict[str, Any]] = []
    if fmt == "qwen2.5-vl":
        for obj in _json_objects(text):
            values = obj.get("bbox_2d")
            if not (isinstance(values, list) and len(values) == 4 and all(isinstance(v, int) for v in values)):
                continue
            label = obj.get("label", obj.get("text_content"))
            shapes.append({"kind": "box", "label": label if isinstance(label, str) else None, "values": tuple(values)})
        return shapes
    pairs = _PAIRS[fmt]
    open_tag: str | None = None
    content: list[str] = []
    label: str | None = None
    for i, piece in enumerate(_SPLIT[fmt].split(text)):
        if not i % 2:
            if open_tag is not None:
                content.append(piece)
            elif piece.strip():
                label = None  # plain text ends what a <ref> names
            continue
        if piece in pairs:
            open_tag, content = piece, []
        elif open_tag is not None and piece == pairs[open_tag]:
            kind, body = _KIND[open_tag], "".join(content)
            open_tag = None
            if kind == "ref":
                label = body
            elif kind in ("box", "quad"):
                try:
                    values = parse_box(body) if kind == "box" else parse_quad(body)
                except ValueError:
                    continue
                shapes.append({"kind": kind, "label": label, "values": values})
    return shapes


def shapes_in_pixels(text: str, fmt: str, width: int, height: int) -> list[dict[str, Any]]:
    """`find_shapes` with each shape's corners back in pixels of the stored `width` x `height` image.

    Adds `"points"`: [x1, y1, x2, y2, ...] clockwise from top-left (a box as
    its four corners), decoded the way the format encodes them: grid values
    times size / 1000, or Qwen2.5-VL pixels times size / resized size.
    """
    if fmt == "qwen2.5-vl":
        rh, rw = smart_resize(height, width)

        def px(v: int, axis: int) -> float:
            return resized_to_pixel(v, width, rw) if axis == 0 else resized_to_pixel(v, height, rh)
    else:

        def px(v: int, axis: int) -> float:
            return grid_to_pixel(v, width if axis == 0 else height)

    out = []
    for shape in find_shapes(text, fmt):
        corners = box_to_quad(shape["values"]) if shape["kind"] == "box" else list(shape["values"])
        out.append({**shape, "points": [px(v, i % 2) for i, v in enumerate(corners)]})
    return out

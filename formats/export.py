"""Exports (spec section 6): files other trainers read, as pure functions per sample.

Every exported sample is a conversation. SFT samples keep theirs; a
pretraining sample with an image becomes one user turn (the prompt) and one
assistant turn (the target without `<|endoftext|>` and without its leading
space). Text-only samples have no chat form and are skipped (counted).

- `qwen-vl-json`: `{"id", "conversations": [{"from", "value"}]}` for
  `finetune.py`; images as `Picture N: <img>PATH</img>\\n` at the start of a
  user turn. Needs `qwen-vl` samples.
- `llama-factory` (sharegpt): `{"messages": [{"role", "content"}], "images"}`,
  each image tag replaced by `<image>`, in order.
  `llama_factory_entry(name, file)` is the file's `dataset_info.json` entry
  (`formatting: sharegpt`, the `messages` / `images` columns and the
  `role/content/user/assistant` tags, which are not LLaMA-Factory's sharegpt
  defaults, so they are declared).
- `ms-swift`: as llama-factory plus `"objects": {"ref", "bbox", "bbox_type":
  "real"}` for every grounding and OCR sample, so that ms-swift rescales the
  boxes to whatever `MAX_PIXELS` it trains at: each phrase becomes
  `<ref-object>` and each box `<bbox>`, in order; an OCR quad becomes its
  bounding box (ms-swift has no quad placeholder). Boxes go back to pixels of
  the stored image: Qwen-VL / Qwen2-VL grid values as `q * size / 1000`
  (within one grid step, size/1000 px, of the source box); Qwen2.5-VL
  values, absolute pixels of the smart-resized image, as `v * size /
  resized` at the `min_pixels` / `max_pixels` the samples were built with.
  A Qwen2.5-VL JSON answer keeps its shape:
  `{"bbox_2d": <bbox>, "label": "<ref-object>"}` (the ref is the label as
  it stands inside the JSON string, escapes kept); ms-swift writes it back
  as JSON with `QWENVL_BBOX_FORMAT=new`.

Image paths are whatever `image_path(key)` returns (the command writes each
image once, next to the JSON, and passes its absolute path).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from formats.tasks import EOS

__all__ = [
    "EXPORTS",
    "sample_conversation",
    "to_qwen_vl_json",
    "to_llama_factory",
    "llama_factory_entry",
    "to_ms_swift",
    "image_suffix",
]


_QWEN_VL_IMG = re.compile(r"(?:Picture \d+: )?<img>(.*?)</img>\n?", re.S)
_QWEN2_IMG = "<|vision_start|><|image_pad|><|vision_end|>"
_REF = {
    "qwen-vl": re.compile(r"<ref>(.*?)</ref>", re.S),
    "qwen2-vl": re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>", re.S),
}
_BOX = {
    "qwen-vl": re.compile(r"<box>\((\d+),(\d+)\),\((\d+),(\d+)\)</box>"),
    "qwen2-vl": re.compile(r"<\|box_start\|>\((\d+),(\d+)\),\((\d+),(\d+)\)<\|box_end\|>"),
}
_POINT = r"\((\d+),(\d+)\)"
_QUAD = {
    "qwen-vl": re.compile(rf"<quad>{_POINT},{_POINT},{_POINT},{_POINT}</quad>"),
    "qwen2-vl": re.compile(rf"<\|quad_start\|>{_POINT},{_POINT},{_POINT},{_POINT}<\|quad_end\|>"),
}
# Qwen2.5-VL: {"bbox_2d": [x1, y1, x2, y2], "label": "..."} (or "text_content" for OCR), as json.dumps writes it
_JSON_BOX = re.compile(r'\{"bbox_2d": \[(\d+), (\d+), (\d+), (\d+)\], "(label|text_content)": "((?:[^"\\]|\\.)*)"\}')


def image_suffix(data: bytes | None) -> str:
    """File suffix from the image's magic bytes."""
    if not data:
        return ".bin"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    return ".bin"


def sample_conversation(row: Mapping[str, Any]) -> list[dict[str, str]] | None:
    """The sample as `finetune.py` turns; None for a text-only pretraining sample."""
    if row.get("conversations"):
        return [dict(t) for t in row["conversations"]]
    if not row.get("images"):
        return None
    target = row["target"] or ""
    if target.endswith(EOS):
        target = target[: -len(EOS)]
    if target.startswith(" "):
        target = target[1:]
    return [{"from": "user", "value": row["prompt"] or ""}, {"from": "assistant", "value": target}]


def to_qwen_vl_json(row: Mapping[str, Any], image_path: Callable[[str], str]) -> dict | None:
    """One `finetune.py` entry, image keys replaced by paths, `Picture N:` numbering."""
    if row.get("format") != "qwen-vl":
        raise ValueError(f"qwen-vl-json export needs qwen-vl samples, sample {row.get('sample_id')} is {row.get('format')!r}")
    conv = sample_conversation(row)
    if conv is None:
        return None
    n = 0

    def sub(m: re.Match) -> str:
        nonlocal n
        n += 1
        return f"Picture {n}: <img>{image_path(m.group(1))}</img>\n"

    for turn in conv:
        turn["value"] = _QWEN_VL_IMG.sub(sub, turn["value"])
    from formats.sft import check_conversation

    check_conversation(conv)
    return {"id": row["sample_id"], "conversations": conv}


def _messages(row: Mapping[str, Any], image_path: Callable[[str], str]) -> tuple[list[dict[str, str]], list[str]] | None:
    conv = sample_conversation(row)
    if conv is None:
        return None
    keys = [im["key"] for im in row.get("images") or []]
    images: list[str] = []
    messages = []
    for turn in conv:
        value = turn["value"]
        if row.get("format") == "qwen-vl":

            def sub(m: re.Match) -> str:
                images.append(image_path(m.group(1)))
                return "<image>"

            value = _QWEN_VL_IMG.sub(sub, value)
        else:
            for _ in range(value.count(_QWEN2_IMG)):
                images.append(image_path(keys[min(len(images), len(keys) - 1)]))
            value = value.replace(_QWEN2_IMG, "<image>")
        messages.append({"role": turn["from"], "content": value})
    return messages, images


def to_llama_factory(row: Mapping[str, Any], image_path: Callable[[str], str]) -> dict | None:
    """LLaMA-Factory sharegpt: `{"messages": [...], "images": [...]}`, one `<image>` per image."""
    got = _messages(row, image_path)
    if got is None:
        return None
    messages, images = got
    return {"messages": messages, "images": images}


def llama_factory_entry(file_name: str) -> dict:
    """The file's entry in LLaMA-Factory's `dataset_info.json` (its documented sharegpt keys)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }


def _pixels(v: int, size: int, scale: float) -> float:
    return round(v * size / scale, 2)


def to_ms_swift(
    row: Mapping[str, Any],
    image_path: Callable[[str], str],
    min_pixels: int = 4 * 28 * 28,
    max_pixels: int = 16384 * 28 * 28,
) -> dict | None:
    """ms-swift: messages, images and objects (`<ref-object>` / `<bbox>`, pixel boxes, `bbox_type: real`).

    `min_pixels` / `max_pixels`: the limits the samples were built at (Qwen2.5-VL boxes are in pixels of
    the image resized with them).
    """
    got = _messages(row, image_path)
    if got is None:
        return None
    messages, images = got
    im = (row.get("images") or [{}])[0]
    w, h = im.get("width"), im.get("height")
    refs: list[str] = []
    boxes: list[list[float]] = []

    if row.get("format") == "qwen2.5-vl":
        from formats.coords import smart_resize

        rh, rw = smart_resize(h, w, min_pixels=min_pixels, max_pixels=max_pixels)

        def obj(m: re.Match) -> str:
            x1, y1, x2, y2 = (int(g) for g in m.groups()[:4])
            boxes.append([_pixels(x1, w, rw), _pixels(y1, h, rh), _pixels(x2, w, rw), _pixels(y2, h, rh)])
            refs.append(m.group(6))
            return f'{{"bbox_2d": <bbox>, "{m.group(5)}": "<ref-object>"}}'

        for msg in messages:
            msg["content"] = _JSON_BOX.sub(obj, msg["content"])
    else:
        fmt = "qwen-vl" if row.get("format") == "qwen-vl" else "qwen2-vl"

        def ref(m: re.Match) -> str:
            refs.append(m.group(1))
            return "<ref-object>"

        def box(m: re.Match) -> str:
            x1, y1, x2, y2 = (int(g) for g in m.groups())
            boxes.append([_pixels(x1, w, 1000), _pixels(y1, h, 1000), _pixels(x2, w, 1000), _pixels(y2, h, 1000)])
            return "<bbox>"

        def quad(m: re.Match) -> str:
            v = [int(g) for g in m.groups()]
            xs, ys = v[0::2], v[1::2]
            boxes.append([_pixels(min(xs), w, 1000), _pixels(min(ys), h, 1000), _pixels(max(xs), w, 1000), _pixels(max(ys), h, 1000)])
            return "<bbox>"

        if w and h:
            # one pass over the placeholders in text order, so refs and boxes line up as ms-swift consumes them
            pattern = re.compile("|".join(f"(?P<{k}>{p.pattern})" for k, p in
                                          (("ref", _REF[fmt]), ("box", _BOX[fmt]), ("quad", _QUAD[fmt]))), re.S)

            def any_(m: re.Match) -> str:
                kind = m.lastgroup
                inner = {"ref": _REF, "box": _BOX, "quad": _QUAD}[kind][fmt].fullmatch(m.group(0))
                return {"ref": ref, "box": box, "quad": quad}[kind](inner)

            for msg in messages:
                msg["content"] = pattern.sub(any_, msg["content"])
    out: dict[str, Any] = {"messages": messages, "images": images}
    out["objects"] = {"ref": refs, "bbox": boxes, "bbox_type": "real"}
    return out


# layout name (`curate export --to`) -> converter of one sample row
EXPORTS: dict[str, Callable[..., Any]] = {
    "qwen-vl-json": to_qwen_vl_json,
    "llama-factory": to_llama_factory,
    "ms-swift": to_ms_swift,
}

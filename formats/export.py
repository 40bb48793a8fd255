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
- `ms-swift`: as llama-factory plus `"objects": {"ref", "bbox", "bbox_type":
  "real"}`: each `<ref>PHRASE</ref>` becomes `<ref-object>`, each box
  `<bbox>`, and the boxes go back to pixels of the image as
  `q * size / 1000` (so within one grid step, size/1000 px, of the source box).

Image paths are whatever `image_path(key)` returns (the command writes each
image once, next to the JSON, and passes its absolute path).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from formats.tasks import EOS

__all__ = ["EXPORTS", "sample_conversation", "to_qwen_vl_json", "to_llama_factory", "to_ms_swift", "image_suffix"]


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


def to_ms_swift(row: Mapping[str, Any], image_path: Callable[[str], str]) -> dict | None:
    """ms-swift: messages, images and objects (`<ref-object>` / `<bbox>`, pixel boxes, `bbox_type: real`)."""
    got = _messages(row, image_path)
    if got is None:
        return None
    messages, images = got
    fmt = "qwen-vl" if row.get("format") == "qwen-vl" else "qwen2-vl"
    im = (row.get("images") or [{}])[0]
    w, h = im.get("width"), im.get("height")
    refs: list[str] = []
    boxes: list[list[float]] = []
    ref_re, box_re = _REF[fmt], _BOX[fmt]
    grounded = row.get("format") != "qwen2.5-vl" and w and h

    def ref(m: re.Match) -> str:
        refs.append(m.group(1))
        return "<ref-object>"

    def box(m: re.Match) -> str:
        x1, y1, x2, y2 = (int(g) for g in m.groups())
        boxes.append([round(x1 * w / 1000, 2), round(y1 * h / 1000, 2), round(x2 * w / 1000, 2), round(y2 * h / 1000, 2)])
        return "<bbox>"

    if grounded:
        for msg in messages:
            msg["content"] = box_re.sub(box, ref_re.sub(ref, msg["content"]))
    out: dict[str, Any] = {"messages": messages, "images": images}
    out["objects"] = {"ref": refs, "bbox": boxes, "bbox_type": "real"}
    return out


# layout name (`curate export --to`) -> converter of one sample row
EXPORTS: dict[str, Callable[..., Any]] = {
    "qwen-vl-json": to_qwen_vl_json,
    "llama-factory": to_llama_factory,
    "ms-swift": to_ms_swift,
}

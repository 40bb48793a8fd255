"""Every reject reason, defined once, with what it means.

A reject row says which `stage` dropped something and why: `reason` is one of
the names below (a fixed set, so `group by reason` means something) and
`detail` carries the specifics (the offending value, the file, img2dataset's
own error message). A stage writes a reason by its constant here, never by a
new string; `docs/reasons.md` lists the same names and meanings (a test checks
that the two agree, and that every reason a stage writes is listed).

This module is plain Python (no pyarrow), so every package may import it.
"""

from __future__ import annotations

__all__ = ["REASONS", "is_reason", "check_reason"]

REASONS: dict[str, str] = {}


def _define(name: str, meaning: str) -> str:
    if name in REASONS:
        raise ValueError(f"reject reason {name!r} is defined twice")
    REASONS[name] = meaning
    return name


# --- download: img2dataset's error messages and the crawler's refusals, mapped (the message stays in `detail`)
HTTP_ERROR = _define("http_error", "the server answered with an HTTP error status (status and message in detail)")
TIMEOUT = _define("timeout", "the server did not answer within the download timeout")
CONNECTION_ERROR = _define("connection_error", "no usable connection: refused, reset, unknown host, TLS failure, or closed mid-response")
OPTED_OUT = _define("opted_out", "the server's X-Robots-Tag header forbids this use of the image (the directive in detail)")
BLOCKED_ADDRESS = _define("blocked_address", "the URL, a redirect or its host's address is refused by the address policy: not http(s), or loopback, private, link-local, multicast, reserved or unspecified (what and why in detail)")
DUPLICATE_URL = _define("duplicate_url", "the same URL (normalised) is listed earlier; downloaded once, for the record named in detail")
UNSAFE_FILE_NAME = _define("unsafe_file_name", "an annotated image file name that is absolute or climbs out with '..': never fetched from the URL prefix")
DOWNLOAD_ERROR = _define("download_error", "any other download failure (bad URL, hash mismatch, ...); img2dataset's message in detail")

# --- the image itself (download, images; image_decode_error: clip)
IMAGE_MISSING = _define("image_missing", "no image: no file under the image roots, the fetch failed, or a record with annotations has no image bytes")
IMAGE_UNREADABLE = _define("image_unreadable", "the image file exists but cannot be read (permissions, I/O error)")
NOT_AN_IMAGE = _define("not_an_image", "the bytes do not decode as an image (an HTML page, an empty body, corrupt data)")
IMAGE_TRUNCATED = _define("image_truncated", "the image data ends before the image does (a cut-off download or file)")
IMAGE_TOO_LARGE = _define("image_too_large", "more pixels than the pixel limit (decompression-bomb guard), or a response body over the byte limit")
IMAGE_DECODE_ERROR = _define("image_decode_error", "the CLIP stage could not decode the image (no bytes, over its pixel limit, or undecodable; detail says which)")

# --- the image's size
SIZE_UNKNOWN = _define("size_unknown", "no width and height to place or convert the boxes, and no image to take them from")
INVALID_SIZE = _define("invalid_size", "a width or height that is not a positive whole number the record can hold (the value in detail)")
SIZE_CONFLICT = _define("size_conflict", "annotation files disagree on the size of one image")
SIZE_MISMATCH = _define("size_mismatch", "the image's aspect ratio differs from the annotated size: a different image")

# --- records and annotations (ingest, images, build)
INVALID_RECORD = _define("invalid_record", "a canonical record line whose columns do not fit the record schema")
INVALID_ANNOTATION = _define("invalid_annotation", "an annotation entry without the fields its kind requires (image id, caption, bbox, ...) or not JSON")
NO_ANNOTATIONS = _define("no_annotations", "an image is listed (or present) but nothing annotates it")
ANNOTATIONS_REJECTED = _define("annotations_rejected", "every annotation of the image was rejected against its frame (each has its own reject row)")
IMAGE_UNKNOWN = _define("image_unknown", "the annotation's image is not in the file's list of images")
CATEGORY_UNKNOWN = _define("category_unknown", "the instance's category is not in the file's categories")
QUESTION_UNKNOWN = _define("question_unknown", "the answer's question is not in the questions file")
ANSWER_MISSING = _define("answer_missing", "the question has no answer in the annotations file")
BOX_UNKNOWN = _define("box_unknown", "the referring expression names an object that the instances file does not have")
EMPTY_TEXT = _define("empty_text", "an empty caption, question, answer, phrase, OCR text or document")
SPECIAL_TOKEN_IN_TEXT = _define("special_token_in_text", "a text contains a special-token string of the token format")
BOX_MISSING = _define("box_missing", "a phrase, span or OCR item has no box")
BOX_MALFORMED = _define("box_malformed", "a box is not 4 numbers")
BOX_NOT_FINITE = _define("box_not_finite", "a box has a NaN or infinite value")
BOX_EMPTY = _define("box_empty", "a box with x2 <= x1 or y2 <= y1")
BOX_OUTSIDE_IMAGE = _define("box_outside_image", "a box lies wholly outside the image")
BOX_COLLAPSED = _define("box_collapsed", "a box becomes empty on the token format's coordinate grid")
QUAD_MALFORMED = _define("quad_malformed", "a quad is not 8 numbers")
QUAD_NOT_FINITE = _define("quad_not_finite", "a quad has a NaN or infinite value")
QUAD_EMPTY = _define("quad_empty", "a quad has no area")
QUAD_OUTSIDE_IMAGE = _define("quad_outside_image", "a quad lies wholly outside the image")
QUAD_COLLAPSED = _define("quad_collapsed", "a quad has no area on the token format's coordinate grid")
INVALID_SPAN = _define("invalid_span", "a grounded caption's span is missing, empty, outside its text, overlapping or only spaces")

# --- filters
IMAGE_TOO_SMALL = _define("image_too_small", "the image's shorter side is below the minimum")
ASPECT_RATIO_TOO_LARGE = _define("aspect_ratio_too_large", "the image is more elongated than the maximum aspect ratio (the filter's, or the token format's)")
CAPTION_TOO_SHORT = _define("caption_too_short", "a caption has fewer words than the minimum (basic: the first caption; text: each caption, a CJK ideograph or kana counting as a word)")
CAPTION_TOO_LONG = _define("caption_too_long", "the first caption has more characters than the maximum")
CLIP_SCORE_BELOW_THRESHOLD = _define("clip_score_below_threshold", "the image and its caption are too dissimilar (CLIP score under the threshold)")

# --- dedup (stage `dedup`; `eval_overlap`: `decontaminate`); `duplicate_url` above is also the dedup stage's
DUPLICATE_IMAGE = _define("duplicate_image", "the same image bytes (sha256) as the kept record named in detail (the record id that sorts first keeps)")
NEAR_DUPLICATE = _define("near_duplicate", "the image's perceptual hash is within the Hamming distance setting of the kept record's (named in detail, with the distance)")
EVAL_OVERLAP = _define("eval_overlap", "the image is a perceptual near-duplicate of an evaluation image (named in detail, with the distance)")

# --- build (samples in a token format)
INVALID_KEY = _define("invalid_key", "the image key (record_id) is empty, holds a special token or is not in Unicode NFC form")
KEY_TOO_LONG = _define("key_too_long", "the image key (record_id) is longer than the token format allows")
NO_SAMPLES = _define("no_samples", "the record has no annotation for the tasks being built")
TOO_LONG = _define("too_long", "the sample has more tokens than the limit (never truncated)")


# --- text cleaning (filters/text.py: each caption, after HTML is removed; `caption_too_short` and `empty_text` too)
CAPTION_URL = _define("caption_url", "the caption holds a URL: a scheme, a www address, an e-mail address or a domain with a path (the match in detail)")
CAPTION_FILE_NAME = _define("caption_file_name", "the caption holds a file name such as IMG_0042.jpg or DSC01234 (the match in detail)")
CAPTION_BOILERPLATE = _define("caption_boilerplate", "the caption holds a boilerplate phrase such as 'stock photo' or 'royalty free' (the phrase in detail)")
CAPTION_EMOJI = _define("caption_emoji", "the caption holds an emoji (its code point in detail)")
CAPTION_SCRIPT_NOT_ALLOWED = _define("caption_script_not_allowed", "the caption has a letter or digit of a script outside the allow-list, Latin + CJK by default (the character in detail)")
CAPTION_REPETITION = _define("caption_repetition", "the caption repeats a character or a word too many times in a row, such as '!!!!!' or 'sooooo' (the run in detail)")
CAPTION_TOO_MANY_TOKENS = _define("caption_too_many_tokens", "the caption has more tokens of the format's Qwen tokenizer than the maximum")

# --- CLIP top fraction (filters/clip_fraction.py, the second pass)
CLIP_SCORE_BELOW_FRACTION = _define("clip_score_below_fraction", "the record's CLIP score is not in the top fraction of the dataset, or of its source (the cutoff score and record id in detail)")

# --- semantic dedup (filters/semdedup.py, the second pass)
SEMANTIC_DUPLICATE = _define("semantic_duplicate", "the image's CLIP embedding is closer than the threshold to a kept record's in its k-means cluster (the kept record and the cosine similarity in detail)")

def is_reason(name: object) -> bool:
    return isinstance(name, str) and name in REASONS


def check_reason(name: object) -> str:
    """`name` when it is a defined reason; ValueError naming it otherwise."""
    if not is_reason(name):
        raise ValueError(f"unknown reject reason {name!r}; the reasons are defined in curation/reasons.py")
    return name  # type: ignore[return-value]

"""Basic checks: minimum image side, maximum aspect ratio, caption length.

Measures nothing new (width and height come with the record); drops with
reasons `image_too_small`, `aspect_ratio_too_large`, `size_unknown` (no width
or height), `invalid_size` (not positive), `caption_too_short` and
`caption_too_long`. Caption checks apply to the first
caption and only to records that have one.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from curation.errors import InputError
from curation.reasons import (
    ASPECT_RATIO_TOO_LARGE,
    CAPTION_TOO_LONG,
    CAPTION_TOO_SHORT,
    IMAGE_TOO_SMALL,
    INVALID_SIZE,
    SIZE_UNKNOWN,
)
from curation.runtime import Resources
from filters.base import Drop, Filter

__all__ = ["BasicFilter", "from_config"]


class BasicFilter(Filter):
    name = "basic"
    resources = Resources(cpus=1)
    batch_size = 1024

    def __init__(
        self,
        min_side: int = 32,
        max_aspect_ratio: float = 4.0,
        min_caption_words: int = 2,
        max_caption_chars: int = 1000,
    ):
        if min_side < 1 or max_aspect_ratio < 1:
            raise InputError(f"min_side must be >= 1 and max_aspect_ratio >= 1, got {min_side}, {max_aspect_ratio}")
        self.min_side = min_side
        self.max_aspect_ratio = max_aspect_ratio
        self.min_caption_words = min_caption_words
        self.max_caption_chars = max_caption_chars

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        widths = batch.column("width").to_pylist()
        heights = batch.column("height").to_pylist()
        has_image = batch.column("image").is_valid().to_pylist() if "image" in batch.column_names else [True] * len(widths)
        captions = batch.column("captions").to_pylist() if "captions" in batch.column_names else [None] * len(widths)
        out: list[Drop | None] = []
        for w, h, img, caps in zip(widths, heights, has_image, captions):
            out.append(self._check(w, h, img, caps))
        return out

    def _check(self, w, h, has_image, caps) -> Drop | None:
        if has_image:
            if w is None or h is None:
                return Drop(SIZE_UNKNOWN, f"{w}x{h}")
            if w <= 0 or h <= 0:
                return Drop(INVALID_SIZE, f"{w}x{h}")
            if min(w, h) < self.min_side:
                return Drop(IMAGE_TOO_SMALL, f"{w}x{h} < {self.min_side}")
            ratio = max(w, h) / min(w, h)
            if ratio > self.max_aspect_ratio:
                return Drop(ASPECT_RATIO_TOO_LARGE, f"{ratio:.2f} > {self.max_aspect_ratio:g}")
        if caps:
            cap = caps[0] or ""
            if len(cap.split()) < self.min_caption_words:
                return Drop(CAPTION_TOO_SHORT, f"{len(cap.split())} words < {self.min_caption_words}")
            if len(cap) > self.max_caption_chars:
                return Drop(CAPTION_TOO_LONG, f"{len(cap)} chars > {self.max_caption_chars}")
        return None


def from_config(cfg) -> list[BasicFilter]:
    """The stages of this filter for a job config (keys min_side, max_aspect_ratio, ...)."""
    return [BasicFilter(cfg.min_side, cfg.max_aspect_ratio, cfg.min_caption_words, cfg.max_caption_chars)]

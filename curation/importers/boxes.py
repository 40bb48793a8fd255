"""Pure functions over boxes, quads and image sizes: conversion to pixel x1, y1, x2, y2 and validity.

A box is invalid when it has a non-finite value, `x2 <= x1` or `y2 <= y1`, or
lies wholly outside the image (spec section 3). A box partly outside is valid
here and kept as it is; the formats stage clips it. An image size is invalid
when a given width or height is not a positive whole number that the record's
int32 columns can hold (absent is not invalid: the size is then unknown).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from curation.reasons import (
    BOX_EMPTY,
    BOX_MALFORMED,
    BOX_NOT_FINITE,
    BOX_OUTSIDE_IMAGE,
    QUAD_EMPTY,
    QUAD_MALFORMED,
    QUAD_NOT_FINITE,
    QUAD_OUTSIDE_IMAGE,
)

_isfinite = math.isfinite

# the record's width and height are int32
MAX_SIDE = 2**31 - 1

__all__ = [
    "MAX_SIDE",
    "size_problem",
    "xywh_to_xyxy",
    "as_numbers",
    "box_problem",
    "quad_problem",
    "box_to_quad",
    "normalised_to_pixels",
    "scale_boxes",
]


def size_problem(width: Any, height: Any) -> str | None:
    """Why an annotated image size is invalid (naming the value), or None.

    A side that is None is unknown, not invalid. A float is accepted only when
    it is a whole number (640.0); 2.5, "640", True, NaN, 1e30, 0 and -640 are not.
    """
    for name, v in (("width", width), ("height", height)):
        if v is None:
            continue
        t = type(v)
        if t is not int and t is not float:  # bool and str are not sizes
            return f"{name} {v!r} is not a number"
        if t is float and not _isfinite(v):
            return f"{name} {v!r} is not finite"
        if v != int(v):
            return f"{name} {v!r} is not a whole number"
        if v <= 0:
            return f"{name} {v!r} is not positive"
        if v > MAX_SIDE:
            return f"{name} {v!r} is larger than {MAX_SIDE}"
    return None


def as_numbers(values: Any, n: int) -> list[float] | None:
    """`values` as a list of `n` floats, or None when it is not a sequence of `n` numbers."""
    if type(values) not in (list, tuple) or len(values) != n:
        return None
    for v in values:
        t = type(v)
        if t is not float and t is not int:  # bool is not a number here
            return None
    return [float(v) for v in values]


def xywh_to_xyxy(x: Any, y: Any, w: Any, h: Any) -> list[float] | None:
    """COCO `[x, y, w, h]` / Visual Genome `x, y, width, height` to `[x1, y1, x2, y2]`; None if not numbers."""
    nums = as_numbers((x, y, w, h), 4)
    if nums is None:
        return None
    x, y, w, h = nums
    return [x, y, x + w, y + h]


def normalised_to_pixels(box: Sequence[float], width: int, height: int) -> list[float]:
    """A box on the 0-1 scale (x1, y1, x2, y2) to pixels of a width x height image."""
    x1, y1, x2, y2 = box
    return [x1 * width, y1 * height, x2 * width, y2 * height]


def box_problem(box: Any, width: int | None = None, height: int | None = None) -> str | None:
    """The reason a box is invalid, or None. Without a frame, the outside check is skipped."""
    nums = as_numbers(box, 4)
    if nums is None:
        return BOX_MALFORMED
    x1, y1, x2, y2 = nums
    if not (_isfinite(x1) and _isfinite(y1) and _isfinite(x2) and _isfinite(y2)):
        return BOX_NOT_FINITE
    if x2 <= x1 or y2 <= y1:
        return BOX_EMPTY
    if width is not None and height is not None:
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            return BOX_OUTSIDE_IMAGE
    return None


def quad_problem(quad: Any, width: int | None = None, height: int | None = None) -> str | None:
    """The reason a quad (8 numbers, corners clockwise from top-left) is invalid, or None."""
    nums = as_numbers(quad, 8)
    if nums is None:
        return QUAD_MALFORMED
    if not all(math.isfinite(v) for v in nums):
        return QUAD_NOT_FINITE
    xs, ys = nums[0::2], nums[1::2]
    if max(xs) <= min(xs) or max(ys) <= min(ys):
        return QUAD_EMPTY
    if width is not None and height is not None:
        if max(xs) <= 0 or max(ys) <= 0 or min(xs) >= width or min(ys) >= height:
            return QUAD_OUTSIDE_IMAGE
    return None


def box_to_quad(box: Sequence[float]) -> list[float]:
    """An axis-aligned box as a quad: (x1,y1),(x2,y1),(x2,y2),(x1,y2)."""
    x1, y1, x2, y2 = box
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def scale_boxes(values: Sequence[float], sx: float, sy: float) -> list[float]:
    """Scale alternating x, y values (a box or a quad) by sx, sy."""
    return [v * (sx if i % 2 == 0 else sy) for i, v in enumerate(values)]

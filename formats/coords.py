"""Coordinates: pixel boxes and quads to the 0-999 grid, or to resized pixels.

Spec section 3, as pure functions over plain numbers. Arithmetic is exact
(integers or Fractions), so a tie such as 0.5 always rounds the same way:

    half_up: q = min(999, max(0, floor(v * 1000 / size + 0.5)))
    floor:   q = min(999, max(0, floor(v * 1000 / size)))

A box is invalid when it has fewer or more than 4 numbers, a non-finite
value, x2 <= x1 or y2 <= y1, lies wholly outside the image, or collapses to
zero width or height on the output grid. A box partly outside is clipped to
the image first. Quads (OCR, 8 numbers clockwise from top-left) follow the
same rules; each corner is clamped to the image.

Invalid input raises InvalidAnnotation (a ValueError) with a `reason` of
curation/reasons.py (`box_malformed`, `box_not_finite`, `box_empty`,
`box_outside_image`, `box_collapsed`, the same for quads, `size_unknown`,
`invalid_size`) and a detail naming the offending value; never silently fixed.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Sequence

from curation.reasons import (
    BOX_COLLAPSED,
    BOX_EMPTY,
    BOX_MALFORMED,
    BOX_NOT_FINITE,
    BOX_OUTSIDE_IMAGE,
    INVALID_SIZE,
    QUAD_COLLAPSED,
    QUAD_EMPTY,
    QUAD_MALFORMED,
    QUAD_NOT_FINITE,
    QUAD_OUTSIDE_IMAGE,
    SIZE_UNKNOWN,
)

__all__ = [
    "ROUNDINGS",
    "GRID",
    "InvalidAnnotation",
    "check_size",
    "check_rounding",
    "quantize",
    "clip_box",
    "grid_box",
    "clip_quad",
    "grid_quad",
    "box_to_quad",
    "quad_bounds",
    "box_text",
    "quad_text",
    "smart_resize",
    "image_pad_count",
    "resized_box",
    "resized_value",
    "grid_to_pixel",
    "resized_to_pixel",
]

ROUNDINGS = ("half_up", "floor")
GRID = 1000  # values live on 0..GRID-1


class InvalidAnnotation(ValueError):
    """A box, quad, span or text that a sample cannot be made from."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    return rounding


def _scaled(v: float, num: int, den: int, rounding: str) -> int:
    """floor(v * num / den + 0.5) (half_up) or floor(v * num / den), exactly."""
    if float(v).is_integer():
        iv = int(v)
        if rounding == "half_up":
            return (2 * iv * num + den) // (2 * den)
        return (iv * num) // den
    x = Fraction(v) * num / den
    return math.floor(x + Fraction(1, 2)) if rounding == "half_up" else math.floor(x)


def quantize(v: float, size: int, rounding: str = "half_up") -> int:
    """One pixel value to the 0-999 grid, `size` = width for x, height for y."""
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    q = _scaled(v, GRID, size, rounding)
    return GRID - 1 if q > GRID - 1 else (0 if q < 0 else q)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + "]"


# (malformed, not finite) reasons of each kind of geometry
_SHAPE_REASONS = {"box": (BOX_MALFORMED, BOX_NOT_FINITE), "quad": (QUAD_MALFORMED, QUAD_NOT_FINITE)}


def _finite(values: Sequence, n: int, what: str) -> list[float]:
    malformed, not_finite = _SHAPE_REASONS[what]
    if values is None or len(values) != n:
        raise InvalidAnnotation(malformed, f"{what} {values!r} must have {n} numbers")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InvalidAnnotation(malformed, f"{what} {values!r} holds a non-number") from None
    if not all(math.isfinite(v) for v in out):
        raise InvalidAnnotation(not_finite, f"{what} {_fmt(out)} has a non-finite value")
    return out


def check_size(width: int | None, height: int | None) -> None:
    """InvalidAnnotation unless both sides are known (`size_unknown`) and positive (`invalid_size`)."""
    if width is None or height is None:
        raise InvalidAnnotation(SIZE_UNKNOWN, f"image size {width}x{height} is not known")
    if width <= 0 or height <= 0:
        raise InvalidAnnotation(INVALID_SIZE, f"image size {width}x{height} is not positive")


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Validate a pixel box and clip it to the image (spec section 3)."""
    check_size(width, height)
    x1, y1, x2, y2 = _finite(box, 4, "box")
    if x2 <= x1 or y2 <= y1:
        side = "x2 <= x1" if x2 <= x1 else "y2 <= y1"
        raise InvalidAnnotation(BOX_EMPTY, f"box {_fmt([x1, y1, x2, y2])}: {side}")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise InvalidAnnotation(BOX_OUTSIDE_IMAGE, f"box {_fmt([x1, y1, x2, y2])} lies outside the {width}x{height} image")
    return max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)


def grid_box(box: Sequence[float], width: int, height: int, rounding: str = "half_up") -> tuple[int, int, int, int]:
    """A pixel box as 0-999 grid values (x1, y1, x2, y2), clipped first."""
    x1, y1, x2, y2 = clip_box(box, width, height)
    q = (
        quantize(x1, width, rounding),
        quantize(y1, height, rounding),
        quantize(x2, width, rounding),
        quantize(y2, height, rounding),
    )
    if q[2] <= q[0] or q[3] <= q[1]:
        raise InvalidAnnotation(BOX_COLLAPSED, f"box {_fmt(list(box))} collapses to {q} on the 0-999 grid")
    return q


def _area2(pts: Sequence[float]) -> float:
    """Twice the signed area of a polygon given as x1, y1, x2, y2, ..."""
    n = len(pts) // 2
    return sum(pts[2 * i] * pts[2 * ((i + 1) % n) + 1] - pts[2 * ((i + 1) % n)] * pts[2 * i + 1] for i in range(n))


def clip_quad(quad: Sequence[float], width: int, height: int) -> list[float]:
    """Validate an 8-number quad and clamp its corners to the image."""
    check_size(width, height)
    q = _finite(quad, 8, "quad")
    xs, ys = q[0::2], q[1::2]
    if max(xs) <= 0 or max(ys) <= 0 or min(xs) >= width or min(ys) >= height:
        raise InvalidAnnotation(QUAD_OUTSIDE_IMAGE, f"quad {_fmt(q)} lies outside the {width}x{height} image")
    out = []
    for x, y in zip(xs, ys):
        out += [min(float(width), max(0.0, x)), min(float(height), max(0.0, y))]
    if _area2(out) == 0:
        raise InvalidAnnotation(QUAD_EMPTY, f"quad {_fmt(q)} has zero area")
    return out


def grid_quad(quad: Sequence[float], width: int, height: int, rounding: str = "half_up") -> tuple[int, ...]:
    """A pixel quad as eight 0-999 grid values, corners clamped first."""
    c = clip_quad(quad, width, height)
    g = tuple(quantize(v, width if i % 2 == 0 else height, rounding) for i, v in enumerate(c))
    if _area2(g) == 0:
        raise InvalidAnnotation(QUAD_COLLAPSED, f"quad {_fmt(list(quad))} collapses to {g} on the 0-999 grid")
    return g


def box_to_quad(box: Sequence[float]) -> list[float]:
    """Axis-aligned box to its four corners clockwise from top-left."""
    x1, y1, x2, y2 = box
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def quad_bounds(quad: Sequence[float]) -> list[float]:
    """The axis-aligned box around a quad."""
    xs, ys = quad[0::2], quad[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def box_text(q: Sequence[int]) -> str:
    """`(x1,y1),(x2,y2)`: no spaces, no leading zeros."""
    return f"({q[0]},{q[1]}),({q[2]},{q[3]})"


def quad_text(q: Sequence[int]) -> str:
    return f"({q[0]},{q[1]}),({q[2]},{q[3]}),({q[4]},{q[5]}),({q[6]},{q[7]})"


# --- Qwen2-VL / Qwen2.5-VL ------------------------------------------------------

# Same arithmetic as qwen_vl_utils.vision_process (which imports torch; this does not).
MAX_RATIO = 200


def _round_by(n: float, f: int) -> int:
    return round(n / f) * f


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 4 * 28 * 28, max_pixels: int = 16384 * 28 * 28
) -> tuple[int, int]:
    """(H', W'): both divisible by `factor`, pixels within [min_pixels, max_pixels], aspect kept."""
    return _smart_resize(height, width, factor, min_pixels, max_pixels)


@functools.lru_cache(maxsize=4096)
def _smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels {max_pixels} is below min_pixels {min_pixels}")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio must be at most {MAX_RATIO}, got {max(height, width) / min(height, width)}")
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_pad_count(height: int, width: int, factor: int = 28, **limits: int) -> int:
    """How many `<|image_pad|>` one image becomes: (H'/28) * (W'/28)."""
    h, w = smart_resize(height, width, factor, **limits)
    return (h // factor) * (w // factor)


def resized_value(v: float, size: int, resized: int, rounding: str = "half_up") -> int:
    """Qwen2.5-VL: round(v * resized / size) clamped to [0, resized - 1]."""
    q = _scaled(v, resized, size, rounding)
    return resized - 1 if q > resized - 1 else (0 if q < 0 else q)


def resized_box(
    box: Sequence[float], width: int, height: int, resized_hw: tuple[int, int], rounding: str = "half_up"
) -> tuple[int, int, int, int]:
    """A pixel box in absolute pixels of the resized (H', W') image, clipped first."""
    rh, rw = resized_hw
    x1, y1, x2, y2 = clip_box(box, width, height)
    q = (
        resized_value(x1, width, rw, rounding),
        resized_value(y1, height, rh, rounding),
        resized_value(x2, width, rw, rounding),
        resized_value(y2, height, rh, rounding),
    )
    if q[2] <= q[0] or q[3] <= q[1]:
        raise InvalidAnnotation(BOX_COLLAPSED, f"box {_fmt(list(box))} collapses to {q} on the {rw}x{rh} resized image")
    return q


# --- back from the text to pixels (what `curate report` draws) --------------------


def grid_to_pixel(q: int, size: int) -> float:
    """A 0-999 grid value back in pixels of a side of `size`: q * size / 1000 (within one grid cell of the input)."""
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    return q * size / GRID


def resized_to_pixel(q: int, size: int, resized: int) -> float:
    """A Qwen2.5-VL value in pixels of the resized side back in pixels of the stored side: q * size / resized."""
    if size <= 0 or resized <= 0:
        raise ValueError(f"image sizes must be positive, got {size} and {resized}")
    return q * size / resized

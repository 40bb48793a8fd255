"""Coordinates (spec section 3): grid values, rounding, clipping, invalid boxes, smart_resize."""

import math

import pytest

from formats.coords import (
    InvalidAnnotation,
    box_text,
    box_to_quad,
    grid_box,
    grid_quad,
    image_pad_count,
    quad_text,
    quantize,
    resized_box,
    smart_resize,
)


@pytest.mark.parametrize(
    "v,size,half_up,floor",
    [
        # spec section 7 worked examples
        (100, 640, 156, 156),  # 156.25
        (50, 480, 104, 104),  # 104.17
        (300, 640, 469, 468),  # 468.75
        (400, 480, 833, 833),  # 833.33
        (512, 1024, 500, 500),
        (1024, 1024, 999, 999),  # 1000 -> clamped to 999
        (768, 768, 999, 999),
        # ties: exactly .5 rounds up, never to even
        (1, 2000, 1, 0),  # 0.5
        (3, 2000, 2, 1),  # 1.5
        (5, 2000, 3, 2),  # 2.5
        (0.5, 1000, 1, 0),  # 0.5 from a float pixel
        (2.5, 1000, 3, 2),
        (0.0004, 1, 0, 0),  # 0.4
        (0.0005, 1, 1, 0),  # 0.5 exactly in rationals, above in binary
        (0, 640, 0, 0),
        (639.9, 640, 999, 999),
    ],
)
def test_quantize(v, size, half_up, floor):
    assert quantize(v, size) == half_up
    assert quantize(v, size, "half_up") == half_up
    assert quantize(v, size, "floor") == floor


def test_quantize_matches_the_spec_formula_on_integers():
    for size in (7, 480, 640, 1023):
        for v in range(size + 1):
            expected = min(999, max(0, math.floor(v * 1000 / size + 0.5)))
            exact = min(999, (2000 * v + size) // (2 * size))
            assert quantize(v, size) == exact
            # the float formula agrees except where float error crosses a tie
            assert abs(quantize(v, size) - expected) <= (0 if (2000 * v) % (2 * size) != size else 1)


@pytest.mark.parametrize(
    "box,w,h,expected",
    [
        ([100, 50, 300, 400], 640, 480, (156, 104, 469, 833)),  # spec section 7
        ([512, 384, 1024, 768], 1024, 768, (500, 500, 999, 999)),  # spec section 7
        ([-20, -10, 320, 240], 640, 480, (0, 0, 500, 500)),  # clipped at the top-left
        ([320, 240, 700, 900], 640, 480, (500, 500, 999, 999)),  # clipped at the bottom-right
        ([0, 0, 640, 480], 640, 480, (0, 0, 999, 999)),
        ([10.25, 20.75, 30.5, 40.0], 100, 100, (103, 208, 305, 400)),
    ],
)
def test_grid_box(box, w, h, expected):
    assert grid_box(box, w, h) == expected


def test_grid_box_floor():
    assert grid_box([100, 50, 300, 400], 640, 480, "floor") == (156, 104, 468, 833)


@pytest.mark.parametrize(
    "box,reason,detail",
    [
        ([5, 5, 3, 3], "box_empty", "box [5, 5, 3, 3]: x2 <= x1"),
        ([5, 5, 5, 9], "box_empty", "box [5, 5, 5, 9]: x2 <= x1"),
        ([1, 9, 5, 9], "box_empty", "box [1, 9, 5, 9]: y2 <= y1"),
        ([700, 10, 800, 20], "box_outside_image", "box [700, 10, 800, 20] lies outside the 640x480 image"),
        ([-50, -50, 0, 10], "box_outside_image", "box [-50, -50, 0, 10] lies outside the 640x480 image"),
        ([1, 2, float("nan"), 4], "box_not_finite", "box [1, 2, nan, 4] has a non-finite value"),
        ([1, 2, float("inf"), 4], "box_not_finite", "box [1, 2, inf, 4] has a non-finite value"),
        ([1, 2, 3], "box_malformed", "box [1, 2, 3] must have 4 numbers"),
        ([1, 2, "x", 4], "box_malformed", "box [1, 2, 'x', 4] holds a non-number"),
        ([100, 100, 100.1, 200], "box_collapsed", "box [100, 100, 100.1, 200] collapses to (156, 208, 156, 417) on the 0-999 grid"),
    ],
)
def test_invalid_boxes_are_rejected_with_the_value(box, reason, detail):
    """The reasons are those of the ingest checks (curation/importers/boxes.py), plus the grid's own."""
    with pytest.raises(InvalidAnnotation) as e:
        grid_box(box, 640, 480)
    assert e.value.reason == reason
    assert e.value.detail == detail
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("w, h, reason", [(None, 480, "size_unknown"), (640, None, "size_unknown"), (0, 480, "invalid_size"), (640, -1, "invalid_size")])
def test_unknown_or_invalid_size(w, h, reason):
    with pytest.raises(InvalidAnnotation) as e:
        grid_box([1, 2, 3, 4], w, h)
    assert e.value.reason == reason


def test_box_and_quad_strings():
    assert box_text((156, 104, 469, 833)) == "(156,104),(469,833)"
    assert box_text((0, 7, 10, 999)) == "(0,7),(10,999)"
    assert box_to_quad([1, 2, 3, 4]) == [1, 2, 3, 2, 3, 4, 1, 4]
    assert quad_text((1, 2, 3, 2, 3, 4, 1, 4)) == "(1,2),(3,2),(3,4),(1,4)"


@pytest.mark.parametrize(
    "quad,expected",
    [
        ([100, 50, 300, 50, 300, 400, 100, 400], (156, 104, 469, 104, 469, 833, 156, 833)),
        ([-10, 0, 320, 0, 320, 240, -10, 240], (0, 0, 500, 0, 500, 500, 0, 500)),  # clamped
    ],
)
def test_grid_quad(quad, expected):
    assert grid_quad(quad, 640, 480) == expected


@pytest.mark.parametrize(
    "quad,detail,reason",
    [
        ([1, 1, 5, 1, 5, 1, 1, 1], "zero area", "quad_empty"),
        ([700, 0, 800, 0, 800, 10, 700, 10], "outside", "quad_outside_image"),
        ([1, 2, 3, 4], "8 numbers", "quad_malformed"),
        ([0, 0, 1, 0, 1, float("nan"), 0, 1], "non-finite", "quad_not_finite"),
        ([0, 0, 0.1, 0, 0.1, 0.1, 0, 0.1], "collapses", "quad_collapsed"),
    ],
)
def test_invalid_quads(quad, detail, reason):
    with pytest.raises(InvalidAnnotation, match=detail) as e:
        grid_quad(quad, 640, 480)
    assert e.value.reason == reason


SIZES = [(480, 640), (768, 1024), (28, 28), (10, 10), (1, 150), (4000, 3000), (20000, 300), (333, 777), (15, 3000), (5000, 5000)]


@pytest.mark.parametrize("h,w", SIZES)
def test_smart_resize_matches_qwen_vl_utils(h, w):
    from qwen_vl_utils.vision_process import smart_resize as reference

    assert smart_resize(h, w) == reference(h, w, factor=28, min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)
    assert smart_resize(h, w, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28) == reference(
        h, w, factor=28, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28
    )
    rh, rw = smart_resize(h, w)
    assert image_pad_count(h, w) == (rh // 28) * (rw // 28)


def test_smart_resize_rejects_extreme_ratio():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 300)


def test_resized_box_qwen25():
    # 640x480 -> smart_resize (476, 644); x: v * 644 / 640, y: v * 476 / 480, clamped to W'-1, H'-1
    assert smart_resize(480, 640) == (476, 644)
    assert resized_box([100, 50, 300, 400], 640, 480, (476, 644)) == (101, 50, 302, 397)
    assert resized_box([0, 0, 640, 480], 640, 480, (476, 644)) == (0, 0, 643, 475)

import math

import pytest

from curation.importers.boxes import MAX_SIDE, box_problem, box_to_quad, normalised_to_pixels, quad_problem, scale_boxes, size_problem, xywh_to_xyxy


@pytest.mark.parametrize(
    "xywh, xyxy",
    [
        ((421, 57, 82, 139), [421.0, 57.0, 503.0, 196.0]),
        ((102.49, 118.47, 7.9, 17.31), [102.49, 118.47, 102.49 + 7.9, 118.47 + 17.31]),
        ((-2, 0, 10, 5), [-2.0, 0.0, 8.0, 5.0]),
        (("1", 0, 1, 1), None),
        ((None, 0, 1, 1), None),
        ((True, 0, 1, 1), None),
    ],
)
def test_xywh_to_xyxy(xywh, xyxy):
    assert xywh_to_xyxy(*xywh) == xyxy


@pytest.mark.parametrize(
    "box, frame, reason",
    [
        ([10, 10, 20, 20], (100, 100), None),
        ([-5, -5, 20, 20], (100, 100), None),  # partly outside: kept, the formats stage clips
        ([90, 90, 120, 130], (100, 100), None),
        ([10, 10, 10, 20], (100, 100), "box_empty"),
        ([10, 20, 30, 5], (100, 100), "box_empty"),
        ([100, 10, 120, 20], (100, 100), "box_outside_image"),
        ([-30, 10, 0, 20], (100, 100), "box_outside_image"),
        ([10, 100, 20, 120], (100, 100), "box_outside_image"),
        ([10, 10, math.inf, 20], (100, 100), "box_not_finite"),
        ([math.nan, 10, 20, 20], (100, 100), "box_not_finite"),
        ([1, 2, 3], (100, 100), "box_malformed"),
        ([1, 2, "3", 4], (100, 100), "box_malformed"),
        ([500, 500, 600, 600], (None, None), None),  # no frame yet: the outside check waits for the image
    ],
)
def test_box_problem(box, frame, reason):
    assert box_problem(box, *frame) == reason


@pytest.mark.parametrize(
    "quad, reason",
    [
        ([0, 0, 10, 0, 10, 5, 0, 5], None),
        ([0, 0, 0, 0, 0, 0, 0, 0], "quad_empty"),
        ([200, 0, 210, 0, 210, 5, 200, 5], "quad_outside_image"),
        ([0, 0, 10, 0, 10, math.nan, 0, 5], "quad_not_finite"),
        ([0, 0, 10, 0], "quad_malformed"),
    ],
)
def test_quad_problem(quad, reason):
    assert quad_problem(quad, 100, 100) == reason


def test_box_to_quad_is_clockwise_from_top_left():
    assert box_to_quad([1, 2, 3, 4]) == [1, 2, 3, 2, 3, 4, 1, 4]


def test_normalised_to_pixels_and_scale():
    assert normalised_to_pixels([0.25, 0.5, 0.75, 1.0], 640, 480) == [160.0, 240.0, 480.0, 480.0]
    assert scale_boxes([10, 20, 30, 40], 2.0, 0.5) == [20.0, 10.0, 60.0, 20.0]


@pytest.mark.parametrize(
    "width, height, problem",
    [
        (640, 480, None),
        (640.0, 480, None),  # a whole float is a size
        (None, None, None),  # unknown, not invalid
        (640, None, None),
        (1, MAX_SIDE, None),
        (-640, 480, "width -640 is not positive"),
        (0, 0, "width 0 is not positive"),
        (640, 0, "height 0 is not positive"),
        (2.5, 480, "width 2.5 is not a whole number"),
        ("640", 480, "width '640' is not a number"),
        (True, 480, "width True is not a number"),
        (1e30, 480, "width 1e+30 is larger than 2147483647"),
        (MAX_SIDE + 1, 480, "width 2147483648 is larger than 2147483647"),
        (float("nan"), 480, "width nan is not finite"),
        (640, float("inf"), "height inf is not finite"),
    ],
)
def test_size_problem(width, height, problem):
    assert size_problem(width, height) == problem

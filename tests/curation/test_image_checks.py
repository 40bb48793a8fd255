"""curation.images: the one pixel limit and the one full-decode check."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from curation.images import DEFAULT_MAX_PIXELS, ImageRejected, decoded_size


def _encode(fmt, w=320, h=240, **kw):
    arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)  # noise: every byte carries pixels
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rejected(data, **kw):
    with pytest.raises(ImageRejected) as info:
        decoded_size(data, **kw)
    return info.value


def test_one_pixel_limit_everywhere():
    import curation.crawl.download
    import curation.importers.images

    assert DEFAULT_MAX_PIXELS == 89_478_485
    assert curation.crawl.download.DEFAULT_MAX_PIXELS is DEFAULT_MAX_PIXELS
    assert curation.importers.images.LoadImages().max_pixels == DEFAULT_MAX_PIXELS
    assert curation.crawl.download.FromImg2dataset("t").max_pixels == DEFAULT_MAX_PIXELS


@pytest.mark.parametrize(
    "fmt, kw, reason",
    [
        ("JPEG", {"quality": 90}, "image_truncated"),
        ("JPEG", {"quality": 90, "progressive": True}, "image_truncated"),
        ("PNG", {}, "image_truncated"),
        ("WEBP", {}, "not_an_image"),  # libwebp refuses a cut file outright: "could not create decoder object"
    ],
)
def test_whole_images_pass_and_cut_ones_are_rejected(fmt, kw, reason):
    data = _encode(fmt, **kw)
    assert decoded_size(data) == (320, 240)
    exc = _rejected(data[: len(data) * 6 // 10])
    assert exc.reason == reason, exc.detail


def test_a_jpeg_without_its_last_bytes_is_truncated():
    data = _encode("JPEG", quality=90)
    assert _rejected(data[:-200]).reason == "image_truncated"


@pytest.mark.parametrize("data", [b"", b"<html><body>not found</body></html>", b"\x00" * 100])
def test_not_an_image(data):
    exc = _rejected(data)
    assert exc.reason == "not_an_image" and "no known image format" in exc.detail


def test_too_many_pixels_is_refused_from_the_header():
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, format="PNG", optimize=True)  # 400 megapixels in a small file
    exc = _rejected(buf.getvalue())
    assert exc.reason == "image_too_large"
    exc = _rejected(_encode("PNG", 100, 100), max_pixels=9_999)
    assert exc.reason == "image_too_large" and "100x100 = 10000 pixels > limit 9999" in exc.detail


def test_pil_settings_are_set_for_the_check_and_restored():
    data = _encode("JPEG", quality=90)
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = 123, True  # someone else's choice
        assert _rejected(data[: len(data) * 6 // 10]).reason == "image_truncated"  # refused all the same
        assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (123, True)
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def test_max_pixels_must_be_positive():
    with pytest.raises(ValueError, match="max_pixels must be positive, got 0"):
        decoded_size(b"", max_pixels=0)

"""The image checks every entry point shares: one pixel limit, one full-decode check.

An image enters the flow in two places, the ingest image stage
(`curation.importers.images.LoadImages`) and the download loop
(`curation.crawl.download.Img2datasetReader`, in place of img2dataset's OpenCV
decode; `FromImg2dataset` for rows it did not check). Both call `decoded_size`, which

- reads the header and refuses more than `max_pixels` pixels before any pixel
  is decoded (decompression bombs),
- decodes the whole image, so that a truncated or corrupt file is caught where
  it enters instead of in the CLIP stage or in training. A JPEG is decoded at
  1/8 scale (`Image.draft`): libjpeg still reads the whole entropy-coded
  stream, so truncation is found, at a fraction of the memory and time. Other
  formats are decoded fully (under the pixel limit).

PIL's process-wide settings (`Image.MAX_IMAGE_PIXELS`,
`ImageFile.LOAD_TRUNCATED_IMAGES`, which must be off for truncation to raise)
are set for the check and restored after it.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
import zlib
from typing import Iterator

from curation.reasons import IMAGE_TOO_LARGE, IMAGE_TRUNCATED, NOT_AN_IMAGE

__all__ = ["DEFAULT_MAX_PIXELS", "ImageRejected", "decoded_size", "pil_limits"]

# The largest image accepted anywhere, in pixels: PIL's own default limit
# (Image.MAX_IMAGE_PIXELS, about 89 megapixels, 1024 * 1024 * 1024 // 4 // 3).
DEFAULT_MAX_PIXELS = 89_478_485

# What PIL's decoders raise on bad data (PIL turns most decoder errors into OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ImageRejected(ValueError):
    """An image that cannot enter the flow: `reason` (curation.reasons) and `detail`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@contextlib.contextmanager
def pil_limits(max_pixels: int) -> Iterator[None]:
    """PIL's pixel limit set to `max_pixels` and truncated images refused, restored on exit."""
    from PIL import Image, ImageFile

    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = int(max_pixels), False
    try:
        with warnings.catch_warnings():
            # between the limit and twice it PIL only warns; the check below refuses those itself
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _decode_reason(message: str) -> str:
    """PIL says "truncated" when the data ends early (in the header or in the pixels)."""
    return IMAGE_TRUNCATED if "truncated" in message.lower() else NOT_AN_IMAGE


def decoded_size(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image that decodes completely; ImageRejected otherwise.

    Reasons: `image_too_large` (over `max_pixels`, checked from the header
    before decoding), `not_an_image` (no known format, or corrupt data),
    `image_truncated` (the data ends early).
    """
    from PIL import Image, UnidentifiedImageError

    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    with pil_limits(max_pixels):
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageRejected(NOT_AN_IMAGE, f"no known image format in {len(data)} bytes starting {bytes(data[:16])!r}") from None
        except Image.DecompressionBombError as exc:
            raise ImageRejected(IMAGE_TOO_LARGE, f"{_first_line(exc)} (limit {max_pixels} pixels)") from None
        except _DECODE_ERRORS as exc:
            message = _first_line(exc)
            raise ImageRejected(_decode_reason(message), message) from None
        with im:
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageRejected(NOT_AN_IMAGE, f"{im.format} header says {w}x{h}")
            if w * h > max_pixels:
                raise ImageRejected(IMAGE_TOO_LARGE, f"{w}x{h} = {w * h} pixels > limit {max_pixels}")
            try:
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                im.load()
            except _DECODE_ERRORS as exc:
                message = _first_line(exc)
                raise ImageRejected(_decode_reason(message), f"{im.format} {w}x{h}: {message}") from None
    return w, h

"""Crop hash: a second 64-bit perceptual signal beside pHash, for copies with added borders (and a little more).

Construction (`crop_hashes(image) -> [h]`, one signed int64 per image, CROP_VARIANTS = 1):

1. grey; `content_box`: trim near-uniform lines at each edge: a line is border when >= 97% of its pixels lie
   within 4 grey levels of the median of the outermost line; at most 25% per side; past a border, 0.8% of the
   side (JPEG ringing) is skipped to look for a second flat band (a flat sky behind a pad), taken only if found;
   top/bottom first, then left/right on what is left, repeated up to 3 passes;
2. the centre 90% (width and height) of that box, resized to 32 x 32 (Lanczos, PIL's `box=`, no copy);
3. mean removed, 2-D DCT-II (the pHash matrix), the low 8 x 8 block; bit = coefficient > 0 (signs of the 63
   AC terms; bit 0, the DC place, is the sign of the sum of the two lowest AC terms), row by row, first bit
   highest. Sign bits, unlike pHash's median, give odd distances too, so t = 1, 2, 3 all differ.

Match rule: two records are copies when pHash <= 4 OR crop hash <= CROP_MAX_DISTANCE = 2. At t = 2 the
multi-index grouping needs C(4, 2) = 6 key rows per record beside pHash's 17: (17 + 6) / 17 = 1.35x.
Cost: 1.98 ms per image on the decoded image (pHash: 1.16 ms; one core; JPEG draft-decoded as phash64 does).

Measured (`bench/bench_copies.py --scenes 1000`, bench/results/copies.json): 1,000 synthetic photo-like
scenes of 5 generators (`curation.dedup.copies`), each with an original, a copy of each kind, and a similar
scene (same generator, other seed): 7,000 records, all 24,496,500 pairs checked for false merges.

                                    reencode  resize  crop   pad    rotate  false merges  min cross-scene
    pHash <= 4 (alone)               1.000    1.000   0.258  0.026  0.253       0             8
    crop hash <= 2 (alone)           0.972    0.971   0.045  0.951  0.115       0             7
    pHash <= 4 OR crop hash <= 2     1.000    1.000   0.285  0.951  0.324       0             -

So it fixes added borders (0.026 -> 0.951) at a margin of 5 bits (the nearest cross-scene pair is at 7),
and does NOT reach 0.95 on crops (1-5% a side, off-centre) or 1-3 degree rotations. Neither did any other
candidate measured within the grouping budget; what came closest at 0 false merges (combined figures):

    centre regions 100/93/86% of the trimmed box, median bits, 3 variants, t = 4: crop 0.882, rotate 0.749,
        pad 0.980 (45 key rows: 3.65x pHash's grouping; at t = 6 crop 0.964 / rotate 0.919 but 6 false merges)
    2 variants (96/88%), t = 4: crop 0.769, rotate 0.660 (30 rows, 2.76x)
    this hash at t = 6: crop 0.540, rotate 0.664, pad 0.977, 0 false merges (28 rows, 2.65x)
    imagehash.crop_resistant_hash (segments' dHashes as variants): false merges already at t = 0, 250 ms/image
    a Fourier-Mellin (log-polar |FFT|) hash, SimHash of the low DCT, a 16 x 16 DCT, PDQ-like 256 bits: worse

The crops and rotations miss because the hash has no alignment: a 1% / 5% crop shifts and scales the frame
by a few per cent, which flips ~6-12 of the 64 low-frequency bits, while distinct scenes of one generator
come as close as 6-8 bits. Synthetic scenes share more layout than photographs do: measure your own data.
"""

from __future__ import annotations

import numpy as np

from filters.phash import _DCT

__all__ = ["CROP_MAX_DISTANCE", "CROP_VARIANTS", "content_box", "crop_hashes"]

CROP_MAX_DISTANCE = 2
CROP_VARIANTS = 1
_SCALE = 0.90  # the centre region hashed: 90% of the content box's width and height
_SIDE = 32
_LOW = 8
_TOL = 4.0  # grey levels: a border pixel lies within this of the border colour
_MAX_TRIM = 0.25  # never trim more than this share of a side
_SLACK = 0.008  # share of a side skipped past a border (JPEG ringing) when looking for a second flat band


def _leading(lines: np.ndarray, frac: float, limit: int | None = None) -> int:
    """How many leading lines (rows of `lines`) are border: >= frac of their pixels within _TOL of line 0's
    median. Past a border, a few lines (JPEG ringing) are skipped to look for a second, flat band of the content
    (a flat sky behind a pad): when there is one it goes too, else the ringing lines stay."""
    if limit is None:
        limit = int(len(lines) * _MAX_TRIM)
    if limit <= 0:
        return 0
    ref = np.median(lines[0])
    near = (np.abs(lines[:limit] - ref) <= _TOL).mean(axis=1) >= frac
    bad = np.flatnonzero(~near)
    n = int(bad[0]) if len(bad) else limit
    if n == 0 or n >= limit:
        return n
    skip = n + int(np.ceil(_SLACK * len(lines)))
    if skip >= limit:
        return n
    more = _leading(lines[skip:], frac, limit - skip)
    return skip + more if more else n


def content_box(grey, frac: float = 0.97, passes: int = 3) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the image without near-uniform borders (a pad, a fill), in pixels of `grey`."""
    a = np.asarray(grey if grey.mode == "L" else grey.convert("L"), dtype=np.float32)
    x0 = y0 = 0
    for _ in range(passes):
        l, t, r, b = _trim_once(a, frac)
        if (l, t, r, b) == (0, 0, a.shape[1], a.shape[0]):
            break
        a = a[t:b, l:r]
        x0, y0 = x0 + l, y0 + t
    return (float(x0), float(y0), float(x0 + a.shape[1]), float(y0 + a.shape[0]))


def _trim_once(a: np.ndarray, frac: float) -> tuple[int, int, int, int]:
    h, w = a.shape
    top = _leading(a, frac)
    bottom = h - _leading(a[::-1], frac)
    if bottom - top < 8:
        return (0, 0, w, h)
    mid = a[top:bottom]
    left = _leading(mid.T, frac)
    right = w - _leading(mid.T[::-1], frac)
    if right - left < 8:
        return (0, 0, w, h)
    return (left, top, right, bottom)


def _bits(c: np.ndarray) -> int:
    value = 0
    for b in c.ravel():
        value = (value << 1) | int(b)
    return value - (1 << 64) if value >= 1 << 63 else value


def crop_hashes(image) -> list[int]:
    """The crop hash of a PIL image: one signed int64 (the list has CROP_VARIANTS = 1 entry; see the module doc)."""
    from PIL import Image

    g = image if image.mode == "L" else image.convert("L")
    x0, y0, x1, y1 = content_box(g)
    dx, dy = (x1 - x0) * (1 - _SCALE) / 2, (y1 - y0) * (1 - _SCALE) / 2
    px = np.asarray(g.resize((_SIDE, _SIDE), Image.Resampling.LANCZOS, box=(x0 + dx, y0 + dy, x1 - dx, y1 - dy)),
                    dtype=np.float64)
    c = (_DCT @ (px - px.mean()) @ _DCT.T)[:_LOW, :_LOW].ravel()
    c[0] = c[1] + c[_LOW]  # the DC term is ~0 after the mean: bit 0 is the sign of the two lowest AC terms' sum
    return [_bits(c > 0)]

"""Photo-like synthetic scenes and their web copies, for measuring perceptual dedup (numpy + PIL only).

Everything here is deterministic from integer seeds: the same seed gives the same
pixels and the same bytes on every run (no global random state is touched).

Scenes (`scene(seed)`): five generators, picked by `seed % 5` unless named, each
with textures, gradients and shapes at several scales (multi-octave value noise
everywhere, never a flat colour card), sizes from 320 x 240 to 640 x 480 in
landscape and portrait:

    landscape   sky gradient + clouds, 2-4 noisy hill layers, a sun, textured ground, trees
    interior    a room in perspective: textured back wall, side walls, floor boards, a window,
                furniture blocks with shading
    stilllife   shaded ellipses / polygons of several sizes on a gradient backdrop, with shadows
    clouds      fractal (domain-warped) noise through a random colour map
    city        a skyline of many buildings with window grids lit at random, a road

"Similar but distinct" = the same generator with another seed (same kind of
composition and palette ranges, different everything).

Copies (each `fn(img, seed) -> bytes`, the way a web copy would be stored,
mostly JPEG quality 75-95, sometimes PNG):

    reencode   JPEG at quality 40-90
    resize     50-95% of each side (Lanczos / bicubic / bilinear), then encoded
    crop       1-5% off each side, drawn independently per side (so off-centre, e.g. 1% left and 5% right)
    pad        a border of 2-10% of the side, on all sides or only some (1-3 of them), in a solid colour:
               white, black, grey or a random RGB colour
    rotate     1-3 degrees either way, in one of two realistic ways (`rotate_mode`):
               "fill": rotated on an expanded canvas, the corners filled in a solid colour (black/white/random);
               "crop": rotated, then cropped to the largest centred axis-aligned rectangle without corners
               (what a photo editor's straighten tool does)

`benchmark_set(n_scenes, seed)` gives per scene an original (JPEG quality 95), one
copy of each kind and one "similar" image: a distinct scene (its own scene id) of
the same generator, which must never be merged with the original.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "GENERATORS",
    "COPY_KINDS",
    "KINDS",
    "Record",
    "scene",
    "reencode",
    "resize",
    "crop",
    "pad",
    "rotate",
    "COPIES",
    "benchmark_set",
]

GENERATORS = ("landscape", "interior", "stilllife", "clouds", "city")
COPY_KINDS = ("reencode", "resize", "crop", "pad", "rotate")
KINDS = ("original",) + COPY_KINDS + ("similar",)

_SIZES = [(320, 240), (400, 300), (480, 360), (512, 384), (560, 420), (640, 480), (600, 400), (500, 500),
          (240, 320), (300, 400), (360, 480), (384, 512), (480, 640), (400, 600)]
_SIMILAR_OFFSET = 1_000_003  # the seed offset of the "similar" scene paired with a scene


def _rng(*seeds: int) -> np.random.Generator:
    return np.random.default_rng([int(s) & 0xFFFFFFFF for s in seeds])


# ---------------------------------------------------------------- textures


def _noise(rng, h: int, w: int, base: int = 4, octaves: int = 5, persistence: float = 0.55) -> np.ndarray:
    """Multi-octave value noise in [0, 1], shape (h, w): random grids upsampled (bicubic) and summed."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    cells = base
    for _ in range(octaves):
        gh = max(2, int(round(cells * h / max(h, w))) + 1)
        gw = max(2, int(round(cells * w / max(h, w))) + 1)
        grid = rng.random((gh, gw)).astype(np.float32)
        layer = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.Resampling.BICUBIC))
        out += amp * layer
        total += amp
        amp *= persistence
        cells *= 2
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _colour(rng, lo: int = 0, hi: int = 256) -> np.ndarray:
    return rng.integers(lo, hi, size=3).astype(np.float32)


def _lerp(a, b, t):
    t = np.asarray(t, np.float32)[..., None]
    return a * (1 - t) + b * t


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _paste_mask(canvas: np.ndarray, mask: np.ndarray, colour) -> None:
    m = mask.astype(np.float32)[..., None]
    canvas *= 1 - m
    canvas += m * colour


# ---------------------------------------------------------------- generators


def _landscape(rng, w: int, h: int) -> np.ndarray:
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    xx = np.ones((h, 1), np.float32) * np.linspace(0, 1, w, dtype=np.float32)[None, :]
    top, bottom = _colour(rng, 20, 140), _colour(rng, 120, 256)
    img = _lerp(top, bottom, yy ** rng.uniform(0.6, 1.6))
    clouds = _noise(rng, h, w, base=int(rng.integers(2, 6)), octaves=5)
    cmask = np.clip((clouds - rng.uniform(0.45, 0.7)) * 3, 0, 1) * (1 - yy) ** 0.5
    img = _lerp(img, _colour(rng, 200, 256), cmask * rng.uniform(0.5, 1.0))
    # the sun
    sx, sy, sr = rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.4), rng.uniform(0.03, 0.09)
    d = np.sqrt(((xx - sx) * w / h) ** 2 + (yy - sy) ** 2)
    img = _lerp(img, np.array([255, 240, 180], np.float32), np.clip((sr - d) / 0.01, 0, 1))
    img = _lerp(img, np.array([255, 230, 170], np.float32), np.exp(-d / (sr * 2)) * 0.35)
    # hill layers, far to near
    n_layers = int(rng.integers(2, 5))
    base_y = rng.uniform(0.35, 0.6)
    for layer in range(n_layers):
        ridge = np.full(w, base_y + layer * rng.uniform(0.06, 0.14), np.float32)
        x = np.linspace(0, 1, w, dtype=np.float32)
        for _ in range(4):
            f, ph, a = rng.uniform(1, 9), rng.uniform(0, 2 * np.pi), rng.uniform(0.01, 0.07)
            ridge += a * np.sin(2 * np.pi * f * x + ph)
        ridge += (_noise(rng, 1, w, base=16, octaves=3)[0] - 0.5) * 0.03
        mask = yy > ridge[None, :]
        tex = _noise(rng, h, w, base=int(rng.integers(8, 32)), octaves=4)
        c1, c2 = _colour(rng, 10, 160), _colour(rng, 40, 220)
        shade = _lerp(c1, c2, tex * 0.7 + (yy - ridge[None, :]).clip(0, 1) * 0.8)
        img = np.where(mask[..., None], shade, img)
    # trees: dark ellipses on the nearest layer
    pil = _to_image(img)
    dr = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(0, 12))):
        tx, ty = rng.uniform(0, w), rng.uniform(h * 0.6, h)
        tr = rng.uniform(0.01, 0.05) * w
        c = tuple(int(v) for v in _colour(rng, 0, 90))
        dr.ellipse([tx - tr, ty - 2.2 * tr, tx + tr, ty], fill=c)
        dr.rectangle([tx - tr * 0.15, ty, tx + tr * 0.15, ty + tr], fill=(60, 40, 20))
    img = np.asarray(pil, np.float32)
    grain = (_noise(rng, h, w, base=64, octaves=2) - 0.5) * rng.uniform(10, 30)
    return img + grain[..., None]


def _interior(rng, w: int, h: int) -> np.ndarray:
    pil = Image.new("RGB", (w, h))
    # vanishing box: back wall rectangle
    bx0, by0 = rng.uniform(0.2, 0.4) * w, rng.uniform(0.15, 0.35) * h
    bx1, by1 = rng.uniform(0.6, 0.8) * w, rng.uniform(0.55, 0.75) * h
    base = np.zeros((h, w, 3), np.float32)
    for poly, lo, hi in (
        ([(0, 0), (w, 0), (bx1, by0), (bx0, by0)], 150, 256),        # ceiling
        ([(0, h), (w, h), (bx1, by1), (bx0, by1)], 40, 200),         # floor
        ([(0, 0), (bx0, by0), (bx0, by1), (0, h)], 60, 230),         # left wall
        ([(w, 0), (bx1, by0), (bx1, by1), (w, h)], 60, 230),         # right wall
        ([(bx0, by0), (bx1, by0), (bx1, by1), (bx0, by1)], 80, 250),  # back wall
    ):
        m = Image.new("L", (w, h))
        ImageDraw.Draw(m).polygon(poly, fill=255)
        mask = np.asarray(m, np.float32) / 255
        tex = _noise(rng, h, w, base=int(rng.integers(4, 40)), octaves=4)
        c1, c2 = _colour(rng, lo // 2, hi), _colour(rng, lo // 2, hi)
        _paste_mask(base, mask, _lerp(c1, c2, tex))
    # floor boards: lines converging to the back wall
    pil = _to_image(base)
    dr = ImageDraw.Draw(pil)
    nb = int(rng.integers(5, 16))
    for i in range(nb + 1):
        fx = i / nb
        dr.line([(fx * w, h), (bx0 + fx * (bx1 - bx0), by1)], fill=(30, 20, 10), width=1)
    # a window on the back wall
    if rng.random() < 0.8:
        wx0 = rng.uniform(bx0, (bx0 + bx1) / 2)
        wy0 = rng.uniform(by0, (by0 + by1) / 2)
        wx1 = wx0 + rng.uniform(0.15, 0.45) * (bx1 - bx0)
        wy1 = wy0 + rng.uniform(0.2, 0.45) * (by1 - by0)
        dr.rectangle([wx0, wy0, wx1, wy1], fill=tuple(int(v) for v in _colour(rng, 150, 256)),
                     outline=(240, 240, 240), width=3)
        dr.line([((wx0 + wx1) / 2, wy0), ((wx0 + wx1) / 2, wy1)], fill=(240, 240, 240), width=2)
    # furniture: shaded blocks and a few pictures
    for _ in range(int(rng.integers(2, 7))):
        fw, fh = rng.uniform(0.08, 0.35) * w, rng.uniform(0.08, 0.3) * h
        fx, fy = rng.uniform(0, w - fw), rng.uniform(by1 - fh * 0.5, h - fh)
        c = _colour(rng, 20, 230)
        dr.rectangle([fx, fy, fx + fw, fy + fh], fill=tuple(int(v) for v in c))
        dr.rectangle([fx, fy, fx + fw, fy + fh * 0.15], fill=tuple(int(v) for v in np.minimum(c * 1.3, 255)))
    for _ in range(int(rng.integers(0, 4))):
        px, py = rng.uniform(bx0, bx1 - 20), rng.uniform(by0, by1 - 20)
        pw, ph = rng.uniform(10, 60), rng.uniform(10, 50)
        dr.rectangle([px, py, px + pw, py + ph], fill=tuple(int(v) for v in _colour(rng)), outline=(20, 15, 10), width=2)
    img = np.asarray(pil, np.float32)
    # lighting: a soft radial falloff from a lamp somewhere
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lx, ly = rng.uniform(0, w), rng.uniform(0, h * 0.5)
    light = 1.15 - 0.5 * np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2) / max(w, h)
    grain = (_noise(rng, h, w, base=80, octaves=2) - 0.5) * rng.uniform(8, 24)
    return img * light[..., None] + grain[..., None]


def _stilllife(rng, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = _colour(rng, 20, 230), _colour(rng, 20, 230)
    ang = rng.uniform(0, 2 * np.pi)
    t = ((xx / w) * np.cos(ang) + (yy / h) * np.sin(ang))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = _lerp(a, b, t * 0.7 + 0.3 * _noise(rng, h, w, base=6, octaves=4))
    table_y = rng.uniform(0.5, 0.8) * h
    tmask = yy > table_y
    tex = _noise(rng, h, w, base=int(rng.integers(10, 40)), octaves=3)
    img = np.where(tmask[..., None], _lerp(_colour(rng, 30, 200), _colour(rng, 30, 200), tex), img)
    n = int(rng.integers(4, 14))
    for _ in range(n):
        r = rng.uniform(0.03, 0.2) * min(w, h) * (1.8 if rng.random() < 0.25 else 1.0)
        cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.2, 0.95) * h
        ex = rng.uniform(0.6, 1.6)
        c = _colour(rng, 30, 256)
        # a soft shadow, then the shape shaded from a light direction
        sd = ((xx - cx - r * 0.3) / (r * ex)) ** 2 + ((yy - cy - r * 0.2) / r) ** 2
        img *= (1 - 0.35 * np.clip(1.2 - sd, 0, 1))[..., None]
        if rng.random() < 0.65:
            d = ((xx - cx) / (r * ex)) ** 2 + ((yy - cy) / r) ** 2
            mask = d < 1
            lxn, lyn = -0.5, -0.6
            shade = 0.45 + 0.75 * np.clip(1 - np.sqrt(((xx - cx) / (r * ex) - lxn * 0.6) ** 2
                                                     + ((yy - cy) / r - lyn * 0.6) ** 2), 0, 1)
            img = np.where(mask[..., None], c * shade[..., None], img)
        else:
            k = int(rng.integers(3, 7))
            phase = rng.uniform(0, 2 * np.pi)
            pts = [(cx + r * ex * np.cos(phase + 2 * np.pi * i / k), cy + r * np.sin(phase + 2 * np.pi * i / k))
                   for i in range(k)]
            m = Image.new("L", (w, h))
            ImageDraw.Draw(m).polygon(pts, fill=255)
            mask = np.asarray(m, np.float32) / 255
            shade = 0.6 + 0.5 * (1 - (yy - (cy - r)) / (2 * r)).clip(0, 1)
            _paste_mask(img, mask, c * shade[..., None])
    img = np.asarray(_to_image(img).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))), np.float32)
    grain = (_noise(rng, h, w, base=96, octaves=2) - 0.5) * rng.uniform(6, 20)
    return img + grain[..., None]


def _clouds(rng, w: int, h: int) -> np.ndarray:
    base = int(rng.integers(2, 7))
    wx = _noise(rng, h, w, base=base, octaves=3)
    wy = _noise(rng, h, w, base=base, octaves=3)
    n = _noise(rng, h, w, base=base, octaves=6, persistence=rng.uniform(0.45, 0.65))
    # domain warp: sample n at displaced positions
    yy, xx = np.mgrid[0:h, 0:w]
    amp = rng.uniform(0.03, 0.15) * max(w, h)
    sx = np.clip(xx + (wx - 0.5) * amp, 0, w - 1).astype(np.int32)
    sy = np.clip(yy + (wy - 0.5) * amp, 0, h - 1).astype(np.int32)
    v = n[sy, sx]
    v = (v - v.min()) / max(float(v.max() - v.min()), 1e-6)
    stops = np.sort(rng.random(int(rng.integers(3, 6))))
    stops[0], stops[-1] = 0.0, 1.0
    cols = [_colour(rng) for _ in stops]
    img = np.zeros((h, w, 3), np.float32)
    for i in range(len(stops) - 1):
        t = np.clip((v - stops[i]) / max(stops[i + 1] - stops[i], 1e-6), 0, 1)
        inside = (v >= stops[i]) & (v <= stops[i + 1])
        img = np.where(inside[..., None], _lerp(cols[i], cols[i + 1], t), img)
    fine = (_noise(rng, h, w, base=48, octaves=3) - 0.5) * rng.uniform(10, 40)
    return img + fine[..., None]


def _city(rng, w: int, h: int) -> np.ndarray:
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    night = rng.random() < 0.4
    top = _colour(rng, 0, 60) if night else _colour(rng, 60, 200)
    bottom = _colour(rng, 20, 120) if night else _colour(rng, 150, 256)
    img = _lerp(top, bottom, yy)
    img = _lerp(img, np.full(3, 230, np.float32), _noise(rng, h, w, base=4, octaves=4) * 0.25 * (not night))
    pil = _to_image(img)
    dr = ImageDraw.Draw(pil)
    horizon = rng.uniform(0.7, 0.9) * h
    for layer in range(int(rng.integers(2, 4))):
        x = -rng.uniform(0, 30)
        dark = 0.5 + 0.25 * layer
        while x < w:
            bw = rng.uniform(0.04, 0.16) * w
            bh = rng.uniform(0.15, 0.7) * h * (1.0 - 0.2 * layer)
            c = _colour(rng, 30, 200) * dark
            x0, y0 = x, horizon - bh
            dr.rectangle([x0, y0, x0 + bw, horizon], fill=tuple(int(v) for v in c))
            ww, wh = rng.uniform(3, 9), rng.uniform(4, 10)
            gx, gy = ww * rng.uniform(1.5, 2.5), wh * rng.uniform(1.5, 2.5)
            lit = _colour(rng, 180, 256) if night else _colour(rng, 60, 220)
            off = tuple(int(v) for v in c * 0.6)
            p_lit = rng.uniform(0.2, 0.7)
            yw = y0 + gy * 0.5
            while yw + wh < horizon - 3:
                xw = x0 + gx * 0.4
                while xw + ww < x0 + bw - 2:
                    dr.rectangle([xw, yw, xw + ww, yw + wh],
                                 fill=tuple(int(v) for v in lit) if rng.random() < p_lit else off)
                    xw += gx
                yw += gy
            x += bw + rng.uniform(-0.02, 0.03) * w
    road = tuple(int(v) for v in _colour(rng, 20, 90))
    dr.rectangle([0, horizon, w, h], fill=road)
    for i in range(int(rng.integers(4, 12))):
        lx = rng.uniform(0, w)
        dr.rectangle([lx, horizon + (h - horizon) * 0.45, lx + rng.uniform(10, 40), horizon + (h - horizon) * 0.55],
                     fill=(230, 220, 120))
    img = np.asarray(pil, np.float32)
    grain = (_noise(rng, h, w, base=64, octaves=3) - 0.5) * rng.uniform(8, 26)
    return img + grain[..., None]


_GENERATORS = {"landscape": _landscape, "interior": _interior, "stilllife": _stilllife,
               "clouds": _clouds, "city": _city}


def scene(seed: int, generator: str | None = None) -> Image.Image:
    """A photo-like RGB scene, deterministic from `seed`; the generator is `GENERATORS[seed % 5]` unless named."""
    name = generator or GENERATORS[seed % len(GENERATORS)]
    if name not in _GENERATORS:
        raise ValueError(f"unknown scene generator {name!r}; have {', '.join(GENERATORS)}")
    rng = _rng(seed, GENERATORS.index(name), 0x5CE7E)
    w, h = _SIZES[int(rng.integers(0, len(_SIZES)))]
    return _to_image(_GENERATORS[name](rng, w, h))


# ---------------------------------------------------------------- copies


def _encode(img: Image.Image, rng, jpeg_share: float = 0.8) -> bytes:
    """JPEG at quality 75-95 (most of the time) or PNG, as a web copy would be stored."""
    buf = io.BytesIO()
    if rng.random() < jpeg_share:
        img.convert("RGB").save(buf, "JPEG", quality=int(rng.integers(75, 96)))
    else:
        img.convert("RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _fill_colour(rng) -> tuple[int, int, int]:
    r = rng.random()
    if r < 0.3:
        return (255, 255, 255)
    if r < 0.55:
        return (0, 0, 0)
    if r < 0.65:
        g = int(rng.integers(100, 220))
        return (g, g, g)
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def reencode(img: Image.Image, seed: int) -> bytes:
    """The same pixels as a JPEG at quality 40-90."""
    rng = _rng(seed, 1)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=int(rng.integers(40, 91)))
    return buf.getvalue()


def resize(img: Image.Image, seed: int) -> bytes:
    """Scaled to 50-95% per side (one factor, aspect kept), Lanczos / bicubic / bilinear, then encoded."""
    rng = _rng(seed, 2)
    f = rng.uniform(0.5, 0.95)
    method = [Image.Resampling.LANCZOS, Image.Resampling.BICUBIC, Image.Resampling.BILINEAR][int(rng.integers(0, 3))]
    out = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), method)
    return _encode(out, rng)


def crop(img: Image.Image, seed: int) -> bytes:
    """1-5% cut off each side, drawn independently per side (off-centre), then encoded."""
    rng = _rng(seed, 3)
    left, right, top, bottom = rng.uniform(0.01, 0.05, size=4)
    w, h = img.size
    box = (round(left * w), round(top * h), w - round(right * w), h - round(bottom * h))
    return _encode(img.crop(box), rng)


def pad(img: Image.Image, seed: int) -> bytes:
    """A border of 2-10% of the side in a solid colour (white, black, grey or random), on all sides (half the
    time) or on 1-3 of them, then encoded."""
    rng = _rng(seed, 4)
    w, h = img.size
    sides = np.ones(4, bool)
    if rng.random() < 0.5:
        sides[:] = False
        sides[rng.choice(4, size=int(rng.integers(1, 4)), replace=False)] = True
    frac = rng.uniform(0.02, 0.10, size=4) * sides
    if rng.random() < 0.5:  # often one width for every padded side
        frac = np.where(sides, frac[np.argmax(sides)], 0.0)
    l, r = round(frac[0] * w), round(frac[1] * w)
    t, b = round(frac[2] * h), round(frac[3] * h)
    canvas = Image.new("RGB", (w + l + r, h + t + b), _fill_colour(rng))
    canvas.paste(img, (l, t))
    return _encode(canvas, rng)


def _inscribed(w: int, h: int, angle_deg: float) -> tuple[float, float]:
    """Width and height of the largest axis-aligned rectangle of the same aspect inside a w x h rectangle
    rotated by the angle (centred)."""
    a = abs(np.radians(angle_deg))
    c, s = np.cos(a), np.sin(a)
    # a scale factor k with the k*w x k*h rectangle inside: its corners within the rotated frame
    k = min(w / (w * c + h * s), h / (w * s + h * c))
    return w * k, h * k


def rotate(img: Image.Image, seed: int, mode: str | None = None) -> bytes:
    """Rotated 1-3 degrees either way (bicubic), then encoded. `mode` (drawn from the seed when None):
    "fill": on an expanded canvas, corners in a solid colour (black / white / random);
    "crop": cropped to the largest centred axis-aligned rectangle of the same aspect without corners."""
    rng = _rng(seed, 5)
    angle = rng.uniform(1.0, 3.0) * (1 if rng.random() < 0.5 else -1)
    mode = mode or ("fill" if rng.random() < 0.5 else "crop")
    if mode == "fill":
        out = img.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=_fill_colour(rng))
    elif mode == "crop":
        out = img.rotate(angle, Image.Resampling.BICUBIC, expand=False)
        cw, ch = _inscribed(img.width, img.height, angle)
        x0, y0 = (img.width - cw) / 2, (img.height - ch) / 2
        out = out.crop((int(np.ceil(x0)), int(np.ceil(y0)), int(x0 + cw), int(y0 + ch)))
    else:
        raise ValueError(f"rotate mode must be 'fill' or 'crop', got {mode!r}")
    return _encode(out, rng)


COPIES = {"reencode": reencode, "resize": resize, "crop": crop, "pad": pad, "rotate": rotate}


@dataclass(frozen=True)
class Record:
    record_id: str
    scene_id: int  # the seed of the scene shown; a "similar" record has its own
    kind: str  # one of KINDS
    image: bytes
    source: int  # the scene id this record was made for (the original's, for a similar)


def _original_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def benchmark_set(n_scenes: int = 1000, seed: int = 0) -> list[Record]:
    """Per scene: the original (JPEG q95), one copy of each kind, and a similar (other seed, same generator).

    Scene ids are `seed * 10_000_000 + i` for i < n_scenes; the similar of scene s is scene s + 1,000,003,
    drawn with s's generator (named explicitly). Each record's `source` is the scene it was made for.
    """
    out: list[Record] = []
    for i in range(n_scenes):
        sid = seed * 10_000_000 + i
        gen = GENERATORS[sid % len(GENERATORS)]
        img = scene(sid, gen)
        out.append(Record(f"s{sid}-original", sid, "original", _original_bytes(img), sid))
        for k, kind in enumerate(COPY_KINDS):
            out.append(Record(f"s{sid}-{kind}", sid, kind, COPIES[kind](img, sid * 31 + k), sid))
        other = sid + _SIMILAR_OFFSET
        out.append(Record(f"s{other}-similar", other, "similar", _original_bytes(scene(other, gen)), sid))
    return out

"""Benchmark: perceptual signals for near-copy dedup on synthetic photo-like scenes and their web copies.

    .venv/bin/python bench/bench_copies.py --scenes 1000            # the figures in filters/crophash.py
    .venv/bin/python bench/bench_copies.py --scenes 200 --signals phash,crop  # a quick look

The set (`curation.dedup.copies.benchmark_set`): per scene an original, one copy of
each kind (reencode, resize, crop, pad, rotate) and a "similar" image (same
generator, other seed, its own scene id). Generated once and cached (pickle,
`--cache`, default under /tmp).

Every image is decoded as `filters.phash.phash64` decodes it (JPEG draft to >= 256
px a side) and every signal is computed on that decoded image. A signal gives each
image one or more 64-bit hashes (variants); the distance of two records is the
smallest Hamming distance over all variant pairs. Reported per signal and
threshold t:

    recall[kind]   copies within t of their own original
    false merges   pairs of records of DIFFERENT scenes within t, over ALL pairs of the set
                   (originals, copies and similars; numpy bit counts, blocks of rows)
    min cross      the smallest cross-scene distance seen (the safety margin)
    ms/image       hashing time per image (decoded image in, hashes out; one core)

and for the combination "pHash within 4 OR the signal within t" the same figures.
Written to bench/results/copies.json.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.dedup.copies import COPY_KINDS, benchmark_set  # noqa: E402
from filters import crophash  # noqa: E402
from filters.phash import DEFAULT_MAX_DISTANCE, phash_image  # noqa: E402

PHASH_T = DEFAULT_MAX_DISTANCE
MAX_T = 16  # distances are histogrammed up to this (larger ones are lumped together)


# ---------------------------------------------------------------- candidate signals (PIL image -> list of int)

def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for b in bits.ravel():
        value = (value << 1) | int(b)
    return value - (1 << 64) if value >= 1 << 63 else value


def _dct(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_D32 = _dct(32)
_D64 = _dct(64)


def _grey(img):
    return img if img.mode == "L" else img.convert("L")


def _phash_box(grey, box, side=32, low=8):
    from PIL import Image

    px = np.asarray(grey.resize((side, side), Image.Resampling.LANCZOS, box=box), np.float64)
    d = _dct(side) if side != 32 else _D32
    c = (d @ px @ d.T)[:low, :low]
    return _bits_to_int(c > np.median(c))


def _centre(box, s):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return (x0 + w * (1 - s) / 2, y0 + h * (1 - s) / 2, x1 - w * (1 - s) / 2, y1 - h * (1 - s) / 2)


def sig_phash(img):
    return [phash_image(img)]


def sig_trim_phash(img):
    g = _grey(img)
    return [_phash_box(g, crophash.content_box(g))]


def make_centre(scales, trim=True, side=32, low=8):
    def f(img):
        g = _grey(img)
        box = crophash.content_box(g) if trim else (0, 0, g.width, g.height)
        return [_phash_box(g, _centre(box, s), side, low) for s in scales]
    return f


def make_simhash(scales, n_low=6, seed=7, weight=1.0):
    """Signs of 64 random projections of the whitened low-frequency DCT block (AC terms of n_low x n_low)."""
    rng = np.random.default_rng(seed)
    dim = n_low * n_low - 1
    planes = rng.standard_normal((64, dim))
    u, v = np.meshgrid(np.arange(n_low), np.arange(n_low), indexing="ij")
    w = ((u + v).astype(np.float64) ** weight).ravel()[1:]

    def f(img):
        from PIL import Image

        g = _grey(img)
        box = crophash.content_box(g)
        out = []
        for s in scales:
            px = np.asarray(g.resize((32, 32), Image.Resampling.LANCZOS, box=_centre(box, s)), np.float64)
            c = (_D32 @ px @ _D32.T)[:n_low, :n_low].ravel()[1:] * w
            c /= np.linalg.norm(c) + 1e-9
            out.append(_bits_to_int(planes @ c > 0))
        return out
    return f


def _logpolar_tables(n=64, nr=16, na=16, r0=2.0, r1=28.0):
    r = r0 * (r1 / r0) ** (np.arange(nr) / (nr - 1))
    a = np.pi * np.arange(na) / na
    y = (n // 2 + r[:, None] * np.sin(a)[None, :]).round().astype(int) % n
    x = (n // 2 + r[:, None] * np.cos(a)[None, :]).round().astype(int) % n
    return y, x


_LPY, _LPX = _logpolar_tables()
_HANN = np.outer(np.hanning(64), np.hanning(64))
_D16 = _dct(16)


def make_fourier_mellin(scale=0.9):
    """DCT 8 x 8 (median bits) of the log-polar resampled log-magnitude spectrum of the centre region: invariant to
    shifts, scale and rotation become shifts of the log-polar map."""
    def f(img):
        from PIL import Image

        g = _grey(img)
        px = np.asarray(g.resize((64, 64), Image.Resampling.BILINEAR, box=_centre(crophash.content_box(g), scale)),
                        np.float64)
        px = (px - px.mean()) * _HANN
        mag = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(px))))
        lp = mag[_LPY, _LPX]
        c = (_D16 @ lp @ _D16.T)[:8, :8]
        return [_bits_to_int(c > np.median(c))]
    return f


def make_sign(scales, side=32, low=8):
    """Signs of the 63 AC terms of the low 8 x 8 DCT block (bit 0: the sign of the sum of the two lowest AC terms)."""
    def f(img):
        from PIL import Image

        g = _grey(img)
        box = crophash.content_box(g)
        out = []
        for s in scales:
            px = np.asarray(g.resize((side, side), Image.Resampling.LANCZOS, box=_centre(box, s)), np.float64)
            c = (_D32 @ (px - px.mean()) @ _D32.T)[:low, :low].ravel()
            c[0] = c[1] + c[low]
            out.append(_bits_to_int(c > 0))
        return out
    return f


def sig_pdq_like(img):
    """A numpy approximation of PDQ (256 bits): 64 x 64 box-filtered grey, 16 x 16 DCT, median. 4 x 64-bit words;
    the distance over 256 bits is the sum over the 4 words (handled by the evaluation: see WORDS)."""
    from PIL import Image

    g = _grey(img)
    px = np.asarray(g.resize((64, 64), Image.Resampling.BOX), np.float64)
    c = (_D64 @ px @ _D64.T)[:16, :16]
    bits = (c > np.median(c)).ravel()
    return [_bits_to_int(bits[i * 64:(i + 1) * 64]) for i in range(4)]


def sig_crop_resistant(img):
    """imagehash.crop_resistant_hash (default: dHash 8 x 8 of each watershed segment); its segment hashes as
    variants (padded to 8 by repeating; a record with more keeps the 8 largest segments' hashes)."""
    import imagehash

    mh = imagehash.crop_resistant_hash(img, min_segment_size=500, segmentation_image_size=300, limit_segments=8)
    out = []
    for h in mh.segment_hashes[:8]:
        out.append(_bits_to_int(h.hash))
    return (out * 8)[:8] if out else [0] * 8


SIGNALS = {
    "phash": sig_phash,
    "trim_phash": sig_trim_phash,
    "centre90": make_centre([0.90]),
    "centre80": make_centre([0.80]),
    "centre_1_90": make_centre([1.0, 0.90]),
    "centre_94_86": make_centre([0.94, 0.86]),
    "centre_1_95_90": make_centre([1.0, 0.95, 0.90]),
    "low6_centre90": make_centre([0.90], side=16, low=8),
    "simhash6_90": make_simhash([0.90], 6),
    "simhash5_90": make_simhash([0.90], 5),
    "simhash6_1_90": make_simhash([1.0, 0.90], 6),
    "fourier_mellin": make_fourier_mellin(0.9),
    "centre_1_93_86": make_centre([1.0, 0.93, 0.86]),
    "centre_96_88": make_centre([0.96, 0.88]),
    "sign90": make_sign([0.9]),
    "sign_1_93_86": make_sign([1.0, 0.93, 0.86]),
    "pdq_like": sig_pdq_like,
    "crop_resistant": sig_crop_resistant,
    "crop": crophash.crop_hashes,  # the chosen signal (filters/crophash.py)
}
WORDS = {"pdq_like": 4}
SLOW = {"crop_resistant"}  # hashes that are one long hash cut in 64-bit words: distance = sum over words


# ---------------------------------------------------------------- evaluation

def decode(data: bytes):
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        im.draft("RGB", (256, 256))
    im.load()
    return im.convert("RGB")


def load_set(n: int, seed: int, cache: Path | None):
    if cache and cache.is_file():
        with cache.open("rb") as f:
            return pickle.load(f)
    t0 = time.perf_counter()
    recs = benchmark_set(n, seed)
    print(f"generated {len(recs)} records in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("wb") as f:
            pickle.dump(recs, f)
    return recs


def hashes_for(name, images):
    fn = SIGNALS[name]
    t0 = time.perf_counter()
    rows = [fn(im) for im in images]
    ms = (time.perf_counter() - t0) * 1000 / len(images)
    return np.array(rows, dtype=np.int64).view(np.uint64), ms


def pair_distances(a: np.ndarray, b: np.ndarray, words: int = 1) -> np.ndarray:
    """Min over variant pairs of the Hamming distance: a (n, V), b (m, V) -> (n, m)."""
    if words > 1:
        return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2, dtype=np.int64)
    d = np.bitwise_count(a[:, None, :, None] ^ b[None, :, None, :])
    return d.reshape(d.shape[0], d.shape[1], -1).min(axis=2)


def evaluate(h: np.ndarray, ph: np.ndarray, scene_ids: np.ndarray, kinds: np.ndarray, orig_index: np.ndarray,
             words: int = 1, block: int = 256) -> dict:
    n = len(h)
    # recall: each copy to its own original
    copy_rows = np.flatnonzero(np.isin(kinds, COPY_KINDS))
    d_own = np.array([pair_distances(h[i:i + 1], h[orig_index[i]:orig_index[i] + 1], words)[0, 0]
                      for i in copy_rows])
    p_own = np.array([pair_distances(ph[i:i + 1], ph[orig_index[i]:orig_index[i] + 1])[0, 0] for i in copy_rows])
    # cross-scene pairs: joint histogram of (pHash distance <= PHASH_T, signal distance clipped to MAX_T + 1)
    joint = np.zeros((2, MAX_T + 2), np.int64)
    min_cross = 10**9
    closest = None
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        d = pair_distances(h[b0:b1], h[b0:], words)
        pd = pair_distances(ph[b0:b1], ph[b0:])
        ii, jj = np.meshgrid(np.arange(b0, b1), np.arange(b0, n), indexing="ij")
        mask = (jj > ii) & (scene_ids[ii] != scene_ids[jj])
        dv, pv = d[mask], pd[mask] <= PHASH_T
        if len(dv):
            k = int(np.argmin(dv))
            if dv[k] < min_cross:
                min_cross = int(dv[k])
                closest = (int(ii[mask][k]), int(jj[mask][k]))
        np.add.at(joint, (pv.astype(np.int64), np.minimum(dv, MAX_T + 1)), 1)
    cum = joint.cumsum(axis=1)  # cum[p, t] = pairs with signal <= t and pHash flag p
    out = {"min_cross": min_cross, "closest_pair": closest, "by_t": {}}
    for t in range(MAX_T + 1):
        alone = int(cum[0, t] + cum[1, t])
        combined = int(cum[0, t] + joint[1].sum())
        rec = {k: float(np.mean(d_own[kinds[copy_rows] == k] <= t)) for k in COPY_KINDS}
        rec_c = {}
        for k in COPY_KINDS:
            sel = kinds[copy_rows] == k
            rec_c[k] = float(np.mean((d_own[sel] <= t) | (p_own[sel] <= PHASH_T)))
        out["by_t"][t] = {"recall": rec, "false_merges": alone, "recall_combined": rec_c,
                          "false_merges_combined": combined}
    out["own_distance_quantiles"] = {k: [int(np.quantile(d_own[kinds[copy_rows] == k], q)) for q in (0.5, 0.9, 0.95, 1.0)]
                                     for k in COPY_KINDS}
    return out


PHASH_ROWS = 17  # key rows per record for pHash alone: C(6, 4) = 15 tables + 2 exact keys


def key_rows(variants: int, t: int) -> int:
    """Multi-index rows per record for `variants` 64-bit hashes at threshold t (m = t + 2 blocks: C(t + 2, t))."""
    return variants * math.comb(t + 2, t)


def summary(results: dict) -> list[str]:
    """Per signal: the largest t with 0 combined false merges (lowered while the recall stays the same: median
    hashes have even distances), its combined recall (pHash: alone), the key-row cost and the margin."""
    lines = [f"{'signal':<18} {'t*':>3} {'vars':>4} {'rows':>5} {'x pHash':>7} {'ms':>7} {'min x':>5}  "
             f"recall at t*, combined ({', '.join(COPY_KINDS)})   min"]
    for name, res in results["signals"].items():
        by_t = {int(t): r for t, r in res["by_t"].items()}
        ok = [t for t, r in by_t.items() if r["false_merges_combined"] == 0]
        if not ok:
            lines.append(f"{name:<18} no threshold with 0 false merges (min cross-scene distance "
                         f"{res['min_cross']}, {res['records']} records), {res['ms_per_image']:.2f} ms/image")
            continue
        key = "recall" if name == "phash" else "recall_combined"
        t = max(ok)
        while t > 0 and by_t[t - 1][key] == by_t[t][key]:
            t -= 1
        r = by_t[t][key]
        rows = key_rows(res["variants"], t) if name not in WORDS else None
        cost = f"{(PHASH_ROWS + rows) / PHASH_ROWS:7.2f}" if rows is not None and name != "phash" else f"{'-':>7}"
        rec = " ".join(f"{r[k]:.3f}" for k in COPY_KINDS)
        lines.append(f"{name:<18} {t:>3} {res['variants']:>4} {rows if rows is not None else '-':>5} {cost} "
                     f"{res['ms_per_image']:7.2f} {res['min_cross']:>5}  {rec}   {min(r.values()):.3f}")
    return lines


def fmt_row(label, t, r):
    rec = " ".join(f"{r['recall'][k]:.3f}" for k in COPY_KINDS)
    return f"{label:<18} t={t:<3} {rec}   fm={r['false_merges']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signals", default=",".join(SIGNALS))
    ap.add_argument("--thresholds", default="0,1,2,3,4,6,8,10")
    ap.add_argument("--cache", default=None, help="pickle of the generated set (default /tmp/copies-N-SEED.pkl)")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--slow-scenes", type=int, default=40,
                    help="slow signals (crop_resistant, ~0.3 s/image) are measured on the first N scenes only")
    ap.add_argument("--summary", action="store_true", help="only print the summary of an earlier run's --out")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "copies.json"))
    args = ap.parse_args(argv)

    if args.summary:
        print("\n".join(summary(json.loads(Path(args.out).read_text()))))
        return 0
    cache = None if args.no_cache else Path(args.cache or f"/tmp/copies-{args.scenes}-{args.seed}.pkl")
    recs = load_set(args.scenes, args.seed, cache)
    t0 = time.perf_counter()
    images = [decode(r.image) for r in recs]
    decode_ms = (time.perf_counter() - t0) * 1000 / len(images)
    scene_ids = np.array([r.scene_id for r in recs])
    kinds = np.array([r.kind for r in recs])
    orig_of = {r.scene_id: i for i, r in enumerate(recs) if r.kind == "original"}
    orig_index = np.array([orig_of.get(r.source, -1) for r in recs])
    n_pairs = len(recs) * (len(recs) - 1) // 2
    print(f"{args.scenes} scenes, {len(recs)} records, {n_pairs:,} pairs; decode {decode_ms:.2f} ms/image")

    ph, ph_ms = hashes_for("phash", images)
    ph = ph[:, :1]
    thresholds = [int(t) for t in args.thresholds.split(",")]
    results = {"scenes": args.scenes, "seed": args.seed, "records": len(recs), "pairs": n_pairs,
               "decode_ms": decode_ms, "phash_t": PHASH_T, "chosen": "crop",
               "chosen_threshold": crophash.CROP_MAX_DISTANCE, "signals": {}}
    print(f"{'signal':<18} {'':5} {'  '.join(k[:6] for k in COPY_KINDS)}   false merges | combined with pHash<=4")
    for name in args.signals.split(","):
        sub = slice(None)
        if name in SLOW and args.slow_scenes < args.scenes:
            sub = slice(0, int(np.searchsorted(np.array([r.source for r in recs]), 
                                               args.seed * 10_000_000 + args.slow_scenes)))
        h, ms = hashes_for(name, images[sub])
        res = evaluate(h, ph[sub], scene_ids[sub], kinds[sub], orig_index[sub], WORDS.get(name, 1))
        res["records"] = int(len(h))
        res.update(ms_per_image=ms, variants=int(h.shape[1]) if name not in WORDS else 1,
                   bits=64 * (WORDS.get(name, 1)))
        results["signals"][name] = res
        for t in thresholds:
            r = res["by_t"][t]
            rc = " ".join(f"{r['recall_combined'][k]:.3f}" for k in COPY_KINDS)
            print(f"{fmt_row(name, t, r)} | {rc} fm={r['false_merges_combined']}")
        print(f"{'':<18} records={len(h)} variants={res['variants']} min cross-scene distance={res['min_cross']} "
              f"{ms:.2f} ms/image  own-distance q50/q90/q95/max: {res['own_distance_quantiles']}")
        sys.stdout.flush()
    print()
    print("Largest threshold t* with 0 false merges for 'pHash <= 4 OR signal <= t*' (rows: multi-index key rows per")
    print(f"record for the signal, x pHash: ({PHASH_ROWS} + rows) / {PHASH_ROWS}):")
    for line in summary(results):
        print(line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=int))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

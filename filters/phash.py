"""Perceptual dedup: a 64-bit pHash per image, and groups of images within Hamming distance k.

Measure: `phash` (int64, the 64 bits as a signed integer): the image in
grey, resized to 32 x 32 (Lanczos), a 2-D DCT-II, the top-left 8 x 8 low
frequencies compared with their median, row by row, first bit highest. The
same construction as the `imagehash` package's `phash` (the tests compare the
two on 200 images). A record without decodable image bytes gets a null
`phash` and takes no part in the grouping.

Grouping, without comparing all pairs (multi-index hashing): the 64 bits are
cut into k + 1 bands; two hashes within distance k agree exactly on at least
one band (pigeonhole), so candidates are the records sharing a (band, value)
key. `band_rows` emits those keys, the runner groups them (a shuffle over Ray
tasks, `curation.runner.group_by_key`), `candidate_pairs` checks each group's
pairs against k. `filters/dedup_exact.py` turns pairs into keepers and rejects.

Eval-set decontamination: `Decontaminate` holds the eval images' hashes (a
small table sent with the stage) in the same band index and drops every
record within k of one of them as `eval_overlap`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from curation.errors import InputError
from curation.images import DEFAULT_MAX_PIXELS, pil_limits
from curation.reasons import EVAL_OVERLAP
from curation.runtime import Resources
from filters.base import Drop, Filter

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "PHASH_FIELD",
    "phash64",
    "phash_image",
    "hamming",
    "hamming_array",
    "band_layout",
    "band_keys",
    "band_rows",
    "candidate_pairs",
    "identical_stars",
    "PAIR_SCHEMA",
    "pairs_table",
    "PHash",
    "Decontaminate",
    "eval_hashes",
    "from_config",
]

# Chosen on measured data (`bench/bench_dedup.py --distances`, README "Performance"): on five demo
# corpora (seeds 1-5) the planted copies (JPEG quality 60, resized by 10%, a 2% crop, the same pixels
# re-saved) lie within 4 of their source in 96.7% of cases (the crop is the hardest: 26/30), while
# two different demo images lie within 4 in 6 of 72,675 pairs (within 6: 13). pHash distances are
# even (32 of the 64 bits are set), so 4 and 5 group alike. Synthetic shapes on shared backgrounds
# lie closer than photographs do: measure your own data before raising it.
DEFAULT_MAX_DISTANCE = 4
PHASH_FIELD = pa.field("phash", pa.int64())
_SIDE = 32  # pixels per side before the DCT
_LOW = 8  # low-frequency block per side: 8 x 8 = 64 bits
_DRAFT = 256  # JPEGs decode at a reduced scale, never below this many pixels per side


def _dct_matrix(n: int) -> np.ndarray:
    """The n x n DCT-II matrix (unnormalised: only the order of coefficients matters here)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT = _dct_matrix(_SIDE)


def phash_image(image) -> int:
    """The 64-bit pHash of a PIL image, as a signed int64 value."""
    from PIL import Image

    grey = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    coeffs = (_DCT @ pixels @ _DCT.T)[:_LOW, :_LOW]
    bits = (coeffs > np.median(coeffs)).ravel()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value - (1 << 64) if value >= 1 << 63 else value


def phash64(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> int | None:
    """pHash of encoded image bytes; None when they do not decode (or exceed `max_pixels`)."""
    from PIL import Image

    with pil_limits(max_pixels):
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > max_pixels:
                    return None
                if im.format == "JPEG":
                    im.draft("RGB", (_DRAFT, _DRAFT))
                im.load()
                return phash_image(im)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, Image.DecompressionBombError):
            return None


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()


def hamming_array(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise Hamming distance of two int64 (or uint64) arrays."""
    return np.bitwise_count(np.asarray(a).view(np.uint64) ^ np.asarray(b).view(np.uint64)).astype(np.int64)


def band_layout(k: int) -> list[tuple[int, int]]:
    """(shift, width) of the k + 1 bands the 64 bits are cut into, widths differing by at most one."""
    if not 0 <= k <= 31:
        raise ValueError(f"max Hamming distance must be in 0..31, got {k}")
    from curation.dedup.keys import block_layout

    return block_layout(k + 1)


def band_keys(hashes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row index, key) per band of each hash: key = band number in the top bits, the band's value below.

    With k = 0 the key is the whole hash (one band of 64 bits).
    """
    h = np.asarray(hashes, dtype=np.int64)
    if k == 0:
        return np.arange(len(h)), h.copy()
    u = h.view(np.uint64)
    rows, keys = [], []
    for band, (shift, width) in enumerate(band_layout(k)):
        value = (u >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        rows.append(np.arange(len(h)))
        keys.append((np.uint64(band) << np.uint64(56)) | value)
    return np.concatenate(rows), np.concatenate(keys).view(np.int64)


def band_rows(batch: pa.Table, k: int) -> pa.Table:
    """Rows (key, record_id, phash, sha256, url) of every band of every record with a phash (the map side)."""
    ph = batch.column("phash")
    keep = ph.is_valid() if ph.null_count else None
    cols = {}
    for name, typ in (("record_id", pa.string()), ("sha256", pa.string()), ("url", pa.string())):
        col = batch.column(name) if name in batch.column_names else pa.nulls(batch.num_rows, typ)
        cols[name] = col.filter(keep) if keep is not None else col
    if keep is not None:
        ph = ph.filter(keep)
    hashes = ph.to_numpy()
    idx, keys = band_keys(hashes, k)
    take = pa.array(idx)
    return pa.table({"key": pa.array(keys, pa.int64()), "record_id": cols["record_id"].take(take),
                     "phash": pa.array(hashes[idx], pa.int64()), "sha256": cols["sha256"].take(take),
                     "url": cols["url"].take(take)})


# a pair of records of one group, with what the decision needs of each (sha256, url, phash)
PAIR_SCHEMA = pa.schema([
    pa.field("a", pa.string()), pa.field("b", pa.string()), pa.field("distance", pa.int32()),
    pa.field("a_sha256", pa.string()), pa.field("a_url", pa.string()), pa.field("a_phash", pa.int64()),
    pa.field("b_sha256", pa.string()), pa.field("b_url", pa.string()), pa.field("b_phash", pa.int64()),
])


def pairs_table(rows: pa.Table, i, j, dist) -> pa.Table:
    """The pairs (rows i, rows j) of `rows` (columns record_id and any of sha256, url, phash), a < b by id."""
    ids = rows.column("record_id").to_pylist()
    attrs = {c: (rows.column(c).to_pylist() if c in rows.column_names else [None] * rows.num_rows)
             for c in ("sha256", "url", "phash")}
    seen: set[tuple[str, str]] = set()
    out: dict[str, list] = {f.name: [] for f in PAIR_SCHEMA}
    for x, y, d in zip(list(i), list(j), list(dist)):
        x, y = int(x), int(y)
        if ids[y] < ids[x]:
            x, y = y, x
        if ids[x] == ids[y] or (ids[x], ids[y]) in seen:
            continue
        seen.add((ids[x], ids[y]))
        out["a"].append(ids[x])
        out["b"].append(ids[y])
        out["distance"].append(int(d))
        for c in ("sha256", "url", "phash"):
            out[f"a_{c}"].append(attrs[c][x])
            out[f"b_{c}"].append(attrs[c][y])
    return pa.table(out, schema=PAIR_SCHEMA)


def _pairs_in_sorted_groups(keys: np.ndarray, small: int = 32) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Index pairs (i < j) of rows with equal keys, `keys` sorted, vectorised per offset, for the groups of at
    most `small` rows; and (start, size) of the larger groups (hot buckets), left to `_near_in_group`."""
    n = len(keys)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), []
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_of = np.repeat(np.arange(len(starts)), sizes)
    big = sizes > small
    left, right = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for d in range(1, min(small, int(sizes.max())) + 1):
        i = np.arange(n - d)
        same = (group_of[:-d] == group_of[d:]) & ~big[group_of[:-d]]
        left.append(i[same])
        right.append(i[same] + d)
    hot = [(int(starts[g]), int(sizes[g])) for g in np.flatnonzero(big)]
    return np.concatenate(left), np.concatenate(right), hot


def _near_in_group(hashes: np.ndarray, k: int, block: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) of the pairs i < j of `hashes` within k: a block of rows against the rest at a time,
    about `block` comparisons, so a hot bucket of g rows never holds its g^2 / 2 candidate pairs at once."""
    u = np.asarray(hashes).view(np.uint64)
    g = len(u)
    rows = max(1, block // max(g, 1))
    out_i, out_j, out_d = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for b0 in range(0, g - 1, rows):
        b1 = min(g - 1, b0 + rows)
        d = np.bitwise_count(u[b0:b1, None] ^ u[None, :])
        ii, jj = np.nonzero(d <= k)
        later = jj > ii + b0
        ii, jj = ii[later] + b0, jj[later]
        out_i.append(ii)
        out_j.append(jj)
        out_d.append(d[ii - b0, jj].astype(np.int64))
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


# More records than this with one and the same hash (a placeholder image a crawl met 100,000 times) are not
# paired with each other and with every neighbour (g^2 / 2 pairs): the first by record id stands for them, the
# others pair with it alone, at distance 0 (`identical_stars`); `decide_duplicates` treats them as one.
IDENTICAL_STAR = 16


def identical_stars(rows: pa.Table, limit: int = IDENTICAL_STAR) -> tuple[pa.Table, pa.Table]:
    """(the rows without the members of large identical-hash sets but their first, the star pairs (first,
    member) of those sets). A set of at most `limit` records is left whole."""
    hashes = rows.column("phash").to_numpy()
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    hot = np.flatnonzero(counts > limit)
    if not len(hot):
        return rows, PAIR_SCHEMA.empty_table()
    ids = np.asarray(rows.column("record_id").to_pylist(), dtype=object)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.cumsum(counts)]
    records = {}  # hash index -> distinct record ids (a record has a row per band key in this partition)
    for h in hot:
        members = sorted(set(ids[order[starts[h]:starts[h + 1]]]))
        if len(members) > limit:
            records[int(h)] = members
    if not records:
        return rows, PAIR_SCHEMA.empty_table()
    first = {h: m[0] for h, m in records.items()}
    keep = np.array([(int(h) not in first) or ids[r] == first[int(h)] for r, h in enumerate(inverse)])
    star_i, star_j, seen = [], [], set()
    row_of = {rid: r for r, rid in enumerate(ids)}  # any row of a record will do: the attributes are the same
    for h, members in records.items():
        for m in members[1:]:
            if m not in seen:
                seen.add(m)
                star_i.append(row_of[first[h]])
                star_j.append(row_of[m])
    return rows.filter(pa.array(keep)), pairs_table(rows, star_i, star_j, [0] * len(star_i))


def candidate_pairs(rows: pa.Table | None, k: int, chunk_rows: int = 65_536) -> pa.Table:
    """Pairs (a < b by record_id) of records sharing a band key and within distance k (the reduce side).

    A pair found in several bands is listed once. The sorted keys are taken
    in slices of about `chunk_rows` rows, cut between groups, so memory follows
    the slice's candidates, not the partition's. A large set of identical
    hashes is one record and a star (`identical_stars`).
    """
    if rows is None or rows.num_rows < 2:
        return PAIR_SCHEMA.empty_table()
    rows, stars = identical_stars(rows)
    if stars.num_rows:
        return pa.concat_tables([candidate_pairs(rows, k, chunk_rows), stars])
    keys = rows.column("key").to_numpy()
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    hashes = rows.column("phash").to_numpy()
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    bounds = np.r_[starts, len(keys)]
    found_i, found_j, found_d = [], [], []
    lo = 0
    while lo < len(keys):
        # the end of this slice: the first group start at or past lo + chunk_rows (or the end)
        g = int(np.searchsorted(bounds, lo + chunk_rows, side="left"))
        hi = int(bounds[min(g, len(bounds) - 1)])
        if hi <= lo:
            hi = int(bounds[np.searchsorted(bounds, lo, side="right")])
        i, j, hot = _pairs_in_sorted_groups(sorted_keys[lo:hi])
        i, j = order[i + lo], order[j + lo]
        dist = hamming_array(hashes[i], hashes[j])
        near = dist <= k
        found_i.append(i[near])
        found_j.append(j[near])
        found_d.append(dist[near])
        for start, size in hot:
            rows_of = order[lo + start : lo + start + size]
            a, b, d = _near_in_group(hashes[rows_of], k)
            found_i.append(rows_of[a])
            found_j.append(rows_of[b])
            found_d.append(d)
        lo = hi
    return pairs_table(rows, np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d))


class PHash(Filter):
    """Measures `phash` for records with image bytes and no phash yet; drops nothing."""

    name = "phash"
    resources = Resources(cpus=1)
    batch_size = 256
    measures = (PHASH_FIELD,)

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_pixels = max_pixels

    def measure(self, batch: pa.Table) -> dict[str, pa.Array]:
        have = batch.column("phash").to_pylist() if "phash" in batch.column_names else [None] * batch.num_rows
        if "image" not in batch.column_names:
            return {"phash": pa.array(have, pa.int64())}
        images = batch.column("image")
        out = []
        for i, known in enumerate(have):
            if known is not None:
                out.append(known)
                continue
            data = images[i].as_py()
            out.append(phash64(data, self.max_pixels) if data else None)
        return {"phash": pa.array(out, pa.int64())}


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def eval_hashes(source: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> pa.Table:
    """(name, phash) of every evaluation image in a folder (searched recursively) or a records dataset."""
    from curation.storage.dataset import Dataset

    path = Path(source)
    names: list[str] = []
    hashes: list[int] = []
    if (path / "manifest.json").is_file():
        ds = Dataset(path)
        for rb in ds.iter_batches("records", batch_size=256, columns=["record_id", "image", "phash"]):
            for rid, data, known in zip(*(rb.column(c).to_pylist() for c in ("record_id", "image", "phash"))):
                h = known if known is not None else (phash64(data, max_pixels) if data else None)
                if h is not None:
                    names.append(rid)
                    hashes.append(h)
    elif path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()):
            h = phash64(f.read_bytes(), max_pixels)
            if h is not None:
                names.append(str(f.relative_to(path)))
                hashes.append(h)
    else:
        raise InputError(f"--decontaminate {source}: not a folder of images or a dataset directory")
    if not hashes:
        raise InputError(f"--decontaminate {source}: no decodable images found")
    return pa.table({"name": pa.array(names, pa.string()), "phash": pa.array(hashes, pa.int64())})


class Decontaminate(Filter):
    """Drops records whose phash lies within `max_distance` of an evaluation image's (`eval_overlap`)."""

    name = "decontaminate"
    resources = Resources(cpus=1)
    batch_size = 1024

    def __init__(self, evals: pa.Table, max_distance: int = DEFAULT_MAX_DISTANCE):
        band_layout(max_distance)  # checks the range
        self.names: list[str] = evals.column("name").to_pylist()
        self.hashes = evals.column("phash").to_numpy().astype(np.int64)
        self.max_distance = max_distance
        self._index: dict[int, list[int]] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_index"] = None
        return state

    def setup(self) -> None:
        self._index = {}
        idx, keys = band_keys(self.hashes, self.max_distance)
        for i, key in zip(idx.tolist(), keys.tolist()):
            self._index.setdefault(key, []).append(i)

    def _nearest(self, h: int) -> tuple[int, int] | None:
        if self._index is None:
            self.setup()
        cands = {i for key in band_keys(np.array([h], np.int64), self.max_distance)[1].tolist()
                 for i in self._index.get(key, ())}
        if not cands:
            return None
        best = min(cands, key=lambda i: (hamming(h, int(self.hashes[i])), self.names[i]))
        d = hamming(h, int(self.hashes[best]))
        return (best, d) if d <= self.max_distance else None

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        if "phash" not in batch.column_names:
            return [None] * batch.num_rows
        out: list[Drop | None] = []
        for h in batch.column("phash").to_pylist():
            hit = self._nearest(h) if h is not None else None
            out.append(None if hit is None else Drop(EVAL_OVERLAP, f"near duplicate of eval image {self.names[hit[0]]} "
                                                                  f"at hamming distance {hit[1]}"))
        return out


def from_config(cfg) -> list[Filter]:
    """The measure stage (`filters = [..., "phash"]`): phash per record; the grouping is the dedup job's."""
    return [PHash(getattr(cfg, "max_pixels", DEFAULT_MAX_PIXELS))]

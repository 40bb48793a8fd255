"""The first shuffle of dedup: key rows per record (map) and the edges of each key's group (reduce).

Exact keys: two independent 64-bit hashes of the text (DuckDB's `hash` with two
seeds; rows of one group agree on both, so a clash merges nothing short of a
128-bit collision). Perceptual keys: the 64 pHash bits cut into m blocks; two
hashes within Hamming distance k differ in at most k blocks, so they agree on
at least m - k and share the key of that subset of blocks (Manku, Jain and Das
Sarma, "Detecting Near-Duplicates for Web Crawling", WWW 2007). There are
C(m, k) subsets, each a table; keys of (m - k) * 64 / m bits. `choose_blocks`
picks m for the number of records: enough key bits that a bucket holds few
records by chance (the candidates checked per record stay flat as N grows),
few enough tables that the rows stay few.
"""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EXACT_IMAGE", "EXACT_URL", "PHASH", "CROP", "SIGNALS", "HOT_BUCKET", "text_keys", "block_layout", "index_tables",
           "choose_blocks", "table_keys", "key_rows", "bucket_edges"]

EXACT_IMAGE, EXACT_URL, PHASH, CROP = 0, 1, 2, 3  # the `kind` of a key row
# the perceptual signals: kind -> the records' column of 64-bit hashes (filters/phash.py, filters/crophash.py)
SIGNALS = {PHASH: "phash", CROP: "crop_hash"}
# a bucket of more pHash rows than this is joined whole (a star on its smallest node), unchecked: a hot
# key (a placeholder image copied 10^5 times, the near copies of a popular one) never makes g^2 / 2 pairs.
# By chance a bucket holds n / 2^bits records (below 1 at the sizes `choose_blocks` picks), so only
# clusters of copies get here; the strays of such a bucket join the cluster's component, and the
# decisions, which check every pair they use, keep them.
HOT_BUCKET = 32
# the cost of a candidate pair checked, against a key row emitted and shuffled (measured: bench_dedup_scale.py)
CHECK_COST = 0.1
MAX_TABLES = 128

_DUCK: list = []
_DUCK_LOCK = threading.Lock()


def text_keys(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes (int64) of each string, the same in every process (DuckDB's `hash`)."""
    import duckdb

    with _DUCK_LOCK:
        if not _DUCK:
            _DUCK.append(duckdb.connect())
        t = pa.table({"v": values})
        h = _DUCK[0].sql("SELECT hash(7, v) AS a, hash(11, v) AS b FROM t").to_arrow_table()
    return (pc.cast(h.column("a"), pa.int64(), safe=False).to_numpy(),
            pc.cast(h.column("b"), pa.int64(), safe=False).to_numpy())


def block_layout(m: int) -> list[tuple[int, int]]:
    """(shift, width) of m blocks covering the 64 bits once, widths differing by at most one."""
    if not 1 <= m <= 64:
        raise ValueError(f"blocks must be in 1..64, got {m}")
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    out, shift = [], 64
    for w in widths:
        shift -= w
        out.append((shift, w))
    return out


def index_tables(k: int, m: int) -> list[tuple[int, ...]]:
    """The tables: each (m - k)-subset of the m blocks."""
    if not 0 <= k < m:
        raise ValueError(f"a distance of {k} needs more than {k} blocks, got {m}")
    return list(itertools.combinations(range(m), m - k))


def _key_bits(k: int, m: int) -> int:
    widths = sorted(w for _, w in block_layout(m))
    return sum(widths[: m - k])


def choose_blocks(k: int, n: int) -> int:
    """The number of blocks m for distance k over n records: the least expected work per record,
    C(m, k) tables x (1 + CHECK_COST x the records a bucket holds by chance, n / 2^bits)."""
    if not 0 <= k <= 31:
        raise ValueError(f"max Hamming distance must be in 0..31, got {k}")
    if k == 0:
        return 1
    best = None
    for m in range(k + 1, 65):
        tables = math.comb(m, k)
        if tables > MAX_TABLES and best is not None:
            break
        cost = tables * (1 + CHECK_COST * max(n, 1) / 2.0 ** _key_bits(k, m))
        if best is None or cost < best[0]:
            best = (cost, m)
    return best[1]


def table_keys(hashes: np.ndarray, k: int, m: int, tables: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row index, key) for each table of each hash: the table's number in the top 8 bits, its blocks'
    bits below. With one block (k = 0) the key is the hash itself."""
    h = np.asarray(hashes, dtype=np.int64)
    if m == 1:
        return np.arange(len(h)), h.copy()
    u = h.view(np.uint64)
    layout = block_layout(m)
    blocks = [(u >> np.uint64(s)) & np.uint64((1 << w) - 1) for s, w in layout]
    rows, keys = [], []
    for t, subset in enumerate(index_tables(k, m)):
        if tables is not None and t not in tables:
            continue
        key = np.zeros(len(h), np.uint64)
        for b in subset:
            key = (key << np.uint64(layout[b][1])) | blocks[b]
        rows.append(np.arange(len(h)))
        keys.append((np.uint64(t) << np.uint64(56)) | key)
    return np.concatenate(rows), np.concatenate(keys).view(np.int64)


def _column(batch: pa.Table, name: str, typ) -> pa.ChunkedArray | pa.Array:
    return batch.column(name) if name in batch.column_names else pa.nulls(batch.num_rows, typ)


def key_rows(batch: pa.Table, by_image: bool, by_url: bool, k: int | None, m: int | None,
             tables: tuple[int, ...] | None = None, crop: tuple[int, int] | None = None) -> pa.Table:
    """The map side: rows (key, key2, kind, node) of a batch with `_node` (curation.runner.ParquetReader):
    one per record and exact key (key, key2: the text's two hashes), one per record and table of each
    perceptual signal (key: the table key, key2: the hash): the pHash's (distance k, m blocks) and, with
    `crop` = (distance, blocks), the crop hash's. `tables`: only these tables' rows (a wave of the
    shuffle), numbered over the signals in turn (`signal_tables`)."""
    from curation.crawl.netpolicy import normalize_urls

    node = batch.column("_node").to_numpy()
    parts = []

    def add(key, key2, kind, nodes):
        parts.append(pa.table({"key": pa.array(key, pa.int64()), "key2": pa.array(key2, pa.int64()),
                               "kind": pa.array(np.full(len(key), kind, np.int8)), "node": pa.array(nodes, pa.int64())}))

    for on, kind, values in ((by_image, EXACT_IMAGE, "sha256"), (by_url, EXACT_URL, "url")):
        if not on or values not in batch.column_names:
            continue
        col = batch.column(values).combine_chunks()
        if kind == EXACT_URL:
            col = normalize_urls(col)
            valid = pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(col), ""), False)
        else:
            valid = pc.fill_null(pc.not_equal(col, ""), False)
        col = col.filter(valid)
        a, b = text_keys(col)
        add(a, b, kind, node[np.asarray(valid.to_numpy(zero_copy_only=False), bool)])
    first = 0
    for kind, dk, dm in signal_tables(k, m, crop):
        n_tables = len(index_tables(dk, dm))
        mine = None if tables is None else tuple(t - first for t in tables if first <= t < first + n_tables)
        first += n_tables
        name = SIGNALS[kind]
        if (mine is not None and not mine) or name not in batch.column_names:
            continue
        ph = batch.column(name).combine_chunks()
        valid = np.asarray(ph.is_valid().to_numpy(zero_copy_only=False), bool)
        hashes = ph.filter(pa.array(valid)).to_numpy()
        idx, keys = table_keys(hashes, dk, dm, mine)
        add(keys, hashes[idx], kind, node[valid][idx])
    if not parts:
        return None
    return pa.concat_tables(parts)


def signal_tables(k: int | None, m: int | None, crop: tuple[int, int] | None) -> list[tuple[int, int, int]]:
    """(kind, distance, blocks) of each perceptual signal on: the pHash's, then the crop hash's."""
    out = [(PHASH, k, m)] if k is not None else []
    if crop is not None:
        out.append((CROP, crop[0], crop[1]))
    return out


def _group_starts(*sorted_cols: np.ndarray) -> np.ndarray:
    n = len(sorted_cols[0])
    change = np.zeros(n, bool)
    change[:1] = True
    for c in sorted_cols:
        change[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(change)


def _star(nodes: np.ndarray, starts: np.ndarray, sizes: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (smallest node of the group, each member) of the groups `which` (the hub's own is a self-loop,
    which `unique_edges` drops)."""
    if not len(which):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    hubs = np.minimum.reduceat(nodes, starts)[which]
    z = sizes[which]
    member = np.concatenate([nodes[a : a + n] for a, n in zip(starts[which].tolist(), z.tolist())])
    return np.repeat(hubs, z), member


def _pairs_within(nodes: np.ndarray, hashes: np.ndarray, starts: np.ndarray, sizes: np.ndarray, k: int,
                  small: int = HOT_BUCKET) -> tuple[np.ndarray, np.ndarray, int]:
    """Edges of the pairs within k in each group of at most `small` rows; and the pairs checked."""
    n = len(nodes)
    group = np.repeat(np.arange(len(starts)), sizes)
    a_out, b_out, checked = [], [], 0
    little = sizes <= small
    top = int(sizes[little].max()) if little.any() else 0
    for d in range(1, top):  # groups of at most `small` rows: row i against row i + d, vectorised
        i = np.arange(n - d)
        same = (group[:-d] == group[d:]) & little[group[:-d]]
        i = i[same]
        checked += len(i)
        near = np.bitwise_count(hashes[i].view(np.uint64) ^ hashes[i + d].view(np.uint64)) <= k
        a_out.append(nodes[i[near]])
        b_out.append(nodes[i[near] + d])
    if not a_out:
        return np.empty(0, np.int64), np.empty(0, np.int64), checked
    return np.concatenate(a_out), np.concatenate(b_out), checked


def unique_edges(a: np.ndarray, b: np.ndarray) -> pa.Table:
    """Edges (a < b), each once, without self-loops."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    lo, hi = lo[keep], hi[keep]
    if len(lo):
        order = np.lexsort((hi, lo))
        lo, hi = lo[order], hi[order]
        first = _group_starts(lo, hi)
        lo, hi = lo[first], hi[first]
    return pa.table({"a": pa.array(lo, pa.int64()), "b": pa.array(hi, pa.int64())})


def bucket_edges(rows: pa.Table | None, part: int, k: int | None, crop: int | None = None) -> tuple[pa.Table, dict]:
    """The reduce side: each exact group as a star on its smallest node; in each bucket of a perceptual
    signal (pHash within k, crop hash within `crop`) the pairs within its distance (a hot bucket, of more
    than HOT_BUCKET rows: a star, unchecked). Returns the edges and counts."""
    stats = {"rows": 0, "checked": 0, "edges": 0, "hot_buckets": 0, "hot_rows": 0}
    if rows is None or rows.num_rows < 2:
        return unique_edges(np.empty(0, np.int64), np.empty(0, np.int64)), {**stats, "rows": 0 if rows is None else rows.num_rows}
    stats["rows"] = rows.num_rows
    kind = rows.column("kind").to_numpy()
    key, key2, node = (rows.column(c).to_numpy() for c in ("key", "key2", "node"))
    a_all, b_all = [], []
    exact = (kind == EXACT_IMAGE) | (kind == EXACT_URL)
    if exact.any():  # groups of (kind, key, key2): the same text
        kd, ky, k2, nd = kind[exact], key[exact], key2[exact], node[exact]
        order = np.lexsort((k2, ky, kd))
        kd, ky, k2, nd = kd[order], ky[order], k2[order], nd[order]
        starts = _group_starts(kd, ky, k2)
        sizes = np.diff(np.r_[starts, len(nd)])
        a, b = _star(nd, starts, sizes, np.flatnonzero(sizes > 1))
        a_all.append(a)
        b_all.append(b)
    for signal, dist in ((PHASH, k), (CROP, crop)):
        mine = kind == signal
        if dist is None or not mine.any():
            continue
        ky, ph, nd = key[mine], key2[mine], node[mine]
        order = np.argsort(ky)
        ky, ph, nd = ky[order], ph[order], nd[order]
        starts = _group_starts(ky)
        sizes = np.diff(np.r_[starts, len(nd)])
        a, b, checked = _pairs_within(nd, ph, starts, sizes, dist)
        stats["checked"] += checked
        a_all.append(a)
        b_all.append(b)
        hot = np.flatnonzero(sizes > HOT_BUCKET)
        stats["hot_buckets"] += len(hot)
        stats["hot_rows"] += int(sizes[hot].sum())
        a, b = _star(nd, starts, sizes, hot)
        a_all.append(a)
        b_all.append(b)
    edges = unique_edges(np.concatenate(a_all) if a_all else np.empty(0, np.int64),
                         np.concatenate(b_all) if b_all else np.empty(0, np.int64))
    stats["edges"] = edges.num_rows
    return edges, stats

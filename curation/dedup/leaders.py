"""The leader rule, one component at a time, and the decisions written by row range.

The rule (the same as `filters.dedup_exact.decide_duplicates`, which holds all
pairs in memory and is kept as the reference): a component's records in
record_id order (Unicode code points); a record is dropped when it is a copy
of an earlier record that is kept (same sha256, same normalised URL, pHash
within k), naming the first such record; otherwise it is kept. Only the kept
records are indexed (their sha256 and URL keys in dicts, their pHashes in a
list, or in multi-index tables once a component keeps many), so one image
copied 10^5 times keeps one record and costs one lookup per copy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.keys import CROP, PHASH, SIGNALS, choose_blocks, table_keys, text_keys
from curation.reasons import DUPLICATE_IMAGE, DUPLICATE_URL, NEAR_DUPLICATE

__all__ = ["DECISION_COLUMNS", "member_rows", "decide_members", "write_decisions"]

_MASK = (1 << 64) - 1
# a component that keeps more records than this looks its pHashes up in multi-index tables, not a list
_LIST_LIMIT = 48
DECISION_COLUMNS = ("node", "record_id", "reason", "kept", "detail")


def _keys(col: pa.Array, url: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from curation.crawl.netpolicy import normalize_urls

    if url:
        col = normalize_urls(col)
        valid = pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(col), ""), False)
    else:
        valid = pc.fill_null(pc.not_equal(col, ""), False)
    a, b = text_keys(pc.if_else(valid, col, pa.scalar("", pa.string())))
    return a, b, np.asarray(valid.to_numpy(zero_copy_only=False), bool)


def member_rows(batch: pa.Table, labels: pa.Table) -> pa.Table | None:
    """Map: the records of a batch (with `_node`) that a component holds, with their root as the key and
    what the rule compares: the sha256 and normalised-URL keys, the pHash."""
    if labels is None or labels.num_rows == 0:
        return None
    nodes = batch.column("_node").to_numpy()
    known = labels.column("node").to_numpy()
    at = np.clip(np.searchsorted(known, nodes), 0, len(known) - 1)
    hit = known[at] == nodes
    if not hit.any():
        return None
    rows = batch.filter(pa.array(hit))
    root = labels.column("root").to_numpy()[at[hit]]
    out = {"key": pa.array(root, pa.int64()), "node": pa.array(nodes[hit], pa.int64()),
           "record_id": rows.column("record_id")}
    for name, url in (("sha256", False), ("url", True)):
        col = rows.column(name).combine_chunks() if name in rows.column_names else pa.nulls(rows.num_rows, pa.string())
        a, b, valid = _keys(col, url)
        out[f"{name}_a"] = pa.array(a, pa.int64(), mask=~valid)
        out[f"{name}_b"] = pa.array(b, pa.int64(), mask=~valid)
    for name in SIGNALS.values():
        out[name] = rows.column(name) if name in rows.column_names else pa.nulls(rows.num_rows, pa.int64())
    return pa.table(out)


class _Kept:
    """The kept pHashes of one component: a list, then multi-index tables past _LIST_LIMIT.

    Lookups and additions take the member's table keys as a callable (`keys()`), computed for a block of
    members in one numpy call and only once the tables exist. Each table's list is in id order, so its scan
    stops at its first hit. Memory follows the records kept, not the members.
    """

    def __init__(self, k: int, m: int):
        self.k = k
        self.m = m
        self.hashes: list[int] = []
        self.at: list[int] = []  # position in the component's id order
        self.tables: list[dict[int, list[int]]] | None = None

    def add(self, h: int, pos: int, keys) -> None:
        self.hashes.append(h)
        self.at.append(pos)
        if self.tables is None:
            if len(self.hashes) > _LIST_LIMIT:
                _, flat = table_keys(np.array(self.hashes, np.int64), self.k, self.m)
                per = flat.reshape(-1, len(self.hashes)).T.tolist()
                self.tables = [dict() for _ in per[0]]
                for i, member in enumerate(per):
                    for table, key in zip(self.tables, member):
                        table.setdefault(key, []).append(i)
        else:
            for table, key in zip(self.tables, keys()):
                table.setdefault(key, []).append(len(self.hashes) - 1)

    def first_within(self, h: int, keys) -> int | None:
        """The id-order position of the first kept pHash within k of h (`keys()`: h's table keys)."""
        k = self.k
        if self.tables is None:
            for x, p in zip(self.hashes, self.at):
                if ((x ^ h) & _MASK).bit_count() <= k:
                    return p
            return None
        best = None
        hashes = self.hashes
        for table, key in zip(self.tables, keys()):
            for i in table.get(key, ()):
                if best is not None and i >= best:
                    break
                if ((hashes[i] ^ h) & _MASK).bit_count() <= k:
                    best = i
                    break
        return None if best is None else self.at[best]


class _BlockKeys:
    """The table keys of a block's pHashes for a given m, computed in one numpy call when first asked."""

    def __init__(self, hashes: list, k: int):
        self.hashes = hashes
        self.k = k
        self.by_m: dict[int, list[list[int]]] = {}

    def row(self, m: int, i: int) -> list[int]:
        got = self.by_m.get(m)
        if got is None:
            have = np.array([h if h is not None else 0 for h in self.hashes], np.int64)
            _, flat = table_keys(have, self.k, m)
            got = self.by_m[m] = flat.reshape(-1, len(have)).T.tolist()
        return got[i]


_NONE = np.iinfo(np.int64).max


def _int_column(col, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, valid mask) of an int64 column."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), bool) if arr.null_count else np.ones(n, bool)
    return pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False), valid


def _prior_matches(kept_rec: dict, rows: pa.Table, signals: list[tuple[str, int, int]], by_image: bool, by_url: bool,
                   chunk: int = 8192) -> np.ndarray:
    """For each of `rows` (members of one component, later than every record in `kept_rec`): the id-order
    position of the first of those kept records that it duplicates (same sha256, same URL, a perceptual
    signal (column, distance, blocks) within its distance), or _NONE. Vectorised: a component of 10^6 near copies of a few images checks most members against the
    records kept before their block in numpy, and only the rest one by one."""
    n = rows.num_rows
    best = np.full(n, _NONE, np.int64)
    if not kept_rec or n == 0:
        return best
    pos = np.fromiter(kept_rec.keys(), np.int64, len(kept_rec))
    vals = list(kept_rec.values())
    for on, which, cols in ((by_image, 1, ("sha256_a", "sha256_b")), (by_url, 2, ("url_a", "url_b"))):
        if not on:
            continue
        have = [i for i, v in enumerate(vals) if v[which][0] is not None]
        if not have:
            continue
        ka = np.array([vals[i][which][0] for i in have], np.int64)
        kb = np.array([vals[i][which][1] for i in have], np.int64)
        kp = pos[have]
        order = np.lexsort((kp, kb, ka))
        ka, kb, kp = ka[order], kb[order], kp[order]
        ma, valid = _int_column(rows.column(cols[0]), n)
        mb, _ = _int_column(rows.column(cols[1]), n)
        lo = np.searchsorted(ka, ma, "left")
        hi = np.searchsorted(ka, ma, "right")
        one = valid & (hi - lo == 1)
        at = np.minimum(lo, len(ka) - 1)
        hit = one & (kb[at] == mb)
        best[hit] = np.minimum(best[hit], kp[at[hit]])
        for i in np.flatnonzero(valid & (hi - lo > 1)).tolist():  # the first 64 bits shared by several: rare
            same = np.flatnonzero(kb[lo[i]:hi[i]] == mb[i])
            if len(same):
                best[i] = min(best[i], int(kp[lo[i] + same[0]]))
    for at_signal, (name, dk, dm) in enumerate(signals):
        _near_prior(best, pos, [v[3][at_signal] for v in vals], rows.column(name), dk, dm, chunk)
    return best


def _near_prior(best: np.ndarray, pos: np.ndarray, kept_hashes: list, column, k: int, m: int, chunk: int) -> None:
    """`best` lowered to the position of the first kept record whose hash (`kept_hashes`, None: none) lies
    within k of each member's (`column`): the kept hashes in multi-index tables, the members' keys looked up
    a chunk at a time."""
    n = len(best)
    have = [i for i, h in enumerate(kept_hashes) if h is not None]
    if not have:
        return
    kh = np.array([kept_hashes[i] for i in have], np.int64)
    kp = pos[have]
    _, flat = table_keys(kh, k, m)
    kkeys = flat.reshape(-1, len(kh))
    tables = []
    for t in range(kkeys.shape[0]):
        order = np.argsort(kkeys[t], kind="stable")
        skeys = kkeys[t][order]
        first = np.flatnonzero(np.r_[True, skeys[1:] != skeys[:-1]])
        tables.append((skeys[first], first, np.diff(np.r_[first, len(skeys)]), order))
    mh, valid = _int_column(column, n)
    ku = kh.view(np.uint64)
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        _, flat = table_keys(mh[c0:c1], k, m)
        mkeys = flat.reshape(-1, c1 - c0)
        mu = mh[c0:c1].view(np.uint64)
        ok = valid[c0:c1]
        for t, (ukeys, first, runs, order) in enumerate(tables):
            at = np.minimum(np.searchsorted(ukeys, mkeys[t]), len(ukeys) - 1)
            cnt = np.where(ok & (ukeys[at] == mkeys[t]), runs[at], 0)
            lo = first[at]
            total = int(cnt.sum())
            if not total:
                continue
            member = np.repeat(np.arange(c1 - c0), cnt)
            start = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
            kept = order[start + np.arange(total)]
            near = np.bitwise_count(mu[member] ^ ku[kept]) <= k
            np.minimum.at(best, member[near] + c0, kp[kept[near]])


# members are turned into Python values this many rows at a time, so a component of 10^6 records costs
# its Arrow columns (~60 bytes a member) and the records it keeps, not 10^6 Python objects per column
BLOCK_ROWS = 65_536


def _detail_near(kept: str, d, name: str) -> str:
    return f"near duplicate of {kept} at hamming distance {d} ({name})"


def decide_members(rows: pa.Table | None, part: int, k: int | None, by_image: bool, by_url: bool,
                   block_rows: int | None = None, crop: int | None = None) -> tuple[pa.Table, dict]:
    """Reduce: the decisions (key = node, record_id, reason, kept, detail) of the components in `rows`,
    taken in blocks of `block_rows` members (a component may span blocks). Perceptual signals: the pHash
    within k, the crop hash within `crop` (None: that signal off)."""
    empty = {c: [] for c in ("key", "record_id", "reason", "kept", "detail")}
    if rows is None or rows.num_rows == 0:
        return _decisions(empty), {"members": 0, "components": 0, "largest": 0, "duplicates": 0}
    on = [(name, dk) for name, dk in ((SIGNALS[PHASH], k), (SIGNALS[CROP], crop)) if dk is not None]
    rows = rows.sort_by([("key", "ascending"), ("record_id", "ascending")])
    block_rows = block_rows or BLOCK_ROWS
    n = rows.num_rows
    root = rows.column("key").to_numpy()
    starts = np.flatnonzero(np.r_[True, root[1:] != root[:-1]])
    sizes = np.diff(np.r_[starts, n])
    start_at = dict(zip(starts.tolist(), sizes.tolist()))
    parts = []
    duplicates = 0
    kept_sha: dict = {}
    kept_url: dict = {}
    kept_sig: list[_Kept] = []  # per signal on
    kept_rec: dict[int, tuple] = {}  # position -> (id, sha, url, hashes) of the component's kept records
    for b0 in range(0, n, block_rows):
        blk = rows.slice(b0, block_rows)
        # the rows of a component that began in an earlier block, checked at once against what it kept there:
        # those that match are dropped naming their match (nothing joins the index), the rest go one by one
        carry = 0
        if b0 not in start_at:
            nxt = np.searchsorted(starts, b0, "right")
            carry = min(blk.num_rows, (int(starts[nxt]) if nxt < len(starts) else n) - b0)
        todo = None
        if carry:
            signals = [(name, dk, kept.m) for (name, dk), kept in zip(on, kept_sig)]
            prior = _prior_matches(kept_rec, blk.slice(0, carry), signals, by_image, by_url)
            matched = prior != _NONE
            if matched.any():
                parts.append(_prior_decisions(blk.slice(0, carry).filter(pa.array(matched)), prior[matched], kept_rec, on))
                duplicates += int(matched.sum())
                todo = np.r_[np.flatnonzero(~matched), np.arange(carry, blk.num_rows)]
                blk = blk.take(pa.array(todo))
        ids = blk.column("record_id").to_pylist()
        node = blk.column("node").to_pylist()
        sha = list(zip(blk.column("sha256_a").to_pylist(), blk.column("sha256_b").to_pylist()))
        url = list(zip(blk.column("url_a").to_pylist(), blk.column("url_b").to_pylist()))
        hashes = [blk.column(name).to_pylist() for name, _ in on]
        bkeys = [_BlockKeys(h, dk) for h, (_, dk) in zip(hashes, on)]
        out = {c: [] for c in empty}
        at = todo.tolist() if todo is not None else range(len(ids))
        for i, offset in enumerate(at):
            r = b0 + offset
            size = start_at.get(r)
            if size is not None:  # a new component
                kept_sha, kept_url, kept_rec = {}, {}, {}
                kept_sig = [_Kept(dk, choose_blocks(dk, size)) for _, dk in on]
            mine = tuple(h[i] for h in hashes)
            cands = []
            if by_image and sha[i][0] is not None and sha[i] in kept_sha:
                cands.append(kept_sha[sha[i]])
            if by_url and url[i][0] is not None and url[i] in kept_url:
                cands.append(kept_url[url[i]])
            for h, kept, bk in zip(mine, kept_sig, bkeys):
                if h is not None:
                    near = kept.first_within(h, lambda m=kept.m, bk=bk, i=i: bk.row(m, i))
                    if near is not None:
                        cands.append(near)
            if not cands:
                if sha[i][0] is not None:
                    kept_sha.setdefault(sha[i], r)
                if url[i][0] is not None:
                    kept_url.setdefault(url[i], r)
                for h, kept, bk in zip(mine, kept_sig, bkeys):
                    if h is not None:
                        kept.add(h, r, lambda m=kept.m, bk=bk, i=i: bk.row(m, i))
                kept_rec[r] = (ids[i], sha[i], url[i], mine)
                continue
            q_id, q_sha, q_url, q_hashes = kept_rec[min(cands)]
            if sha[i][0] is not None and sha[i] == q_sha:
                reason, detail = DUPLICATE_IMAGE, f"duplicate of {q_id} (same sha256)"
            elif url[i][0] is not None and url[i] == q_url:
                reason, detail = DUPLICATE_URL, f"duplicate of {q_id} (same normalised URL)"
            else:
                reason, detail = NEAR_DUPLICATE, None
                for h, q, (name, dk) in zip(mine, q_hashes, on):
                    d = ((h ^ q) & _MASK).bit_count() if h is not None and q is not None else None
                    if d is not None and d <= dk:
                        detail = _detail_near(q_id, d, name)
                        break
            for c, v in (("key", node[i]), ("record_id", ids[i]), ("reason", reason), ("kept", q_id), ("detail", detail)):
                out[c].append(v)
        duplicates += len(out["key"])
        parts.append(_decisions(out))
    return pa.concat_tables(parts), {"members": n, "components": len(starts), "largest": int(sizes.max()),
                                     "duplicates": duplicates}


def _prior_decisions(rows: pa.Table, kept: np.ndarray, kept_rec: dict, on: list[tuple[str, int]]) -> pa.Table:
    """The decisions of `rows`, each the duplicate of the kept record at position `kept` (in `kept_rec`):
    the reason and detail as the one-by-one rule writes them, in Arrow compute."""
    pos = np.fromiter(kept_rec.keys(), np.int64, len(kept_rec))
    vals = [kept_rec[q] for q in pos[np.searchsorted(pos, kept)].tolist()]
    n = rows.num_rows

    def same(which: int, cols: tuple[str, str]) -> np.ndarray:
        ka = np.array([v[which][0] if v[which][0] is not None else 0 for v in vals], np.int64)
        kb = np.array([v[which][1] if v[which][1] is not None else 0 for v in vals], np.int64)
        kv = np.array([v[which][0] is not None for v in vals], bool)
        ma, mv = _int_column(rows.column(cols[0]), n)
        mb, _ = _int_column(rows.column(cols[1]), n)
        return mv & kv & (ma == ka) & (mb == kb)

    sha = same(1, ("sha256_a", "sha256_b"))
    url = ~sha & same(2, ("url_a", "url_b"))
    kept_id = pa.array([v[0] for v in vals], pa.string())
    detail = pc.binary_join_element_wise("duplicate of ", kept_id,
                                         pa.array(np.where(sha, " (same sha256)", " (same normalised URL)")), "")
    settled = sha | url
    for s, (name, dk) in enumerate(on):  # the first signal within its distance names the match
        mh, mv = _int_column(rows.column(name), n)
        kh = np.array([v[3][s] if v[3][s] is not None else 0 for v in vals], np.int64)
        kv = np.array([v[3][s] is not None for v in vals], bool)
        d = np.bitwise_count(mh.view(np.uint64) ^ kh.view(np.uint64)).astype(np.int64)
        here = ~settled & mv & kv & (d <= dk)
        near = pc.binary_join_element_wise("near duplicate of ", kept_id, " at hamming distance ",
                                           pc.cast(pa.array(d), pa.string()), f" ({name})", "")
        detail = pc.if_else(pa.array(here), near, detail)
        settled |= here
    reason = np.where(sha, DUPLICATE_IMAGE, np.where(url, DUPLICATE_URL, NEAR_DUPLICATE))
    return pa.table({"key": rows.column("node"), "record_id": rows.column("record_id"),
                     "reason": pa.array(reason.tolist(), pa.string()), "kept": kept_id, "detail": detail})


def _decisions(cols: dict) -> pa.Table:
    return pa.table({"key": pa.array(cols["key"], pa.int64()),
                     **{c: pa.array(cols[c], pa.string()) for c in ("record_id", "reason", "kept", "detail")}})


def write_decisions(rows: pa.Table | None, part: int, folder: str) -> tuple[pa.Table, dict]:
    """Reduce, by row range: the range's decisions sorted by node into `folder/part-NNNNN.parquet` (always
    written, so a missing file is an error and not an empty range); counts by reason."""
    import pyarrow.parquet as pq

    from curation.storage import fs as storage

    if rows is None:
        rows = _decisions({c: [] for c in ("key", "record_id", "reason", "kept", "detail")})
    rows = rows.sort_by("key").rename_columns(["node" if c == "key" else c for c in rows.column_names])
    rows = rows.select(list(DECISION_COLUMNS))
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink, row_group_size=65_536)
    # whole or nothing (a retried task writes it again): a local file by rename, an object by one PUT
    storage.write_bytes(storage.join(folder, f"part-{part:05d}.parquet"), sink.getvalue().to_pybytes())
    counts = {r["values"]: r["counts"] for r in pc.value_counts(rows.column("reason")).to_pylist()} if rows.num_rows else {}
    return rows.slice(0, 0), {"duplicates": rows.num_rows, "by_reason": counts}

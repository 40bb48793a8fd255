"""Test helpers: hash sets (random, clustered, with planted chains and hot keys) written as records files,
and the brute-force oracle (every pair, then the reference `decide_duplicates`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from filters.dedup_exact import decide_duplicates
from filters.phash import pairs_table


def flip(h: int, bits) -> int:
    u = (h + (1 << 64)) % (1 << 64)
    for b in bits:
        u ^= 1 << int(b)
    return u - (1 << 64) if u >= 1 << 63 else u


def hash_set(rng: np.random.Generator, n: int, k: int, clustered: bool, chains: int = 5, hot: int = 0,
             exact_share: float = 0.05) -> list[dict]:
    """n records: uniform pHashes, or a few popular images with many near copies (`clustered`); planted chains
    (a within k of b, b within k of c, a not within k of c); `hot` copies of one placeholder hash; exact copies
    (same sha256, or the same URL with other bytes)."""
    def rand() -> int:
        return int(rng.integers(-(1 << 63), (1 << 63) - 1, dtype=np.int64))

    popular = [rand() for _ in range(8)]
    hashes = []
    for _ in range(n):
        if clustered and rng.random() < 0.5:
            hashes.append(flip(popular[int(rng.integers(len(popular)))], rng.choice(64, int(rng.integers(0, k + 3)), replace=False)))
        elif rng.random() < 0.2 and hashes:  # a near copy of an earlier record
            hashes.append(flip(hashes[int(rng.integers(len(hashes)))], rng.choice(64, int(rng.integers(0, k + 1)), replace=False)))
        else:
            hashes.append(rand())
    for _ in range(chains):  # a - b - c: each step k bits, a and c 2k apart
        a = rand()
        bits = rng.choice(64, 2 * k, replace=False)
        hashes += [a, flip(a, bits[:k]), flip(a, bits)]
    placeholder = rand()
    hashes += [placeholder] * hot
    recs = []
    order = rng.permutation(len(hashes))  # record ids in an order unrelated to the planting
    for i, h in enumerate(hashes):
        sha = f"{int(rng.integers(1 << 62)):064x}"
        url = f"http://img.example/{i}.jpg"
        recs.append({"record_id": f"r:{int(order[i]):07d}", "sha256": sha, "url": url, "phash": h})
    for r in recs:
        if rng.random() < exact_share:
            other = recs[int(rng.integers(len(recs)))]
            if rng.random() < 0.5:
                r["sha256"] = other["sha256"]
            else:
                r["url"] = other["url"].replace("http://img.example", "HTTP://IMG.EXAMPLE")  # the same once normalised
    for r in recs[:: 97]:
        r["phash"] = None  # no decodable image
    return recs


def write_files(recs: list[dict], folder, per_file: int, row_group: int = 500) -> list[tuple[str, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, i in enumerate(range(0, len(recs), per_file)):
        chunk = recs[i : i + per_file]
        t = pa.table({"record_id": [r["record_id"] for r in chunk], "sha256": [r["sha256"] for r in chunk],
                      "url": [r["url"] for r in chunk], "phash": pa.array([r["phash"] for r in chunk], pa.int64())})
        if "crop_hash" in recs[0]:
            t = t.append_column("crop_hash", pa.array([r["crop_hash"] for r in chunk], pa.int64()))
        path = folder / f"part-{n:03d}.parquet"
        pq.write_table(t, path, row_group_size=row_group)
        files.append((str(path), t.num_rows))
    return files


def oracle(recs: list[dict], k: int | None, by_image: bool = True, by_url: bool = True) -> dict:
    """{record_id: (kept, reason, detail)} from every pair (numpy brute force over the pHashes, every pair of
    each exact group) through the reference decide_duplicates."""
    from curation.crawl.netpolicy import normalize_url

    rows = pa.table({"record_id": [r["record_id"] for r in recs], "sha256": [r["sha256"] for r in recs],
                     "url": [r["url"] for r in recs], "phash": pa.array([r["phash"] for r in recs], pa.int64())})
    i_all, j_all = [], []
    if k is not None:
        have = np.array([r["phash"] is not None for r in recs])
        idx = np.flatnonzero(have)
        u = np.array([recs[x]["phash"] for x in idx], np.int64).view(np.uint64)
        for s in range(0, len(u), 1024):
            d = np.bitwise_count(u[s : s + 1024, None] ^ u[None, :])
            ii, jj = np.nonzero(d <= k)
            keep = jj > ii + s
            i_all.append(idx[ii[keep] + s])
            j_all.append(idx[jj[keep]])
    for on, key in ((by_image, lambda r: r["sha256"]), (by_url, lambda r: normalize_url(r["url"]))):
        if not on:
            continue
        groups: dict = {}
        for x, r in enumerate(recs):
            groups.setdefault(key(r), []).append(x)
        for g in groups.values():
            g = np.array(g)
            ii, jj = np.triu_indices(len(g), 1)
            i_all.append(g[ii])
            j_all.append(g[jj])
    i = np.concatenate(i_all) if i_all else []
    j = np.concatenate(j_all) if j_all else []
    pairs = pairs_table(rows, i, j, [0] * len(i))
    out = decide_duplicates([pairs], k)
    return {r["record_id"]: (r["kept"], r["reason"], r["detail"]) for r in out.to_pylist()}


def decisions_of(folder) -> dict:
    t = pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("part-*.parquet"))])
    return {r["record_id"]: (r["kept"], r["reason"], r["detail"]) for r in t.to_pylist()}


def leader_rule(recs: list[dict], k: int | None, crop: int | None = None, by_image: bool = True,
                by_url: bool = True) -> dict:
    """{record_id: (kept, reason, detail)} by the rule's definition, one record at a time against every
    record kept before it (no index, no components): a second reference, and the one for the crop hash."""
    from curation.crawl.netpolicy import normalize_url

    order = sorted(range(len(recs)), key=lambda i: recs[i]["record_id"])
    norm = [normalize_url(r["url"]) if r["url"] else None for r in recs]
    signals = [(name, d) for name, d in (("phash", k), ("crop_hash", crop)) if d is not None]
    # the kept records so far, in id order: their index, and per signal the hash (0 where none) and its presence
    kept = np.zeros(len(recs), np.int64)
    hashes = {name: np.zeros(len(recs), np.int64) for name, _ in signals}
    present = {name: np.zeros(len(recs), bool) for name, _ in signals}
    first_sha: dict = {}
    first_url: dict = {}
    n_kept = 0
    out = {}
    for i in order:
        r = recs[i]
        match = np.zeros(n_kept, bool)
        if by_image and r["sha256"] and r["sha256"] in first_sha:
            match[first_sha[r["sha256"]]] = True
        if by_url and norm[i] and norm[i] in first_url:
            match[first_url[norm[i]]] = True
        dist = {}
        for name, d in signals:
            if r.get(name) is not None:
                dist[name] = np.bitwise_count(hashes[name][:n_kept].view(np.uint64) ^ np.uint64(r[name] % (1 << 64)))
                match |= present[name][:n_kept] & (dist[name] <= d)
        if not match.any():
            kept[n_kept] = i
            for name, _ in signals:
                if r.get(name) is not None:
                    hashes[name][n_kept] = r[name]
                    present[name][n_kept] = True
            if r["sha256"]:
                first_sha.setdefault(r["sha256"], n_kept)
            if norm[i]:
                first_url.setdefault(norm[i], n_kept)
            n_kept += 1
            continue
        j = int(np.argmax(match))
        q = recs[int(kept[j])]
        if r["sha256"] and r["sha256"] == q["sha256"]:
            out[r["record_id"]] = (q["record_id"], "duplicate_image", f"duplicate of {q['record_id']} (same sha256)")
        elif norm[i] and norm[i] == norm[int(kept[j])]:
            out[r["record_id"]] = (q["record_id"], "duplicate_url", f"duplicate of {q['record_id']} (same normalised URL)")
        else:
            name, d = next((name, int(dist[name][j])) for name, dk in signals
                           if name in dist and present[name][j] and dist[name][j] <= dk)
            out[r["record_id"]] = (q["record_id"], "near_duplicate",
                                   f"near duplicate of {q['record_id']} at hamming distance {d} ({name})")
    return out


def with_crop_hashes(rng: np.random.Generator, recs: list[dict], d: int, share: float = 0.3, chains: int = 4) -> list[dict]:
    """`recs` with a crop hash each: random, or (a `share` of them) within d of an earlier record's crop hash
    with a pHash of their own (a crop that pHash misses), planted crop chains, and a cluster of 60 crops of one
    image (a hot bucket of crop keys)."""
    def rand() -> int:
        return int(rng.integers(-(1 << 63), (1 << 63) - 1, dtype=np.int64))

    out = [dict(r) for r in recs]
    popular = rand()
    for i, r in enumerate(out):
        x = rng.random()
        if i and x < share:
            src = out[int(rng.integers(i))]
            if src["crop_hash"] is not None:
                r["crop_hash"] = flip(src["crop_hash"], rng.choice(64, int(rng.integers(0, d + 1)), replace=False))
                r["phash"] = rand() if r["phash"] is not None else None
                continue
        r["crop_hash"] = flip(popular, rng.choice(64, int(rng.integers(0, d + 1)), replace=False)) if x > 0.98 else rand()
    for c in range(chains):  # crop chains: each step d bits, ends 2d apart
        a = rand()
        bits = rng.choice(64, 2 * d, replace=False)
        for j, h in enumerate((a, flip(a, bits[:d]), flip(a, bits))):
            out.append({"record_id": f"c:{c}:{j}", "sha256": f"chain-{c}-{j}", "url": f"http://crop.example/{c}/{j}",
                        "phash": rand(), "crop_hash": h})
    for r in out[::89]:
        r["crop_hash"] = None
    return out

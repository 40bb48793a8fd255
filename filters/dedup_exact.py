"""Dedup decisions: exact copies (image sha256, normalised URL), groups of pairs, keepers and rejects.

Dedup looks at the whole dataset, so it runs in two steps (jobs/dedup.py):

1. grouping, a shuffle on the cluster (`curation.runner.group_by_key`):
   `exact_rows` emits one row per record and key (`sha256:<hex>`,
   `url:<normalised url>`), `exact_pairs` links each group's records to the
   group's first id; perceptual pairs come from `filters/phash.py`.
2. `decide_duplicates` takes the records named in pairs (only those, which
   are few) in `record_id` order (Python string order: Unicode code points):
   a record that pairs with an earlier kept record is dropped, naming the
   first such record; the others are kept. A dropped record gets a decision: `duplicate_image` (same sha256 as
   the kept record), `duplicate_url` (same normalised URL, other bytes) or
   `near_duplicate` (neither; the Hamming distance of the two hashes in
   detail). `DedupDecide` applies the decisions to the records in a second
   pass, like any filter.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from curation.crawl.netpolicy import normalize_url
from curation.reasons import DUPLICATE_IMAGE, DUPLICATE_URL, NEAR_DUPLICATE
from curation.runtime import Resources
from filters.base import Drop, Filter
from filters.phash import PAIR_SCHEMA, band_rows, candidate_pairs, hamming, pairs_table

__all__ = ["KEY_COLUMNS", "DECISION_SCHEMA", "exact_rows", "exact_pairs", "dedup_rows", "dedup_pairs_of_group",
           "decide_duplicates", "DedupDecide"]

# the small columns the grouping reads from the records
KEY_COLUMNS = ("record_id", "sha256", "url", "phash")
DECISION_SCHEMA = pa.schema([pa.field("record_id", pa.string()), pa.field("reason", pa.string()),
                             pa.field("kept", pa.string()), pa.field("detail", pa.string())])


def exact_rows(batch: pa.Table, by_image: bool = True, by_url: bool = True) -> pa.Table:
    """(key, record_id, sha256, url, phash) per record and key: its image digest, its normalised URL."""
    n = batch.num_rows
    col = {c: (batch.column(c).to_pylist() if c in batch.column_names else [None] * n) for c in KEY_COLUMNS}
    rows: dict[str, list] = {"key": [], "record_id": [], "sha256": [], "url": [], "phash": []}

    def add(key: str, i: int) -> None:
        rows["key"].append(key)
        for c in KEY_COLUMNS:
            rows[c].append(col[c][i])

    for i in range(n):
        if by_image and col["sha256"][i]:
            add(f"sha256:{col['sha256'][i]}", i)
        url = col["url"][i]
        if by_url and isinstance(url, str) and url.strip():
            add(f"url:{normalize_url(url)}", i)
    return pa.table({"key": pa.array(rows["key"], pa.string()), "record_id": pa.array(rows["record_id"], pa.string()),
                     "sha256": pa.array(rows["sha256"], pa.string()), "url": pa.array(rows["url"], pa.string()),
                     "phash": pa.array(rows["phash"], pa.int64())})


def exact_pairs(rows: pa.Table | None) -> pa.Table:
    """For each key shared by several records: (first id, other id) pairs, distance 0."""
    if rows is None or rows.num_rows < 2:
        return PAIR_SCHEMA.empty_table()
    groups: dict[str, list[int]] = {}
    for r, key in enumerate(rows.column("key").to_pylist()):
        groups.setdefault(key, []).append(r)
    ids = rows.column("record_id").to_pylist()
    i: list[int] = []
    j: list[int] = []
    for members in groups.values():
        if len(members) > 1:
            first = min(members, key=lambda r: ids[r])
            i += [first] * (len(members) - 1)
            j += [r for r in members if r != first]
    return pairs_table(rows, i, j, [0] * len(i))


def _key64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def dedup_rows(batch: pa.Table, by_image: bool, by_url: bool, max_distance: int | None) -> pa.Table:
    """Every key row of a batch for one shuffle: exact keys (`text_key`, hashed into `key`) and pHash bands.

    `max_distance` None: no bands. Exact and band rows may share an int key;
    `dedup_pairs_of_group` keeps them apart by `text_key` (null on band rows).
    """
    parts = []
    if by_image or by_url:
        ex = exact_rows(batch, by_image, by_url)
        text = ex.column("key")
        ex = ex.set_column(0, "key", pa.array([_key64(t) for t in text.to_pylist()], pa.int64())).append_column("text_key", text)
        parts.append(ex)
    if max_distance is not None and "phash" in batch.column_names:
        parts.append(band_rows(batch, max_distance))
    if not parts:
        return pa.table({"key": pa.array([], pa.int64())})
    return pa.concat_tables(parts, promote_options="permissive")


def dedup_pairs_of_group(rows: pa.Table | None, max_distance: int | None) -> pa.Table:
    """The pairs of one partition of `dedup_rows`: exact groups by their text key, pHash bands within the distance."""
    if rows is None or rows.num_rows < 2:
        return PAIR_SCHEMA.empty_table()
    if "text_key" not in rows.column_names:
        exact, bands = None, rows
    else:
        is_exact = pc.is_valid(rows.column("text_key"))
        exact, bands = rows.filter(is_exact), rows.filter(pc.invert(is_exact))
    out = []
    if exact is not None and exact.num_rows:
        exact = exact.drop_columns(["key"])  # grouped by the text itself: a clash of hashed keys merges nothing
        out.append(exact_pairs(exact.rename_columns(["key" if c == "text_key" else c for c in exact.column_names])))
    if max_distance is not None and bands.num_rows:
        out.append(candidate_pairs(bands.drop_columns([c for c in ("text_key",) if c in bands.column_names]), max_distance))
    return pa.concat_tables(out) if out else PAIR_SCHEMA.empty_table()


def decide_duplicates(pairs: Iterable[pa.Table], max_distance: int | None = None) -> pa.Table:
    """Decisions (record_id, reason, kept, detail) for the records that an earlier kept record duplicates.

    `pairs`: tables of PAIR_SCHEMA from the grouping (exact and perceptual).
    Records are taken in record_id order; one is dropped when it pairs with
    an earlier record that is kept, and names the first such record (the
    leader rule: no chains, so a near-duplicate is always within the distance
    setting of the record it names).

    With `max_distance` (perceptual dedup on), records of one and the same
    pHash are one set: a pair of pHashes within the distance pairs every member
    of one set with every member of the other, and the members of a set pair
    with each other, without those pairs being listed (a large set comes as a
    star, `filters.phash.identical_stars`). The decisions are those of the
    full list of pairs.
    """
    pairs = list(pairs)
    attributes: dict[str, tuple] = {}
    earlier: dict[str, set[str]] = {}  # record-level pairs: exact keys (and all pairs without max_distance)
    near: dict[int, set[int]] = {}  # set-level pairs: pHashes within max_distance
    for t in pairs:
        for side in ("a", "b"):
            for rid, sha, url, ph in zip(*(t.column(c).to_pylist() for c in (side, f"{side}_sha256", f"{side}_url", f"{side}_phash"))):
                attributes[rid] = (sha, url, ph)
        for a, b, pa_, pb in zip(*(t.column(c).to_pylist() for c in ("a", "b", "a_phash", "b_phash"))):
            if max_distance is not None and pa_ is not None and pb is not None and hamming(pa_, pb) <= max_distance:
                near.setdefault(pa_, set()).add(pb)
                near.setdefault(pb, set()).add(pa_)
            else:
                earlier.setdefault(b, set()).add(a)
    dropped: dict[str, str] = {}  # record -> the kept record it duplicates
    first_kept: dict[int, str] = {}  # pHash -> its first kept record (at most one of a set is kept)
    candidates = earlier.keys() | {rid for rid, (_, _, ph) in attributes.items() if ph in near}
    for rid in sorted(candidates):
        kept = [a for a in earlier.get(rid, ()) if a not in dropped]
        ph = attributes[rid][2]
        if ph in near:  # the first kept record of its own set and of each set within the distance
            kept += [first_kept[h] for h in (ph, *near[ph]) if h in first_kept]
        if kept:
            dropped[rid] = min(kept)
        elif ph in near:
            first_kept.setdefault(ph, rid)
    rows = {"record_id": [], "reason": [], "kept": [], "detail": []}
    for rid, kept in dropped.items():
        sha, url, ph = attributes[rid]
        ksha, kurl, kph = attributes[kept]
        if sha and sha == ksha:
            reason, detail = DUPLICATE_IMAGE, f"duplicate of {kept} (same sha256)"
        elif url and kurl and normalize_url(url) == normalize_url(kurl):
            reason, detail = DUPLICATE_URL, f"duplicate of {kept} (same normalised URL)"
        else:
            d = hamming(ph, kph) if ph is not None and kph is not None else None
            reason, detail = NEAR_DUPLICATE, f"near duplicate of {kept} at hamming distance {d} (phash)"
        rows["record_id"].append(rid)
        rows["reason"].append(reason)
        rows["kept"].append(kept)
        rows["detail"].append(detail)
    return pa.table(rows, schema=DECISION_SCHEMA)


class DedupDecide(Filter):
    """Drops the records that the dedup decisions name.

    `decisions`: a table or Parquet file keyed by record_id (small sets, read
    once per worker); or `folder` and `ranges`: the decision files of
    `curation.dedup.leaders.write_decisions`, one per range of input rows,
    matched by each row's `_node` (the reader numbers the rows,
    `curation.runner.ParquetReader(node_files=...)`); a worker reads the
    files of the ranges its rows fall in, one at a time.
    """

    name = "dedup"
    resources = Resources(cpus=1)
    batch_size = 1024

    def __init__(self, decisions: pa.Table | str | None = None, folder: str | None = None,
                 ranges: Sequence[int] | None = None, keep_node: bool = False):
        """`keep_node`: leave the `_node` column for a later stage that also reads decisions by row range
        (`filters.semdedup.SemanticDedup`); else it goes with this stage."""
        if (decisions is None) == (folder is None):
            raise ValueError("DedupDecide takes decisions by record_id or a folder of decisions by row range")
        self.consumes = () if keep_node else ("_node",)
        from curation.dedup.decisions import RangeDecisions

        self.source = decisions
        self.folder = folder
        self.by_range = RangeDecisions(folder, ranges or ()) if folder is not None else None
        self._by_id: dict[str, Drop] | None = None

    def __getstate__(self):
        return {**self.__dict__, "_by_id": None}

    def setup(self) -> None:
        if self.folder is not None:
            return
        from curation.storage.fs import read_parquet

        table = read_parquet(self.source) if isinstance(self.source, str) else self.source
        self._by_id = {rid: Drop(reason, detail) for rid, reason, detail in zip(
            table.column("record_id").to_pylist(), table.column("reason").to_pylist(), table.column("detail").to_pylist())}

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        if self.by_range is not None:
            from curation.dedup.decisions import nodes_of

            return [Drop(*hit) if hit else None for hit in self.by_range.lookup(nodes_of(batch, "DedupDecide"))]
        if self._by_id is None:
            self.setup()
        return [self._by_id.get(rid) for rid in batch.column("record_id").to_pylist()]

"""CLIP top fraction: keep the best-scoring fraction of the whole dataset (DataComp's CLIP-score filter).

An absolute threshold keeps an unknown share; DataComp's best small-scale
baseline keeps the top 30% by CLIP score instead, and Qwen-VL tunes its cut per
source. That needs every score before any decision, so it runs in two passes
(jobs/web_pairs.py wires them through the runner):

1. the filters score every record (`clip_score`, or scores already in the input);
2. the cutoff of each group, exactly: records ordered by score, highest first,
   ties by record id, smallest first; the cutoff is the ceil(f x N)-th of the
   N scored records of a group. `cutoffs_on_cluster` (what the job runs) finds
   it by radix selection over folds on the cluster (`curation.runner.fold_shards`):
   two rounds of 16-bit histograms of the scores' sortable 32 bits find the
   cutoff score, a third the record id among the records tied at it. The
   driver holds 65,536 counts a group and the ids tied at the cutoff, never a
   column. `top_fraction_cutoff` / `fraction_cutoffs` do the same in memory
   (the reference the tests compare with);
3. `ClipTopFraction`, a stage of the second pass over the scored records,
   keeps a record when its (score, id) ranks at or above its group's cutoff:
   exactly ceil(f x N) per group, since record ids are unique.

Groups: `fraction` applies to every source not named in `by_source`;
`by_source` = {source: fraction} gives a source its own cut over its own
records. A source with no fraction (none given) is not cut. Records without a
score (no caption, or no CLIP stage) are not ranked and not dropped here.

Records that dedup drops (its decisions by row range, `curation.dedup.decisions`) are
not ranked. The cutoffs go into the manifest (`clip_keep_fraction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Container, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from curation.errors import InputError
from curation.reasons import CLIP_SCORE_BELOW_FRACTION
from curation.runtime import Resources
from filters.base import Drop, Filter

__all__ = ["ALL_SOURCES", "Cutoff", "cutoffs_json", "keep_count", "top_fraction_cutoff", "fraction_cutoffs", "cutoffs_on_cluster", "check_fractions", "ClipTopFraction"]

# the group of the sources without a fraction of their own
ALL_SOURCES = "*"


@dataclass(frozen=True)
class Cutoff:
    """The last kept (score, record id) of a group, and the group's figures."""

    fraction: float
    scored: int  # N: records with a score in the group
    kept: int  # ceil(fraction x N)
    clip_score: float | None  # the cutoff; None when nothing is kept
    record_id: str | None

    def keeps(self, score: float, record_id: str) -> bool:
        if self.clip_score is None:
            return False
        return score > self.clip_score or (score == self.clip_score and record_id <= self.record_id)


def keep_count(fraction: float, n: int) -> int:
    """ceil(fraction x n), with the fraction taken as the decimal it is written as (0.3 x 10 = 3, not 4)."""
    return math.ceil(Fraction(repr(float(fraction))) * n)


def check_fractions(fraction: float | None, by_source: Mapping[str, float] | None) -> None:
    for name, f in [("clip_keep_fraction", fraction), *((f"clip_keep_fraction_by_source[{s!r}]", v) for s, v in (by_source or {}).items())]:
        if f is not None and (isinstance(f, bool) or not (isinstance(f, (int, float)) and 0 < f <= 1)):
            raise InputError(f"{name} must be a fraction in (0, 1], got {f!r}")


def top_fraction_cutoff(scores: Sequence[float] | np.ndarray, ids: Sequence[str], fraction: float) -> Cutoff:
    """The cutoff that keeps the best ceil(fraction x N) of N scored records, ties broken by record id."""
    scores = np.asarray(scores, dtype=np.float32)
    n = int(scores.shape[0])
    if n != len(ids):
        raise ValueError(f"{n} scores for {len(ids)} ids")
    k = keep_count(fraction, n)
    if k == 0:
        return Cutoff(float(fraction), n, 0, None, None)
    id_array = np.asarray(ids, dtype=str)
    order = np.lexsort((id_array, -scores))  # the last key sorts first: score descending, then id ascending
    last = int(order[k - 1])
    return Cutoff(float(fraction), n, k, float(scores[last]), str(id_array[last]))


def fraction_cutoffs(
    columns: Iterable[pa.Table], fraction: float | None, by_source: Mapping[str, float] | None = None,
    exclude: Container[str] = (),
) -> dict[str, Cutoff]:
    """{source or ALL_SOURCES: Cutoff} over tables of `record_id`, `source`, `clip_score` (one per shard);
    records in `exclude` (dropped by an earlier decision of the same pass, semantic duplicates) are not ranked."""
    check_fractions(fraction, by_source)
    by_source = dict(by_source or {})
    ids: dict[str, list[str]] = {}
    scores: dict[str, list[np.ndarray]] = {}
    for t in columns:
        if t.num_rows == 0:
            continue
        score = t.column("clip_score").to_numpy(zero_copy_only=False).astype(np.float32)
        valid = ~np.isnan(score)  # nulls come back as NaN
        rid = t.column("record_id").to_pylist()
        src = t.column("source").to_pylist()
        for group in set(src):
            key = group if group in by_source else ALL_SOURCES
            if key == ALL_SOURCES and fraction is None:
                continue
            mask = valid & np.fromiter((s == group for s in src), bool, len(src))
            if exclude:
                mask &= np.fromiter((r not in exclude for r in rid), bool, len(rid))
            ids.setdefault(key, []).extend(r for r, m in zip(rid, mask) if m)
            scores.setdefault(key, []).append(score[mask])
    groups = {s: f for s, f in by_source.items()}
    if fraction is not None:
        groups[ALL_SOURCES] = fraction
    out = {}
    for key, f in groups.items():
        s = np.concatenate(scores[key]) if key in scores else np.zeros(0, np.float32)
        out[key] = top_fraction_cutoff(s, ids.get(key, []), f)
    return out


# ---------------------------------------------------------------- the same cutoffs, on the cluster

_BITS = 16  # a radix-select round histograms 16 bits of the 32-bit score key: 65,536 counts a group


def _desc_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the float32 scores' descending order (-0.0 taken as 0.0)."""
    b = (np.asarray(scores, np.float32) + np.float32(0.0)).view(np.uint32)
    asc = np.where(b & np.uint32(0x80000000), ~b, b | np.uint32(0x80000000))
    return ~asc


def _score_of(key: int) -> float:
    asc = ~np.uint32(key)
    bits = asc & np.uint32(0x7FFFFFFF) if asc & np.uint32(0x80000000) else ~asc
    return float(np.array([bits], np.uint32).view(np.float32)[0])


def _ranked(batch: pa.Table, groups: Sequence[str], exclude: Sequence) -> tuple:
    """(group index per ranked row, key per row, row indices) of the scored rows of `batch` that are not
    excluded (dropped by an earlier decision: `curation.dedup.decisions.RangeDecisions`)."""
    import pyarrow.compute as pc

    score = batch.column("clip_score").to_numpy(zero_copy_only=False).astype(np.float32)
    named = [g for g in groups if g != ALL_SOURCES]
    where = pc.fill_null(pc.index_in(batch.column("source"), value_set=pa.array(named, pa.string())), -1)
    where = where.to_numpy(zero_copy_only=False).astype(np.int64)
    group = np.where(where >= 0, where, groups.index(ALL_SOURCES) if ALL_SOURCES in groups else -1)
    ok = ~np.isnan(score) & (group >= 0)
    if exclude and ok.any():
        from curation.dedup.decisions import nodes_of

        nodes = nodes_of(batch, "the CLIP top fraction's exclusion of duplicates")
        for d in exclude:
            ok &= ~d.decided(nodes)
    rows = np.flatnonzero(ok)
    return group[rows], _desc_keys(score[rows]), rows


def _fold_histograms(batch, value, groups, exclude, spec):
    """One radix round: per group (known prefix bits p, prefix), the histogram of the next 16 bits of the keys
    that start with the prefix."""
    g, keys, _ = _ranked(batch, groups, exclude)
    value = value if value is not None else {}
    for i, (p, prefix) in spec.items():
        k = keys[g == i].astype(np.uint64)
        if p:
            k = k[(k >> np.uint64(32 - p)) == np.uint64(prefix)]
        digits = (k >> np.uint64(32 - p - _BITS)) & np.uint64((1 << _BITS) - 1)
        h = np.bincount(digits.astype(np.int64), minlength=1 << _BITS)
        value[i] = value[i] + h if i in value else h
    return value


def _fold_ties(batch, value, groups, exclude, spec):
    """The last round: per group (key, r), the r smallest record ids of the rows with exactly that key."""
    g, keys, rows = _ranked(batch, groups, exclude)
    ids = batch.column("record_id")
    value = value if value is not None else {}
    for i, (key, r) in spec.items():
        hit = rows[(g == i) & (keys == np.uint32(key))]
        value[i] = sorted(value.get(i, []) + ids.take(pa.array(hit, pa.int64())).to_pylist())[:r]
    return value


def _add(a: dict, b: dict) -> dict:
    return {i: a[i] + b[i] if i in a and i in b else a.get(i, b.get(i)) for i in {*a, *b}}


def cutoffs_on_cluster(shards: Sequence, names: Sequence[str], fraction: float | None,
                       by_source: Mapping[str, float] | None = None, exclude: Sequence = (),
                       executor: str = "ray") -> dict[str, Cutoff]:
    """`fraction_cutoffs` over the records files `names` (their `shards`), as folds on the cluster: the driver
    holds 65,536 counts a group and at the end the few ids tied at a cutoff, never a column.

    Exact radix selection on the scores' 32 bits (two rounds of 16-bit histograms find the cutoff score; a
    third finds the record id among the records tied at it); `exclude`: decisions by row range
    (`curation.dedup.decisions.RangeDecisions`) whose records are not ranked."""
    import functools

    from curation.runner import ParquetReader, fold_shards

    check_fractions(fraction, by_source)
    by_source = dict(by_source or {})
    groups = list(by_source) + ([ALL_SOURCES] if fraction is not None else [])
    if not groups:
        return {}
    fractions = [by_source.get(g, fraction) for g in groups]
    numbered = tuple(str(n) for n in names) if exclude else None
    reader = ParquetReader(batch_size=65_536, columns=("source", "clip_score"), node_files=numbered)
    common = dict(groups=groups, exclude=tuple(exclude))
    state = {i: (0, 0) for i in range(len(groups))}  # (prefix bits, prefix)
    rank: dict[int, int] = {}
    scored: dict[int, int] = {}
    for _ in range(32 // _BITS):
        hists = fold_shards(shards, reader, functools.partial(_fold_histograms, spec=state, **common), _add,
                            executor=executor) or {}
        nxt = {}
        for i, (p, prefix) in state.items():
            h = hists.get(i, np.zeros(1 << _BITS, np.int64))
            if p == 0:
                scored[i] = int(h.sum())
                rank[i] = keep_count(fractions[i], scored[i])
                if rank[i] == 0:
                    continue
            cum = np.cumsum(h)
            b = int(np.searchsorted(cum, rank[i]))  # the first bin whose running count reaches the rank
            rank[i] -= int(cum[b - 1]) if b else 0
            nxt[i] = (p + _BITS, (prefix << _BITS) | b)
        state = nxt
    ties = {}
    if state:
        spec = {i: (prefix, rank[i]) for i, (_, prefix) in state.items()}
        id_reader = ParquetReader(batch_size=65_536, columns=("record_id", "source", "clip_score"), node_files=numbered)
        ties = fold_shards(shards, id_reader, functools.partial(_fold_ties, spec=spec, **common),
                           lambda a, b: {i: sorted(a.get(i, []) + b.get(i, []))[:spec[i][1]] for i in {*a, *b}},
                           executor=executor) or {}
    out = {}
    for i, g in enumerate(groups):
        if i not in state:
            out[g] = Cutoff(float(fractions[i]), scored.get(i, 0), 0, None, None)
            continue
        out[g] = Cutoff(float(fractions[i]), scored[i], keep_count(fractions[i], scored[i]), _score_of(state[i][1]),
                        ties[i][rank[i] - 1])
    return out


class ClipTopFraction(Filter):
    """Second pass: drop the scored records below their group's cutoff."""

    name = "clip_fraction"
    resources = Resources(cpus=1)
    batch_size = 4096

    def __init__(self, cutoffs: Mapping[str, Cutoff]):
        self.cutoffs = dict(cutoffs)

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        n = batch.num_rows
        if "clip_score" not in batch.column_names:
            return [None] * n
        out: list[Drop | None] = []
        for rid, src, score in zip(batch.column("record_id").to_pylist(), batch.column("source").to_pylist(),
                                   batch.column("clip_score").to_pylist()):
            cut = self.cutoffs.get(src, self.cutoffs.get(ALL_SOURCES))
            if cut is None or score is None or math.isnan(score) or cut.keeps(score, rid):
                out.append(None)
                continue
            where = f"source {src!r}" if src in self.cutoffs else "the dataset"
            last = f"{cut.clip_score:.4f} ({cut.record_id})" if cut.clip_score is not None else "none kept"
            out.append(Drop(CLIP_SCORE_BELOW_FRACTION, f"{score:.4f} below the top {cut.fraction:g} of {where}: cutoff {last}"))
        return out


def cutoffs_json(cutoffs: Mapping[str, Cutoff]) -> dict:
    """The manifest's `clip_keep_fraction` block."""
    return {k: {"fraction": c.fraction, "scored": c.scored, "kept": c.kept, "threshold": c.clip_score,
                "threshold_record_id": c.record_id} for k, c in cutoffs.items()}

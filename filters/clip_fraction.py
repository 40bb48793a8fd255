"""CLIP top fraction: keep the best-scoring fraction of the whole dataset (DataComp's CLIP-score filter).

An absolute threshold keeps an unknown share; DataComp's best small-scale
baseline keeps the top 30% by CLIP score instead, and Qwen-VL tunes its cut per
source. That needs every score before any decision, so it runs in two passes
(jobs/web_pairs.py wires them through the runner):

1. the filters score every record (`clip_score`, or scores already in the input);
2. the driver reads two small columns per shard (`record_id`, `source`,
   `clip_score`; never an image) and computes the cutoff here, exactly
   (`top_fraction_cutoff`): records ordered by score, highest first, ties by
   record id, smallest first; the cutoff is the ceil(f x N)-th of the N scored
   records of a group;
3. `ClipTopFraction`, a stage of the second pass over the scored records,
   keeps a record when its (score, id) ranks at or above its group's cutoff:
   exactly ceil(f x N) per group, since record ids are unique.

Groups: `fraction` applies to every source not named in `by_source`;
`by_source` = {source: fraction} gives a source its own cut over its own
records. A source with no fraction (none given) is not cut. Records without a
score (no caption, or no CLIP stage) are not ranked and not dropped here.

Exact, so the driver holds N (id, score) pairs: about 50 bytes each plus the
id's length (10 million records: under 1 GB). The cutoffs go into the
manifest (`clip_keep_fraction`).
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

__all__ = ["ALL_SOURCES", "Cutoff", "cutoffs_json", "keep_count", "top_fraction_cutoff", "fraction_cutoffs", "check_fractions", "ClipTopFraction"]

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

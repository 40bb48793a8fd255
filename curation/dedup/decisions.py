"""Decisions by row range: where a dedup step's drops are written and how the second pass finds them.

Every dedup kind (exact, URL, pHash: `leaders.decide_members`; semantic: `filters.semdedup`) writes its
decisions the same way, through `leaders.write_decisions`: one Parquet file per range of input rows
(`folder/part-NNNNN.parquet`, sorted by `node`, the row's place in the input: `curation.runner.node_id`).
`row_ranges` cuts the input into those ranges by its shards, so a shard task of the second pass reads the
files of the one or two ranges its rows fall in, never the whole set, and the driver holds the range
boundaries only (one int per range).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

__all__ = ["RangeDecisions", "row_ranges"]


def row_ranges(shards: Sequence, names: Sequence[str], parts: int) -> tuple[list[tuple], list[int]]:
    """(groups of consecutive shards, the first node of every group but the first): at most `parts` groups."""
    from curation.runner import shard_nodes

    q = max(1, min(len(shards), parts))
    groups = [tuple(shards[i * len(shards) // q:(i + 1) * len(shards) // q]) for i in range(q)]
    return groups, [shard_nodes(g[0], names) for g in groups[1:]]


class RangeDecisions:
    """The decisions of `folder` (written by `leaders.write_decisions` for `ranges`), read one range file at a
    time, as a batch's rows need them. Picklable: the cache is dropped."""

    def __init__(self, folder: str, ranges: Sequence[int]):
        self.folder = folder
        self.ranges = tuple(int(r) for r in ranges)
        self._part: tuple[int, np.ndarray, list, list] | None = None

    def __getstate__(self):
        return {**self.__dict__, "_part": None}

    def _load(self, part: int) -> tuple[int, np.ndarray, list, list]:
        if self._part is None or self._part[0] != part:
            from curation.storage import fs as storage

            t = storage.read_parquet(storage.join(self.folder, f"part-{part:05d}.parquet"), columns=["node", "reason", "detail"])
            self._part = (part, t.column("node").to_numpy(), t.column("reason").to_pylist(), t.column("detail").to_pylist())
        return self._part

    def _hits(self, nodes: np.ndarray):
        """(row indices, their indices in the part's file, the part) for each part the nodes fall in."""
        parts = np.searchsorted(np.asarray(self.ranges, dtype=np.int64), nodes, side="right")
        for part in np.unique(parts).tolist():
            _, known, reasons, details = self._load(part)
            rows = np.flatnonzero(parts == part)
            if not len(known):
                continue
            at = np.clip(np.searchsorted(known, nodes[rows]), 0, len(known) - 1)
            hit = known[at] == nodes[rows]
            yield rows[hit], at[hit], reasons, details

    def lookup(self, nodes: np.ndarray) -> list[tuple[str, str] | None]:
        """(reason, detail) of each node's decision, None where there is none."""
        out: list[tuple[str, str] | None] = [None] * len(nodes)
        for rows, at, reasons, details in self._hits(np.asarray(nodes, dtype=np.int64)):
            for r, i in zip(rows.tolist(), at.tolist()):
                out[r] = (reasons[i], details[i])
        return out

    def decided(self, nodes: np.ndarray) -> np.ndarray:
        """A bool mask: which nodes have a decision (a drop)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        out = np.zeros(len(nodes), bool)
        for rows, _, _, _ in self._hits(nodes):
            out[rows] = True
        return out


def nodes_of(batch: pa.Table, what: str) -> np.ndarray:
    """The `_node` column of a batch read with numbered rows; a clear error when the reader did not number them."""
    if "_node" not in batch.column_names:
        raise ValueError(f"{what} by row range needs a reader that numbers the rows (ParquetReader(node_files=...))")
    return batch.column("_node").to_numpy()

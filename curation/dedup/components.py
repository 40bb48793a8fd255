"""Connected components of an edge list as shuffles: large-star and small-star rounds.

After Kiveris et al., "Connected Components in Map Reduce and Beyond" (SoCC
2014). Each round groups the edges by a node:

- large-star: a node u links each larger neighbour to the smallest of u and
  its neighbours;
- small-star: a node u links itself and its smaller neighbours to the
  smallest of them.

The rounds alternate until large-star finds every node settled (a node with
no smaller neighbour, or with exactly one and no larger: the edges are then a
star per component, every member joined to the component's smallest node).
Rounds are O(log^2 n) in theory and few in practice (a chain of 10^5 nodes
in random order: bench_dedup_scale.py). Every step is numpy over sorted arrays;
a node with 10^6 neighbours (one hot image) is one group, linear.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.dedup.keys import _group_starts, unique_edges

__all__ = ["large_star_rows", "large_star", "small_star_rows", "small_star", "label_rows", "labels"]


def _pairs(edges: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return edges.column("a").to_numpy(), edges.column("b").to_numpy()


def large_star_rows(edges: pa.Table) -> pa.Table:
    """Map: each edge under both of its nodes."""
    a, b = _pairs(edges)
    return pa.table({"key": pa.array(np.r_[a, b], pa.int64()), "other": pa.array(np.r_[b, a], pa.int64())})


def _grouped(rows: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    u, v = rows.column("key").to_numpy(), rows.column("other").to_numpy()
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    starts = _group_starts(u, v)  # repeated edges once
    u, v = u[starts], v[starts]
    starts = _group_starts(u)
    return u, v, starts, np.diff(np.r_[starts, len(u)])


def large_star(rows: pa.Table | None, part: int) -> tuple[pa.Table, dict]:
    """Reduce: for node u with neighbours N, m = min(N + u); edges (v, m) for v in N larger than u.
    Counts the nodes not yet settled (more than one smaller neighbour, or one and a larger)."""
    if rows is None or rows.num_rows == 0:
        return unique_edges(np.empty(0, np.int64), np.empty(0, np.int64)), {"unsettled": 0, "edges": 0}
    u, v, starts, sizes = _grouped(rows)
    first_v = v[starts]  # the smallest neighbour of each node (sorted)
    m = np.minimum(u[starts], first_v)
    m_of = np.repeat(m, sizes)
    smaller = np.add.reduceat((v < u).astype(np.int64), starts)
    larger = sizes - smaller
    unsettled = int(np.count_nonzero((smaller >= 2) | ((smaller >= 1) & (larger >= 1))))
    up = v > u
    edges = unique_edges(v[up], m_of[up])
    return edges, {"unsettled": unsettled, "edges": edges.num_rows}


def small_star_rows(edges: pa.Table) -> pa.Table:
    """Map: each edge under its larger node."""
    a, b = _pairs(edges)
    return pa.table({"key": pa.array(np.maximum(a, b), pa.int64()), "other": pa.array(np.minimum(a, b), pa.int64())})


def small_star(rows: pa.Table | None, part: int) -> tuple[pa.Table, dict]:
    """Reduce: node u with its smaller neighbours N: m = min(N + u); edges (v, m) for v in N + u but m."""
    if rows is None or rows.num_rows == 0:
        return unique_edges(np.empty(0, np.int64), np.empty(0, np.int64)), {"edges": 0}
    u, v, starts, sizes = _grouped(rows)
    m = np.minimum(u[starts], v[starts])
    m_of = np.repeat(m, sizes)
    a = np.r_[v, u[starts]]
    b = np.r_[m_of, m]
    edges = unique_edges(a, b)  # (m, m) self-loops go
    return edges, {"edges": edges.num_rows}


def label_rows(edges: pa.Table) -> pa.Table:
    """Map, on settled stars (a: the root, b: a member): rows (key = node, root) for members and roots."""
    a, b = _pairs(edges)
    return pa.table({"key": pa.array(np.r_[b, a], pa.int64()), "root": pa.array(np.r_[a, a], pa.int64())})


def labels(rows: pa.Table | None, part: int) -> tuple[pa.Table, dict]:
    """Reduce: (node, root) once per node, sorted by node."""
    if rows is None or rows.num_rows == 0:
        return pa.table({"node": pa.array([], pa.int64()), "root": pa.array([], pa.int64())}), {"nodes": 0, "components": 0}
    node, root = rows.column("key").to_numpy(), rows.column("root").to_numpy()
    order = np.lexsort((root, node))
    node, root = node[order], root[order]
    first = _group_starts(node)
    node, root = node[first], root[first]
    return (pa.table({"node": pa.array(node, pa.int64()), "root": pa.array(root, pa.int64())}),
            {"nodes": len(node), "components": int(np.count_nonzero(node == root))})

"""Semantic dedup, SemDeDup-style: near-identical CLIP image embeddings, one kept per group.

SemDeDup (Abbas et al. 2023) removes half of LAION with no loss: cluster the
image embeddings with k-means, then within each cluster drop every image whose
cosine similarity to another one is above a threshold. Here:

1. `ClipScore(keep_embeddings=True)` (filters/clip_score.py) measures
   `clip_embedding`, the L2-normalised image embedding, in the first pass;
2. `find_semantic_duplicates` runs on a worker (one Ray task through
   `curation.runner.run_remote`, on a GPU when the cluster has one): it reads
   the `record_id` and `clip_embedding` columns of the scored shards itself,
   clusters them with spherical k-means in torch (`kmeans`), and within each
   cluster walks the members in record-id order, keeping a member unless its
   cosine similarity to an already kept member is above `threshold`
   (`semantic_duplicates`). It returns only the dropped ids, each with the
   kept record and the similarity: the driver never holds an embedding;
3. `SemanticDedup`, a stage of the second pass, drops them: reason
   `semantic_duplicate`, detail naming the kept record and the similarity.

The keeper is deterministic: the smallest record id of a group (the same
order as the exact dedup). `threshold` is a cosine similarity (SemDeDup's
eps = 1 - threshold); clusters: `clusters`, by default ceil(N / 1000), so
the comparisons grow as N x 1000, not N^2. As in SemDeDup, two duplicates
that k-means puts in different clusters are not compared.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import InputError
from curation.reasons import SEMANTIC_DUPLICATE
from curation.runtime import Resources
from filters.base import Drop, Filter

__all__ = ["kmeans", "semantic_duplicates", "find_semantic_duplicates", "write_duplicates", "default_clusters", "SemanticDedup", "check_settings"]

ROWS_PER_CLUSTER = 1000


def check_settings(threshold: float, clusters: int | None) -> None:
    if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and -1 <= threshold < 1):
        raise InputError(f"semdedup_threshold must be a cosine similarity in [-1, 1), got {threshold!r}")
    if clusters is not None and (isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 1):
        raise InputError(f"semdedup_clusters must be a positive whole number, got {clusters!r}")


def default_clusters(n: int) -> int:
    return max(1, math.ceil(n / ROWS_PER_CLUSTER))


def kmeans(x, k: int, iters: int = 25, seed: int = 0):
    """Spherical k-means over L2-normalised rows of `x` (a torch tensor): (centroids k x d, labels n).

    k-means++ seeding with a seeded generator (same input, same clusters), then
    Lloyd steps on cosine similarity until no label changes; an empty cluster keeps its centroid.
    """
    import torch

    n = x.shape[0]
    k = max(1, min(k, n))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=gen))
    centroids = x[first : first + 1].clone()
    closest = 1 - (x @ centroids.T).squeeze(1)  # cosine distance to the nearest centroid
    for _ in range(1, k):
        weights = closest.clamp(min=0).double().cpu()
        if float(weights.sum()) <= 0:
            break  # every point sits on a centroid: fewer distinct points than k
        pick = int(torch.multinomial(weights, 1, generator=gen))
        centroids = torch.cat([centroids, x[pick : pick + 1]])
        closest = torch.minimum(closest, 1 - x @ x[pick])
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        new = (x @ centroids.T).argmax(dim=1)
        if torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=centroids.shape[0])
        filled = counts > 0
        centroids[filled] = torch.nn.functional.normalize(sums[filled], dim=1)
    return centroids, labels


def semantic_duplicates(ids: Sequence[str], x, labels, threshold: float) -> dict[str, tuple[str, float]]:
    """{dropped id: (kept id, cosine similarity)} within each cluster, members in record-id order."""
    import torch

    out: dict[str, tuple[str, float]] = {}
    labels_np = labels.cpu().numpy()
    order = np.argsort(np.asarray(ids, dtype=str), kind="stable")
    for cluster in np.unique(labels_np):
        members = order[labels_np[order] == cluster]
        if len(members) < 2:
            continue
        e = x[torch.as_tensor(members, device=x.device)]
        sims = (e @ e.T).float().cpu().numpy()
        kept: list[int] = [0]
        for j in range(1, len(members)):
            row = sims[j, kept]
            best = int(row.argmax())
            if row[best] > threshold:
                out[ids[members[j]]] = (ids[members[kept[best]]], float(row[best]))
            else:
                kept.append(j)
    return out


def find_semantic_duplicates(paths: Sequence[str], threshold: float, clusters: int | None = None,
                             seed: int = 0) -> dict:
    """The whole global step, on one worker: read the embeddings of `paths`, cluster, find the duplicates.

    Returns {"duplicates": {dropped: [kept, similarity]}, "embedded": N, "clusters": k, "device": ...}.
    """
    import pyarrow.parquet as pq
    import torch

    ids: list[str] = []
    chunks: list[np.ndarray] = []
    dim = None
    for path in paths:
        t = pq.read_table(path, columns=["record_id", "clip_embedding"])
        t = t.filter(t.column("clip_embedding").is_valid())
        if t.num_rows == 0:
            continue
        flat = t.column("clip_embedding").combine_chunks()
        lengths = set(pc.list_value_length(flat).unique().to_pylist())
        if len(lengths) != 1 or (dim is not None and lengths != {dim}):
            raise ValueError(f"{path}: clip_embedding rows of different lengths {sorted(lengths)} (expected {dim})")
        dim = lengths.pop()
        chunks.append(flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32))
        ids += t.column("record_id").to_pylist()
    if not ids:
        return {"duplicates": {}, "embedded": 0, "clusters": 0, "device": "cpu"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.nn.functional.normalize(torch.from_numpy(np.concatenate(chunks)).to(device), dim=1)
    k = min(clusters or default_clusters(len(ids)), len(ids))
    with torch.inference_mode():
        _, labels = kmeans(x, k, seed=seed)
        dups = semantic_duplicates(ids, x, labels, threshold)
    return {"duplicates": {d: [kept, sim] for d, (kept, sim) in dups.items()}, "embedded": len(ids), "clusters": k,
            "device": device}


def write_duplicates(duplicates: Mapping[str, Sequence], path) -> str:
    """{dropped id: (kept id, similarity)} as a Parquet file for `SemanticDedup`; returns its path."""
    import pyarrow.parquet as pq

    items = sorted(duplicates.items())
    pq.write_table(pa.table({"record_id": pa.array([k for k, _ in items], pa.string()),
                             "kept": pa.array([str(v[0]) for _, v in items], pa.string()),
                             "similarity": pa.array([float(v[1]) for _, v in items], pa.float32())}), path)
    return str(path)


class SemanticDedup(Filter):
    """Second pass: drop the records found as semantic duplicates; `clip_embedding` only stays when asked."""

    name = "semdedup"
    resources = Resources(cpus=1)
    batch_size = 4096
    measures = (pa.field("clip_embedding", pa.list_(pa.float32())),)

    def __init__(self, duplicates: Mapping[str, Sequence] | str, keep_embeddings: bool = False):
        """`duplicates`: {dropped id: (kept id, similarity)}, or the path of a Parquet file of them
        (`write_duplicates`), read once per worker in `setup()` rather than shipped with every shard task."""
        self.path = duplicates if isinstance(duplicates, str) else None
        self.duplicates = None if self.path else {k: (str(v[0]), float(v[1])) for k, v in duplicates.items()}
        self.keep_embeddings = keep_embeddings

    def setup(self) -> None:
        if self.duplicates is None:
            import pyarrow.parquet as pq

            t = pq.read_table(self.path)
            self.duplicates = dict(zip(t.column("record_id").to_pylist(),
                                       zip(t.column("kept").to_pylist(), t.column("similarity").to_pylist())))

    def measure(self, batch: pa.Table) -> dict[str, pa.Array]:
        if self.keep_embeddings or "clip_embedding" not in batch.column_names:
            return {}
        return {"clip_embedding": pa.nulls(batch.num_rows, pa.list_(pa.float32()))}

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        if self.duplicates is None:
            self.setup()
        out: list[Drop | None] = []
        for rid in batch.column("record_id").to_pylist():
            hit = self.duplicates.get(rid)
            out.append(Drop(SEMANTIC_DUPLICATE, f"of {hit[0]}: cosine {hit[1]:.4f}") if hit else None)
        return out

"""Semantic dedup, SemDeDup-style: near-identical CLIP image embeddings, one kept per group.

SemDeDup (Abbas et al. 2023) removes half of LAION with no loss: cluster the
image embeddings with k-means, then within each cluster drop every image whose
cosine similarity to another one is above a threshold. Here:

1. `ClipScore(keep_embeddings=True)` (filters/clip_score.py) measures
   `clip_embedding`, the L2-normalised image embedding, in the first pass;
2. the global step, after the first pass (`jobs/dedup.py` `semantic_step`):
   tasks count the embeddings and write a strided sample of them (every
   stride-th row of each file: 256 a cluster, as faiss; at most FIT_ROWS
   unless the clusters need 39 each) to files of the work dir (`sample_fold`,
   `sample_finish`); `fit_centroids` runs spherical k-means in torch
   (`kmeans`) on one worker (a GPU when the cluster has one) over that sample
   and saves the centroids beside the job's work files; then a shuffle on
   the cluster (`curation.runner.shuffle`) assigns every record to its
   nearest centroid in the map tasks (`assign_rows`) and, in the reduce
   tasks, walks each cluster's members in record-id order, keeping a member
   unless its cosine similarity to an already kept member is above
   `threshold` (`cluster_duplicates`, `semantic_duplicates`: SIM_BLOCK members
   at a time against the kept ones, so a hot cluster holds a block's rows of
   similarities). The duplicates go, in a second shuffle, into decision files
   by row range as the other dedup kinds' do (`curation.dedup.decisions`,
   `curation.dedup.leaders.write_decisions`). No task holds more than a
   sample and a partition of the embeddings, and the driver holds counts;
3. `SemanticDedup`, a stage of the second pass, drops them: reason
   `semantic_duplicate`, detail naming the kept record and the similarity.

The keeper is deterministic: the smallest record id of a group (the same
order as the exact dedup). `threshold` is a cosine similarity (SemDeDup's
eps = 1 - threshold); clusters: `clusters`, by default ceil(N / 1000), so
the comparisons grow as N x 1000, not N^2. As in SemDeDup, two duplicates
that k-means puts in different clusters are not compared.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import InputError
from curation.reasons import SEMANTIC_DUPLICATE
from curation.runtime import Resources
from filters.base import Drop, Filter

__all__ = ["kmeans", "semantic_duplicates", "fit_centroids", "fit_stride", "sample_fold", "sample_finish", "combine_samples", "assign_rows", "cluster_duplicates", "write_duplicates",
           "default_clusters", "SemanticDedup", "check_settings"]

ROWS_PER_CLUSTER = 1000
# The k-means fit reads a strided sample of the embeddings: FIT_PER_CLUSTER per cluster (faiss's
# max_points_per_centroid: more does not move the centroids), at most FIT_ROWS (what one task holds) unless
# the clusters need more, never fewer than MIN_FIT_PER_CLUSTER per cluster (faiss's min_points_per_centroid).
FIT_PER_CLUSTER = 256
MIN_FIT_PER_CLUSTER = 39
FIT_ROWS = 1_000_000


def fit_sample_rows(clusters: int, fit_rows: int | None = None) -> int:
    """How many embeddings the fit of `clusters` clusters reads (when there are that many)."""
    return min(FIT_PER_CLUSTER * clusters, max(fit_rows or FIT_ROWS, MIN_FIT_PER_CLUSTER * clusters))


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


SIM_BLOCK = 2048  # members compared at once: a block x (kept so far) similarity matrix, never members x members


def semantic_duplicates(ids: Sequence[str], x, labels, threshold: float) -> dict[str, tuple[str, float]]:
    """{dropped id: (kept id, cosine similarity)} within each cluster, members in record-id order: a member
    is dropped when it is above `threshold` to a kept member (the most similar one named; the first kept
    on a tie), else kept. Members go SIM_BLOCK at a time against the members kept so far, so a cluster of
    10^5 holds a block's row of similarities, not 10^10 of them."""
    import torch

    out: dict[str, tuple[str, float]] = {}
    labels_np = labels.cpu().numpy()
    order = np.argsort(np.asarray(ids, dtype=str), kind="stable")
    for cluster in np.unique(labels_np):
        members = order[labels_np[order] == cluster]
        if len(members) < 2:
            continue
        e = x[torch.as_tensor(members, device=x.device)]
        kept: list[int] = []
        for b0 in range(0, len(members), SIM_BLOCK):
            b1 = min(len(members), b0 + SIM_BLOCK)
            prior = list(kept)
            to_prior = (e[b0:b1] @ e[prior].T).float().cpu().numpy() if prior else np.zeros((b1 - b0, 0), np.float32)
            within = (e[b0:b1] @ e[b0:b1].T).float().cpu().numpy()
            local: list[int] = []  # kept members of this block, as offsets into it
            for j in range(b1 - b0):
                row = np.concatenate([to_prior[j], within[j, local]])
                best = int(row.argmax()) if len(row) else -1
                if best >= 0 and row[best] > threshold:
                    k = prior[best] if best < len(prior) else b0 + local[best - len(prior)]
                    out[ids[members[b0 + j]]] = (ids[members[k]], float(row[best]))
                else:
                    local.append(j)
            kept += [b0 + j for j in local]
    return out


def _embeddings(table: pa.Table, where: str = "") -> tuple[list[str], np.ndarray]:
    """(record ids, L2-normalised float32 embeddings) of the rows of `table` with a `clip_embedding`."""
    table = table.filter(table.column("clip_embedding").is_valid())
    if table.num_rows == 0:
        return [], np.zeros((0, 0), np.float32)
    flat = table.column("clip_embedding").combine_chunks()
    lengths = pc.list_value_length(flat).unique().to_pylist()
    if len(lengths) != 1:
        raise ValueError(f"{where or 'clip_embedding'}: clip_embedding rows of different lengths {sorted(lengths)}")
    x = flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, lengths[0]).astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    ids = table.column("record_id").to_pylist() if "record_id" in table.column_names else []
    return ids, x


def fit_stride(total_rows: int, clusters: int | None, fit_rows: int | None = None) -> int:
    """Every stride-th row of each file goes into the k-means sample (`fit_sample_rows` of them in all)."""
    wanted = clusters or default_clusters(total_rows)
    return max(1, math.ceil(total_rows / fit_sample_rows(wanted, fit_rows)))


def sample_fold(batch: pa.Table, value: dict | None, stride: int) -> dict:
    """A fold over a shard (`curation.runner.fold_shards`; rows numbered, `_node`): its embeddings counted,
    and those of every stride-th row of their file kept for the k-means sample."""
    from curation.runner import NODE_ROW_BITS

    value = value or {"embedded": 0, "dim": None, "chunks": [], "where": None}
    batch = batch.filter(batch.column("clip_embedding").is_valid())
    if batch.num_rows == 0:
        return value
    _, x = _embeddings(batch)
    if value["dim"] is not None and x.shape[1] != value["dim"]:
        raise ValueError(f"clip_embedding of {x.shape[1]} values beside {value['dim']} in one shard")
    value["dim"] = x.shape[1]
    rows = batch.column("_node").to_numpy() & ((1 << NODE_ROW_BITS) - 1)
    value["chunks"].append(x[rows % stride == 0])
    value["embedded"] += len(x)
    return value


def sample_finish(shard, value: dict | None, folder: str) -> dict:
    """The end of a shard's fold: its sample written to `folder/shard-NNNNNN.npy` (whole, so a retried task
    writes the same file); returns the counts."""
    if value is None or not value["embedded"]:
        return {"embedded": 0, "sampled": 0, "dim": None, "where": shard.path}
    from curation.storage import fs as storage

    x = np.concatenate(value["chunks"]) if value["chunks"] else np.zeros((0, value["dim"]), np.float32)
    if len(x):
        buf = io.BytesIO()
        np.save(buf, x.astype(np.float32))
        storage.write_bytes(storage.join(folder, f"shard-{shard.shard_id:06d}.npy"), buf.getvalue())
    return {"embedded": value["embedded"], "sampled": len(x), "dim": value["dim"], "where": shard.path}


def combine_samples(a: dict, b: dict) -> dict:
    if a["dim"] is not None and b["dim"] is not None and a["dim"] != b["dim"]:
        raise ValueError(f"{b['where']}: clip_embedding of {b['dim']} values, {a['dim']} in {a['where']}")
    return {"embedded": a["embedded"] + b["embedded"], "sampled": a["sampled"] + b["sampled"],
            "dim": a["dim"] if a["dim"] is not None else b["dim"], "where": a["where"] if a["dim"] is not None else b["where"]}


def fit_centroids(sample_folder: str, clusters: int | None, embedded: int, out_path: str, seed: int = 0) -> dict:
    """The global step, on one worker (a GPU when the cluster has one): spherical k-means over the sample
    that `sample_fold` / `sample_finish` wrote to `sample_folder` (at most `fit_sample_rows` embeddings,
    plus one per file); `clusters` (None: one per ROWS_PER_CLUSTER of the `embedded` records). The
    centroids are saved to `out_path` (.npy) for the tasks that assign every record (`assign_rows`).
    Returns {"clusters": k, "fit_rows": rows fitted, "device": ...}."""
    import torch

    from curation.storage import fs as storage

    parts = [f for f in storage.listdir(sample_folder) if f.endswith(".npy")]
    chunks = []
    for f in parts:
        with storage.open_file(f, "rb") as fh:
            chunks.append(np.load(io.BytesIO(fh.read())))
    if not chunks:
        return {"clusters": 0, "fit_rows": 0, "device": "cpu"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sample = torch.from_numpy(np.concatenate(chunks)).to(device)
    k = min(clusters or default_clusters(embedded), len(sample))
    with torch.inference_mode():
        centroids, _ = kmeans(sample, k, seed=seed)
    with storage.open_file(str(out_path), "wb") as f:
        np.save(f, centroids.float().cpu().numpy())
    return {"clusters": k, "fit_rows": len(sample), "device": device}


_CENTROIDS: dict[str, np.ndarray] = {}


def assign_rows(batch: pa.Table, centroids_path: str) -> pa.Table | None:
    """The map side: (key = nearest centroid, record_id, clip_embedding) of each embedded record of `batch`."""
    if centroids_path not in _CENTROIDS:  # once per worker process
        _CENTROIDS.clear()
        from curation.storage.fs import open_file

        with open_file(str(centroids_path), "rb") as f:
            _CENTROIDS[centroids_path] = np.load(f)
    centroids = _CENTROIDS[centroids_path]
    batch = batch.filter(batch.column("clip_embedding").is_valid())
    ids, x = _embeddings(batch.select(["record_id", "clip_embedding"]))
    if not ids:
        return None
    labels = (x @ centroids.T).argmax(axis=1)
    nodes = batch.column("_node") if "_node" in batch.column_names else pa.nulls(len(ids), pa.int64())
    return pa.table({"key": pa.array(labels, pa.int64()), "record_id": pa.array(ids, pa.string()), "node": nodes,
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])})


DUPLICATE_SCHEMA = pa.schema([("record_id", pa.string()), ("kept", pa.string()), ("similarity", pa.float32())])


def _detail(kept: str, similarity: float) -> str:
    return f"of {kept}: cosine {similarity:.4f}"


def cluster_duplicates(rows: pa.Table | None, part: int, threshold: float) -> tuple[pa.Table, dict]:
    """The reduce side (`curation.runner.shuffle`): the duplicates within each cluster of `rows` (every member
    of its clusters) as decisions keyed by node, for `curation.dedup.leaders.write_decisions`; and counts."""
    import torch

    from curation.dedup.leaders import _decisions

    if rows is None or rows.num_rows < 2:
        return _decisions({c: [] for c in ("key", "record_id", "reason", "kept", "detail")}), {"duplicates": 0, "largest": 0}
    emb = rows.column("embedding").combine_chunks()
    x = torch.from_numpy(emb.flatten().to_numpy().reshape(len(emb), -1).copy())
    keys = rows.column("key").to_numpy().copy()  # writable, for torch
    labels = torch.from_numpy(keys)
    ids = rows.column("record_id").to_pylist()
    with torch.inference_mode():
        found = semantic_duplicates(ids, x, labels, threshold)
    node = dict(zip(ids, rows.column("node").to_pylist()))
    items = sorted(found.items())
    table = _decisions({"key": [node[d] for d, _ in items], "record_id": [d for d, _ in items],
                        "reason": [SEMANTIC_DUPLICATE] * len(items), "kept": [k for _, (k, _) in items],
                        "detail": [_detail(k, sim) for _, (k, sim) in items]})
    return table, {"duplicates": len(items), "largest": int(np.bincount(keys - keys.min()).max())}


def write_duplicates(duplicates: Mapping[str, Sequence], path) -> str:
    """{dropped id: (kept id, similarity)} as a Parquet file for `SemanticDedup`; returns its path."""
    import pyarrow.parquet as pq

    from curation.storage.fs import open_file

    items = sorted(duplicates.items())
    with open_file(str(path), "wb") as f:
        pq.write_table(pa.table({"record_id": pa.array([k for k, _ in items], pa.string()),
                                 "kept": pa.array([str(v[0]) for _, v in items], pa.string()),
                                 "similarity": pa.array([float(v[1]) for _, v in items], pa.float32())}), f)
    return str(path)


class SemanticDedup(Filter):
    """Second pass: drop the records found as semantic duplicates; `clip_embedding` only stays when asked."""

    name = "semdedup"
    resources = Resources(cpus=1)
    batch_size = 4096
    measures = (pa.field("clip_embedding", pa.list_(pa.float32())),)

    def __init__(self, duplicates: Mapping[str, Sequence] | str | None = None, keep_embeddings: bool = False,
                 folder: str | None = None, ranges: Sequence[int] | None = None):
        """`duplicates`: {dropped id: (kept id, similarity)}, or the path of a Parquet file of them
        (`write_duplicates`), read once per worker in `setup()`; or `folder` and `ranges`: the decisions by
        row range that `jobs.dedup.semantic_step` writes (`curation.dedup.decisions`), matched by `_node`."""
        if (duplicates is None) == (folder is None):
            raise ValueError("SemanticDedup takes duplicates by record_id or a folder of decisions by row range")
        from curation.dedup.decisions import RangeDecisions

        self.consumes = ("_node",)
        self.path = duplicates if isinstance(duplicates, str) else None
        self.duplicates = (None if self.path or duplicates is None
                           else {k: (str(v[0]), float(v[1])) for k, v in duplicates.items()})
        self.by_range = RangeDecisions(folder, ranges or ()) if folder is not None else None
        self.keep_embeddings = keep_embeddings

    def setup(self) -> None:
        if self.duplicates is None and self.path is not None:
            from curation.storage.fs import read_parquet

            t = read_parquet(str(self.path))
            self.duplicates = dict(zip(t.column("record_id").to_pylist(),
                                       zip(t.column("kept").to_pylist(), t.column("similarity").to_pylist())))

    def measure(self, batch: pa.Table) -> dict[str, pa.Array]:
        if self.keep_embeddings or "clip_embedding" not in batch.column_names:
            return {}
        return {"clip_embedding": pa.nulls(batch.num_rows, pa.list_(pa.float32()))}

    def decide(self, batch: pa.Table) -> Sequence[Drop | None]:
        if self.by_range is not None:
            from curation.dedup.decisions import nodes_of

            return [Drop(*hit) if hit else None for hit in self.by_range.lookup(nodes_of(batch, "SemanticDedup"))]
        if self.duplicates is None:
            self.setup()
        out: list[Drop | None] = []
        for rid in batch.column("record_id").to_pylist():
            hit = self.duplicates.get(rid)
            out.append(Drop(SEMANTIC_DUPLICATE, _detail(*hit)) if hit else None)
        return out

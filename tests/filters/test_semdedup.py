"""Semantic dedup (filters/semdedup.py), CLIP embeddings (filters/clip_score.py keep_embeddings)."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from curation.storage.dataset import Dataset, DatasetWriter
from curation.democorpus import generate_corpus
from curation.errors import InputError
from curation.runtime import run_local, split_rejects
from curation.schema import records_from_pylist
from filters.clip_score import ClipModelSpec, ClipPreprocess, ClipScore
from filters.semdedup import SemanticDedup, kmeans, semantic_duplicates
from jobs.demo import DEMO_CLIP_DIR
from jobs.web_pairs import WebPairsConfig, filter_records

CLIP_CONFIG = str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json")
CLIP_WEIGHTS = str(DEMO_CLIP_DIR / "demo_clip.pt")


def unit(rows):
    import torch

    return torch.nn.functional.normalize(torch.tensor(np.asarray(rows, dtype=np.float32)), dim=1)


def test_kmeans_separates_clear_groups_and_is_deterministic():
    rng = np.random.default_rng(0)
    centers = np.eye(8, dtype=np.float32)[:3]
    points = np.concatenate([c + 0.05 * rng.standard_normal((30, 8)) for c in centers])
    x = unit(points)
    _, labels = kmeans(x, 3, seed=1)
    groups = [set(labels[i * 30:(i + 1) * 30].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    assert kmeans(x, 3, seed=1)[1].tolist() == labels.tolist()
    assert kmeans(x[:2], 5)[1].shape == (2,)  # more clusters than points: as many as points


def brute_force(ids, x, threshold):
    """Greedy over every pair, ids in order: what one cluster holding everything gives."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    kept, out = [], {}
    for j in order:
        sims = [(float(x[j] @ x[i]), i) for i in kept]
        best = max(sims, default=(-2.0, None))
        if best[0] > threshold:
            out[ids[j]] = ids[best[1]]
        else:
            kept.append(j)
    return out


def test_duplicates_name_the_smallest_kept_id_and_the_similarity():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((20, 16))
    near = base[[2, 2, 7, 11]] + 0.01 * rng.standard_normal((4, 16))  # near copies of 2 (twice), 7, 11
    ids = [f"r:{i:02d}" for i in range(20)] + ["r:a", "r:b", "r:c", "r:00x"]
    x = unit(np.concatenate([base, near]))
    import torch

    dups = semantic_duplicates(ids, x, torch.zeros(len(ids), dtype=torch.long), 0.95)
    assert {d: k for d, (k, _) in dups.items()} == {"r:a": "r:02", "r:b": "r:02", "r:c": "r:07", "r:11": "r:00x"}
    assert all(0.95 < s <= 1.0001 for _, s in dups.values())
    assert {d: k for d, (k, _) in dups.items()} == brute_force(ids, x, 0.95)
    # with clusters: the same answer when duplicates share a cluster
    _, labels = kmeans(x, 4, seed=0)
    assert {d: k for d, (k, _) in semantic_duplicates(ids, x, labels, 0.95).items()} == brute_force(ids, x, 0.95)


def test_the_stage_drops_the_duplicates_and_the_embeddings_unless_kept():
    rows = [{"record_id": f"t:{i}", "source": "t", "clip_embedding": [1.0, 0.0]} for i in range(3)]
    t = records_from_pylist(rows)
    kept, rejects = split_rejects(run_local(t, [SemanticDedup({"t:1": ("t:0", 0.99712)})]))
    assert kept.column("record_id").to_pylist() == ["t:0", "t:2"]
    assert rejects.to_pylist()[0] | {"meta": None} == {"record_id": "t:1", "source": "t", "stage": "semdedup",
                                                      "reason": "semantic_duplicate", "detail": "of t:0: cosine 0.9971",
                                                      "meta": None}
    assert kept.column("clip_embedding").null_count == 2
    kept, _ = split_rejects(run_local(t, [SemanticDedup({}, keep_embeddings=True)]))
    assert kept.column("clip_embedding").to_pylist() == [[1.0, 0.0]] * 3


def test_clip_score_keeps_the_normalised_image_embedding_when_asked():
    spec = ClipModelSpec(CLIP_CONFIG, checkpoint=CLIP_WEIGHTS)
    img = jpeg_of(np.full((48, 64, 3), 120, np.uint8))
    t = records_from_pylist([{"record_id": f"t:{i}", "source": "t", "image": img, "width": 64, "height": 48,
                              "captions": caps} for i, caps in enumerate([["a grey square"], ["a grey square"], []])])
    out = run_local(t, [ClipPreprocess(spec), ClipScore(spec, None, keep_embeddings=True)])
    emb = out.column("clip_embedding").to_pylist()
    assert emb[0] == emb[1] and len(emb[0]) == 128 and math.isclose(np.linalg.norm(emb[0]), 1.0, rel_tol=1e-5)
    assert emb[2] is None  # no caption, no score: nothing measured
    plain = run_local(t, [ClipPreprocess(spec), ClipScore(spec, None)])
    assert plain.column("clip_embedding").null_count == 3  # not asked: the schema column stays null
    assert plain.column("clip_score").to_pylist() == out.column("clip_score").to_pylist()


def jpeg_of(arr, quality=90):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def demo_records(tmp_path_factory):
    """40 demo images (one planted exact duplicate) + 5 re-encoded, 10% smaller copies, in several shards."""
    root = tmp_path_factory.mktemp("semdedup")
    items = generate_corpus(root / "img", n=40, seed=3)
    rows, copies = [], {}
    for it in items:
        rows.append({"record_id": f"d:{it.item_id}", "source": "d", "image": (root / "img" / it.filename).read_bytes(),
                     "width": 64, "height": 64, "captions": [it.caption]})
    for it in items[:5]:
        im = Image.open(root / "img" / it.filename).convert("RGB")
        im = im.resize((int(im.width * 0.9), int(im.height * 0.9)))
        rows.append({"record_id": f"d:{it.item_id}-copy", "source": "d", "image": jpeg_of(np.asarray(im), 60),
                     "width": im.width, "height": im.height, "captions": [it.caption]})
        copies[f"d:{it.item_id}-copy"] = f"d:{it.item_id}"
    w = DatasetWriter(root / "in", target_shard_bytes=20_000)
    for k in range(0, len(rows), 9):
        w.write("records", records_from_pylist(rows[k:k + 9]))
    w.close()
    planted = [it for it in items if it.planted == "duplicate"]
    return root / "in", copies, planted, items


def test_semantic_dedup_on_a_local_ray_finds_the_planted_copies_only(local_ray, tmp_path, demo_records):
    src, copies, planted, items = demo_records
    assert len(Dataset(src).shards("records")) >= 3
    cfg = WebPairsConfig(urls="", out=str(tmp_path / "out"), filters=("clip",), clip_model=CLIP_CONFIG,
                         clip_checkpoint=CLIP_WEIGHTS, clip_gpus=0.0, semdedup=True, semdedup_threshold=0.995,
                         semdedup_clusters=3, shard_rows=10, clip_keep_fraction=0.5)
    m = filter_records(cfg, str(src))
    out = Dataset(tmp_path / "out")
    rejects = out.read("rejects").to_pylist()
    found = {r["record_id"]: r["detail"] for r in rejects if r["reason"] == "semantic_duplicate"}
    # every re-encoded copy names its original; the planted exact duplicate is the only other one
    for copy, original in copies.items():
        kept, sim = found[copy].split(": cosine ")
        assert kept == f"of {original}" and 0.995 < float(sim) <= 1.0
    assert len(planted) == 1 and len(found) == len(copies) + 1
    embedded = m["semdedup"]["embedded"]
    largest = m["semdedup"].pop("largest_cluster")
    assert math.ceil(embedded / 3) <= largest <= embedded  # 3 clusters: the largest has at least a third
    assert m["semdedup"] == {"threshold": 0.995, "embedded": embedded, "clusters": 3, "fit_rows": embedded,
                             "duplicates": len(found), "device": "cpu"}
    # the top fraction is taken over the records that are not duplicates: ceil(0.5 x (N - duplicates))
    cut = m["clip_keep_fraction"]["*"]
    assert cut["scored"] == embedded - len(found) and cut["kept"] == math.ceil(0.5 * cut["scored"])
    records = out.read("records", columns=["record_id", "clip_embedding"])
    assert records.num_rows == cut["kept"] and records.column("clip_embedding").null_count == records.num_rows
    assert m["stages"]["semdedup"]["dropped"] == {"semantic_duplicate": len(found)}


def test_exact_and_semantic_dedup_in_one_job_apply_both_decisions_by_row_range(local_ray, tmp_path, demo_records):
    """dedup = exact with semdedup: the exact copy goes as duplicate_image (that stage runs first and leaves
    `_node` for the semantic one), the re-encoded copies as semantic_duplicate; no row keeps `_node`, and
    the top fraction ranks neither."""
    import hashlib

    src, copies, planted, items = demo_records
    rows = Dataset(src).read("records").to_pylist()
    for r in rows:  # the sha256 that a download measures
        r["sha256"] = hashlib.sha256(r["image"]).hexdigest()
    w = DatasetWriter(tmp_path / "in", target_shard_bytes=20_000)
    for k in range(0, len(rows), 9):
        w.write("records", records_from_pylist(rows[k:k + 9]))
    w.close()
    cfg = WebPairsConfig(urls="", out=str(tmp_path / "out"), filters=("clip",), clip_model=CLIP_CONFIG,
                         clip_checkpoint=CLIP_WEIGHTS, clip_gpus=0.0, semdedup=True, semdedup_threshold=0.995,
                         semdedup_clusters=3, shard_rows=10, clip_keep_fraction=0.5, dedup=("exact",))
    m = filter_records(cfg, str(tmp_path / "in"))
    out = Dataset(tmp_path / "out")
    rejects = out.read("rejects").to_pylist()
    by_reason: dict = {}
    for r in rejects:
        by_reason.setdefault(r["reason"], set()).add(r["record_id"])
    assert len(by_reason["duplicate_image"]) == len(planted) == 1
    assert by_reason["semantic_duplicate"] == set(copies)
    assert m["stages"]["dedup"]["dropped"] == {"duplicate_image": 1}
    assert m["stages"]["semdedup"]["dropped"] == {"semantic_duplicate": len(copies)}
    cut = m["clip_keep_fraction"]["*"]
    assert cut["scored"] == m["semdedup"]["embedded"] - len(copies) - 1
    records = out.read("records")
    assert "_node" not in records.column_names and records.num_rows == cut["kept"]


def test_keep_embeddings_keeps_the_column(local_ray, tmp_path, demo_records):
    src, *_ = demo_records
    cfg = WebPairsConfig(urls="", out=str(tmp_path / "out"), filters=("clip",), clip_model=CLIP_CONFIG,
                         clip_checkpoint=CLIP_WEIGHTS, clip_gpus=0.0, keep_embeddings=True, shard_rows=20)
    filter_records(cfg, str(src))
    emb = Dataset(tmp_path / "out").read("records", columns=["clip_embedding"]).column(0).to_pylist()
    assert emb and all(e is not None and len(e) == 128 for e in emb)


@pytest.mark.parametrize(
    "settings, message",
    [({"semdedup": True}, "needs the CLIP image embeddings"),
     ({"semdedup": True, "clip_model": CLIP_CONFIG, "clip_checkpoint": CLIP_WEIGHTS, "semdedup_threshold": 1.5}, "semdedup_threshold"),
     ({"semdedup": True, "clip_model": CLIP_CONFIG, "clip_checkpoint": CLIP_WEIGHTS, "semdedup_clusters": 0}, "semdedup_clusters"),
     ({"keep_embeddings": True}, "needs a clip_model")],
)
def test_bad_settings_fail_before_the_output_is_touched(tmp_path, demo_records, settings, message):
    src, *_ = demo_records
    cfg = WebPairsConfig(urls="", out=str(tmp_path / "out"), clip_gpus=0.0, **settings)
    with pytest.raises(InputError, match=message):
        filter_records(cfg, str(src))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_stage_reads_the_duplicates_from_a_file(tmp_path):
    from filters.semdedup import write_duplicates

    path = write_duplicates({"t:2": ("t:0", 0.999), "t:1": ("t:0", 0.98)}, tmp_path / "dups.parquet")
    stage = SemanticDedup(path)
    t = records_from_pylist([{"record_id": f"t:{i}", "source": "t"} for i in range(3)])
    kept, rejects = split_rejects(run_local(t, [stage]))
    assert kept.column("record_id").to_pylist() == ["t:0"]
    assert sorted(rejects.column("detail").to_pylist()) == ["of t:0: cosine 0.9800", "of t:0: cosine 0.9990"]


def test_curate_dedup_semantic_on_embeddings_kept_by_filter(local_ray, tmp_path, demo_records, capsys):
    """`curate dedup --semantic` (issue 10 item 7) over the records of `curate filter --keep-embeddings`."""
    from curation.cli import main

    src, copies, planted, _ = demo_records
    scored = tmp_path / "scored"
    assert main(["filter", str(src), "--out", str(scored), "--filters", "clip", "--clip-model", CLIP_CONFIG,
                 "--clip-checkpoint", CLIP_WEIGHTS, "--keep-embeddings", "--shard-rows", "20"]) == 0
    # without embeddings: one line naming the file and what to run
    code = main(["dedup", str(src), "--out", str(tmp_path / "no"), "--semantic"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs the CLIP image embeddings" in err[0] and "--keep-embeddings" in err[0]
    out = tmp_path / "deduped"
    assert main(["dedup", str(scored), "--out", str(out), "--semantic", "--semantic-threshold", "0.995",
                 "--semantic-clusters", "3"]) == 0
    found = {r["record_id"]: r["detail"] for r in Dataset(out).read("rejects").to_pylist() if r["reason"] == "semantic_duplicate"}
    for copy, original in copies.items():
        assert found[copy].startswith(f"of {original}: cosine ")
    assert len(found) == len(copies) + len(planted)
    manifest = Dataset(out).manifest
    assert manifest["dedup"]["semantic"]["duplicates"] == len(found)
    assert Dataset(out).rows("records") == Dataset(scored).rows("records") - len(found)


def test_the_global_step_fits_on_a_sample_and_groups_on_partitions_like_one_process(tmp_path):
    """k-means fitted on a strided sample (past FIT_ROWS) and the clusters checked in several reduce partitions
    find exactly what one process finds over all embeddings with the same centroids; every planted copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    import filters.semdedup as sd
    from jobs.dedup import semantic_step

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 32)).astype(np.float32)
    x = centers[rng.integers(0, 8, 1200)] + 0.3 * rng.normal(size=(1200, 32)).astype(np.float32)
    ids = [f"r:{i:05d}" for i in range(1200)]
    copies = {f"r:{i:05d}-c": f"r:{i:05d}" for i in range(0, 1200, 97)}  # near copies of every 97th record
    x = np.concatenate([x, x[::97] + 0.001 * rng.normal(size=(len(copies), 32)).astype(np.float32)])
    ids += list(copies)
    files = []
    for k, lo in enumerate(range(0, len(ids), 400)):  # four files; one row without an embedding
        emb = [list(map(float, v)) for v in x[lo:lo + 400]]
        if k == 0:
            emb[3] = None
        path = tmp_path / f"part-{k}.parquet"
        pq.write_table(pa.table({"record_id": ids[lo:lo + 400], "clip_embedding": pa.array(emb, pa.list_(pa.float32()))}),
                       path, row_group_size=100)
        files.append((path, len(ids[lo:lo + 400])))
    figures: dict = {}
    stage = semantic_step(files, tmp_path, 0.99, 8, figures, executor="local", shard_rows=200, partitions=3, fit_rows=300)
    # the decisions by row range, a file per range (the driver got counts only)
    parts = sorted((tmp_path / "semantic_decisions").glob("part-*.parquet"))
    assert len(parts) == len(stage.by_range.ranges) + 1 == 3
    rows = pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()
    got = {r["record_id"]: r["kept"] for r in rows}
    assert {r["reason"] for r in rows} == {"semantic_duplicate"} and figures["semantic"]["duplicates"] == len(rows)
    # each decision's node is its record's row: file index in the top bits, the row below
    where = {rid: (k, i) for k, (path, _) in enumerate(files) for i, rid in enumerate(pq.read_table(path)["record_id"].to_pylist())}
    from curation.runner import node_id
    assert all(r["node"] == node_id(*where[r["record_id"]]) for r in rows)
    fig = figures["semantic"]
    assert fig["embedded"] == len(ids) - 1 and fig["clusters"] == 8 and fig["fit_rows"] < fig["embedded"] // 3
    # one process, all embeddings, the same centroids
    centroids = np.load(tmp_path / "semantic_centroids.npy")
    keep = [i for i in range(len(ids)) if i != 3]
    xs = x[keep] / np.linalg.norm(x[keep], axis=1, keepdims=True)
    labels = torch.from_numpy((xs @ centroids.T).argmax(axis=1))
    want = sd.semantic_duplicates([ids[i] for i in keep], torch.from_numpy(xs), labels, 0.99)
    assert got == {d: kept for d, (kept, _) in want.items()}
    assert all(got.get(c) == o for c, o in copies.items())


def test_semantic_duplicates_in_blocks_decide_as_one_matrix(monkeypatch):
    """Members compared SIM_BLOCK at a time against the kept ones decide exactly as the whole matrix at once:
    blocks of 7 over clusters of up to ~60, with chains of copies across block edges and exact ties."""
    import torch

    import filters.semdedup as sd

    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 16)).astype(np.float32)
    x = np.concatenate([base, base[rng.integers(0, 40, 80)] + 0.02 * rng.normal(size=(80, 16)).astype(np.float32),
                        base[:5]])  # exact copies: similarity ties
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"r{i:04d}" for i in rng.permutation(len(x))]
    labels = torch.from_numpy(rng.integers(0, 3, len(x)))
    xt = torch.from_numpy(x)
    whole = sd.semantic_duplicates(ids, xt, labels, 0.97)
    monkeypatch.setattr(sd, "SIM_BLOCK", 7)
    blocked = sd.semantic_duplicates(ids, xt, labels, 0.97)
    assert len(whole) > 30
    assert {d: k for d, (k, _) in blocked.items()} == {d: k for d, (k, _) in whole.items()}
    assert all(abs(blocked[d][1] - whole[d][1]) < 1e-5 for d in whole)


def test_embeddings_of_two_lengths_in_two_files_are_an_error_naming_them(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.errors import InputError
    from jobs.dedup import semantic_step

    files = []
    for k, dim in enumerate((8, 6)):
        path = tmp_path / f"part-{k}.parquet"
        pq.write_table(pa.table({"record_id": [f"r{k}:{i}" for i in range(5)],
                                 "clip_embedding": pa.array([[1.0] * dim] * 5, pa.list_(pa.float32()))}), path)
        files.append((path, 5))
    (tmp_path / "semantic_sample").mkdir()
    (tmp_path / "semantic_sample" / "shard-000099.npy").write_bytes(b"stale")  # an earlier run's: removed first
    with pytest.raises(InputError, match=r"part-1\.parquet: clip_embedding of 6 values, 8 in .*part-0\.parquet"):
        semantic_step(files, tmp_path, 0.9, 1, {}, executor="local")
    figures: dict = {}
    semantic_step(files[:1], tmp_path, 0.9, 1, figures, executor="local")
    assert figures["semantic"]["embedded"] == 5 and figures["semantic"]["fit_rows"] == 5

"""The dedup job (`curate dedup`): over a records dataset, through the runner, into a dataset directory."""

import hashlib
import json

import pytest

from curation.cli import main
from curation.storage.dataset import Dataset, DatasetWriter
from curation.democorpus import generate_corpus
from curation.schema import records_from_pylist
from jobs.dedup import DedupConfig, needs_phash, run


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """A records dataset of 80 demo images with 1 exact and 8 near copies, in 3 input shards."""
    root = tmp_path_factory.mktemp("dedup")
    items = generate_corpus(root / "www", n=80, seed=4, near_duplicates=8)
    rows = []
    for it in items:
        data = (root / "www" / it.filename).read_bytes()
        rows.append({"record_id": f"demo:{it.item_id}", "source": "demo", "url": f"http://127.0.0.1:1/{it.filename}",
                     "image": data, "sha256": hashlib.sha256(data).hexdigest(), "width": it.width, "height": it.height,
                     "captions": [it.caption]})
    with DatasetWriter(root / "in", target_shard_bytes=400_000) as w:  # several files: several input shards
        for k in range(0, len(rows), 20):
            w.write("records", records_from_pylist(rows[k : k + 20]))
        w.close()
    copies = {f"demo:{it.item_id}": f"demo:{it.duplicate_of}" for it in items if it.duplicate_of}
    return root, items, copies


def _check_found(out, copies, phash=True):
    rejects = {r["record_id"]: r for r in Dataset(out).read("rejects").to_pylist()}
    for rid, source in copies.items():
        if not phash and rid not in rejects:
            continue
        r = rejects[rid]
        assert r["stage"] == "dedup" and f"of {source} " in r["detail"] + " ", r
    assert set(rejects) <= set(copies)  # no false merges
    return rejects


def test_dedup_job_drops_every_planted_copy_naming_its_source(records, tmp_path):
    root, items, copies = records
    m = run(DedupConfig(out=str(tmp_path / "out"), dedup=("exact", "url", "phash"), shard_rows=30), str(root / "in"),
            executor="local")
    rejects = _check_found(tmp_path / "out", copies)
    assert len(rejects) == len(copies) == 9
    reasons = {r["reason"] for rid, r in rejects.items() if rid in copies}
    assert reasons == {"duplicate_image", "near_duplicate"}
    assert all(rejects[f"demo:{it.item_id}"]["reason"] == "duplicate_image" for it in items if it.planted == "duplicate")
    assert m["tables"]["records"]["rows"] == 80 - 9
    assert m["stages"]["dedup"]["dropped"] == {"duplicate_image": 1, "near_duplicate": 8}
    assert m["dedup"]["max_hamming_distance"] == 4
    kept = Dataset(tmp_path / "out").read("records", columns=["phash"]).column("phash")
    # measured on the way (the input had none); only the corrupt file has no hash
    assert kept.null_count == sum(it.planted == "corrupt" for it in items) == 1
    assert needs_phash(Dataset(root / "in").shard_paths("records"))


def test_exact_only_finds_the_byte_copies(records, tmp_path):
    root, items, copies = records
    run(DedupConfig(out=str(tmp_path / "out"), dedup=("exact",)), str(root / "in"), executor="local")
    rejects = _check_found(tmp_path / "out", copies, phash=False)
    assert sorted(rejects) == sorted(f"demo:{it.item_id}" for it in items if it.planted == "duplicate")


def test_curate_dedup_on_ray_overwrite_and_resume(records, tmp_path, local_ray, capsys):
    root, items, copies = records
    out = tmp_path / "out"
    args = ["dedup", str(root / "in"), "--out", str(out), "--exact", "--phash", "--shard-rows", "40"]
    assert main(args) == 0
    assert "80 records -> 71 kept" in capsys.readouterr().out
    first = json.loads((out / "manifest.json").read_text())
    assert first["run"]["input_shards"] >= 3
    _check_found(out, copies)
    assert main(args) == 2  # a non-empty output is refused, as for every command
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    again = json.loads((out / "manifest.json").read_text())
    assert again["tables"]["records"]["shards"] == first["tables"]["records"]["shards"]  # same bytes


def test_decontaminate_with_an_eval_folder(records, tmp_path, capsys):
    root, items, copies = records
    clean = [it for it in items if it.planted is None and it.item_id not in {c.split(":")[1] for c in copies.values()}]
    evals = tmp_path / "evals"
    evals.mkdir()
    for it in clean[:2]:
        (evals / it.filename).write_bytes((root / "www" / it.filename).read_bytes())
    m = run(DedupConfig(out=str(tmp_path / "out"), dedup=(), decontaminate=str(evals)), str(root / "in"), executor="local")
    rejects = Dataset(tmp_path / "out").read("rejects").to_pylist()
    assert sorted(r["record_id"] for r in rejects) == sorted(f"demo:{it.item_id}" for it in clean[:2])
    assert {r["reason"] for r in rejects} == {"eval_overlap"} and m["dedup"]["eval_images"] == 2


def test_bad_settings_are_one_line_errors(records, tmp_path, capsys):
    root, _, _ = records
    assert main(["dedup", str(root / "in"), "--out", str(tmp_path / "o"), "--phash", "--max-distance", "40"]) == 2
    assert "0..31" in capsys.readouterr().err
    assert main(["dedup", str(root / "in"), "--out", str(tmp_path / "o")]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_an_interrupted_dedup_resumes_to_the_same_output(records, tmp_path, monkeypatch):
    """Killed in the decide pass after its first input shard; --resume skips that shard and ends as one run would."""
    from filters.dedup_exact import DedupDecide

    root, items, copies = records
    whole = run(DedupConfig(out=str(tmp_path / "whole"), dedup=("exact", "url", "phash"), shard_rows=20), str(root / "in"),
                executor="local")
    calls = {"n": 0}
    decide = DedupDecide.decide

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("killed")
        return decide(self, batch)

    monkeypatch.setattr(DedupDecide, "decide", failing)
    cfg = DedupConfig(out=str(tmp_path / "out"), dedup=("exact", "url", "phash"), shard_rows=20)
    with pytest.raises(RuntimeError, match="killed"):
        run(cfg, str(root / "in"), executor="local")
    staging = tmp_path / "out" / ".curate" / "staging"
    assert len(list((staging / "done").glob("*.json"))) == 1
    assert (staging / "measured" / "manifest.json").is_file()  # the phash pass is kept for the resume
    monkeypatch.setattr(DedupDecide, "decide", decide)
    resumed = run(DedupConfig(**{**cfg.__dict__, "resume": True}), str(root / "in"), executor="local")
    assert resumed["run"]["resumed"] is True
    assert resumed["tables"]["records"]["shards"] == whole["tables"]["records"]["shards"]
    assert resumed["stages"]["dedup"] == {**whole["stages"]["dedup"], "seconds": resumed["stages"]["dedup"]["seconds"]}

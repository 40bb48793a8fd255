"""Inputs on object storage: a real S3 API on loopback (moto's server mode, the `s3` fixture)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.errors import InputError
from curation.storage.dataset import Dataset
from curation.storage.fs import expand

ROOT = Path(__file__).resolve().parents[3]


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _curate(env: dict, *argv) -> subprocess.CompletedProcess:
    """`curate ARGV` in a fresh process (its own local Ray, whose workers inherit the S3 environment)."""
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "curation.cli", *map(str, argv)], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=600)


def test_files_folders_and_globs_on_s3(s3):
    s3.mkbucket("corpus-in")
    for name in ("parts/b/0001.parquet", "parts/a/0001.parquet", "parts/_SUCCESS"):
        s3.put(f"corpus-in/{name}", b"x")
    files = expand("s3://corpus-in/parts/", (".parquet",), "URL list")
    assert [(f.url, f.label) for f in files] == [("s3://corpus-in/parts/a/0001.parquet", "a/0001"),
                                                 ("s3://corpus-in/parts/b/0001.parquet", "b/0001")]
    assert expand("s3://corpus-in/parts/*/*.parquet", (".parquet",), "URL list") == files


@pytest.mark.parametrize("url, message", [
    ("s3://no-such-bucket/urls.parquet", "s3://no-such-bucket/urls.parquet: no such bucket"),
    ("s3://corpus-in/missing.parquet", "s3://corpus-in/missing.parquet: not found"),
    ("s3://corpus-in/parts/*.csv", "s3://corpus-in/parts/*.csv: the pattern matches no file"),
    ("s3://corpus-in/parts/", "s3://corpus-in/parts/notes.txt: not a URL list file of a known format"),
])
def test_bad_inputs_on_s3_are_one_line_and_exit_2(s3, tmp_path, capsys, url, message):
    s3.mkbucket("corpus-in")
    s3.put("corpus-in/parts/a.parquet", _parquet(pa.table({"url": ["http://127.0.0.1:1/x.jpg"]})))
    s3.put("corpus-in/parts/notes.txt", b"hello")
    assert main(["download", url, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError):
        expand(url, (".parquet",), "URL list")


def test_curate_download_from_s3_gives_what_the_local_run_of_the_same_list_gives(s3, tmp_path):
    from netfixtures import FaultServer

    s3.mkbucket("corpus-in")
    with FaultServer() as server:
        base = server.base
        parts = [
            pa.table({"url": [f"{base}/img/a.jpg", f"{base}/404.jpg", f"{base}/img/b.jpg"], "caption": ["a", "gone", "b"]}),
            pa.table({"url": [f"{base}/img/a.jpg#again", f"{base}/img/c.jpg"], "caption": ["a again", "c"]}),
        ]
        local = tmp_path / "list"
        (local / "parts").mkdir(parents=True)
        for i, t in enumerate(parts):
            pq.write_table(t, local / "parts" / f"{i:04d}.parquet")
            s3.put(f"corpus-in/list/parts/{i:04d}.parquet", _parquet(t))
        extra = "url,caption\n" + f"{base}/img/d.jpg,d\n{base}/img/b.jpg,b again\n"
        (local / "extra.csv").write_text(extra)
        s3.put("corpus-in/list/extra.csv", extra.encode())
        flags = ["--allow-private-network", "--retries", "0", "--shard-rows", "2"]
        runs = {}
        for name, specs in (("local", [local / "parts", local / "extra.csv"]),
                            ("s3", ["s3://corpus-in/list/parts/", "s3://corpus-in/list/extra.csv"])):
            done = _curate(s3.env, "download", *specs, "--out", tmp_path / name, *flags)
            assert done.returncode == 0, done.stderr[-3000:]
            data = Dataset(tmp_path / name, verify=True)
            runs[name] = (
                sorted((r["record_id"], r["url"], tuple(r["captions"]), r["sha256"]) for r in data.read("records").to_pylist()),
                sorted((r["record_id"], r["reason"]) for r in data.read("rejects").to_pylist()),
            )
    records, rejects = runs["local"]
    assert runs["s3"] == runs["local"]
    assert [r[0] for r in records] == ["web:extra:0", "web:parts/0000:0", "web:parts/0000:2", "web:parts/0001:1"]
    assert rejects == [("web:extra:1", "duplicate_url"), ("web:parts/0000:1", "http_error"),
                       ("web:parts/0001:0", "duplicate_url")]
    manifest = json.loads((tmp_path / "s3" / "manifest.json").read_text())
    assert manifest["config"]["urls"] == ["s3://corpus-in/list/parts/", "s3://corpus-in/list/extra.csv"]
    assert "testing" not in json.dumps(manifest)  # no credential lands in the manifest


@pytest.fixture
def built_on_s3(s3, tmp_path):
    """A records dataset and the samples built from it, locally, then copied as they are to s3://datasets/."""
    from curation.commands.build import build_dataset
    from curation.schema import records_from_pylist, rejects_from_pylist, make_reject
    from curation.storage.dataset import DatasetWriter

    rows = [{"record_id": f"t:{i}", "source": "t", "image": _png(40 + i, 30, 20 * i), "width": 40 + i, "height": 30,
             "captions": [f"A flat picture number {i}."]} for i in range(6)]
    with DatasetWriter(tmp_path / "records") as w:
        w.write("records", records_from_pylist(rows))
        w.write("rejects", rejects_from_pylist([make_reject("t:9", "basic", "image_too_small", "8x8 < 32", "t")]))
        w.close()
    build_dataset(str(tmp_path / "records"), str(tmp_path / "samples"), tasks="caption", pack=1024, runner="local")
    fs = s3.fs()
    s3.mkbucket("datasets")
    s3.mkbucket("elsewhere")
    for name in ("records", "samples"):
        for p in (tmp_path / name).rglob("*"):
            if p.is_file() and ".curate" not in p.parts:
                fs.put_file(str(p), f"datasets/{name}/{p.relative_to(tmp_path / name)}")
    s3.put("datasets/samples/samples/part-99999.parquet", (tmp_path / "samples/samples/part-00000.parquet").read_bytes())
    s3.put("elsewhere/secret.parquet", next((tmp_path / "records" / "rejects").glob("*.parquet")).read_bytes())
    return tmp_path


def _png(w, h, shade):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (shade, 255 - shade, 90)).save(buf, "PNG")
    return buf.getvalue()


def _sql(capsys, ds, query):
    code = main(["sql", ds, query, "--csv"])
    out, err = capsys.readouterr()
    return code, out, err


def test_sql_validate_and_report_read_a_dataset_on_s3_as_its_local_copy(built_on_s3, capsys, tmp_path):
    local, remote = str(built_on_s3 / "samples"), "s3://datasets/samples"
    query = "SELECT task, count(*) AS n, sum(num_tokens) AS tokens FROM samples GROUP BY task ORDER BY task"
    assert _sql(capsys, local, query)[:2] == _sql(capsys, remote, query)[:2]
    code, out, _ = _sql(capsys, "s3://datasets/records", "SELECT count(*) FROM records")
    assert code == 0 and out.strip().splitlines()[-1] == "6"
    # the sandbox holds: the stray part beside the listed ones, another bucket, a local file
    for q in ("SELECT count(*) FROM read_parquet('s3://datasets/samples/samples/part-99999.parquet')",
              "SELECT * FROM read_parquet('s3://elsewhere/secret.parquet')",
              "SELECT * FROM read_csv('/etc/passwd')"):
        code, _, err = _sql(capsys, remote, q)
        assert code == 2 and "SQL refused" in err, (q, err)
    assert main(["validate", local]) == 0
    expected = capsys.readouterr().out
    assert main(["validate", remote]) == 0
    assert capsys.readouterr().out == expected and expected.startswith("validate: 6 samples, ")
    assert main(["report", remote, "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "s3://datasets/samples" in page and "caption" in page


def test_a_damaged_object_and_a_missing_dataset_on_s3_are_one_line(built_on_s3, s3, capsys):
    fs = s3.fs()
    shard = "datasets/samples/samples/part-00000.parquet"
    data = fs.cat_file(shard)
    fs.pipe_file(shard, data[:100] + bytes([data[100] ^ 1]) + data[101:])  # same size, one bit flipped
    assert main(["validate", "s3://datasets/samples"]) == 1
    assert "sha256" in capsys.readouterr().out
    for url, message in (("s3://datasets/nothing-here", "s3://datasets/nothing-here: no such dataset"),
                         ("s3://no-such-bucket/ds", "s3://no-such-bucket/ds: no such "),):
        assert main(["sql", url, "SELECT 1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_curate_build_reads_records_on_s3(built_on_s3, tmp_path, capsys):
    from curation.commands.build import build_dataset

    build_dataset("s3://datasets/records", str(tmp_path / "from-s3"), tasks="caption", pack=1024, runner="local")
    ours, theirs = Dataset(tmp_path / "from-s3", verify=True), Dataset(built_on_s3 / "samples")
    cols = ["sample_id", "prompt", "target", "num_tokens"]
    assert ours.read("samples", cols).sort_by("sample_id") == theirs.read("samples", cols).sort_by("sample_id")
    assert ours.manifest["config"]["input"] == "s3://datasets/records"


def _image_list(base: str, n: int, slow: bool = False) -> pa.Table:
    """n URLs on the fault server: images (slow ones with `slow`), every 7th a 404, every 5th a copy of an earlier one."""
    urls, caps = [], []
    for i in range(n):
        if i % 7 == 3:
            urls.append(f"{base}/404.jpg?{i}")
        elif i % 5 == 4:
            urls.append(urls[i - 2] + "#copy")
        else:
            urls.append(f"{base}/{'slow-host' if slow else 'img'}/{i}.jpg")
        caps.append(f"picture number {i}")
    return pa.table({"url": urls, "caption": caps})


def _contents(url):
    data = Dataset(url, verify=True)
    records = data.read("records", columns=["record_id", "sha256"]).to_pylist()
    rejects = data.read("rejects", columns=["record_id", "stage", "reason"]).to_pylist()
    assert len({r["record_id"] for r in records}) == len(records) and len({r["record_id"] for r in rejects}) == len(rejects)
    return {(r["record_id"], r["sha256"]) for r in records}, {(r["record_id"], r["stage"], r["reason"]) for r in rejects}


def test_download_and_build_into_s3_give_the_datasets_of_a_local_run(s3, tmp_path, capsys):
    from netfixtures import FaultServer

    from curation.storage.objects import RUNS_DIR

    s3.mkbucket("corpus-in")
    s3.mkbucket("corpus-out")
    with FaultServer() as server:
        table = _image_list(server.base, 12)
        pq.write_table(table, tmp_path / "urls.parquet")
        s3.put("corpus-in/urls.parquet", _parquet(table))
        flags = ["--allow-private-network", "--retries", "0", "--shard-rows", "4"]
        for src, out in ((tmp_path / "urls.parquet", tmp_path / "raw"), ("s3://corpus-in/urls.parquet", "s3://corpus-out/raw")):
            done = _curate(s3.env, "download", src, "--out", out, *flags)
            assert done.returncode == 0, done.stderr[-3000:]
    for src, out in ((tmp_path / "raw", tmp_path / "qwen"), ("s3://corpus-out/raw", "s3://corpus-out/qwen")):
        done = _curate(s3.env, "build", src, "--out", out, "--format", "qwen-vl", "--tasks", "caption", "--pack", "512",
                       "--runner", "ray")
        assert done.returncode == 0, done.stderr[-3000:]
    assert _contents("s3://corpus-out/raw") == _contents(tmp_path / "raw")
    local, remote = Dataset(tmp_path / "qwen", verify=True), Dataset("s3://corpus-out/qwen", verify=True)
    cols = ["sample_id", "prompt", "target", "num_tokens"]
    assert remote.read("samples", cols).sort_by("sample_id") == local.read("samples", cols).sort_by("sample_id")
    assert remote.rows("sequences") == local.rows("sequences") > 0
    # the layout: shards under the run's prefix that the manifest names; no markers, lock or staging left
    keys = [k.removeprefix("corpus-out/raw/") for k in s3.fs().find("corpus-out/raw")]
    run = Dataset("s3://corpus-out/raw").manifest["output"]["run"]
    assert sorted(k.split("/")[0] for k in keys) == ["README.md", "manifest.json"] + [RUNS_DIR] * (len(keys) - 2)
    assert all(k.startswith((f"{RUNS_DIR}/{run}/records/", f"{RUNS_DIR}/{run}/rejects/"))
               for k in keys if k.startswith(RUNS_DIR))
    # sql and validate on the s3 datasets, as on the local ones
    q = "SELECT reason, count(*) FROM rejects GROUP BY reason ORDER BY reason"
    assert _sql(capsys, "s3://corpus-out/raw", q)[:2] == _sql(capsys, str(tmp_path / "raw"), q)[:2]
    assert main(["validate", "s3://corpus-out/qwen"]) == 0
    capsys.readouterr()
    # load_dataset on a local copy of the s3 dataset (its card's configs name the run's shards)
    from datasets import load_dataset

    copy = tmp_path / "copy"
    s3.fs().get("corpus-out/qwen/", str(copy), recursive=True)
    loaded = load_dataset(str(copy), "samples", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(loaded["sample_id"]) == sorted(local.read("samples", ["sample_id"]).column(0).to_pylist())


def test_an_output_on_s3_is_refused_when_not_empty_or_locked_and_replaced_whole(s3, tmp_path, capsys):
    import json as _json
    import socket
    import time

    from curation.commands.build import build_dataset

    s3.mkbucket("out")
    records = tmp_path / "records"
    from curation.schema import records_from_pylist
    from curation.storage.dataset import DatasetWriter

    with DatasetWriter(records) as w:
        w.write("records", records_from_pylist([{"record_id": f"t:{i}", "source": "t", "image": _png(40, 30, i),
                                                 "width": 40, "height": 30, "captions": [f"Picture {i}."]} for i in range(4)]))
        w.close()
    build_dataset(str(records), "s3://out/ds", tasks="caption", runner="local")
    first = Dataset("s3://out/ds").manifest["output"]["run"]
    s3.put("out/other/README.txt", b"not ours")
    with pytest.raises(Exception, match="output is not empty"):
        build_dataset(str(records), "s3://out/ds", tasks="caption", runner="local")
    # a live lock of another host's run
    s3.put("out/ds/.curate/lock", _json.dumps({"host": "elsewhere", "pid": 1, "token": "x", "heartbeat": time.time()}).encode())
    with pytest.raises(Exception, match=r"in use by another curate run \(host elsewhere, pid 1"):
        build_dataset(str(records), "s3://out/ds", tasks="caption", runner="local", overwrite=True)
    # a dead process's lock on this host is taken over at once
    s3.put("out/ds/.curate/lock", _json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 7, "token": "y",
                                               "heartbeat": time.time()}).encode())
    build_dataset(str(records), "s3://out/ds", tasks="caption", runner="local", overwrite=True)
    second = Dataset("s3://out/ds", verify=True).manifest["output"]["run"]
    assert second != first
    assert {k.split("/")[3] for k in s3.fs().find("out/ds/runs")} == {second}  # the old run's objects are gone
    assert not s3.fs().exists("out/ds/.curate/lock")
    # a command that cannot write object storage yet says so in one line
    capsys.readouterr()
    assert main(["ingest", str(records), "--kind", "records-jsonl", "--images", "https://img.example/",
                 "--out", "s3://out/ingested"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "land in a local folder first" in err[0], err
    assert not s3.fs().exists("out/ingested")


def test_a_driver_killed_mid_download_into_s3_resumes_to_the_same_set_and_the_old_dataset_stays(s3, tmp_path):
    import signal
    import time

    from netfixtures import FaultServer

    s3.mkbucket("out")
    env = {**os.environ, **s3.env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    flags = ["--allow-private-network", "--retries", "0", "--shard-rows", "4", "--threads", "1"]

    def curate(*argv):
        return subprocess.Popen([sys.executable, "-m", "curation.cli", *map(str, argv)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    with FaultServer() as server:
        s3.put("out/a.parquet", _parquet(_image_list(server.base, 8)))
        s3.put("out/b.parquet", _parquet(_image_list(server.base, 60, slow=True)))
        for src, out in (("s3://out/a.parquet", "s3://out/raw"), ("s3://out/b.parquet", "s3://out/whole")):
            proc = curate("download", src, "--out", out, *flags)
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
        before = _contents("s3://out/raw")
        old_manifest = s3.fs().cat_file("out/raw/manifest.json")

        proc = curate("download", "s3://out/b.parquet", "--out", "s3://out/raw", "--overwrite", *flags)
        fs = s3.fs()
        deadline = time.time() + 300
        done = []
        while time.time() < deadline and len(done) < 2 and proc.poll() is None:
            done = [p for p in fs.find("out/raw/runs", refresh=True) if "/done/" in p] if fs.exists("out/raw/runs") else []
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        fs.invalidate_cache()
        finished = len([p for p in fs.find("out/raw/runs") if "/done/" in p])
        assert 2 <= finished < 15, finished
        # killed: the earlier dataset at that prefix is whole and readable, its manifest untouched
        assert fs.cat_file("out/raw/manifest.json") == old_manifest
        assert _contents("s3://out/raw") == before

        resumed = curate("download", "s3://out/b.parquet", "--out", "s3://out/raw", "--overwrite", "--resume", *flags)
        _, err = resumed.communicate(timeout=600)
        assert resumed.returncode == 0, err[-3000:]
    assert f"resume: {finished} input shard(s) already done" in err
    records, rejects = _contents("s3://out/raw")
    assert (records, rejects) == _contents("s3://out/whole")  # 0 duplicates (checked in _contents), same set
    assert {r for r, _ in records} | {r for r, _, _ in rejects} == {f"web:{i}" for i in range(60)}  # 0 missing
    manifest = Dataset("s3://out/raw").manifest
    assert manifest["run"]["resumed"] is True
    runs = {k.split("/")[3] for k in s3.fs().find("out/raw/runs")}
    assert runs == {manifest["output"]["run"]}  # the old dataset's objects went after the swap, not before


def test_export_and_filter_read_their_dataset_from_s3(built_on_s3, s3, tmp_path, capsys):
    for src, out in ((str(built_on_s3 / "samples"), tmp_path / "local.json"), ("s3://datasets/samples", tmp_path / "s3.json")):
        assert main(["export", src, "--to", "qwen-vl-json", "--out", str(out)]) == 0
    capsys.readouterr()
    same_images = (tmp_path / "s3.json").read_text().replace("/s3_images/", "/local_images/")
    assert json.loads(same_images) == json.loads((tmp_path / "local.json").read_text())
    assert sorted(p.name for p in (tmp_path / "s3_images").iterdir()) == sorted(p.name for p in (tmp_path / "local_images").iterdir())
    runs = {}
    for src, out in ((built_on_s3 / "records", tmp_path / "f-local"), ("s3://datasets/records", tmp_path / "f-s3")):
        done = _curate(s3.env, "filter", src, "--out", out, "--filters", "basic", "--min-side", "42")
        assert done.returncode == 0, done.stderr[-3000:]
        data = Dataset(out, verify=True)
        runs[str(src)[:2]] = (sorted(data.read("records", ["record_id"]).column(0).to_pylist()),
                              sorted(data.read("rejects", ["record_id"]).column(0).to_pylist()))
    assert runs["s3"] == next(v for k, v in runs.items() if k != "s3")
    assert runs["s3"][1]  # the filter dropped some (images narrower than 42 px)


def test_two_pass_jobs_and_dedup_into_s3_give_what_local_runs_give(s3, tmp_path):
    """`curate run` with dedup and a CLIP keep fraction (a first pass under the run's prefix, decisions in its
    work prefix, the first pass's rejects adopted where they lie), and `curate dedup`, into s3://."""
    from netfixtures import FaultServer

    from jobs.demo import DEMO_CLIP_DIR

    s3.mkbucket("jobs")
    with FaultServer() as server:
        table = _image_list(server.base, 16)
        pq.write_table(table, tmp_path / "urls.parquet")
        s3.put("jobs/urls.parquet", _parquet(table))
        for name, urls, out in (("local", tmp_path / "urls.parquet", tmp_path / "run"), ("s3", "s3://jobs/urls.parquet", "s3://jobs/run")):
            job = tmp_path / f"{name}.toml"
            job.write_text("\n".join([
                f'urls = "{urls}"', f'out = "{out}"', f'clip_model = "{DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"}"',
                f'clip_checkpoint = "{DEMO_CLIP_DIR / "demo_clip.pt"}"', "clip_keep_fraction = 0.5",
                'dedup = ["exact", "url", "phash"]', 'tasks = ["caption"]', "allow_private_network = true",
                "retries = 0", "shard_rows = 5"]) + "\n")
            done = _curate(s3.env, "run", job)
            assert done.returncode == 0, done.stderr[-3000:]
    for src, out in ((tmp_path / "run", tmp_path / "dedup"), ("s3://jobs/run", "s3://jobs/dedup")):
        done = _curate(s3.env, "dedup", src, "--out", out, "--exact", "--phash")
        assert done.returncode == 0, done.stderr[-3000:]

    def contents(url):
        ds = Dataset(url, verify=True)
        return (sorted(ds.read("records", ["record_id"]).column(0).to_pylist()),
                sorted(ds.read("samples", ["sample_id"]).column(0).to_pylist()) if ds.shards("samples") else [],
                sorted((r["record_id"], r["stage"], r["reason"]) for r in ds.read("rejects", ["record_id", "stage", "reason"]).to_pylist()))

    for name in ("run", "dedup"):
        assert contents(f"s3://jobs/{name}") == contents(tmp_path / name)
    records, samples, rejects = contents("s3://jobs/run")
    # every /img/ answer is the same JPEG: one record is left, its copies dropped in the second pass
    assert len(samples) == len(records) == 1 and {r[2] for r in rejects} == {"duplicate_image", "duplicate_url", "http_error"}
    manifest = Dataset("s3://jobs/run").manifest
    listed = {f"jobs/run/{s['path']}" for info in manifest["tables"].values() for s in info["shards"]}
    # after the swap only what the manifest lists is left under runs/ (first pass, work files, markers gone)
    assert set(s3.fs().find("jobs/run/runs")) == listed


def test_ingest_reads_annotation_files_and_shards_on_s3(s3, tmp_path, capsys):
    """The importers walk URLs as paths (upath over fsspec): COCO annotations and img2dataset tar shards."""
    import tarfile

    from curation.commands.ingest import ingest

    data = ROOT / "tests" / "data" / "real-annotations" / "coco2017"
    s3.mkbucket("anno")
    for name in ("captions_val2017.sample.json", "instances_val2017.sample.json"):
        s3.put(f"anno/coco/{name}", (data / name).read_bytes())
    shards = tmp_path / "i2d"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tar:
        for key, body in (("000000000.jpg", _png(40, 30, 5)), ("000000000.txt", b"a green square"),
                          ("000000000.json", json.dumps({"key": "000000000", "url": "https://x/0.jpg", "status": "success"}).encode()),
                          ("000000001.json", json.dumps({"key": "000000001", "status": "failed_to_download",
                                                         "error_message": "HTTP Error 404"}).encode())):
            info = tarfile.TarInfo(key)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    s3.put("anno/i2d/00000.tar", (shards / "00000.tar").read_bytes())

    def contents(out):
        ds = Dataset(out, verify=True)
        return (sorted((r["record_id"], tuple(r["captions"] or ()), len(r["regions"] or ())) for r in ds.read("records").to_pylist()),
                sorted((r["record_id"], r["reason"]) for r in ds.read("rejects").to_pylist()))

    runs = {}
    for name, coco, i2d in (("local", data, shards), ("s3", "s3://anno/coco", "s3://anno/i2d")):
        groups = {"coco-captions": [f"{coco}/captions_val2017.sample.json"],
                  "coco-instances": [f"{coco}/instances_val2017.sample.json"]}
        ingest(groups, tmp_path / f"coco-{name}", use_ray=False)  # annotations only (no --images)
        ingest({"img2dataset": [i2d]}, tmp_path / f"i2d-{name}", use_ray=False)
        runs[name] = (contents(tmp_path / f"coco-{name}"), contents(tmp_path / f"i2d-{name}"))
    # and from object storage into object storage (its rejects written by this process, its records by the stage)
    ingest({"coco-captions": ["s3://anno/coco/captions_val2017.sample.json"],
            "coco-instances": ["s3://anno/coco/instances_val2017.sample.json"]}, "s3://anno/out-coco", use_ray=False)
    ingest({"img2dataset": ["s3://anno/i2d"]}, "s3://anno/out-i2d", use_ray=False)
    assert (contents("s3://anno/out-coco"), contents("s3://anno/out-i2d")) == runs["local"]
    assert runs["s3"] == runs["local"]
    (coco_records, _), (i2d_records, i2d_rejects) = runs["s3"]
    assert coco_records and i2d_records == [("img2dataset:000000000", ("a green square",), 0)]
    assert i2d_rejects == [("img2dataset:000000001", "http_error")]
    # the CLI names a missing object in one line
    assert main(["ingest", "s3://anno/coco/nope.json", "--kind", "coco-captions", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.json" in err[0], err

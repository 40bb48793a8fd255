"""The web-pairs job through its commands: download, filter, run (loopback server, real img2dataset)."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from curation.cli import main
from curation.errors import InputError
from curation.storage.dataset import Dataset
from curation.democorpus import generate_corpus
from jobs.config import config_from_dict
from jobs.demo import DEMO_CLIP_DIR, serve_directory
from jobs.web_pairs import WebPairsConfig

CLIP = ["--clip-model", str(DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"), "--clip-checkpoint", str(DEMO_CLIP_DIR / "demo_clip.pt")]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    items = generate_corpus(root / "www", n=80, seed=5)
    with serve_directory(root / "www") as base:
        urls = root / "urls.csv"
        rows = [{"id": it.item_id, "link": f"{base}/{it.filename}", "text": it.caption,
                 "meta": json.dumps({"planted": it.planted}), "ocr": json.dumps(it.ocr)} for it in items]
        rows.append({"id": "gone", "link": f"{base}/no-such-file.jpg", "text": "a red circle", "meta": "{}", "ocr": "[]"})
        pacsv.write_csv(pa.Table.from_pylist(rows), urls)
        yield root, urls, items


def test_download_then_filter(site, tmp_path, capsys, local_ray):
    root, urls, items = site
    raw, kept = tmp_path / "raw", tmp_path / "kept"
    assert main(["download", str(urls), "--out", str(raw), "--source", "web", "--url-col", "link",
                 "--caption-col", "text", "--id-col", "id", "--allow-private-network"]) == 0  # served from loopback
    printed = capsys.readouterr().out
    assert "81 URLs" in printed
    ds = Dataset(raw)
    corrupt = sum(it.planted == "corrupt" for it in items)
    # dropped: the missing file and every corrupt image, each once, counted under its reject's reason
    download_rejects = [r for r in ds.read("rejects").to_pylist() if r["stage"] == "download"]
    assert sorted(r["record_id"] for r in download_rejects) == sorted(
        ["web:gone"] + [f"web:{it.item_id}" for it in items if it.planted == "corrupt"])
    by_reason = Counter(r["reason"] for r in download_rejects)
    assert sum(by_reason.values()) == 1 + corrupt and all(by_reason)
    download = ds.manifest["stages"]["download"]
    assert download == {"in": 81, "out": 80 - corrupt, "seconds": download["seconds"], "dropped": dict(by_reason)}
    assert download["seconds"] > 0
    rejects = {r["record_id"]: r for r in ds.read("rejects").to_pylist()}
    assert rejects["web:gone"]["reason"] == "http_error" and rejects["web:gone"]["detail"].startswith("HTTP Error 404")
    assert ds.read("records", columns=["record_id"]).column(0).to_pylist()[0].startswith("web:demo-")

    assert main(["filter", str(raw), "--out", str(kept), *CLIP, "--min-clip-score", "0.15"]) == 0
    out = Dataset(kept)
    stages = out.manifest["stages"]
    assert stages["basic"]["in"] == 80 - corrupt
    assert stages["basic"]["dropped"] == {"image_too_small": sum(it.planted == "tiny" for it in items)}
    assert stages["clip"]["in"] == stages["basic"]["out"]
    swapped = {f"web:{it.item_id}" for it in items if it.planted == "swapped_caption"}
    dropped = {r["record_id"] for r in out.read("rejects").to_pylist() if r["stage"] == "clip"}
    assert len(dropped & swapped) >= 0.9 * len(swapped)
    assert len(dropped - swapped) <= 0.1 * (stages["clip"]["in"] - len(swapped))
    scores = out.read("records", columns=["clip_score"]).column(0).to_pylist()
    assert all(s is not None and s >= 0.15 for s in scores)


def test_run_from_a_toml_config(site, tmp_path, capsys, local_ray):
    root, urls, _ = site
    job = tmp_path / "job.toml"
    job.write_text(
        f'urls = "{urls}"\nout = "{tmp_path / "out"}"\nsource = "web"\nurl_col = "link"\ncaption_col = "text"\n'
        f'id_col = "id"\nclip_model = "{DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"}"\n'
        f'clip_checkpoint = "{DEMO_CLIP_DIR / "demo_clip.pt"}"\nmin_clip_score = 0.15\n'
        'tasks = ["caption", "ocr"]\npack = 1024\nallow_private_network = true\n'
        'format = "qwen2-vl"\nvision_min_pixels = 3136\nvision_max_pixels = 50176\nimages_once = true\n'
    )
    assert main(["run", str(job)]) == 0
    m = Dataset(tmp_path / "out").manifest
    assert list(m["stages"]) == ["download", "basic", "clip", "build", "pack"]
    assert m["config"]["tasks"] == ["caption", "ocr"] and m["config"]["min_clip_score"] == 0.15
    by_task = m["build"]["samples_by_task"]
    assert by_task["caption"] == m["tables"]["records"]["rows"]
    assert 0 < by_task["ocr"] <= by_task["caption"]  # one per record with text items, carried from the URL list
    assert m["packing"]["max_tokens"] == 1024
    assert (m["build"]["min_pixels"], m["build"]["max_pixels"]) == (3136, 50176) == (
        m["config"]["vision_min_pixels"], m["config"]["vision_max_pixels"])
    from formats.coords import image_pad_count

    rec = {r["record_id"]: r for r in Dataset(tmp_path / "out").read("records", columns=["record_id", "width", "height"]).to_pylist()}
    for s in Dataset(tmp_path / "out").read("samples", columns=["record_id", "prompt"]).to_pylist():
        r = rec[s["record_id"]]
        assert s["prompt"].startswith("<|vision_start|><|image_pad|><|vision_end|>")
        assert image_pad_count(r["height"], r["width"], min_pixels=3136, max_pixels=50176) <= 50176 // 784
    assert "run:" in capsys.readouterr().out
    # images_once: each record's image once in the images table, the samples without bytes, joined on reading
    assert m["build"]["images_once"] is True and m["tables"]["images"]["rows"] == len(rec)
    raw = Dataset(tmp_path / "out").read("samples", columns=["images"]).column(0).to_pylist()
    assert all(im["image"] is None for ims in raw for im in ims)
    assert all(im["image"] for b in Dataset(tmp_path / "out").iter_batches("samples") for r in b.to_pylist() for im in r["images"])
    assert main(["validate", str(tmp_path / "out")]) == 0


def test_run_keeps_the_clip_top_fraction_in_a_second_pass(site, tmp_path, local_ray):
    """Score every pair (download, basic, text, clip), cut at the exact top 30%, then build: one output."""
    import math

    root, urls, _ = site
    job = _job_toml(tmp_path / "job.toml", urls, tmp_path / "out", shard_rows=27, clip_keep_fraction=0.3,
                    filters=["basic", "text", "clip"])
    job.write_text(job.read_text().replace("min_clip_score = 0.15\n", ""))
    assert main(["run", str(job)]) == 0
    ds = Dataset(tmp_path / "out", verify=True)
    m = ds.manifest
    assert list(m["stages"]) == ["download", "basic", "text", "clip", "clip_fraction", "build"]
    scored = m["stages"]["clip"]["out"]
    cut = m["clip_keep_fraction"]["*"]
    assert cut["scored"] == scored and cut["kept"] == math.ceil(0.3 * scored) == m["tables"]["records"]["rows"]
    assert m["stages"]["build"]["in"] == cut["kept"] == m["build"]["samples_by_task"]["caption"]
    kept = ds.read("records", columns=["record_id", "clip_score"]).to_pylist()
    assert min(r["clip_score"] for r in kept) == pytest.approx(cut["threshold"])
    dropped = [r for r in ds.read("rejects").to_pylist() if r["stage"] == "clip_fraction"]
    assert len(dropped) == scored - cut["kept"]
    assert all(float(r["detail"].split()[0]) <= cut["threshold"] + 1e-4 for r in dropped)
    # the first pass's rejects are in the output too, once each
    assert {r["stage"] for r in ds.read("rejects").to_pylist()} >= {"download", "clip_fraction"}
    assert m["tables"]["rejects"]["rows"] == sum(sum(s["dropped"].values()) for s in m["stages"].values())


def test_run_dedups_then_keeps_the_clip_top_fraction_of_the_rest(site, tmp_path, local_ray):
    """dedup and the top fraction in one job: the cutoff ranks only the records dedup keeps."""
    import math

    root, urls, items = site
    job = _job_toml(tmp_path / "job.toml", urls, tmp_path / "out", shard_rows=27, clip_keep_fraction=0.5,
                    filters=["basic", "clip"], dedup=["exact", "url", "phash"])
    job.write_text(job.read_text().replace("min_clip_score = 0.15\n", ""))
    assert main(["run", str(job)]) == 0
    ds = Dataset(tmp_path / "out", verify=True)
    m = ds.manifest
    assert list(m["stages"]) == ["download", "basic", "clip", "phash", "dedup", "clip_fraction", "build"]
    planted = sum(it.planted == "duplicate" for it in items)
    dropped = m["stages"]["dedup"]["dropped"]
    assert planted >= 1 and dropped.get("duplicate_image", 0) == planted
    rest = m["stages"]["clip"]["out"] - sum(dropped.values())
    cut = m["clip_keep_fraction"]["*"]
    assert cut["scored"] == rest and cut["kept"] == math.ceil(0.5 * rest) == m["tables"]["records"]["rows"]
    assert m["dedup"]["duplicates"] == sum(dropped.values())
    rejects = ds.read("rejects", columns=["record_id", "stage"]).to_pylist()
    assert len({r["record_id"] for r in rejects}) == len(rejects)  # a record is dropped once, by one stage
    # the first pass's reject shards are linked into the output as they are (no row through the driver)
    paths = [f["path"] for f in m["tables"]["rejects"]["shards"]]
    assert any(p.startswith("rejects/part-a") for p in paths) and not any(p.startswith("rejects/part-d") for p in paths)
    assert m["tables"]["rejects"]["rows"] == sum(sum(s["dropped"].values()) for s in m["stages"].values())


@pytest.mark.parametrize(
    "extra,message",
    [({"vision_min_pixels": 10}, "key 'vision_min_pixels' must be an integer of at least 784"),
     ({"vision_min_pixels": 100000, "vision_max_pixels": 50000}, "key 'vision_max_pixels' 50000 is below")],
)
def test_config_pixel_limits_checked_first(extra, message, tmp_path):
    from curation.commands.run import check_config
    from curation.errors import InputError

    cfg = config_from_dict(WebPairsConfig, {"urls": "u", "out": str(tmp_path / "o"), **extra}, "job.toml")
    with pytest.raises(InputError, match=message):
        check_config(cfg, "job.toml")


@pytest.mark.parametrize(
    "data,message",
    [
        ({"urls": "u", "out": "o", "min_side": "big"}, "key 'min_side' has str value"),
        ({"urls": "u", "out": "o", "tasks": "caption"}, "key 'tasks'"),
        ({"out": "o"}, "urls"),
    ],
)
def test_config_errors_name_the_key(data, message):
    from curation.errors import InputError

    with pytest.raises(InputError, match=message):
        config_from_dict(WebPairsConfig, data, "job.toml")


def _job_toml(path, urls, out, **extra):
    lines = [f'urls = "{urls}"', f'out = "{out}"', 'source = "web"', 'url_col = "link"', 'caption_col = "text"',
             'id_col = "id"', f'clip_model = "{DEMO_CLIP_DIR / "DemoCLIP-Tiny.json"}"',
             f'clip_checkpoint = "{DEMO_CLIP_DIR / "demo_clip.pt"}"', "min_clip_score = 0.15", 'tasks = ["caption"]',
             "allow_private_network = true"]  # the site is served from loopback
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _contents(out):
    ds = Dataset(out, verify=True)
    records = ds.read("records", columns=["record_id"]).column(0).to_pylist()
    samples = ds.read("samples", columns=["sample_id"]).column(0).to_pylist()
    rejects = [(r["record_id"], r["stage"], r["reason"]) for r in ds.read("rejects", columns=["record_id", "stage", "reason"]).to_pylist()]
    assert len(set(records)) == len(records) and len(set(samples)) == len(samples) and len(set(rejects)) == len(rejects)
    return set(records), set(samples), set(rejects)


def test_a_job_whose_driver_is_killed_resumes_to_the_same_output(site, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root, urls, items = site
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}

    def curate(*argv):
        return subprocess.Popen([sys.executable, "-m", "curation.cli", *map(str, argv)], cwd=repo, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    whole = curate("run", _job_toml(tmp_path / "whole.toml", urls, tmp_path / "whole", shard_rows=27))
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]

    out2 = tmp_path / "killed2"
    job2 = _job_toml(tmp_path / "job2.toml", urls, out2, shard_rows=27)
    proc = curate("run", job2)
    done = out2 / ".curate" / "staging" / "done"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(done.glob("*.json"))) < 1 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    finished = len(list(done.glob("*.json")))
    assert 1 <= finished < 3, finished
    resumed = curate("run", job2, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    assert f"resume: {finished} input shard(s) already done" in err
    manifest = json.loads((out2 / "manifest.json").read_text())
    assert manifest["run"]["resumed"] is True and manifest["stages"]["download"]["in"] == 81
    assert _contents(out2) == _contents(tmp_path / "whole")
    records, _, rejects = _contents(out2)
    assert records | {r[0] for r in rejects} == {f"web:{it.item_id}" for it in items} | {"web:gone"}  # 0 missing


def test_a_killed_clip_actor_is_restarted_and_every_row_accounted(site, tmp_path, local_ray):
    import os
    import signal
    import threading
    import time
    from pathlib import Path

    root, urls, items = site
    killed = []

    def clip_actor_pids():
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::ClipScoreActor"):
                    yield int(proc.name)
            except OSError:
                continue

    def kill_the_clip_actor():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            for pid in clip_actor_pids():
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_clip_actor, daemon=True)
    killer.start()
    job = _job_toml(tmp_path / "job.toml", urls, tmp_path / "out", shard_rows=27, clip_actors=True)
    assert main(["run", str(job)]) == 0
    killer.join(timeout=5)
    assert killed, "the CLIP actor was never seen"
    m = Dataset(tmp_path / "out").manifest
    assert m["stages"]["download"]["in"] == 81
    records, _, rejects = _contents(tmp_path / "out")
    assert len(records) + len(rejects) == 81  # rows in = records + rejects
    assert m["stages"]["clip"]["in"] == m["stages"]["basic"]["out"]


def test_run_with_dedup_stages_from_a_toml_config(site, tmp_path, capsys, local_ray):
    """Issue 10: `dedup = [...]` in a config runs the dedup between the filters and the build (two passes)."""
    root, urls, items = site
    job = tmp_path / "job.toml"
    job.write_text(
        f'urls = "{urls}"\nout = "{tmp_path / "out"}"\nsource = "web"\nurl_col = "link"\ncaption_col = "text"\n'
        'id_col = "id"\nfilters = ["basic"]\ndedup = ["exact", "url", "phash"]\ntasks = ["caption"]\n'
        'allow_private_network = true\n'
    )
    assert main(["run", str(job)]) == 0
    ds = Dataset(tmp_path / "out")
    m = ds.manifest
    assert list(m["stages"]) == ["download", "basic", "phash", "dedup", "build"]
    assert m["stages"]["dedup"]["in"] == m["stages"]["basic"]["out"]
    assert m["download"]["requests"] >= 81 and m["dedup"]["max_hamming_distance"] == 4
    rejects = {r["record_id"]: r for r in ds.read("rejects").to_pylist()}
    for it in (it for it in items if it.planted == "duplicate"):
        assert rejects[f"web:{it.item_id}"]["reason"] == "duplicate_image"
        assert rejects[f"web:{it.item_id}"]["detail"] == f"duplicate of web:{it.duplicate_of} (same sha256)"
    # every URL is a record or a reject of one stage, and the build saw exactly the records
    assert ds.rows("records") + len(rejects) == 81
    assert m["stages"]["build"]["in"] == ds.rows("records") == m["stages"]["dedup"]["out"]


def test_the_example_config_loads_as_is_and_with_every_commented_key_and_names_every_key(tmp_path):
    """jobs/configs/web_pairs.example.toml is what users copy: it must load, each commented-out setting must
    load once uncommented (no key a user would find refused, no table header that swallows the keys after it),
    and every WebPairsConfig key must be in it."""
    import dataclasses
    import re
    import tomllib
    from pathlib import Path

    from jobs.config import load_config

    example = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "web_pairs.example.toml"
    text = example.read_text()
    assert load_config(example, WebPairsConfig).clip_model == "ViT-B-32"
    lines, uncommented = [], []
    for line in text.splitlines():
        m = re.match(r"^# ?([a-z_]+ = .*)$", line)
        if m:
            try:
                tomllib.loads(m.group(1))
            except tomllib.TOMLDecodeError:
                pass
            else:
                line = m.group(1)
                uncommented.append(line.split(" = ")[0])
        lines.append(line)
    assert len(uncommented) >= 15, uncommented
    full = tmp_path / "full.toml"
    full.write_text("\n".join(lines) + "\n")
    load_config(full, WebPairsConfig)
    top = tomllib.loads(full.read_text())
    assert [k for k in uncommented if k not in top] == []  # each a top-level key, none inside a table
    keys = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.M))
    missing = sorted({f.name for f in dataclasses.fields(WebPairsConfig)} - keys)
    assert missing == [], f"keys the example does not show: {missing}"


def test_a_small_job_runs_in_this_process_with_the_same_output_as_on_ray(site, tmp_path, local_ray):
    """runner "local" (what "auto" picks for a one-shard list with no Ray around) and "ray" make the same
    dataset, through both passes (dedup, the CLIP top fraction); the manifest says which ran."""
    root, urls, items = site
    outs = {}
    for runner in ("local", "ray"):
        job = _job_toml(tmp_path / f"{runner}.toml", urls, tmp_path / runner, runner=runner, clip_keep_fraction=0.6,
                        dedup=["exact", "url", "phash"])
        assert main(["run", str(job)]) == 0
        outs[runner] = _contents(tmp_path / runner)
        m = Dataset(tmp_path / runner).manifest
        assert m["config"]["runner"] == runner
        tasks = m["run"]["tasks"]  # where the (second pass's) shard tasks' time went
        assert tasks["tasks"] == len(tasks["spans"]) == m["run"]["input_shards"] >= 1
        assert all(0 <= s["setup"] <= s["wall"] and 0 <= s["reader_wait"] <= s["wall"] for s in tasks["spans"])
        assert tasks["span_seconds"] >= max(s["start"] + s["wall"] for s in tasks["spans"]) - 1e-3
        assert m["download"]["fetch_seconds"] > 0  # the first pass's fetch, its own wall time
    assert outs["local"] == outs["ray"]
    records, _, rejects = outs["local"]
    assert records and {stage for _, stage, _ in rejects} >= {"download", "dedup", "clip_fraction"}


def test_auto_picks_this_process_only_for_one_shard_and_no_ray(monkeypatch):
    from curation.runner import ray_running
    from jobs.web_pairs import executor

    cfg = WebPairsConfig(urls="u.parquet", out="o", shard_rows=100)
    def fits(limit):  # a list of exactly one shard's rows
        return limit >= 100

    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert executor(cfg, fits) == ("ray" if ray_running() else "local")
    assert executor(cfg, lambda limit: False) == "ray"
    assert executor(WebPairsConfig(urls="u", out="o", runner="local"), lambda limit: False) == "local"
    assert executor(WebPairsConfig(urls="u", out="o", runner="ray"), fits) == "ray"
    assert executor(WebPairsConfig(urls="u", out="o", ray_address="head:6379"), fits) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert executor(cfg, fits) == "ray"
    with pytest.raises(InputError, match="runner must be one of auto, local, ray"):
        executor(WebPairsConfig(urls="u", out="o", runner="spark"), fits)

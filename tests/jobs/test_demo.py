"""The one end-to-end job test: `curate demo` from loopback URLs to audited shards."""

import csv
import io
import json

import pytest

from curation.cli import main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`curate demo` in its own process (it starts its own Ray head), its proxies set to a loopback recorder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from netfixtures import ProxyRecorder

    out = tmp_path_factory.mktemp("demo") / "out"
    repo = Path(__file__).resolve().parents[2]
    with ProxyRecorder() as recorder:
        env = {**os.environ, **recorder.env(), "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run([sys.executable, "-m", "curation.cli", "demo", "--out", str(out)], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, recorder.log


@pytest.fixture(scope="module")
def demo(demo_run):
    out, printed, _ = demo_run
    return out, printed


def test_the_demo_sends_nothing_off_the_machine(demo_run):
    """Issue 9: no Ray usage-stats or cloud-metadata probe, nothing else through the proxy settings either."""
    _, _, proxied = demo_run
    assert proxied == []


def sql(capsys, out, query):
    assert main(["sql", str(out), query, "--csv"]) == 0
    return list(csv.reader(io.StringIO(capsys.readouterr().out)))


def test_demo_prints_the_summary(demo):
    out, printed = demo
    assert "CLIP filter (threshold" in printed
    assert "wall time" in printed
    assert f"output: {out}" in printed
    for stage in ("download", "basic", "clip", "phash", "dedup", "build"):
        assert stage in printed


def test_clip_filter_catches_swapped_captions(demo):
    from jobs.demo import clip_quality

    out, _ = demo
    clip = clip_quality(out)
    assert clip["swapped_reaching_clip"] >= 25
    assert clip["recall"] >= 0.9
    assert clip["false_drop_rate"] <= 0.1


def test_sql_counts_match_the_manifest(demo, capsys):
    out, _ = demo
    manifest = json.loads((out / "manifest.json").read_text())
    rows = sql(capsys, out, "select count(*) from samples")
    assert int(rows[1][0]) == manifest["tables"]["samples"]["rows"] > 0
    rows = sql(capsys, out, "select count(*) from records")
    assert int(rows[1][0]) == manifest["tables"]["records"]["rows"]


def test_rejects_show_every_kind_of_drop(demo, capsys):
    out, _ = demo
    rows = sql(capsys, out, "select stage, reason, count(*) from rejects group by all")
    stages = {r[0] for r in rows[1:]}
    assert {"download", "basic", "clip"} <= stages
    planted = sql(capsys, out, "select json_extract_string(meta, '$.planted') p, stage, count(*) from rejects group by all order by 1")
    by_planted = {(r[0], r[1]): int(r[2]) for r in planted[1:]}
    assert by_planted[("corrupt", "download")] >= 2
    assert by_planted[("tiny", "basic")] >= 2


def test_every_reject_reason_is_a_listed_reason(demo, capsys):
    """The acceptance line of issue 7: `curate sql OUT "select distinct reason from rejects"` gives only listed reasons."""
    from curation.reasons import REASONS

    out, _ = demo
    rows = sql(capsys, out, "select distinct reason from rejects")
    assert rows[0] == ["reason"] and len(rows) > 3
    assert {r[0] for r in rows[1:]} <= set(REASONS)
    rows = sql(capsys, out, "select distinct reason from rejects where stage = 'download'")
    assert {r[0] for r in rows[1:]} <= {"not_an_image", "image_truncated", "http_error"}


def test_every_url_is_a_record_or_a_reject(demo, capsys):
    out, _ = demo
    manifest = json.loads((out / "manifest.json").read_text())
    images = manifest["stages"]["download"]["in"]
    rows = sql(capsys, out, "select (select count(*) from records) + (select count(distinct record_id) from rejects where stage in ('download', 'basic', 'clip', 'dedup'))")
    assert int(rows[1][0]) == images


def test_dedup_drops_the_planted_copies_naming_their_sources(demo, capsys, tmp_path):
    """Issue 10: the 3 exact copies as duplicate_image, >= 95% of the near copies, no other image merged."""
    from curation.democorpus import generate_corpus
    from jobs.demo import DemoConfig, dedup_quality

    out, printed = demo
    cfg = DemoConfig()
    items = generate_corpus(tmp_path, n=cfg.images, seed=cfg.seed, near_duplicates=cfg.near_duplicates)
    rows = sql(capsys, out, "select record_id, reason, detail from rejects where stage = 'dedup'")
    by_id = {r[0]: (r[1], r[2]) for r in rows[1:]}
    exact = [it for it in items if it.planted == "duplicate"]
    assert len(exact) == 3
    for it in exact:
        assert by_id[f"demo:{it.item_id}"] == ("duplicate_image", f"duplicate of demo:{it.duplicate_of} (same sha256)")
    quality = dedup_quality(out, items)
    assert quality["copies_reaching_dedup"] >= 25
    assert quality["recall"] >= 0.95 and quality["false_merges"] == 0 and quality["precision"] == 1.0
    assert "dedup (pHash within 4) on planted copies: precision 100.0%" in printed


def test_caption_samples_are_qwen_vl(demo, capsys):
    out, _ = demo
    rows = sql(capsys, out, "select record_id, prompt, target, num_tokens from samples where task = 'caption' limit 5")
    for record_id, prompt, target, num_tokens in rows[1:]:
        assert prompt == f"<img>{record_id}</img>Generate the caption in English:"
        assert target.startswith(" ") and target.endswith("<|endoftext|>")
        assert int(num_tokens) > 258


def test_demo_output_validates(demo, capsys):
    out, _ = demo
    assert main(["validate", str(out)]) == 0


def test_every_stage_reports_the_time_it_took(demo):
    out, _ = demo
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    for name in ("download", "basic", "clip", "build"):
        assert stages[name]["seconds"] > 0, name
    # download includes img2dataset's fetching; CLIP scoring is the heavy filter
    assert stages["clip"]["seconds"] > stages["basic"]["seconds"]


def test_work_files_live_and_die_in_the_output_staging(demo):
    out, _ = demo
    assert not (out / ".curate" / "staging").exists()  # removed once the run completed
    assert sorted(p.name for p in out.iterdir()) == [".curate", "manifest.json", "records", "rejects", "samples", "sequences"]


def test_a_second_demo_replaces_the_first_only_when_complete(demo, tmp_path, capsys):
    from curation.dataset import Dataset

    out, _ = demo
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("not a demo")
    assert main(["demo", "--out", str(other), "--images", "16"]) == 2  # someone else's folder: refused
    assert "not empty" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "not a demo"
    assert Dataset(out, verify=True).rows("records") > 0

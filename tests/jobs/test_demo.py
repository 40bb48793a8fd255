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


# what img2dataset and Ray print when nobody stops them (issue 12): none of it on the user's screen
BANNERS = ("bwm-ng", "check your bandwidth", "Starting the downloading", "Sharding file number", "File sharded in",
           "failed to download", "core_worker.cc", "object store", "(raylet)", "(pid=", "Started a local Ray instance",
           "WARNING", "Warning:", "Traceback")


def test_the_demo_shows_no_third_party_banner_and_ends_with_its_summary(demo_run):
    out, printed, _ = demo_run
    for banner in BANNERS:
        assert banner not in printed, f"{banner!r} on the demo's stdout"
    lines = [line for line in printed.splitlines() if line.strip()]
    assert lines[-1].startswith("report: ") and lines[-2].startswith("output: ")
    assert (out / ".curate" / "logs" / "third-party.log").is_file()


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
    assert sorted(p.name for p in out.iterdir()) == [".curate", "README.md", "manifest.json", "records", "rejects", "report.html", "samples", "sequences"]


def test_a_second_demo_replaces_the_first_only_when_complete(demo, tmp_path, capsys):
    from curation.storage.dataset import Dataset

    out, _ = demo
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("not a demo")
    assert main(["demo", "--out", str(other), "--images", "16"]) == 2  # someone else's folder: refused
    assert "not empty" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "not a demo"
    assert Dataset(out, verify=True).rows("records") > 0


# --- the report, in a real browser (issue 12) ---------------------------------------------------

MAGENTA = (255, 0, 255)  # curation.report.SHAPE_COLORS[0]: the first shape of every sample


def _near(a, b, tol):
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def test_demo_writes_the_report_and_prints_its_path(demo):
    out, printed = demo
    assert f"report: {out / 'report.html'}" in printed
    assert (out / "report.html").stat().st_size > 50_000


def test_the_report_in_a_real_browser(demo, tmp_path):
    """Headless Chromium opens the demo's report: no console error, no request, every image drawn, boxes in place."""
    import base64
    import re

    from PIL import Image

    from browser import INSTALL_CHROMIUM, chromium_path, open_page

    if chromium_path() is None:
        pytest.skip(f"chromium is not installed: {INSTALL_CHROMIUM}")
    out, _ = demo
    tasks = set(json.loads((out / "manifest.json").read_text())["build"]["samples_by_task"])
    shot = tmp_path / "report.png"
    with open_page(out / "report.html", tmp_path / "profile") as (page, log):
        page.screenshot(path=str(shot), full_page=True)
        images = page.evaluate(
            "[...document.images].map(i => ({cls: i.className, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))"
        )
        galleries = page.evaluate(
            "[...document.querySelectorAll('.gallery[data-task]')].map(g => [g.dataset.task, g.querySelectorAll('img').length])"
        )
        # the first ref_grounding sample: its text, and where its thumbnail is on the screen
        thumb = page.locator(".gallery[data-task='ref_grounding'] .thumb").first
        sample_id = thumb.get_attribute("data-sample-id")
        width, height = int(thumb.get_attribute("data-width")), int(thumb.get_attribute("data-height"))
        text = page.locator(f"pre.sample-text[data-sample-id='{sample_id}']").inner_text()
        src = thumb.locator("img").get_attribute("src")
        thumb_png = tmp_path / "thumb.png"
        thumb.screenshot(path=str(thumb_png))
    assert log.console_errors == [] and log.failed_requests == [] and log.other_requests == []
    assert shot.stat().st_size > 100_000 and Image.open(shot).size[0] == 1400
    assert images and all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in images), images
    assert sum("plot-img" in i["cls"] for i in images) >= 4
    assert {t for t, n in galleries if n > 0} == tasks

    # the box, decoded here from the sample's text by the spec (0-999 grid: v = q * size / 1000) ...
    x1, y1, x2, y2 = map(int, re.search(r"<box>\((\d+),(\d+)\),\((\d+),(\d+)\)</box>", text).groups())
    drawn = Image.open(thumb_png).convert("RGB")
    sx, sy = drawn.size[0] / width, drawn.size[1] / height
    left, right = x1 * width / 1000 * sx, x2 * width / 1000 * sx
    top, bottom = y1 * height / 1000 * sy, y2 * height / 1000 * sy
    # ... and the image as stored, at the size shown
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB").resize(drawn.size)
    mid_x, mid_y = (left + right) / 2, (top + bottom) / 2
    edges = {"left": (left, mid_y), "right": (right, mid_y), "top": (mid_x, top), "bottom": (mid_x, bottom)}
    for name, (x, y) in edges.items():
        px = (min(round(x), drawn.size[0] - 1), min(round(y), drawn.size[1] - 1))
        assert _near(drawn.getpixel(px), MAGENTA, 60), f"{name} edge at {px}: {drawn.getpixel(px)}, not the box colour"
        assert not _near(image.getpixel(px), MAGENTA, 60), f"the image itself is magenta at the {name} edge"
    # away from the edges the screen shows the image unchanged
    for x, y in ((left - 8, mid_y), (right + 8, mid_y), (mid_x, top - 8), (mid_x, bottom + 8), (mid_x, mid_y)):
        px = (round(x), round(y))
        if 0 <= px[0] < drawn.size[0] and 0 <= px[1] < drawn.size[1]:
            assert _near(drawn.getpixel(px), image.getpixel(px), 40), (px, drawn.getpixel(px), image.getpixel(px))


def test_load_dataset_reads_the_demo_output_with_decoded_images(demo, tmp_path, monkeypatch):
    """Issue 11: the dataset card's configs let Hugging Face `datasets` load each table, images decoded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset
    from PIL import Image

    from curation.storage.dataset import Dataset

    out, _ = demo
    ds = Dataset(out)
    samples = load_dataset(str(out), "samples", split="train", cache_dir=str(tmp_path / "hf"))
    assert samples.num_rows == ds.rows("samples")
    want = {r["sample_id"]: r for r in ds.read("samples", columns=["sample_id", "prompt", "images"]).to_pylist()}
    for row in samples.select(range(0, samples.num_rows, 97)):
        ref = want[row["sample_id"]]
        assert row["prompt"] == ref["prompt"]
        im = row["images"][0]["image"]
        assert isinstance(im, Image.Image)
        assert im.size == (ref["images"][0]["width"], ref["images"][0]["height"])
    records = load_dataset(str(out), "records", split="train", cache_dir=str(tmp_path / "hf"))
    assert records.num_rows == ds.rows("records") and isinstance(records[0]["image"], Image.Image)
    assert load_dataset(str(out), "sequences", split="train", cache_dir=str(tmp_path / "hf")).num_rows == ds.rows("sequences")

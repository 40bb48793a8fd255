"""`curate report`: one self-contained page, built from DuckDB over the views, shapes decoded from the text."""

import base64
import html.parser
import io
import re
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from curation.cli import main
from curation.storage.dataset import DatasetWriter
from curation.plots import bars_svg, boxplot_svg, funnel_svg, histogram_svg, nice_ticks
from curation.report import write_report
from curation.schema import make_reject, records_from_pylist, rejects_from_pylist
from formats.build import build_samples
from formats.coords import smart_resize
from formats.packing import pack_sequences, sequences_table


def _png(width, height, color=(40, 40, 40)):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def _records():
    rows = []
    for i, (w, h) in enumerate([(640, 480), (300, 500), (200, 200)]):
        rows.append({
            "record_id": f"t:{i}", "source": "t", "image": _png(w, h), "width": w, "height": h,
            "captions": [f"a red square number {i}"],
            "qa": [{"question": "What colour is the square?", "answer": "red"}],
            "regions": [{"phrase": f"the red square {i}", "boxes": [[w * 0.1, h * 0.2, w * 0.6, h * 0.7]]}],
            "ocr": [{"text": "STOP", "quad": [10, 10, 60, 10, 60, 30, 10, 30]}],
            "clip_score": 0.2 + 0.05 * i,
        })
    return records_from_pylist(rows)


def _dataset(path, fmt="qwen-vl"):
    records = _records()
    samples, rejects = build_samples(records, fmt, tasks=("caption", "vqa", "ref_grounding", "grounded_caption", "ocr"))
    w = DatasetWriter(path)
    w.write("records", records)
    w.write("samples", samples)
    w.write("rejects", rejects_from_pylist([
        make_reject("t:9", "clip", "clip_score_below_threshold", "0.0812 < 0.15", "t"),
        make_reject("t:8", "clip", "clip_score_below_threshold", "-0.2000 < 0.15", "t"),
        make_reject("t:7", "dedup", "duplicate_url", "same URL as t:1, downloaded once there", "t"),
        make_reject("t:6", "dedup", "duplicate_url", "same URL as t:1, downloaded once there", "t"),
        make_reject("t:5", "basic", "image_too_small", "8x8 < 32", "t"),
        make_reject("t:2", "build", "box_empty", "region 0 of t:2: x2 <= x1", "t"),  # names its own record: no group
    ]))
    packed = pack_sequences(zip(samples.column("task").to_pylist(), samples.column("sample_id").to_pylist(),
                                samples.column("num_tokens").to_pylist()), 2048)
    w.write("sequences", sequences_table(packed, fmt))
    w.count_stage("basic", 12, 11, {"image_too_small": 1})
    w.count_stage("clip", 11, 9, {"clip_score_below_threshold": 2})
    w.count_stage("build", 3, samples.num_rows)
    w.close(config={"job": "test", "min_clip_score": 0.15, "pack": 2048, "format": fmt},
            extra={"packing": {"max_tokens": 2048, "fill_ratio": 0.5}})
    return path, samples


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(text):
    p = _Collect()
    p.feed(text)
    return p.tags


def _expected_box(text, width, height, fmt):
    """Pixels of the first box, decoded here from the text by the spec's arithmetic (not the report's code)."""
    if fmt == "qwen2.5-vl":
        x1, y1, x2, y2 = map(int, re.search(r'"bbox_2d": \[(\d+), (\d+), (\d+), (\d+)\]', text).groups())
        rh, rw = smart_resize(height, width)
        return x1 * width / rw, y1 * height / rh, x2 * width / rw, y2 * height / rh
    x1, y1, x2, y2 = map(int, re.search(r"\((\d+),(\d+)\),\((\d+),(\d+)\)", text.split("</img>")[-1]).groups())
    return x1 * width / 1000, y1 * height / 1000, x2 * width / 1000, y2 * height / 1000


@pytest.mark.parametrize("fmt", ["qwen-vl", "qwen2-vl", "qwen2.5-vl"])
def test_report_is_self_contained_and_draws_each_box_where_the_text_says(tmp_path, fmt):
    path, samples = _dataset(tmp_path / "ds", fmt)
    out, figures = write_report(path, per_task=3)
    assert out == path / "report.html"
    page = out.read_text()
    tags = _parse(page)
    # nothing is fetched: every image is a data: URI, no script, no link, no external URL in any attribute
    imgs = [a for t, a in tags if t == "img"]
    assert imgs and all(a["src"].startswith("data:image/") for a in imgs)
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed")]
    for _, attrs in tags:
        for name, value in attrs.items():
            assert name == "xmlns" or not re.match(r"\s*(https?:|//|file:)", value or ""), (name, value)
    assert figures["images"] == len(imgs)
    plots = [a for a in imgs if "plot-img" in a.get("class", "")]
    assert len(plots) >= 6  # clip, sides, aspect, tokens, mixture, packing
    svgs = [base64.b64decode(a["src"].split(",", 1)[1]).decode() for a in plots]
    for svg in svgs:
        ET.fromstring(svg)  # each plot is a well-formed SVG document
    (clip_plot,) = [s for s in svgs if "CLIP score, source t" in s]
    assert "threshold 0.15" in clip_plot
    # a gallery per task, with a thumbnail per sample
    tasks = set(samples.column("task").to_pylist())
    galleries = {a["data-task"] for t, a in tags if t == "div" and "data-task" in a}
    assert galleries == tasks
    # every shape drawn where the sample's text says
    by_id = {r["sample_id"]: r for r in samples.to_pylist()}
    thumbs = [a for t, a in tags if t == "div" and "data-sample-id" in a]
    assert len(thumbs) == len(tasks) * 3
    checked = 0
    for m in re.finditer(r"<div class='thumb'[^>]*data-sample-id='([^']+)'[^>]*>.*?</svg></div>", page, re.S):
        row = by_id[m.group(1)]
        polygons = re.findall(r"<polygon class='shape-(\w+)' points='([^']+)'", m.group(0))
        text = row["prompt"] + row["target"]
        if row["task"] in ("ref_grounding", "grounded_caption"):
            (kind, points), = polygons
            xs = [float(p.split(",")[0]) for p in points.split()]
            ys = [float(p.split(",")[1]) for p in points.split()]
            img = row["images"][0]
            x1, y1, x2, y2 = _expected_box(text, img["width"], img["height"], fmt)
            assert (min(xs), min(ys), max(xs), max(ys)) == pytest.approx((x1, y1, x2, y2), abs=0.005)  # points are written with 2 decimals
            # and the decoded box is the annotated one, within a grid step
            w, h = img["width"], img["height"]
            assert (x1, y1, x2, y2) == pytest.approx((w * 0.1, h * 0.2, w * 0.6, h * 0.7), abs=max(w, h) / 500 + 1)
            checked += 1
        elif row["task"] == "ocr":
            assert len(polygons) == 1
        else:
            assert polygons == []
    assert checked == 6
    # CLIP: threshold, lowest kept and highest dropped; rejects per reason with their meaning
    assert "CLIP pairs around the threshold (0.15)" in page
    assert page.index("t:9") < page.index("t:8")  # highest-scoring dropped first
    assert "image_too_small" in page and "shorter side is below the minimum" in page
    # duplicate groups: the kept record t:1 with its two dropped copies
    group = re.search(r"<div class='dup-group'>.*?</div></div>(.*?)(?=<div class='dup-group'>|</section>)", page, re.S)
    assert group and "kept: <b>t:1</b>" in group.group(0)
    assert group.group(0).count("duplicate_url") == 2
    assert page.count("<div class='dup-group'>") == 1 and "kept: <b>t:2</b>" not in page
    # config and versions
    assert "pyarrow" in page and "&quot;job&quot;: &quot;test&quot;" in page


def test_report_without_duplicates_or_clip_says_so(tmp_path):
    w = DatasetWriter(tmp_path / "ds")
    w.write("records", records_from_pylist([{"record_id": "t:1", "source": "t", "image": _png(50, 40), "width": 50, "height": 40}]))
    w.close(config={"job": "test"})
    out, _ = write_report(tmp_path / "ds", tmp_path / "r.html")
    page = out.read_text()
    assert "No reject names a kept record" in page and "No rejects." in page
    assert "CLIP pairs" not in page  # no clip_score column measured


def test_report_cli_writes_and_prints_the_path(tmp_path, capsys):
    path, _ = _dataset(tmp_path / "ds")
    assert main(["report", str(path), "--out", str(tmp_path / "r.html"), "--per-task", "1"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "r.html") in out and (tmp_path / "r.html").stat().st_size > 10_000
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such dataset directory" in capsys.readouterr().err


# --- plots ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lo,hi,expected",
    [(0, 10, [0, 2, 4, 6, 8, 10]), (0, 9.3, [0, 2, 4, 6, 8, 10]), (-0.83, 0.31, [-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5]),
     (0, 165, [0, 50, 100, 150, 200]), (5, 5, [5, 5.2, 5.4, 5.6, 5.8, 6])],
)
def test_nice_ticks_cover_the_range(lo, hi, expected):
    ticks = nice_ticks(lo, hi, 5 if hi != 165 else 4)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= lo and ticks[-1] >= hi


def test_plots_are_svg_documents_with_a_size():
    for svg in (
        histogram_svg([0, 1, 2], {"kept": [3, 4], "dropped": [1, 0]}, "t", "x", lines={"threshold <b>": 1.5}),
        histogram_svg([0, 1, 2], {"width": [3, 4], "height": [1, 0]}, "t", "x", stacked=False),
        bars_svg(["a", "b"], {"this": [1.0, 2.0], "paper": [3.0, 0.0]}, "t", "%"),
        boxplot_svg([("caption", [1, 2, 3, 4, 5])], "t", "tokens"),
        funnel_svg([("download", 10, 8), ("basic", 8, 8)], "t"),
    ):
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg") and int(root.get("width")) > 0 and int(root.get("height")) > 0
    assert "threshold &lt;b&gt;" in histogram_svg([0, 1], {"": [1]}, "t", "x", lines={"threshold <b>": 0.5})
    with pytest.raises(ValueError):
        histogram_svg([0, 1, 2], {"kept": [1]}, "t", "x")

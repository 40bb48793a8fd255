"""`curate report`: one self-contained HTML page about a dataset directory.

Everything on the page comes from the manifest and from DuckDB queries over
the same locked-down views as `curate sql` (`curation.audit.connect`):
distributions are aggregated inside DuckDB (only the measured columns are
read, never image bytes), and galleries fetch a handful of rows chosen by a
hash of their ids, so the cost does not grow with the dataset's image bytes.
Plots are SVG documents (`curation.plots`) and thumbnails JPEGs, both inline
as `data:` URIs: the page loads nothing from anywhere and runs no script.

Boxes and quads on the thumbnails are decoded back from each sample's TEXT
(`formats.grammar.shapes_in_pixels`: 0-999 grid or Qwen2.5-VL resized
pixels), not from the record's annotations, so a wrong conversion shows as a
box in the wrong place.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from html import escape
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from curation.audit import connect
from curation.storage.dataset import Dataset
from curation.plots import PALETTE, bars_svg, boxplot_svg, funnel_svg, histogram_svg

__all__ = ["QWEN_VL_MIXTURE", "SHAPE_COLORS", "write_report", "report_html"]

# Qwen-VL paper (arXiv 2308.12966), table 2: multi-task pretraining data, millions of samples per task.
QWEN_VL_MIXTURE: dict[str, float] = {
    "caption": 19.7,
    "vqa": 3.6,
    "caption_grounding": 3.5,
    "ref_grounding": 8.7,
    "grounded_caption": 8.7,
    "ocr": 24.8,
    "text": 7.8,
}
TASK_ORDER = ("caption", "vqa", "caption_grounding", "ref_grounding", "grounded_caption", "ocr", "text", "sft")
# strong colours that the demo's shapes and most photos do not use for whole edges
SHAPE_COLORS = ("#ff00ff", "#00e5ff", "#ffea00", "#ff3d00", "#76ff03", "#2979ff")
THUMB_SIDE = 320  # pixels of the JPEG sent
THUMB_BOX = 260  # CSS pixels it is shown in
_SCORE_IN_DETAIL = r"^\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE]-?[0-9]+)?)"
# record ids are SOURCE:ID; a reject's detail may name the record it duplicates
_RECORD_ID_IN_TEXT = r"[A-Za-z0-9_.\-]+:[A-Za-z0-9_.\-/]+"


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _svg(svg: str) -> str:
    return _data_uri("image/svg+xml", svg.encode("utf-8"))


def _thumbnail(data: bytes | None) -> tuple[str | None, tuple[int, int] | None]:
    """A JPEG data URI of the image at most THUMB_SIDE pixels a side, and the decoded size; (None, None) if undecodable."""
    if not data:
        return None, None
    from PIL import Image

    from curation.images import DEFAULT_MAX_PIXELS, pil_limits

    try:
        with pil_limits(DEFAULT_MAX_PIXELS):
            im = Image.open(io.BytesIO(data))
            size = im.size
            im.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
            im = im.convert("RGB")
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
    except Exception:  # noqa: BLE001 - any decoder failure: the page says the image is unreadable
        return None, None
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88)
    return _data_uri("image/jpeg", buf.getvalue()), size


class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []
        self.images = 0

    def section(self, anchor: str, title: str) -> None:
        self.toc.append((anchor, title))
        self.parts.append(f"<section id='{anchor}'><h2>{escape(title)}</h2>")

    def end(self) -> None:
        self.parts.append("</section>")

    def add(self, html: str) -> None:
        self.parts.append(html)

    def plot(self, svg: str, alt: str) -> None:
        self.images += 1
        self.parts.append(f"<figure class='plot'><img class='plot-img' src='{_svg(svg)}' alt='{escape(alt)}'></figure>")


def _table(cols: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for v in r:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                cells.append(f"<td class='num'>{v:,}</td>" if isinstance(v, int) else f"<td class='num'>{v:.4g}</td>")
            else:
                cells.append(f"<td>{'' if v is None else escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _threshold(manifest: Mapping[str, Any]) -> float | None:
    for block in (manifest.get("config") or {}, *((manifest.get("config") or {}).get(k) or {} for k in ("filter", "clip"))):
        if isinstance(block, Mapping) and isinstance(block.get("min_clip_score"), (int, float)):
            return float(block["min_clip_score"])
    return None


def _in_list(ids: Iterable[str]) -> str:
    """A literal SQL list: DuckDB pushes `col in ('a', 'b')` into the Parquet scan, so only the row groups
    holding those ids are read whole (a join with a subquery would read every row's image bytes)."""
    quoted = ["'" + str(i).replace("'", "''") + "'" for i in ids]
    return "(" + (", ".join(quoted) if quoted else "NULL") + ")"


def _has_column(con, view: str, column: str) -> bool:
    return any(r[0] == column for r in con.execute(f"describe {view}").fetchall())


def _histogram(con, sql: str, bins: int = 30, params: Mapping[str, Any] | None = None):
    """`sql` yields (series, value); edges and counts per series, counted inside DuckDB; None when no value."""
    params = dict(params or {})
    where = "where v is not null and isfinite(v)"
    lo, hi = con.execute(f"select min(v), max(v) from ({sql}) t(s, v) {where}", params).fetchone()
    if lo is None:
        return None
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    rows = con.execute(
        f"select coalesce(s, ''), least(cast(floor((v - $lo) / $w) as integer), $last), count(*) from ({sql}) t(s, v) {where} group by all",
        {**params, "lo": lo, "w": width, "last": bins - 1},
    ).fetchall()
    counts: dict[str, list[int]] = {}
    for series, b, n in sorted(rows):
        counts.setdefault(series, [0] * bins)[b] += n
    return [lo + i * width for i in range(bins + 1)], counts


# ------------------------------------------------------------------ sections


def _funnel(page: _Page, manifest: Mapping[str, Any]) -> None:
    stages = manifest.get("stages") or {}
    page.section("funnel", "Funnel: rows per stage")
    if not stages:
        page.add("<p class='muted'>The manifest records no stages.</p>")
        page.end()
        return
    rows = []
    for name, s in stages.items():
        dropped = s.get("dropped") or {}
        by = ", ".join(f"{r} {n:,}" for r, n in sorted(dropped.items(), key=lambda kv: -kv[1])) or "–"
        rows.append((name, s.get("in", 0), s.get("out", 0), sum(dropped.values()), by, s.get("seconds")))
    page.add("<div class='row'><div>" + _table(("stage", "in", "out", "dropped", "dropped by reason", "seconds"), rows, "funnel") + "</div>")
    # the plot shows the stages that only drop (records), up to the first one that makes more rows than it reads
    dropping = []
    for name, s in stages.items():
        if s.get("out", 0) > s.get("in", 0):
            break
        dropping.append((name, s.get("in", 0), s.get("out", 0)))
    if dropping:
        page.add("<div>")
        page.plot(funnel_svg(dropping, "Records kept per stage (red: dropped)"), "funnel plot")
        page.add("</div>")
    page.add("</div>")
    tables = manifest.get("tables") or {}
    page.add("<p>" + " · ".join(f"<b>{escape(t)}</b> {info.get('rows', 0):,} rows in {len(info.get('shards', []))} shard(s)"
                               for t, info in tables.items()) + "</p>")
    page.end()


def _distributions(page: _Page, con, manifest: Mapping[str, Any], tables: set[str]) -> None:
    page.section("distributions", "Distributions")
    page.add("<div class='plots'>")
    threshold = _threshold(manifest)
    # CLIP score per source, kept and dropped, with the threshold
    if "records" in tables and _has_column(con, "records", "clip_score"):
        sources = [r[0] for r in con.execute(
            "select source from (select source, count(*) n from records where clip_score is not null group by all "
            "union all select source, count(*) from rejects where stage = 'clip' group by all) group by source order by sum(n) desc limit 6"
        ).fetchall()]
        for source in sources:
            sql = (
                "select 'kept', clip_score from records where clip_score is not null and source is not distinct from $src "
                f"union all select 'dropped', try_cast(regexp_extract(detail, '{_SCORE_IN_DETAIL}', 1) as double) from rejects "
                "where stage = 'clip' and reason = 'clip_score_below_threshold' and source is not distinct from $src"
            )
            hist = _histogram(con, sql, bins=30, params={"src": source})
            if hist is None:
                continue
            edges, counts = hist
            counts = {k: counts.get(k, [0] * (len(edges) - 1)) for k in ("kept", "dropped")}
            lines = {f"threshold {threshold:g}": threshold} if threshold is not None else None
            page.plot(
                histogram_svg(edges, counts, f"CLIP score, source {source}", "clip_score", lines=lines, colors=(PALETTE[0], PALETTE[5])),
                f"CLIP score histogram of source {source}",
            )
    if "records" in tables:
        hist = _histogram(con, "select 'width', width::double from records union all select 'height', height::double from records", bins=24)
        if hist:
            page.plot(histogram_svg(hist[0], hist[1], "Image sides", "pixels", stacked=False), "image sides")
        hist = _histogram(con, "select '', width::double / height from records where height > 0", bins=24)
        if hist:
            page.plot(histogram_svg(hist[0], hist[1], "Aspect ratio (width / height)", "width / height"), "aspect ratios")
    if "samples" in tables:
        q = con.execute(
            "select task, min(num_tokens), quantile_cont(num_tokens, 0.25), median(num_tokens), quantile_cont(num_tokens, 0.75), "
            "max(num_tokens), count(*) from samples group by task"
        ).fetchall()
        order = {t: i for i, t in enumerate(TASK_ORDER)}
        q.sort(key=lambda r: (order.get(r[0], 99), r[0]))
        if q:
            page.plot(
                boxplot_svg([(f"{t} ({n:,})", [float(v) for v in vals]) for t, *vals, n in q], "Tokens per sample, per task", "tokens"),
                "tokens per sample per task",
            )
            counts = {t: n for t, *_, n in q}
            tasks = sorted(set(counts) | set(QWEN_VL_MIXTURE), key=lambda t: (order.get(t, 99), t))
            total, mix_total = sum(counts.values()) or 1, sum(QWEN_VL_MIXTURE.values())
            page.plot(
                bars_svg(
                    tasks,
                    {"this dataset": [100 * counts.get(t, 0) / total for t in tasks],
                     "Qwen-VL multi-task mixture": [100 * QWEN_VL_MIXTURE.get(t, 0) / mix_total for t in tasks]},
                    "Samples per task: share of all samples", "% of samples", value_format="{:.1f}",
                ),
                "samples per task against the Qwen-VL mixture",
            )
    if "sequences" in tables:
        packing = manifest.get("packing") or {}
        max_tokens = packing.get("max_tokens") or (manifest.get("config") or {}).get("pack")
        if max_tokens:
            hist = _histogram(con, f"select task, num_tokens / {float(max_tokens)} from sequences", bins=20)
            if hist:
                fill = packing.get("fill_ratio")
                title = f"Packing fill (sequences of <= {max_tokens} tokens" + (f", mean {fill:.3f})" if fill else ")")
                page.plot(histogram_svg(hist[0], hist[1], title, "tokens / max tokens", ylabel="sequences"), "packing fill")
    page.add("</div>")
    page.add(
        "<p class='muted'>The Qwen-VL mixture is the paper's multi-task pretraining data (arXiv 2308.12966, table 2): "
        + ", ".join(f"{t} {m}M" for t, m in QWEN_VL_MIXTURE.items()) + ".</p>"
    )
    page.end()


def _marked_text(text: str, fmt: str) -> str:
    """The sample text, escaped, its boxes and quads coloured like the shapes drawn (in the same order)."""
    if fmt == "qwen2.5-vl":
        pattern = re.compile(r'("bbox_2d":\s*\[[^\]]*\])')
    elif fmt == "qwen2-vl":
        pattern = re.compile(r"(<\|box_start\|>.*?<\|box_end\|>|<\|quad_start\|>.*?<\|quad_end\|>)", re.S)
    else:
        pattern = re.compile(r"(<box>.*?</box>|<quad>.*?</quad>)", re.S)
    out, k = [], 0
    for i, piece in enumerate(pattern.split(text)):
        if i % 2:
            color = SHAPE_COLORS[k % len(SHAPE_COLORS)]
            out.append(f"<span class='shape' style='border-color:{color}'>{escape(piece)}</span>")
            k += 1
        else:
            out.append(escape(piece))
    return "".join(out)


def _figure(image: Mapping[str, Any] | None, shapes: Sequence[Mapping[str, Any]], attrs: str = "") -> str:
    """A thumbnail with every shape drawn over it in an SVG whose coordinates are the stored image's pixels."""
    uri, size = _thumbnail(image.get("image") if image else None)
    if uri is None:
        return f"<div class='thumb missing' {attrs}>no image bytes</div>"
    width = (image or {}).get("width") or size[0]
    height = (image or {}).get("height") or size[1]
    # fit in a THUMB_BOX square: landscape images take its width, portrait ones its height
    css_width = THUMB_BOX if width >= height else max(40, round(THUMB_BOX * width / height))
    overlay = []
    for k, s in enumerate(shapes):
        color = SHAPE_COLORS[k % len(SHAPE_COLORS)]
        p = s["points"]
        pts = " ".join(f"{p[i]:.2f},{p[i + 1]:.2f}" for i in range(0, len(p), 2))
        overlay.append(
            f"<polygon class='shape-{s['kind']}' points='{pts}' fill='none' stroke='{color}' stroke-width='3' "
            f"vector-effect='non-scaling-stroke' data-k='{k}'><title>{escape(str(s.get('label') or ''))}</title></polygon>"
        )
    return (
        f"<div class='thumb' style='width:{css_width}px;aspect-ratio:{width}/{height}' {attrs} data-width='{width}' data-height='{height}'>"
        f"<img class='gallery-img' src='{uri}' alt='image {width}x{height}'>"
        f"<svg viewBox='0 0 {width} {height}' preserveAspectRatio='none' xmlns='http://www.w3.org/2000/svg'>{''.join(overlay)}</svg></div>"
    )


def _galleries(page: _Page, con, per_task: int, images_table: bool = False) -> None:
    from formats.grammar import shapes_in_pixels

    tasks = [r[0] for r in con.execute("select distinct task from samples").fetchall()]
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    tasks.sort(key=lambda t: (order.get(t, 99), t))
    page.section("galleries", "Galleries: samples per task, shapes drawn from the text")
    if not tasks:
        page.add("<p class='muted'>No samples.</p>")
    page.add(
        "<p class='muted'>Each box and quad is decoded from the sample's text (0-999 grid for Qwen-VL and Qwen2-VL, "
        "resized-image pixels for Qwen2.5-VL) and drawn on the stored image; a wrong conversion shows as a shape in the wrong place. "
        "Samples are chosen by a hash of their ids.</p>"
    )
    for task in tasks:
        ids = [r[0] for r in con.execute(
            "select sample_id from samples where task = ? order by hash(sample_id), sample_id limit ?", [task, per_task]
        ).fetchall()]
        rows = con.execute(
            "select sample_id, record_id, format, prompt, target, images, clip_score, num_tokens from samples "
            f"where sample_id in {_in_list(ids)} order by hash(sample_id), sample_id"
        ).fetchall()
        total = con.execute("select count(*) from samples where task = ?", [task]).fetchone()[0]
        page.add(f"<h3 id='task-{escape(task)}'>{escape(task)} <span class='muted'>({len(rows)} of {total:,})</span></h3>"
                 f"<div class='gallery' data-task='{escape(task)}'>")
        for sample_id, record_id, fmt, prompt, target, images, clip_score, num_tokens in rows:
            text = (prompt or "") + (target or "")
            images = images or []
            first = dict(images[0]) if images else None
            if first is not None and first.get("image") is None:  # stored once (images table), or in the records
                found = (con.execute("select image from images where key = ? limit 1", [first["key"]]).fetchone()
                         if images_table else None)
                found = found or con.execute("select image from records where record_id = ? limit 1", [record_id]).fetchone()
                first["image"] = found[0] if found else None
            shapes = []
            if first is not None and first.get("width") and first.get("height"):
                shapes = shapes_in_pixels(text, fmt, first["width"], first["height"])
            attrs = f"data-sample-id='{escape(sample_id)}' data-format='{escape(fmt)}'"
            fig = _figure(first, shapes, attrs) if first is not None else ""
            page.images += bool(first is not None)
            meta = f"{escape(record_id)} · {escape(fmt)} · {num_tokens} tokens" + (f" · clip {clip_score:.3f}" if clip_score is not None else "")
            more = f" · {len(images)} images" if len(images) > 1 else ""
            page.add(
                f"<div class='card'>{fig}<div class='meta'>{meta}{more}</div>"
                f"<pre class='sample-text' data-sample-id='{escape(sample_id)}'>{_marked_text(text, fmt)}</pre></div>"
            )
        page.add("</div>")
    page.end()


def _clip_pairs(page: _Page, con, manifest: Mapping[str, Any], tables: set[str], n: int = 6) -> None:
    if "records" not in tables or not _has_column(con, "records", "clip_score"):
        return
    measured = con.execute(
        "select (select count(clip_score) from records) + (select count(*) from rejects where stage = 'clip')"
    ).fetchone()[0]
    if not measured:
        return
    threshold = _threshold(manifest)
    page.section("clip", "CLIP pairs around the threshold" + (f" ({threshold:g})" if threshold is not None else ""))
    ids = [r[0] for r in con.execute(
        "select record_id from records where clip_score is not null order by clip_score, record_id limit ?", [n]
    ).fetchall()]
    rows = con.execute(
        "select record_id, captions[1], clip_score, image, width, height from records "
        f"where record_id in {_in_list(ids)} order by clip_score, record_id"
    ).fetchall()
    page.add("<h3>Lowest-scoring kept pairs</h3><div class='gallery'>")
    for record_id, caption, score, image, w, h in rows:
        page.images += 1
        fig = _figure({"image": image, "width": w, "height": h}, [])
        page.add(f"<div class='card'>{fig}<div class='meta'>{escape(record_id)} · clip <b>{score:.4f}</b></div>"
                 f"<p class='caption'>{escape(caption or '')}</p></div>")
    page.add("</div>")
    dropped = con.execute(
        f"select record_id, try_cast(regexp_extract(detail, '{_SCORE_IN_DETAIL}', 1) as double) as score, detail, meta "
        "from rejects where stage = 'clip' and reason = 'clip_score_below_threshold' order by score desc nulls last, record_id limit ?",
        [n],
    ).fetchall()
    page.add("<h3>Highest-scoring dropped pairs</h3>")
    if dropped:
        page.add(_table(("record", "clip score", "detail", "meta"), dropped))
        page.add("<p class='muted'>A dropped row keeps no image bytes (the reject table holds id, reason and detail), so dropped pairs are listed, not shown.</p>")
    else:
        page.add("<p class='muted'>The CLIP stage dropped nothing.</p>")
    page.end()


def _rejects(page: _Page, con, examples: int = 3) -> None:
    from curation.reasons import REASONS

    page.section("rejects", "Rejects per reason")
    counts = con.execute("select stage, reason, count(*) from rejects group by all order by 3 desc, 1, 2").fetchall()
    if not counts:
        page.add("<p class='muted'>No rejects.</p>")
        page.end()
        return
    ex = con.execute(
        "select stage, reason, record_id, detail from (select stage, reason, record_id, detail, "
        "row_number() over (partition by stage, reason order by hash(record_id), record_id) as k from rejects) where k <= ? "
        "order by stage, reason, k",
        [examples],
    ).fetchall()
    by: dict[tuple[str, str], list[str]] = {}
    for stage, reason, record_id, detail in ex:
        by.setdefault((stage, reason), []).append(f"<div><code>{escape(str(record_id))}</code> {escape(str(detail or ''))}</div>")
    page.add("<table class='rejects'><thead><tr><th>stage</th><th>reason</th><th>rows</th><th>meaning</th><th>examples (record, detail)</th></tr></thead><tbody>")
    for stage, reason, n in counts:
        page.add(
            f"<tr><td>{escape(str(stage))}</td><td><code>{escape(str(reason))}</code></td><td class='num'>{n:,}</td>"
            f"<td>{escape(REASONS.get(reason, ''))}</td><td class='examples'>{''.join(by.get((stage, reason), []))}</td></tr>"
        )
    page.add("</tbody></table>")
    page.end()


def _duplicates(page: _Page, con, groups: int = 6, members: int = 6) -> None:
    """Rejects whose detail names a kept record (duplicate_url, duplicate_image, near_duplicate, ...), grouped by that record."""
    page.section("duplicates", "Duplicate groups")
    found = con.execute(
        f"""
        with named as (
            select record_id, stage, reason, detail, unnest(regexp_extract_all(detail, '{_RECORD_ID_IN_TEXT}')) as kept_id
            from rejects where detail is not null
        ),
        linked as (
            select n.* from named n join (select record_id from records) k on k.record_id = n.kept_id
            where n.kept_id is distinct from n.record_id
        ),
        top as (
            select kept_id, count(*) as n from linked group by kept_id order by n desc, kept_id limit {groups}
        )
        select t.kept_id, t.n, l.record_id, l.stage, l.reason, l.detail
        from top t join linked l using (kept_id) order by t.n desc, t.kept_id, l.record_id
        """
    ).fetchall()
    if not found:
        page.add("<p class='muted'>No reject names a kept record: no dedup stage has dropped anything "
                 "(duplicate rejects such as <code>duplicate_url</code> name the record they duplicate in their detail).</p>")
        page.end()
        return
    total = con.execute(
        f"select count(*) from (select record_id, unnest(regexp_extract_all(detail, '{_RECORD_ID_IN_TEXT}')) as kept_id "
        "from rejects where detail is not null) n join (select record_id from records) k on k.record_id = n.kept_id "
        "where n.kept_id is distinct from n.record_id"
    ).fetchone()[0]
    grouped: dict[str, list[tuple]] = {}
    for kept_id, n, record_id, stage, reason, detail in found:
        grouped.setdefault(kept_id, []).append((record_id, stage, reason, detail))
    page.add(f"<p>{total:,} reject(s) name a kept record; {'the largest ' if len(grouped) == groups else ''}"
             f"{len(grouped)} group(s), each kept record beside the rows dropped as its copies:</p>")
    images = {r[0]: r[1:] for r in con.execute(
        f"select record_id, image, width, height from records where record_id in {_in_list(grouped)}"
    ).fetchall()}
    for kept_id, rows in grouped.items():
        image, w, h = images.get(kept_id, (None, None, None))
        page.images += image is not None
        page.add("<div class='dup-group'><div class='card kept'>" + _figure({"image": image, "width": w, "height": h}, [])
                 + f"<div class='meta'>kept: <b>{escape(kept_id)}</b></div></div>")
        for record_id, stage, reason, detail in rows[:members]:
            page.add(f"<div class='card dropped'><div class='thumb missing'><span>dropped, no image kept</span><code>{escape(reason)}</code></div>"
                     f"<div class='meta'>{escape(record_id)} · {escape(stage)}</div><p class='caption'>{escape(detail or '')}</p></div>")
        if len(rows) > members:
            page.add(f"<div class='card more'>and {len(rows) - members} more</div>")
        page.add("</div>")
    page.end()


def _config(page: _Page, manifest: Mapping[str, Any]) -> None:
    page.section("config", "Config and versions")
    versions = manifest.get("versions") or {}
    page.add(_table(("package", "version"), sorted(versions.items())))
    rest = {k: v for k, v in manifest.items() if k not in ("tables", "stages", "versions", "config")}
    page.add("<h3>Config</h3><pre class='json'>" + escape(json.dumps(manifest.get("config") or {}, indent=2, sort_keys=True)) + "</pre>")
    page.add("<details><summary>Rest of the manifest (run, timings, download, build, packing)</summary><pre class='json'>"
             + escape(json.dumps(rest, indent=2, sort_keys=True)) + "</pre></details>")
    page.end()


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; background: #f5f6f8; margin: 0; }
header { background: #1f2937; color: #f9fafb; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #cbd5e1; }
nav { padding: 8px 28px; background: #e5e7eb; }
nav a { margin-right: 16px; color: #1f2937; text-decoration: none; font-weight: 600; }
main { padding: 8px 28px 40px; max-width: 1400px; }
section { background: white; border-radius: 8px; padding: 14px 20px 18px; margin: 18px 0; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 18px; margin: 4px 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.plots { display: flex; flex-wrap: wrap; gap: 14px; }
figure.plot { margin: 0; border: 1px solid #e5e7eb; border-radius: 6px; overflow: hidden; }
figure.plot img { display: block; max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: 14px; }
.card { width: 276px; border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px; background: #fafafa; }
.thumb { position: relative; width: 260px; background: #ddd; margin: 0 auto; }
.thumb img { display: block; width: 100%; height: 100%; }
.thumb svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; overflow: visible; }
.thumb.missing { height: 120px; display: flex; flex-direction: column; gap: 4px; align-items: center; justify-content: center; text-align: center; color: #6b7280; font-size: 12px; }
.card.dropped .thumb.missing { height: 64px; }
.meta { font-size: 12px; color: #4b5563; margin: 6px 0 4px; word-break: break-all; }
pre.sample-text { white-space: pre-wrap; word-break: break-word; font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; background: white; border: 1px solid #e5e7eb; padding: 6px; margin: 0; max-height: 180px; overflow: auto; }
.shape { border-bottom: 3px solid; background: #f3f4f6; }
p.caption { font-size: 13px; margin: 4px 0 0; }
.muted { color: #6b7280; font-size: 13px; }
.rejects td.examples div { font-size: 12px; color: #374151; }
.dup-group { display: flex; flex-wrap: wrap; gap: 10px; padding: 10px 0; border-bottom: 1px solid #e5e7eb; align-items: flex-start; }
.card.kept { border-color: #009E73; }
.card.dropped .thumb { background: #fde2e1; }
pre.json { font-size: 12px; background: #f9fafb; padding: 8px; max-height: 360px; overflow: auto; }
"""


def report_html(path: Path | str, per_task: int = 4) -> tuple[str, dict[str, Any]]:
    """The page for the dataset at `path`, and figures about it (`images`: plots and thumbnails, `seconds`)."""
    t0 = time.time()
    ds = Dataset(path)
    manifest = ds.manifest
    con = connect(path)
    tables = {t for t in ds.tables() if ds.shard_paths(t)} | {"records", "samples", "rejects"}
    tables = {t for t in tables if con.execute(f"select count(*) from (select 1 from {t} limit 1)").fetchone()[0]}
    page = _Page()
    _funnel(page, manifest)
    _distributions(page, con, manifest, tables)
    if "samples" in tables:
        _galleries(page, con, per_task, images_table="images" in tables)
    _clip_pairs(page, con, manifest, tables)
    _rejects(page, con)
    _duplicates(page, con)
    _config(page, manifest)
    nav = "".join(f"<a href='#{a}'>{escape(t.split(':')[0])}</a>" for a, t in page.toc)
    where = str(Path(path).resolve()) if ds.local else str(ds.path)
    title = f"curate report: {Path(where).name}"
    html = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(where)} · manifest of {escape(str(manifest.get('created', '?')))}"
        f" · report made {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(page.parts)}</main></body></html>"
    )
    return html, {"images": page.images, "seconds": round(time.time() - t0, 3)}


def write_report(path: Path | str, out: Path | str | None = None, per_task: int = 4) -> tuple[Path, dict[str, Any]]:
    """Write the page (default DIR/report.html) under a temporary name, then rename; returns its path and figures."""
    from curation.storage import fs as storage

    if out is None and not storage.is_local(str(path)):  # beside a dataset on object storage: one PUT, whole or not at all
        target = storage.join(str(path), "report.html")
        html, figures = report_html(path, per_task=per_task)
        data = html.encode("utf-8")
        with storage.open_file(target, "wb") as f:
            f.write(data)
        return target, {**figures, "bytes": len(data)}
    target = Path(out) if out is not None else Path(path) / "report.html"
    html, figures = report_html(path, per_task=per_task)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(target)
    return target, {**figures, "bytes": target.stat().st_size}

"""The build stage: samples and reject rows, routed by the pipeline runner's sink."""

import pyarrow as pa
import pytest

from curation.storage.dataset import Dataset, DatasetWriter
from curation.runner import ParquetReader, Pipeline, Sink, parquet_shards, run_pipeline
from curation.schema import REJECT_SCHEMA, SAMPLE_SCHEMA, conform
from formats.build import BUILD_COLUMNS, BuildSamples, build_samples, sample_id
from formats.tokenizer import get_tokenizer


def test_stage_output_columns_and_rejects(mixed_records):
    out = BuildSamples()(mixed_records)
    assert out.column_names == BUILD_COLUMNS
    rows = out.to_pylist()
    samples = [r for r in rows if r["reject_stage"] is None]
    rejects = [r for r in rows if r["reject_stage"] is not None]
    assert sorted(r["task"] for r in samples) == ["caption", "grounded_caption", "ocr", "ref_grounding", "text", "vqa"]
    assert {(r["record_id"][:5], r["reject_reason"]) for r in rejects} == {
        ("coco/", "box_empty"),
        ("kkkkk", "key_too_long"),
    }
    bad = next(r for r in rejects if r["reject_reason"] == "box_empty")
    assert bad["reject_detail"] == "regions[1]: boxes[0] of 'bad': box [5, 5, 3, 3]: x2 <= x1"
    assert bad["meta"] == '{"origin": "test"}' and bad["source"] == "demo"


def test_sample_columns(mixed_records):
    samples, rejects = build_samples(mixed_records, tasks=["caption", "text"])
    assert samples.schema == SAMPLE_SCHEMA
    assert rejects.schema == REJECT_SCHEMA
    cap, doc = samples.to_pylist()
    assert cap["sample_id"] == sample_id("coco/000000391895.jpg", "caption", 0)
    assert cap["prompt"] + cap["target"] == (
        "<img>coco/000000391895.jpg</img>Generate the caption in English: "
        "A man riding a motorcycle on a dirt road.<|endoftext|>"
    )
    assert cap["num_tokens"] == 275
    assert cap["images"] == [{"key": "coco/000000391895.jpg", "image": b"\x89PNG fake bytes", "width": 640, "height": 480}]
    assert cap["clip_score"] == pytest.approx(0.31)
    assert cap["format"] == "qwen-vl" and cap["source"] == "demo"
    assert doc["task"] == "text" and doc["images"] is None
    assert doc["prompt"] + doc["target"] == "Hello world.<|endoftext|>"
    assert rejects.column("reason").to_pylist() == ["key_too_long"]


def test_sample_ids_are_deterministic_and_distinct(mixed_records):
    a, _ = build_samples(mixed_records)
    b, _ = build_samples(mixed_records)
    ids = a.column("sample_id").to_pylist()
    assert ids == b.column("sample_id").to_pylist()
    assert len(set(ids)) == len(ids)


def test_num_tokens_exact_for_every_sample(mixed_records):
    for fmt in ("qwen-vl", "qwen2-vl", "qwen2.5-vl"):
        samples, _ = build_samples(mixed_records, format=fmt, tasks=["caption", "vqa", "ref_grounding", "ocr", "sft", "text"])
        tok = get_tokenizer(fmt)
        for r in samples.to_pylist():
            text = r["prompt"] + r["target"]
            pads = None
            if fmt != "qwen-vl" and r["images"]:
                from formats.coords import image_pad_count

                pads = [image_pad_count(i["height"], i["width"]) for i in r["images"]]
            ids = tok.encode(text, pads)
            assert r["num_tokens"] == len(ids), (fmt, r["task"])
            assert tok.decode(ids) == text


def test_max_tokens_rejects_never_truncates(mixed_records):
    samples, rejects = build_samples(mixed_records, tasks=["caption", "text"], max_tokens=100)
    assert samples.column("task").to_pylist() == ["text"]
    assert "too_long" in rejects.column("reason").to_pylist()
    detail = rejects.filter(pa.compute.equal(rejects.column("reason"), "too_long")).column("detail")[0].as_py()
    assert detail == "caption[0] has 275 tokens > 100 (never truncated)"


def test_the_sink_routes_samples_and_rejects(tmp_path, mixed_records):
    import pyarrow.parquet as pq

    pq.write_table(mixed_records, tmp_path / "records.parquet")
    pipeline = Pipeline(ParquetReader(), [BuildSamples(), Sink("samples")])
    with DatasetWriter(tmp_path / "out") as w:
        run_pipeline(pipeline, parquet_shards([(tmp_path / "records.parquet", mixed_records.num_rows)]), w, executor="local")
        m = w.close()
    assert m["tables"]["samples"]["rows"] == 6 and m["tables"]["rejects"]["rows"] == 2
    assert m["stages"]["build"]["in"] == mixed_records.num_rows and m["stages"]["build"]["out"] == 6
    assert m["stages"]["build"]["dropped"] == {"box_empty": 1, "key_too_long": 1}
    ds = Dataset(tmp_path / "out")
    assert conform(ds.read("samples"), SAMPLE_SCHEMA).num_rows == 6


def test_bad_options():
    with pytest.raises(ValueError, match="'qwen9'"):
        BuildSamples(format="qwen9")
    with pytest.raises(ValueError, match="'nope'"):
        BuildSamples(tasks="caption,nope")
    with pytest.raises(ValueError, match="'ceil'"):
        BuildSamples(rounding="ceil")


def test_rows_dropped_upstream_pass_through(mixed_records):
    from filters.base import Drop, mark_rejects

    batch = mark_rejects(mixed_records, "clip", [Drop("low_clip_score", "0.1 < 0.2"), None, None])
    out = BuildSamples(tasks="caption,text")(batch)
    rejects = [r for r in out.to_pylist() if r["reject_stage"] is not None]
    assert [(r["record_id"][:5], r["reject_stage"], r["reject_reason"], r["reject_detail"]) for r in rejects] == [
        ("coco/", "clip", "low_clip_score", "0.1 < 0.2"),
        # the fixture's key is 256 x "k": 256 UTF-8 bytes, one over the 255 of spec section 2; the detail
        # names both and shows the key's first 60 characters
        ("kkkkk", "build", "key_too_long", "image key is 256 UTF-8 bytes > 255: '" + "k" * 60 + "'..."),
    ]
    assert [r["task"] for r in out.to_pylist() if r["reject_stage"] is None] == ["text"]

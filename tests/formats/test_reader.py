"""formats/reader.py: the training-side reader over built datasets of the demo corpus, in all three formats."""

import io
from pathlib import Path

import pytest
import torch

from curation.storage.dataset import DatasetWriter
from curation.schema import records_from_pylist
from formats.images import qwen2_vl_patches, qwen_vl_pixels
from formats.coords import image_pad_count
from formats.reader import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, IGNORE, QwenVLReader, encode_sample, pad_collate, split_range
from formats.tokenizer import get_tokenizer

DATA = Path(__file__).resolve().parent.parent / "data" / "qwen-vl-format"
TASKS = "caption,vqa,ref_grounding,grounded_caption,caption_grounding,ocr,sft"
FORMATS = ("qwen-vl", "qwen2-vl", "qwen2.5-vl")
# small limits for the Qwen2 formats so that the patches stay few (and the limits are not the defaults)
MIN_PIXELS, MAX_PIXELS = 3136, 56 * 56 * 16


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The demo corpus (as `curate demo` generates it) -> records -> samples + packed sequences per format."""
    from curation.commands.build import build_dataset
    from curation.democorpus import clean_record_rows

    root = tmp_path_factory.mktemp("reader")
    # the demo's basic filter drops the planted faults (corrupt bytes, tiny images) before the build: so here
    rows = clean_record_rows(root / "www", n=24, seed=5)
    for r in rows:  # the demo corpus has no grounded captions: one per record with a region, over its first box
        if r["regions"]:
            box = r["regions"][0]["boxes"][0]
            r["grounded_captions"] = [{"text": "A thing in the picture.", "spans": [{"start": 2, "end": 7, "boxes": [box]}]}]
    with DatasetWriter(root / "records") as w:
        w.write("records", records_from_pylist(rows))
        w.close()
    out = {}
    for fmt in FORMATS:
        out[fmt] = root / fmt
        build_dataset(str(root / "records"), str(out[fmt]), format=fmt, tasks=TASKS, pack=2048, runner="local",
                      shard_rows=6, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    return out


def _all(reader):
    return list(iter(reader))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_sample_decodes_to_its_text_with_num_tokens_ids(built, fmt):
    from curation.storage.dataset import Dataset

    rows = {r["sample_id"]: r for r in Dataset(built[fmt]).read("samples").to_pylist()}
    assert {r["task"] for r in rows.values()} == set(TASKS.split(","))
    tok = get_tokenizer(fmt)
    seen, merged = set(), set()
    for ex in QwenVLReader(built[fmt], shuffle=False, images=False):
        r = rows[ex["id"]]
        ids, labels = ex["input_ids"].tolist(), ex["labels"].tolist()
        assert tok.decode(ids) == r["prompt"] + r["target"]
        assert len(ids) == r["num_tokens"] == ex["num_tokens"]
        assert ex["attention_mask"].tolist() == [1] * len(ids) and ex["position_ids"].tolist() == list(range(len(ids)))
        if r["task"] != "sft":  # pretraining: the loss covers TARGET only
            n_prompt = next(i for i, lab in enumerate(labels) if lab != IGNORE)
            assert labels[:n_prompt] == [IGNORE] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
            head, tail = tok.decode(ids[:n_prompt]), tok.decode(ids[n_prompt:])
            assert head + tail == r["prompt"] + r["target"] and tail.endswith(r["target"])
            if tail != r["target"]:  # BPE merged the boundary ("format." + "[{" -> ".[{"): that one token is supervised
                assert len(tok.encode(tail)) == len(ids) - n_prompt and r["prompt"].endswith(tail[: -len(r["target"])])
                assert len(ids) - n_prompt == len(tok.encode(r["prompt"][len(head):] + r["target"]))
                merged.add(r["task"])
        else:  # SFT: the last assistant value is supervised, the user turns are not
            sup = [i for i, lab in zip(ids, labels) if lab != IGNORE]
            assert r["conversations"][-1]["value"] in tok.decode(sup)
            assert r["conversations"][0]["value"].split(">")[-1] not in tok.decode(sup)
        seen.add(ex["id"])
    assert seen == set(rows)
    assert merged <= ({"ref_grounding", "ocr", "caption_grounding", "grounded_caption"} if fmt == "qwen2.5-vl" else set())


def test_labels_of_the_spec_sft_example_position_by_position():
    """Spec section 7, example 5 (tests/data/qwen-vl-format), with section 5's supervised pieces spelled out."""
    text = (DATA / "sft_example_5.txt").read_text()
    user = "Picture 1: <img>data/dogs.jpg</img>\nWhere is the dog on the left?"
    answer = "<ref>the dog on the left</ref><box>(156,104),(469,833)</box>"
    row = {"sample_id": "x", "format": "qwen-vl", "task": "sft", "images": [],
           "conversations": [{"from": "user", "value": user}, {"from": "assistant", "value": answer}]}
    ids, labels = encode_sample(row)
    tok = get_tokenizer("qwen-vl")
    assert tok.decode(ids) == text
    # (piece, supervised) in order; the pieces concatenate to the example
    pieces = [("<|im_start|>", True), ("system", False), ("\n", False), ("You are a helpful assistant.", False),
              ("<|im_end|>", True), ("\n", True),
              ("<|im_start|>", True), ("user", False), ("\n", False), (user, False), ("<|im_end|>", True), ("\n", True),
              ("<|im_start|>", True), ("assistant", False), ("\n", False), (answer, True), ("<|im_end|>", True), ("\n", True)]
    assert "".join(p for p, _ in pieces) == text
    want = []
    for piece, sup in pieces:
        p_ids = tok.encode(piece)
        want += p_ids if sup else [IGNORE] * len(p_ids)
    assert len(labels) == len(want) == len(ids)
    for i, (got, exp) in enumerate(zip(labels, want)):
        assert got == exp, f"position {i}"
    # the image span is 258 positions, all ignored
    start = ids.index(tok.img_id)
    assert ids[start + 257] == tok.img_end_id and set(labels[start : start + 258]) == {IGNORE}


@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_sequences_restart_positions_per_sample(built, fmt):
    from curation.storage.dataset import Dataset

    ds = Dataset(built[fmt])
    samples = {r["sample_id"]: r for r in ds.read("samples", columns=["sample_id", "num_tokens"]).to_pylist()}
    seqs = {r["sequence_id"]: r for r in ds.read("sequences").to_pylist()}
    got = _all(QwenVLReader(built[fmt], table="sequences", seed=3, images=False))
    assert sorted(e["id"] for e in got) == sorted(seqs)
    for ex in got:
        q = seqs[ex["id"]]
        lens = [samples[s]["num_tokens"] for s in q["sample_ids"]]
        assert ex["seq_lens"].tolist() == lens and len(ex["input_ids"]) == q["num_tokens"] == sum(lens)
        assert ex["position_ids"].tolist() == [p for n in lens for p in range(n)]
        starts = [o for o in q["offsets"]]
        assert [i for i, p in enumerate(ex["position_ids"].tolist()) if p == 0] == starts


def test_qwen_vl_images_are_448_bicubic_clip_normalised(built):
    import numpy as np
    from PIL import Image

    ex = next(iter(QwenVLReader(built["qwen-vl"], table="sequences", shuffle=False)))
    n_images = ex["input_ids"].tolist().count(get_tokenizer("qwen-vl").img_id)
    assert ex["images"].shape == (n_images, 3, 448, 448) and ex["images"].dtype == torch.float32
    # independent reference: torchvision's transform as Qwen-VL's visual receptor builds it
    from torchvision import transforms

    from curation.storage.dataset import Dataset

    row = Dataset(built["qwen-vl"]).read("samples").to_pylist()[0]
    data = row["images"][0]["image"]
    ref = transforms.Compose([
        transforms.Resize((448, 448), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])(Image.open(io.BytesIO(data)).convert("RGB"))
    assert torch.allclose(qwen_vl_pixels(data), ref, atol=1e-5)
    assert np.isfinite(ex["images"].numpy()).all()


@pytest.mark.parametrize("size", [(480, 640), (37, 301), (1000, 333), (28, 28), (224, 224)])
@pytest.mark.parametrize("limits", [(3136, 12845056), (MIN_PIXELS, MAX_PIXELS), (200704, 1003520)])
def test_qwen2_patches_equal_transformers_image_processor(size, limits):
    import numpy as np
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    h, w = size
    arr = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    proc = Qwen2VLImageProcessor(min_pixels=limits[0], max_pixels=limits[1])
    ref = proc(images=[Image.open(io.BytesIO(buf.getvalue()))], return_tensors="pt")
    mine, grid = qwen2_vl_patches(buf.getvalue(), *limits)
    assert grid.tolist() == ref["image_grid_thw"][0].tolist()
    assert mine.shape == ref["pixel_values"].shape
    assert (mine - ref["pixel_values"]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("fmt", ["qwen2-vl", "qwen2.5-vl"])
def test_reader_qwen2_pixels_match_transformers_and_the_pads(built, fmt):
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    from curation.storage.dataset import Dataset

    rows = {r["sample_id"]: r for r in Dataset(built[fmt]).read("samples").to_pylist()}
    proc = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    pad = get_tokenizer(fmt).pad_id
    for ex in _all(QwenVLReader(built[fmt], shuffle=False))[:12]:
        im = rows[ex["id"]]["images"][0]["image"]
        ref = proc(images=[Image.open(io.BytesIO(im))], return_tensors="pt")
        assert torch.equal(ex["image_grid_thw"], ref["image_grid_thw"])
        assert (ex["pixel_values"] - ref["pixel_values"]).abs().max().item() <= 1e-5
        t, gh, gw = ex["image_grid_thw"][0].tolist()
        assert ex["input_ids"].tolist().count(pad) == t * gh * gw // 4  # one pad per merged 2x2 patch


def test_split_range_covers_without_overlap():
    for total in (0, 1, 5, 17, 100):
        for parts in (1, 2, 6, 7):
            ranges = [split_range(total, parts, i) for i in range(parts)]
            assert [i for a, b in ranges for i in range(a, b)] == list(range(total))


def test_two_ranks_times_three_workers_read_every_sample_once(built):
    ids = []
    for rank in range(2):
        r = QwenVLReader(built["qwen-vl"], rank=rank, world_size=2, seed=7, buffer_size=16, images=False)
        for batch in r.loader(batch_size=5, num_workers=3):
            ids += batch["id"]
            assert set(batch["_workers"]) == {3}
    from curation.storage.dataset import Dataset

    want = Dataset(built["qwen-vl"]).read("samples", columns=["sample_id"]).column(0).to_pylist()
    assert len(ids) == len(want) and sorted(ids) == sorted(want)


@pytest.mark.parametrize("table,workers", [("samples", 0), ("samples", 3), ("sequences", 2)])
def test_stop_after_k_batches_restore_yields_exactly_the_rest(built, table, workers):
    path = built["qwen2-vl"]
    full = [i for b in QwenVLReader(path, table, seed=11, buffer_size=8, images=False).loader(4, workers) for i in b["id"]]
    r = QwenVLReader(path, table, seed=11, buffer_size=8, images=False)
    first = []
    for k, batch in enumerate(r.loader(4, workers)):
        first += batch["id"]
        if k == 2:
            break
    state = r.state_dict()
    again = QwenVLReader(path, table, seed=11, buffer_size=8, images=False)
    again.load_state_dict(state)
    rest = [i for b in again.loader(4, workers) for i in b["id"]]
    assert 0 < len(first) <= 12 and rest  # stopped mid-epoch
    assert sorted(first + rest) == sorted(full) and not set(first) & set(rest)
    if workers == 0:
        assert first + rest == full  # one stream: the very same order
    # a different seed is a different stream: refused
    other = QwenVLReader(path, table, seed=12, buffer_size=8, images=False)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)


def test_shuffle_is_seeded_and_epochs_differ(built):
    a = [e["id"] for e in QwenVLReader(built["qwen-vl"], seed=1, images=False)]
    b = [e["id"] for e in QwenVLReader(built["qwen-vl"], seed=1, images=False)]
    r = QwenVLReader(built["qwen-vl"], seed=1, images=False)
    r.set_epoch(1)
    c = [e["id"] for e in r]
    assert a == b and a != c and sorted(a) == sorted(c)


def test_pad_collate_pads_and_concatenates(built):
    exs = _all(QwenVLReader(built["qwen2-vl"], shuffle=False))[:3]
    b = pad_collate(exs)
    n = max(len(e["input_ids"]) for e in exs)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (3, n)
    for i, e in enumerate(exs):
        k = len(e["input_ids"])
        assert b["input_ids"][i, k:].eq(151643).all() and b["labels"][i, k:].eq(IGNORE).all()
        assert b["attention_mask"][i].sum().item() == k and torch.equal(b["input_ids"][i, :k], e["input_ids"])
    assert b["pixel_values"].shape[0] == sum(e["pixel_values"].shape[0] for e in exs)
    assert b["image_grid_thw"].shape == (3, 3)


def test_reader_trusts_only_manifest_listed_shards(built, tmp_path):
    import shutil

    from curation.storage.dataset import ShardError

    copy = tmp_path / "copy"
    shutil.copytree(built["qwen-vl"], copy)
    n = QwenVLReader(copy, images=False).total_rows
    # a stray shard beside the listed ones is never read
    stray = copy / "samples" / "part-99999.parquet"
    shutil.copy(next((copy / "samples").glob("part-*.parquet")), stray)
    assert len(_all(QwenVLReader(copy, images=False))) == n
    # a listed shard that is gone is an error naming it
    stray.unlink()
    next((copy / "samples").glob("part-*.parquet")).unlink()
    with pytest.raises(ShardError, match="missing"):
        QwenVLReader(copy)


def _noise_jpeg(seed: int, size=(160, 120)) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_samples_of_one_image_store_and_read_its_bytes_once(tmp_path):
    """Issue 11 (images stored once): a VG-like shard (20 samples per image, 8 images of 185 KB: more than
    pyarrow's default 1 MiB dictionary page) keeps each image's bytes once per row group in the column's
    dictionary page, and the reader gives every row of an image one bytes object."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.schema import SAMPLE_SCHEMA

    images = {f"vg:{i}": _noise_jpeg(i, (640, 480)) for i in range(8)}
    tok = get_tokenizer("qwen2-vl")
    rows = []
    for key, data in images.items():
        for j in range(20):
            prompt = "<|vision_start|><|image_pad|><|vision_end|>" + f"<|object_ref_start|>region {j}<|object_ref_end|>"
            target = "<|box_start|>(1,2),(300,400)<|box_end|><|endoftext|>"
            pads = [image_pad_count(480, 640, min_pixels=DEFAULT_MIN_PIXELS, max_pixels=DEFAULT_MAX_PIXELS)]
            rows.append({"sample_id": f"{key}-{j:02d}", "record_id": key, "source": "vg", "task": "ref_grounding",
                         "format": "qwen2-vl", "prompt": prompt, "target": target,
                         "num_tokens": len(tok.encode(prompt + target, pads)),
                         "images": [{"key": key, "image": data, "width": 640, "height": 480}]})
    with DatasetWriter(tmp_path / "vg") as w:
        w.write("samples", pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA))
        w.close()
    shard = next((tmp_path / "vg" / "samples").glob("part-*.parquet"))
    meta = pq.ParquetFile(shard).metadata
    assert meta.num_row_groups == 1
    column = next(meta.row_group(0).column(i) for i in range(meta.num_columns)
                  if meta.row_group(0).column(i).path_in_schema == "images.list.element.image")
    unique = sum(len(d) for d in images.values())
    # 160 copies of 8 images: before compression the chunk holds each image once (plus 160 indices)
    assert "RLE_DICTIONARY" in column.encodings and column.total_uncompressed_size < 1.1 * unique

    got = _all(QwenVLReader(tmp_path / "vg", shuffle=False, images=True))
    rows_read = list(QwenVLReader(tmp_path / "vg", shuffle=False)._rows(0, 160))
    assert [r["sample_id"] for r in rows_read] == [r["sample_id"] for r in rows]
    for r in rows_read:
        assert r["images"][0]["image"] == images[r["images"][0]["key"]]
    first = {}
    for r in rows_read:  # one object per image
        assert first.setdefault(r["images"][0]["key"], r["images"][0]["image"]) is r["images"][0]["image"]
    # images off: no image bytes are read, and the ids (image pads from the sizes) are the same
    light = list(QwenVLReader(tmp_path / "vg", shuffle=False, images=False)._rows(0, 160))
    assert all("image" not in r["images"][0] and r["images"][0]["width"] == 640 for r in light)
    assert [e["input_ids"].tolist() for e in _all(QwenVLReader(tmp_path / "vg", shuffle=False, images=False))] == [
        e["input_ids"].tolist() for e in got]
    assert all(e["image_grid_thw"].shape == (1, 3) for e in got)


def test_batch_rows_equal_arrow_rows_on_slices_with_null_and_empty_lists():
    import pyarrow as pa

    from curation.schema import IMAGE_REF
    from formats.reader import _batch_rows, _RecentImages

    a, b = _noise_jpeg(1, (16, 16)), _noise_jpeg(2, (16, 16))
    images = [
        [{"key": "a", "image": a, "width": 16, "height": 16}],
        None,
        [],
        [{"key": "a", "image": a, "width": 16, "height": 16}, {"key": "b", "image": b, "width": 16, "height": 16}],
        [{"key": "b", "image": None, "width": 16, "height": 16}],
        [{"key": "b", "image": b, "width": 16, "height": 16}],
        [{"key": "b", "image": a, "width": 16, "height": 16}],  # the same key with other bytes is not shared
    ]
    rows = [{"sample_id": str(i), "images": im} for i, im in enumerate(images)]
    batch = pa.RecordBatch.from_pylist(rows, schema=pa.schema([("sample_id", pa.string()), ("images", pa.list_(IMAGE_REF))]))
    for lo, n in ((0, 7), (1, 4), (3, 4), (6, 1)):
        got = _batch_rows(batch.slice(lo, n), _RecentImages())
        assert got == rows[lo:lo + n]
        by_key = {}
        for r in got:
            for im in r["images"] or []:
                if im["image"] is not None:  # one object per (key, bytes)
                    assert by_key.setdefault((im["key"], im["image"]), im["image"]) is im["image"]
    got = [im for r in _batch_rows(batch, _RecentImages()) for im in r["images"] or [] if im["image"] is not None]
    assert [im["key"] for im in got] == ["a", "a", "b", "b", "b"]
    assert got[0]["image"] is got[1]["image"] and got[2]["image"] is got[3]["image"]
    assert got[4]["image"] == a and got[4]["image"] is not got[3]["image"]

"""Exports (spec section 6) as pure functions of sample rows."""

import pytest

from curation.schema import records_from_pylist
from formats.build import build_samples
from formats.export import image_suffix, sample_conversation, to_llama_factory, to_ms_swift, to_qwen_vl_json
from formats.sft import check_conversation

BOX = [100, 50, 300, 400]


def _samples(fmt="qwen-vl", tasks="caption,ref_grounding,grounded_caption,sft,text"):
    recs = records_from_pylist([
        {"record_id": "vg/10.jpg", "source": "t", "image": b"\xff\xd8\xff jpeg", "width": 640, "height": 480,
         "captions": ["A dog."], "qa": [{"question": "What?", "answer": "A dog."}],
         "regions": [{"phrase": "the dog", "boxes": [BOX]}]},
        {"record_id": "doc", "source": "t", "text": "words"},
    ])
    rows, _ = build_samples(recs, format=fmt, tasks=tasks)
    return {(r["task"], i): r for i, r in enumerate(rows.to_pylist())}


def path(key):
    return f"/data/{key.replace('/', '_')}"


def by_task(samples, task):
    return [r for (t, _), r in samples.items() if t == task]


def test_conversation_of_a_pretraining_sample():
    (cap,) = by_task(_samples(), "caption")
    assert sample_conversation(cap) == [
        {"from": "user", "value": "<img>vg/10.jpg</img>Generate the caption in English:"},
        {"from": "assistant", "value": "A dog."},
    ]
    (doc,) = by_task(_samples(), "text")
    assert sample_conversation(doc) is None


def test_qwen_vl_json():
    s = _samples()
    (cap,) = by_task(s, "caption")
    assert to_qwen_vl_json(cap, path) == {
        "id": cap["sample_id"],
        "conversations": [
            {"from": "user", "value": "Picture 1: <img>/data/vg_10.jpg</img>\nGenerate the caption in English:"},
            {"from": "assistant", "value": "A dog."},
        ],
    }
    for sft in by_task(s, "sft"):
        item = to_qwen_vl_json(sft, path)
        check_conversation(item["conversations"])
        assert item["conversations"][0]["value"].startswith("Picture 1: <img>/data/vg_10.jpg</img>\n")
        assert item["conversations"][0]["value"].count("Picture 1:") == 1


def test_qwen_vl_json_needs_qwen_vl():
    (cap,) = by_task(_samples("qwen2-vl", "caption"), "caption")
    with pytest.raises(ValueError, match="needs qwen-vl samples"):
        to_qwen_vl_json(cap, path)


@pytest.mark.parametrize("fmt", ["qwen-vl", "qwen2-vl"])
def test_llama_factory(fmt):
    (cap,) = by_task(_samples(fmt), "caption")
    assert to_llama_factory(cap, path) == {
        "messages": [
            {"role": "user", "content": "<image>Generate the caption in English:"},
            {"role": "assistant", "content": "A dog."},
        ],
        "images": ["/data/vg_10.jpg"],
    }


@pytest.mark.parametrize("fmt", ["qwen-vl", "qwen2-vl"])
def test_ms_swift_objects(fmt):
    (ref,) = by_task(_samples(fmt), "ref_grounding")
    item = to_ms_swift(ref, path)
    assert item["messages"] == [
        {"role": "user", "content": "<image><ref-object>"},
        {"role": "assistant", "content": "<bbox>"},
    ]
    assert item["images"] == ["/data/vg_10.jpg"]
    assert item["objects"]["ref"] == ["the dog"] and item["objects"]["bbox_type"] == "real"
    # (156,104),(469,833) on 640x480, back to pixels: within one grid step of (100, 50, 300, 400)
    assert item["objects"]["bbox"] == [[99.84, 49.92, 300.16, 399.84]]
    (gc,) = by_task(_samples(fmt), "grounded_caption")
    item = to_ms_swift(gc, path)
    assert item["messages"][0]["content"] == "<image><ref-object><bbox> is"
    assert item["objects"]["ref"] == ["This"]


def test_image_suffix():
    assert image_suffix(b"\xff\xd8\xff\xe0") == ".jpg"
    assert image_suffix(b"\x89PNG\r\n") == ".png"
    assert image_suffix(b"RIFF0000WEBPVP8") == ".webp"
    assert image_suffix(b"GIF89a") == ".gif"
    assert image_suffix(b"??") == ".bin"


# --- documented schemas of the trainers (LLaMA-Factory data/README.md, ms-swift custom dataset docs) ---------

GROUNDED = ("ref_grounding", "grounded_caption", "caption_grounding", "ocr")


def _rich(fmt, **opts):
    recs = records_from_pylist([
        {"record_id": "vg/10.jpg", "source": "t", "image": b"\xff\xd8\xff jpeg", "width": 640, "height": 480,
         "captions": ["A dog."], "qa": [{"question": "What?", "answer": "A dog."}],
         "regions": [{"phrase": "the dog", "boxes": [BOX]}, {"phrase": "two \"cats\"", "boxes": [[10, 20, 50, 60], [400, 300, 600, 470]]}],
         "grounded_captions": [{"text": "A dog on grass.", "spans": [{"start": 2, "end": 5, "boxes": [BOX]}]}],
         "ocr": [{"text": "STOP", "quad": [10, 10, 100, 10, 100, 50, 10, 50]}, {"text": "EXIT", "quad": [200, 100, 260, 110, 255, 150, 195, 140]}]},
    ])
    rows, _ = build_samples(recs, format=fmt, tasks="caption,ref_grounding,grounded_caption,caption_grounding,ocr,sft", **opts)
    return rows.to_pylist()


def _swift_render(item, fmt, w, h, min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28):
    """What ms-swift's Qwen templates write for the placeholders: Qwen-VL/Qwen2-VL on the 0-1000 grid
    (`norm1000`), Qwen2.5-VL in pixels of the image resized at its MAX_PIXELS (`norm_bbox = 'none'`,
    QWENVL_BBOX_FORMAT=new)."""
    import json as _json
    import re

    from formats.coords import smart_resize

    refs, boxes = iter(item["objects"]["ref"]), iter(item["objects"]["bbox"])
    rh, rw = smart_resize(h, w, min_pixels=min_pixels, max_pixels=max_pixels)

    def bbox(_):
        x1, y1, x2, y2 = next(boxes)
        if fmt == "qwen2.5-vl":
            return _json.dumps([round(x1 * rw / w), round(y1 * rh / h), round(x2 * rw / w), round(y2 * rh / h)])
        q = [min(999, round(x1 / w * 1000)), min(999, round(y1 / h * 1000)), min(999, round(x2 / w * 1000)), min(999, round(y2 / h * 1000))]
        inner = f"({q[0]},{q[1]}),({q[2]},{q[3]})"
        return f"<box>{inner}</box>" if fmt == "qwen-vl" else f"<|box_start|>{inner}<|box_end|>"

    def ref(_):
        r = next(refs)
        return r if fmt == "qwen2.5-vl" else (f"<ref>{r}</ref>" if fmt == "qwen-vl" else f"<|object_ref_start|>{r}<|object_ref_end|>")

    out = []
    for m in item["messages"]:
        out.append(re.sub(r"<bbox>|<ref-object>", lambda mm: bbox(mm) if mm.group() == "<bbox>" else ref(mm), m["content"]))
    assert next(refs, None) is None and next(boxes, None) is None  # every object consumed
    return out


@pytest.mark.parametrize("fmt", ["qwen-vl", "qwen2-vl", "qwen2.5-vl"])
def test_ms_swift_objects_for_every_grounding_and_ocr_sample(fmt):
    rows = _rich(fmt)
    assert {r["task"] for r in rows} >= set(GROUNDED)
    n = 0
    for row in rows:
        item = to_ms_swift(row, path)
        objs = item["objects"]
        assert set(objs) == {"ref", "bbox", "bbox_type"} and objs["bbox_type"] == "real"
        text = "".join(m["content"] for m in item["messages"])
        assert text.count("<ref-object>") == len(objs["ref"]) and text.count("<bbox>") == len(objs["bbox"])
        grounded = row["task"] in GROUNDED or (row["task"] == "sft" and "dog" in row["conversations"][-1]["value"] and "A dog." != row["conversations"][-1]["value"])
        if grounded:
            n += 1
            assert objs["bbox"], (row["task"], text)
        for x1, y1, x2, y2 in objs["bbox"]:
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        if objs["bbox"] and row["task"] != "ocr":
            # rendered back as ms-swift does at the same limits: the sample's own text
            assert _swift_render(item, fmt, 640, 480) == [t["value"] if "value" in t else t for t in _conv_values(row)]
    assert n >= len(GROUNDED)


def _conv_values(row):
    from formats.export import sample_conversation

    conv = sample_conversation(row)
    import re

    for t in conv:
        t["value"] = re.sub(r"(?:Picture \d+: )?<img>.*?</img>\n?", "<image>", t["value"])
        t["value"] = t["value"].replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>")
    return conv


def test_ms_swift_qwen25_boxes_do_not_depend_on_max_pixels():
    """The bug of issue 11: boxes written for one max_pixels. As objects in pixels, two builds agree within a resize step."""
    small = {r["sample_id"]: to_ms_swift(r, path, min_pixels=3136, max_pixels=50176) for r in _rich("qwen2.5-vl", min_pixels=3136, max_pixels=50176)}
    big = {r["sample_id"]: to_ms_swift(r, path) for r in _rich("qwen2.5-vl")}
    assert small.keys() == big.keys()
    from formats.coords import smart_resize

    rh, rw = smart_resize(480, 640, min_pixels=3136, max_pixels=50176)
    checked = 0
    for sid, a in small.items():
        for ba, bb in zip(a["objects"]["bbox"], big[sid]["objects"]["bbox"]):
            assert abs(ba[0] - bb[0]) <= 640 / rw and abs(ba[1] - bb[1]) <= 480 / rh
            checked += 1
    assert checked > 5
    (ref,) = [b for b in big.values() if b["objects"]["ref"] == ["the dog"] and "Locate" in b["messages"][0]["content"]]
    assert ref["messages"][1]["content"] == '[{"bbox_2d": <bbox>, "label": "<ref-object>"}]'
    x1, y1, x2, y2 = ref["objects"]["bbox"][0]
    assert abs(x1 - 100) <= 1 and abs(y1 - 50) <= 1 and abs(x2 - 300) <= 1 and abs(y2 - 400) <= 1


def test_ms_swift_ocr_quads_become_their_bounding_boxes():
    (ocr,) = [r for r in _rich("qwen-vl") if r["task"] == "ocr"]
    item = to_ms_swift(ocr, path)
    assert item["objects"]["ref"] == ["STOP", "EXIT"]
    assert item["messages"][1]["content"] == "<ref-object><bbox><ref-object><bbox>"
    for got, want in zip(item["objects"]["bbox"], [[10, 10, 100, 50], [195, 100, 260, 150]]):
        assert all(abs(g - v) <= 0.64 for g, v in zip(got, want))  # one grid step: 640/1000 px


def test_llama_factory_entry_and_rows_follow_its_documented_sharegpt_schema(tmp_path):
    """LLaMA-Factory data/README.md: an entry names file_name, formatting, columns and tags; sharegpt messages
    alternate user/assistant under the declared tags; one <image> per path in `images`."""
    import json

    from curation.cli import main
    from curation.storage.dataset import DatasetWriter

    with DatasetWriter(tmp_path / "in") as w:
        w.write("records", records_from_pylist([
            {"record_id": "vg/10.jpg", "source": "t", "image": b"\xff\xd8\xff jpeg", "width": 640, "height": 480,
             "captions": ["A dog."], "qa": [{"question": "What?", "answer": "A dog."}, {"question": "Who?", "answer": "Rex."}],
             "regions": [{"phrase": "the dog", "boxes": [BOX]}]}]))
        w.close()
    assert main(["build", str(tmp_path / "in"), "--out", str(tmp_path / "b"), "--format", "qwen2-vl", "--tasks", "caption,sft"]) == 0
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    assert main(["export", str(tmp_path / "b"), "--to", "llama-factory", "--out", str(tmp_path / "exp" / "demo.json")]) == 0
    info = json.loads((tmp_path / "exp" / "dataset_info.json").read_text())
    assert info["mine"] == {"file_name": "mine.json"}  # other entries kept
    entry = info["demo"]
    assert entry == {"file_name": "demo.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
    data = json.loads((tmp_path / "exp" / entry["file_name"]).read_text())
    tags, cols = entry["tags"], entry["columns"]
    assert sorted(len(item["messages"]) for item in data) == [2, 2, 4]  # caption, region SFT, two-turn QA SFT
    for item in data:
        msgs = item[cols["messages"]]
        assert len(msgs) % 2 == 0
        for i, m in enumerate(msgs):
            assert set(m) == {tags["role_tag"], tags["content_tag"]}
            assert m[tags["role_tag"]] == (tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"])
        assert sum(m[tags["content_tag"]].count("<image>") for m in msgs) == len(item[cols["images"]]) == 1
    readme = (tmp_path / "exp" / "demo.README.md").read_text()
    assert "min_pixels 3136 and max_pixels 12845056" in readme and "--dataset demo" in readme

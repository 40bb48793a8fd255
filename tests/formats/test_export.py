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

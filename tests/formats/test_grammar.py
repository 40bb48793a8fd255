"""The sample grammar behind `curate validate`."""

import pytest

from formats.build import build_samples
from formats.grammar import check_sample, check_text


@pytest.mark.parametrize(
    "text,problem",
    [
        ("<img>k</img><ref>a</ref><box>(5,5),(3,3)</box><|endoftext|>", "box '(5,5),(3,3)': x2 <= x1"),
        ("<img>k</img><ref>a<box>(1,1),(3,3)</box><|endoftext|>", "unbalanced <ref>: <box> before </ref> (tags never nest)"),
        ("<img>k</img><ref>a</ref></ref><|endoftext|>", "unbalanced </ref> without an opening tag"),
        ("<img>k</img><ref>a<|endoftext|>", "special token <|endoftext|> inside <ref>"),
        ("<img>k</img>text <ref>a", "unbalanced <ref>: never closed"),
        ("<img>other</img>x<|endoftext|>", "image key 'other' not in the row's images"),
        ("<img>k</img><box>(1,1),(1000,3)</box>", "box '(1,1),(1000,3)' is not (x1,y1),(x2,y2) with values 0-999 and no leading zeros"),
        ("<img>k</img><box>(01,1),(10,3)</box>", "box '(01,1),(10,3)' is not (x1,y1),(x2,y2) with values 0-999 and no leading zeros"),
        ("<img>k</img><box>(1, 1),(10,3)</box>", "box '(1, 1),(10,3)' is not (x1,y1),(x2,y2) with values 0-999 and no leading zeros"),
        ("<img>k</img><quad>(1,1),(5,1),(5,1),(1,1)</quad>", "quad '(1,1),(5,1),(5,1),(1,1)' has zero area"),
        ("<img>k</img><ref> </ref>", "empty <ref>"),
        ("<img>k</img><imgpad>", "<imgpad> outside an image tag"),
    ],
)
def test_qwen_vl_grammar_faults(text, problem):
    problems, _ = check_text(text, "qwen-vl", ["k"])
    assert problem in problems


def test_qwen2_grammar():
    ok = "<|vision_start|><|image_pad|><|vision_end|><|object_ref_start|>a<|object_ref_end|><|box_start|>(1,1),(3,3)<|box_end|>"
    assert check_text(ok, "qwen2-vl") == ([], 1)
    bad = "<|vision_start|>x<|vision_end|><|box_start|>(3,3),(1,1)<|box_end|>"
    problems, _ = check_text(bad, "qwen2-vl")
    assert problems == ["image tag holds 'x', expected one <|image_pad|>", "box '(3,3),(1,1)': x2 <= x1"]


def _rows(fmt):
    from curation.schema import records_from_pylist

    recs = records_from_pylist([{
        "record_id": "数据/k.jpg", "source": "t", "image": b"x", "width": 640, "height": 480,
        "captions": ["A dog."], "qa": [{"question": "Q?", "answer": "A."}],
        "regions": [{"phrase": "dog", "boxes": [[100, 50, 300, 400], [0, 0, 10, 10]]}, {"phrase": "cat", "boxes": [[1, 1, 50, 50]]}],
        "grounded_captions": [{"text": "A dog.", "spans": [{"start": 2, "end": 5, "boxes": [[100, 50, 300, 400]]}]}],
        "ocr": [{"text": "STOP", "quad": [1, 1, 50, 1, 50, 20, 1, 20]}],
    }])
    samples, _ = build_samples(recs, format=fmt, tasks="caption,vqa,ref_grounding,grounded_caption,caption_grounding,ocr,sft")
    return samples.to_pylist()


@pytest.mark.parametrize("fmt", ["qwen-vl", "qwen2-vl", "qwen2.5-vl"])
def test_built_samples_are_clean(fmt):
    rows = _rows(fmt)
    assert len(rows) == 10
    for row in rows:
        assert check_sample(row) == [], row["task"]


def test_planted_faults_each_have_their_message():
    row = next(r for r in _rows("qwen-vl") if r["task"] == "ref_grounding")
    cases = {
        "box": (dict(target="<box>(5,5),(3,3)</box><|endoftext|>"), "box '(5,5),(3,3)': x2 <= x1"),
        "ref": (dict(prompt=row["prompt"].replace("</ref>", "")), "unbalanced <ref>"),
        "key": (dict(images=[dict(row["images"][0], key="elsewhere.jpg")]), "image key '数据/k.jpg' not in the row's images"),
        "tokens": (dict(num_tokens=row["num_tokens"] + 1), f"num_tokens {row['num_tokens'] + 1} != {row['num_tokens']} counted"),
        "eos": (dict(target=row["target"].replace("<|endoftext|>", "")), "text must end with one <|endoftext|>"),
        "bytes": (dict(images=[dict(row["images"][0], image=None)]), "image '数据/k.jpg' has no bytes"),
        "nfc": (dict(target="e\u0301" + row["target"]), "text is not in Unicode NFC form"),
    }
    for name, (change, message) in cases.items():
        problems = check_sample({**row, **change})
        assert any(p.startswith(message) for p in problems), (name, problems)


def test_sft_conversation_must_match_rendering():
    row = next(r for r in _rows("qwen-vl") if r["task"] == "sft")
    conv = [dict(t) for t in row["conversations"]]
    conv[-1]["value"] = "changed"
    assert "prompt + target differ from the ChatML rendering of conversations" in check_sample({**row, "conversations": conv})
    assert any(p.startswith("conversation: turn 0") for p in check_sample({**row, "conversations": conv[1:]}))


def test_qwen25_json_box_range():
    row = next(r for r in _rows("qwen2.5-vl") if r["task"] == "ref_grounding")
    bad = row["target"].replace("[101, 50, 302, 397]", "[101, 50, 900, 397]")
    assert bad != row["target"]
    problems = check_sample({**row, "target": bad})
    assert "bbox_2d [101, 50, 900, 397] outside the 644x476 resized image or x2 <= x1 or y2 <= y1" in problems


# --- shapes back from the text (what `curate report` draws) ----------------------------

from formats.coords import grid_box, resized_box, smart_resize  # noqa: E402
from formats.grammar import find_shapes, shapes_in_pixels  # noqa: E402
from formats.tasks import get_dialect, render_record  # noqa: E402


@pytest.mark.parametrize(
    "text,fmt,expected",
    [
        # spec section 7, example 3 and 4
        ("<img>refcoco/9.jpg</img><ref>the bowl on the right</ref><box>(500,500),(999,999)</box><|endoftext|>", "qwen-vl",
         [("box", "the bowl on the right", (500, 500, 999, 999))]),
        ("<img>vg/10.jpg</img><ref>This</ref><box>(156,104),(469,833)</box> is a brown dog<|endoftext|>", "qwen-vl",
         [("box", "This", (156, 104, 469, 833))]),
        ("<ref>a</ref><box>(1,2),(3,4)</box><box>(5,6),(7,8)</box> and <box>(10,10),(20,20)</box>", "qwen-vl",
         [("box", "a", (1, 2, 3, 4)), ("box", "a", (5, 6, 7, 8)), ("box", None, (10, 10, 20, 20))]),
        ("<ref>2024</ref><quad>(748,619),(914,619),(914,676),(748,676)</quad>", "qwen-vl",
         [("quad", "2024", (748, 619, 914, 619, 914, 676, 748, 676))]),
        ("<box>(5,5),(3,9)</box><box>(007,1),(9,9)</box>", "qwen-vl", []),  # malformed: skipped
        ("<|object_ref_start|>cat<|object_ref_end|><|box_start|>(1,2),(30,40)<|box_end|>", "qwen2-vl",
         [("box", "cat", (1, 2, 30, 40))]),
        ('[{"bbox_2d": [10, 20, 30, 40], "label": "cat"}, {"bbox_2d": [1, 2, 3, 4], "text_content": "OK"}]', "qwen2.5-vl",
         [("box", "cat", (10, 20, 30, 40)), ("box", "OK", (1, 2, 3, 4))]),
    ],
)
def test_find_shapes(text, fmt, expected):
    assert [(s["kind"], s["label"], s["values"]) for s in find_shapes(text, fmt)] == expected


@pytest.mark.parametrize("fmt", ["qwen-vl", "qwen2-vl", "qwen2.5-vl"])
def test_shapes_in_pixels_round_trips_a_rendered_box_within_one_step(fmt):
    width, height, box = 640, 480, [100.0, 50.0, 300.0, 400.0]
    record = {"record_id": "t:1", "source": "t", "width": width, "height": height, "image": b"x",
              "regions": [{"phrase": "a brown dog", "boxes": [box]}]}
    samples, _ = render_record(record, get_dialect(fmt), tasks=("ref_grounding",))
    (sample,) = samples
    (shape,) = shapes_in_pixels(sample.prompt + sample.target, fmt, width, height)
    x1, y1, x2, y2 = shape["points"][0], shape["points"][1], shape["points"][4], shape["points"][5]
    if fmt == "qwen2.5-vl":
        rh, rw = smart_resize(height, width)
        step_x, step_y = width / rw, height / rh
        assert shape["values"] == resized_box(box, width, height, (rh, rw))
    else:
        step_x, step_y = width / 1000, height / 1000
        assert shape["values"] == grid_box(box, width, height)
    for got, want, step in zip((x1, y1, x2, y2), box, (step_x, step_y, step_x, step_y)):
        assert abs(got - want) <= step / 2 + 1e-9
    assert shape["label"] == "a brown dog"

